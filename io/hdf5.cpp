// The HDF5 wrappers: every status checked, HDF5's own error printing silenced, and its
// innermost error description carried into the kiln::Error with the file and object.
#include "io/hdf5.h"

#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <sstream>
#include <type_traits>

#include "core/error.h"
#include "io/atomic_file.h"

static_assert(std::is_same_v<hid_t, kiln::io::h5::Id>, "kiln::io::h5::Id must be hid_t (HDF5 >= 1.10)");
static_assert(std::is_same_v<herr_t, int>, "kiln::io::h5::Handle's close functions return herr_t");

namespace kiln::io::h5 {
namespace {

// Debian's HDF5 is built without its thread-safety option, so kiln serialises every call into
// HDF5 itself, as that option would: each wrapper below holds this lock (recursive: wrappers
// call wrappers) for as long as it calls HDF5. A checkpoint can then be written on a
// background thread (io/checkpoint.h CheckpointWriter) while the training thread reads
// weights, or a Python thread exports, without either corrupting HDF5's global state.
std::recursive_mutex& api_mutex() {
  static std::recursive_mutex m;
  return m;
}
using Serial = CallLock;

// The description of the innermost HDF5 error on this thread's stack ("" when none).
std::string hdf5_error_text() {
  std::string msg;
  auto walk = [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
    auto* s = static_cast<std::string*>(out);
    if (n == 0 && e && e->desc) *s = std::string(e->func_name ? e->func_name : "") + ": " + e->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg;
}

[[noreturn]] void fail(const char* call, const char* file, int line, const std::string& context) {
  const std::string why = hdf5_error_text();
  detail::throw_error(file, line, detail::concat(context, ": HDF5 call ", call, " failed", why.empty() ? "" : " (", why,
                                         why.empty() ? "" : ")"));
}

// HDF5 prints its error stack to stderr by default; kiln reports errors as values instead.
void quiet() {
  static std::once_flag once;
  std::call_once(once, [] {
    // No library shutdown at exit: after a write that failed (disk full), HDF5 still holds the
    // file and its shutdown crashed flushing it again; kiln closes every file itself. It
    // takes only before the library's first use: in a process where another user of the
    // same libhdf5 (h5py) came first, that one's exit handling stands.
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

}  // namespace
}  // namespace kiln::io::h5

using kiln::detail::concat;  // for the wrappers below

// Checks an HDF5 return value (negative = failure); the context says which file and object.
#define KILN_H5_CHECK(call, ...)                                                                  \
  do {                                                                                            \
    if ((call) < 0) ::kiln::io::h5::fail(#call, __FILE__, __LINE__, ::kiln::detail::concat(__VA_ARGS__)); \
  } while (0)

namespace kiln::io::h5 {
namespace {

// Opens an identifier and wraps it, failing with context when HDF5 returns < 0.
#define KILN_H5_OPEN(var, call, closer, ...) \
  hid_t var##_id_ = (call);                  \
  KILN_H5_CHECK(var##_id_, __VA_ARGS__);     \
  Handle var(var##_id_, closer)

std::string join_path(const std::string& base, const std::string& rel) {
  if (base.empty() || base == "/") return "/" + rel;
  return base + "/" + rel;
}

// Link-creation properties that create missing intermediate groups.
Handle intermediate_lcpl() {
  hid_t p = H5Pcreate(H5P_LINK_CREATE);
  KILN_H5_CHECK(p, "creating a link property list");
  Handle h(p, H5Pclose);
  KILN_H5_CHECK(H5Pset_create_intermediate_group(p, 1), "setting intermediate group creation");
  return h;
}

TypeInfo describe(hid_t type) {
  TypeInfo t;
  switch (H5Tget_class(type)) {
    case H5T_FLOAT: t.cls = TypeInfo::floating; break;
    case H5T_INTEGER: t.cls = TypeInfo::integer; break;
    case H5T_STRING: t.cls = TypeInfo::string; break;
    default: t.cls = TypeInfo::other; break;
  }
  t.size = H5Tget_size(type);
  return t;
}

// The dims of a dataspace and their product, refusing dims or products that do not fit in
// int64 (a file may declare any extent; kiln sizes buffers from it). A null dataspace has
// no elements.
std::vector<int64_t> extent(hid_t space, int64_t& count, const std::string& ctx) {
  const H5S_class_t cls = H5Sget_simple_extent_type(space);
  KILN_H5_CHECK(cls, "reading the dataspace kind of ", ctx);
  count = cls == H5S_NULL ? 0 : 1;
  if (cls != H5S_SIMPLE) return {};
  const int nd = H5Sget_simple_extent_ndims(space);
  KILN_H5_CHECK(nd, "reading the rank of ", ctx);
  std::vector<hsize_t> d(static_cast<size_t>(nd));
  KILN_H5_CHECK(H5Sget_simple_extent_dims(space, d.data(), nullptr), "reading the dims of ", ctx);
  std::vector<int64_t> dims;
  for (const hsize_t v : d) {
    KILN_CHECK(v <= static_cast<hsize_t>(std::numeric_limits<int64_t>::max()), ctx, " declares a dimension of ", v,
               ", too large to be real (corrupt file?)");
    dims.push_back(static_cast<int64_t>(v));
    KILN_CHECK(!__builtin_mul_overflow(count, dims.back(), &count), ctx, " declares shape ",
               shape_str(std::vector<int64_t>(d.begin(), d.end())), " whose element count overflows (corrupt file?)");
  }
  return dims;
}

// Refuses `count` elements of `elem_size` bytes when they exceed `limit`, before allocating.
void check_bytes(int64_t count, size_t elem_size, int64_t limit, const std::string& ctx) {
  int64_t bytes = 0;
  const bool overflow = __builtin_mul_overflow(count, static_cast<int64_t>(elem_size), &bytes);
  KILN_CHECK(!overflow && bytes <= limit, ctx, " declares ", count, " elements of ", elem_size, " bytes (",
             overflow ? std::string("more than 2^63") : std::to_string(bytes), " bytes), over kiln's limit of ", limit,
             " bytes for one ", limit == kMaxAttributeBytes ? "attribute" : "dataset", "; refusing to allocate it");
}

// True for the IEEE binary16/32/64 layouts (either byte order): HDF5 can describe floats
// of any bit layout, and converting exotic ones is rarely exercised code in libhdf5.
bool standard_float(hid_t type) {
  const size_t size = H5Tget_size(type);
  size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
  if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
  const H5T_order_t order = H5Tget_order(type);
  if (order != H5T_ORDER_LE && order != H5T_ORDER_BE) return false;
  if (H5Tget_offset(type) != 0 || H5Tget_precision(type) != size * 8 || H5Tget_norm(type) != H5T_NORM_IMPLIED)
    return false;
  struct Ieee { size_t size, spos, epos, esize, msize, bias; };
  for (const Ieee f : {Ieee{2, 15, 10, 5, 10, 15}, Ieee{4, 31, 23, 8, 23, 127}, Ieee{8, 63, 52, 11, 52, 1023}})
    if (size == f.size && spos == f.spos && epos == f.epos && esize == f.esize && mpos == 0 && msize == f.msize &&
        H5Tget_ebias(type) == f.bias)
      return true;
  return false;
}

// Access property lists under which HDF5 never follows an external link: a file kiln did
// not write must not make it open other files on this machine. One per class, since
// H5Dopen2 and H5Gopen2 take dataset/group access lists (which extend link access).
enum class Access { link, dataset, group };
hid_t make_no_external_links(hid_t cls) {
  const hid_t p = H5Pcreate(cls);
  auto refuse = [](const char*, const char*, const char*, const char*, unsigned*, hid_t, void*) -> herr_t {
    return -1;
  };
  if (p >= 0 && H5Pset_elink_cb(p, refuse, nullptr) < 0) return -1;
  return p;
}
hid_t no_external_links(Access kind = Access::link) {
  static const hid_t lists[3] = {make_no_external_links(H5P_LINK_ACCESS), make_no_external_links(H5P_DATASET_ACCESS),
                                 make_no_external_links(H5P_GROUP_ACCESS)};
  const hid_t p = lists[static_cast<int>(kind)];
  KILN_CHECK(p >= 0, "HDF5: could not make an access property list that refuses external links");
  return p;
}

// Fails with a clear message when `rel` below `loc` is an external or user-defined link.
void refuse_external_link(hid_t loc, const std::string& rel, const std::string& where) {
  H5L_info_t info;
  if (H5Lget_info(loc, rel.c_str(), &info, no_external_links()) < 0) {
    H5Eclear2(H5E_DEFAULT);
    return;
  }
  KILN_CHECK(info.type == H5L_TYPE_HARD || info.type == H5L_TYPE_SOFT, where,
             " is an external link to another file (or a user-defined link); kiln does not follow links out of an "
             "HDF5 file");
}

void write_dataset(Group& g, const std::string& rel, const std::vector<int64_t>& shape, hid_t type, const void* data) {
  const std::string where = g.where(rel);
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  KILN_H5_OPEN(space, H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
               "creating the dataspace of ", where);
  Handle lcpl = intermediate_lcpl();
  KILN_H5_OPEN(ds, H5Dcreate2(g.id(), rel.c_str(), type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
               H5Dclose, "creating dataset ", where);
  KILN_H5_CHECK(H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "writing dataset ", where);
  // A small dataset's data may reach the file only when it is closed: a failure there (disk
  // full) is the write's, not something a destructor may drop.
  KILN_H5_CHECK(H5Dclose(ds.release()), "writing dataset ", where, " (closing it)");
}

}  // namespace

// ---- Handle ----

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

CallLock::CallLock() { api_mutex().lock(); }
CallLock::~CallLock() { api_mutex().unlock(); }

void Handle::reset() {
  const Serial serial_call;
  if (id_ >= 0 && close_) close_(id_);  // a destructor cannot report; File::close() checks
  id_ = -1;
}

std::string TypeInfo::name() const {
  switch (cls) {
    case floating: return "float" + std::to_string(size * 8);
    case integer: return "int" + std::to_string(size * 8);
    case string: return "string";
    case other: return "non-numeric type";
  }
  return "?";
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

int64_t open_object_count() {
  const Serial serial_call;
  quiet();  // may be the process's first HDF5 call: H5dont_atexit takes only before the library's first use
  const ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  KILN_H5_CHECK(n, "counting open HDF5 objects");
  return static_cast<int64_t>(n);
}

// ---- File ----

File File::open_read(const std::string& path) {
  const Serial serial_call;
  quiet();
  KILN_CHECK(std::filesystem::exists(path), "weights file '", path, "' does not exist");
  KILN_CHECK(!std::filesystem::is_directory(path), "'", path, "' is a directory, expected an HDF5 file");
  const std::string unreadable = unreadable_reason(path);
  KILN_CHECK(unreadable.empty(), "cannot read '", path, "': ", unreadable);
  const htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0) {
    const std::string why = hdf5_error_text();
    KILN_FAIL("'", path, "' is not an HDF5 file (no HDF5 signature found", why.empty() ? "" : ": ", why, ")");
  }
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    // HDF5 says a cut-off file as "truncated file: eof = 100000, sblock->base_addr = 0,
    // stored_eof = 159718688"; people get the two sizes.
    const std::string why = hdf5_error_text();
    unsigned long long have = 0, want = 0;
    const size_t at = why.find("truncated file: eof = "), stored = why.find("stored_eof = ");
    if (at != std::string::npos && stored != std::string::npos &&
        std::sscanf(why.c_str() + at, "truncated file: eof = %llu", &have) == 1 &&
        std::sscanf(why.c_str() + stored, "stored_eof = %llu", &want) == 1)
      KILN_FAIL("HDF5 file '", path, "' is truncated: it holds ", have, " bytes of the ", want,
                " its header records (an interrupted download or copy?)");
    KILN_FAIL("opening HDF5 file '", path, "' (truncated or corrupt?): ", why.empty() ? "HDF5 gave no reason" : why);
  }
  return File(Handle(id, H5Fclose), path);
}

File File::open_image(const void* data, size_t size, const std::string& name) {
  const Serial serial_call;
  quiet();
  KILN_CHECK(data != nullptr && size > 0, "HDF5 file image '", name, "' is empty");
  KILN_H5_OPEN(fapl, H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "making file-access properties for '", name, "'");
  // No backing store: nothing is ever written to disk. H5Pset_file_image copies the bytes
  // (one memcpy, nothing next to parsing), so the File does not borrow the caller's buffer.
  KILN_H5_CHECK(H5Pset_fapl_core(fapl.get(), 64 << 10, 0), "selecting the core driver for '", name, "'");
  KILN_H5_CHECK(H5Pset_file_image(fapl.get(), const_cast<void*>(data), size), "handing HDF5 the image '", name, "'");
  // HDF5 treats two open core files of the same name as one file: make each name unique.
  static std::atomic<uint64_t> serial{0};
  const std::string unique = concat(name, "#image", serial.fetch_add(1));
  KILN_H5_OPEN(f, H5Fopen(unique.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, "opening HDF5 file image '", name,
               "' (not HDF5, truncated or corrupt?)");
  return File(std::move(f), name);
}

File File::create(const std::string& path) {
  const Serial serial_call;
  quiet();
  KILN_H5_OPEN(f, H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
               "creating HDF5 file '", path, "'");
  return File(std::move(f), path);
}

Group File::root() const {
  const Serial serial_call;
  KILN_CHECK(h_.valid(), "HDF5 file '", path_, "' is closed");
  KILN_H5_OPEN(g, H5Gopen2(h_.get(), "/", H5P_DEFAULT), H5Gclose, "opening the root group of '", path_, "'");
  return Group(std::move(g), path_, "/");
}

void File::flush() {
  const Serial serial_call;
  KILN_H5_CHECK(H5Fflush(h_.get(), H5F_SCOPE_GLOBAL), "flushing HDF5 file '", path_, "'");
}

void File::close() {
  const Serial serial_call;
  if (!h_.valid()) return;
  // Flushed first: where a group or dataset is still open, H5Fclose leaves the file open
  // and its last writes to that object's close, in a destructor that cannot report them.
  unsigned intent = 0;
  if (H5Fget_intent(h_.get(), &intent) >= 0 && (intent & H5F_ACC_RDWR) != 0) flush();
  KILN_H5_CHECK(H5Fclose(h_.release()), "closing HDF5 file '", path_, "'");
}

// ---- Group ----

std::string Group::where(const std::string& child) const {
  return concat("'", child.empty() ? path_ : join_path(path_, child), "' in file '", file_, "'");
}

bool Group::exists(const std::string& rel) const {
  const Serial serial_call;
  // H5Lexists fails (rather than saying false) when an intermediate group is missing,
  // so test each prefix of the path in turn.
  size_t pos = 0;
  while (true) {
    const size_t slash = rel.find('/', pos);
    const std::string prefix = rel.substr(0, slash);
    const htri_t e = H5Lexists(h_.get(), prefix.c_str(), no_external_links());
    if (e < 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (e == 0) return false;
    refuse_external_link(h_.get(), prefix, where(prefix));
    if (slash == std::string::npos) return true;
    if (!is_group(prefix)) return false;
    pos = slash + 1;
  }
}

bool Group::is_group(const std::string& rel) const {
  const Serial serial_call;
  hid_t o = H5Oopen(h_.get(), rel.c_str(), no_external_links());
  if (o < 0) {
    H5Eclear2(H5E_DEFAULT);
    refuse_external_link(h_.get(), rel, where(rel));
    return false;
  }
  const bool g = H5Iget_type(o) == H5I_GROUP;
  H5Oclose(o);
  return g;
}

bool Group::is_dataset(const std::string& rel) const {
  const Serial serial_call;
  hid_t o = H5Oopen(h_.get(), rel.c_str(), no_external_links());
  if (o < 0) {
    H5Eclear2(H5E_DEFAULT);
    refuse_external_link(h_.get(), rel, where(rel));
    return false;
  }
  const bool d = H5Iget_type(o) == H5I_DATASET;
  H5Oclose(o);
  return d;
}

std::vector<std::string> Group::children() const {
  const Serial serial_call;
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  KILN_H5_CHECK(H5Literate(h_.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, cb, &names), "listing the members of ",
                where());
  return names;
}

uint64_t Group::object_address(const std::string& rel) const {
  const Serial serial_call;
  H5O_info_t info;
  KILN_H5_CHECK(H5Oget_info_by_name2(h_.get(), rel.c_str(), &info, H5O_INFO_BASIC, no_external_links()),
                "reading the object header of ", where(rel));
  return static_cast<uint64_t>(info.addr);
}

Group Group::group(const std::string& rel) const {
  const Serial serial_call;
  KILN_CHECK(exists(rel) && is_group(rel), "expected a group ", where(rel), ", found ",
             exists(rel) ? "a non-group object" : "nothing");
  KILN_H5_OPEN(g, H5Gopen2(h_.get(), rel.c_str(), no_external_links(Access::group)), H5Gclose, "opening group ", where(rel));
  return Group(std::move(g), file_, join_path(path_, rel));
}

Dataset Group::dataset(const std::string& rel) const {
  const Serial serial_call;
  KILN_CHECK(exists(rel) && is_dataset(rel), "expected a dataset ", where(rel), ", found ",
             exists(rel) ? "a non-dataset object" : "nothing");
  KILN_H5_OPEN(d, H5Dopen2(h_.get(), rel.c_str(), no_external_links(Access::dataset)), H5Dclose, "opening dataset ", where(rel));
  return Dataset(std::move(d), file_, join_path(path_, rel));
}

Group Group::create_group(const std::string& rel) {
  const Serial serial_call;
  if (exists(rel)) return group(rel);
  Handle lcpl = intermediate_lcpl();
  KILN_H5_OPEN(g, H5Gcreate2(h_.get(), rel.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
               "creating group ", where(rel));
  return Group(std::move(g), file_, join_path(path_, rel));
}

void Group::write_f32(const std::string& rel, const std::vector<int64_t>& shape, const float* data) {
  const Serial serial_call;
  write_dataset(*this, rel, shape, H5T_NATIVE_FLOAT, data);
}

void Group::write_i32(const std::string& rel, const std::vector<int64_t>& shape, const int32_t* data) {
  const Serial serial_call;
  write_dataset(*this, rel, shape, H5T_NATIVE_INT32, data);
}

bool Group::has_attribute(const std::string& name) const {
  const Serial serial_call;
  const htri_t e = H5Aexists(h_.get(), name.c_str());
  KILN_H5_CHECK(e, "looking for attribute '", name, "' of ", where());
  return e > 0;
}

std::vector<std::string> Group::attribute_names() const {
  const Serial serial_call;
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  KILN_H5_CHECK(H5Aiterate2(h_.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, cb, &names), "listing the attributes of ",
                where());
  return names;
}

std::vector<std::string> Group::string_list_attribute(const std::string& name) const {
  const Serial serial_call;
  const std::string ctx = concat("attribute '", name, "' of ", where());
  KILN_CHECK(has_attribute(name), "missing ", ctx);
  KILN_H5_OPEN(a, H5Aopen(h_.get(), name.c_str(), H5P_DEFAULT), H5Aclose, "opening ", ctx);
  KILN_H5_OPEN(space, H5Aget_space(a.get()), H5Sclose, "reading the dataspace of ", ctx);
  int64_t n = 0;
  extent(space.get(), n, ctx);
  // Keras writes an empty name list as an empty float array: no elements means no names.
  if (n == 0) return {};
  KILN_H5_OPEN(type, H5Aget_type(a.get()), H5Tclose, "reading the type of ", ctx);
  const TypeInfo ti = describe(type.get());
  KILN_CHECK(ti.cls == TypeInfo::string, "expected strings in ", ctx, ", found ", ti.name());
  // Variable-length strings are pointers in memory; their text lives in the file's heap.
  check_bytes(n, std::max(ti.size, sizeof(char*)), kMaxAttributeBytes, ctx);
  std::vector<std::string> out;
  const htri_t vlen = H5Tis_variable_str(type.get());
  KILN_H5_CHECK(vlen, "reading the string kind of ", ctx);
  if (vlen > 0) {
    KILN_H5_OPEN(mem, H5Tcopy(H5T_C_S1), H5Tclose, "making a string type for ", ctx);
    KILN_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE), "making a string type for ", ctx);
    KILN_H5_CHECK(H5Tset_cset(mem.get(), H5Tget_cset(type.get())), "making a string type for ", ctx);
    std::vector<char*> buf(static_cast<size_t>(n), nullptr);
    KILN_H5_CHECK(H5Aread(a.get(), mem.get(), buf.data()), "reading ", ctx);
    for (char* s : buf) out.emplace_back(s ? s : "");
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
  } else {
    const size_t size = ti.size;
    std::vector<char> buf(static_cast<size_t>(n) * size + 1, '\0');
    KILN_H5_CHECK(H5Aread(a.get(), type.get(), buf.data()), "reading ", ctx);
    for (hssize_t i = 0; i < n; ++i) {
      std::string s(buf.data() + static_cast<size_t>(i) * size, size);
      const size_t end = s.find_last_not_of(std::string("\0 ", 2));
      s.resize(end == std::string::npos ? 0 : end + 1);
      const size_t nul = s.find('\0');
      if (nul != std::string::npos) s.resize(nul);
      out.push_back(s);
    }
  }
  return out;
}

std::string Group::string_attribute(const std::string& name) const {
  const Serial serial_call;
  const std::vector<std::string> v = string_list_attribute(name);
  KILN_CHECK(v.size() == 1, "expected one string in attribute '", name, "' of ", where(), ", found ", v.size());
  return v[0];
}

int64_t Group::int_attribute(const std::string& name) const {
  const Serial serial_call;
  const std::string ctx = concat("attribute '", name, "' of ", where());
  KILN_CHECK(has_attribute(name), "missing ", ctx);
  KILN_H5_OPEN(a, H5Aopen(h_.get(), name.c_str(), H5P_DEFAULT), H5Aclose, "opening ", ctx);
  KILN_H5_OPEN(type, H5Aget_type(a.get()), H5Tclose, "reading the type of ", ctx);
  KILN_H5_OPEN(space, H5Aget_space(a.get()), H5Sclose, "reading the dataspace of ", ctx);
  const TypeInfo ti = describe(type.get());
  KILN_CHECK(ti.cls == TypeInfo::integer && ti.size >= 1 && ti.size <= 8, "expected an integer of at most 64 bits in ",
             ctx, ", found ", ti.name());
  int64_t n = 0;
  extent(space.get(), n, ctx);
  KILN_CHECK(n == 1, "expected one integer in ", ctx, ", found ", n);
  int64_t v = 0;
  KILN_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &v), "reading ", ctx);
  return v;
}

void Group::set_string_attribute(const std::string& name, const std::string& value) {
  const Serial serial_call;
  const std::string ctx = concat("attribute '", name, "' of ", where());
  if (has_attribute(name)) KILN_H5_CHECK(H5Adelete(h_.get(), name.c_str()), "replacing ", ctx);
  KILN_H5_OPEN(type, H5Tcopy(H5T_C_S1), H5Tclose, "making a string type for ", ctx);
  KILN_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), "making a string type for ", ctx);
  KILN_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), "making a string type for ", ctx);
  KILN_H5_OPEN(space, H5Screate(H5S_SCALAR), H5Sclose, "making a scalar dataspace for ", ctx);
  KILN_H5_OPEN(a, H5Acreate2(h_.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
               "creating ", ctx);
  const char* p = value.c_str();
  KILN_H5_CHECK(H5Awrite(a.get(), type.get(), &p), "writing ", ctx);
}

void Group::set_string_list_attribute(const std::string& name, const std::vector<std::string>& values) {
  const Serial serial_call;
  const std::string ctx = concat("attribute '", name, "' of ", where());
  if (has_attribute(name)) KILN_H5_CHECK(H5Adelete(h_.get(), name.c_str()), "replacing ", ctx);
  size_t width = 1;
  for (const std::string& v : values) width = std::max(width, v.size());
  KILN_H5_OPEN(type, H5Tcopy(H5T_C_S1), H5Tclose, "making a string type for ", ctx);
  KILN_H5_CHECK(H5Tset_size(type.get(), width), "making a string type for ", ctx);
  KILN_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), "making a string type for ", ctx);
  const hsize_t n = values.size();
  KILN_H5_OPEN(space, H5Screate_simple(1, &n, nullptr), H5Sclose, "making the dataspace for ", ctx);
  KILN_H5_OPEN(a, H5Acreate2(h_.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
               "creating ", ctx);
  std::vector<char> buf(values.size() * width + 1, '\0');
  for (size_t i = 0; i < values.size(); ++i) std::memcpy(buf.data() + i * width, values[i].data(), values[i].size());
  KILN_H5_CHECK(H5Awrite(a.get(), type.get(), buf.data()), "writing ", ctx);
}

void Group::set_int_attribute(const std::string& name, int64_t value) {
  const Serial serial_call;
  const std::string ctx = concat("attribute '", name, "' of ", where());
  if (has_attribute(name)) KILN_H5_CHECK(H5Adelete(h_.get(), name.c_str()), "replacing ", ctx);
  KILN_H5_OPEN(space, H5Screate(H5S_SCALAR), H5Sclose, "making a scalar dataspace for ", ctx);
  KILN_H5_OPEN(a, H5Acreate2(h_.get(), name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
               H5Aclose, "creating ", ctx);
  KILN_H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), "writing ", ctx);
}

// ---- Dataset ----

Dataset::Dataset(Handle h, std::string file, std::string path) : h_(std::move(h)), file_(std::move(file)), path_(std::move(path)) {
  const Serial serial_call;
  const std::string ctx = concat("dataset '", path_, "' in file '", file_, "'");
  KILN_H5_OPEN(space, H5Dget_space(h_.get()), H5Sclose, "reading the dataspace of ", ctx);
  shape_ = extent(space.get(), numel_, ctx);
  KILN_H5_OPEN(type, H5Dget_type(h_.get()), H5Tclose, "reading the type of ", ctx);
  type_ = describe(type.get());
  standard_float_ = type_.cls == TypeInfo::floating && standard_float(type.get());
}

int64_t Dataset::numel() const { return numel_; }

void Dataset::check_storage() const {
  const Serial serial_call;
  const std::string ctx = concat("dataset '", path_, "' in file '", file_, "'");
  check_bytes(numel_, type_.size, kMaxDatasetBytes, ctx);
  KILN_H5_OPEN(dcpl, H5Dget_create_plist(h_.get()), H5Pclose, "reading the storage properties of ", ctx);
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  KILN_CHECK(layout == H5D_CONTIGUOUS || layout == H5D_COMPACT || layout == H5D_CHUNKED, ctx, " uses ",
             layout == H5D_VIRTUAL ? "virtual (VDS) storage, which maps other datasets and files"
                                   : "an unknown storage layout",
             "; kiln reads contiguous, compact or chunked datasets only");
  const int external = H5Pget_external_count(dcpl.get());
  KILN_H5_CHECK(external, "reading the external storage of ", ctx);
  KILN_CHECK(external == 0, ctx, " keeps its values in ", external,
             " external file(s) on disk; kiln reads only values stored inside the HDF5 file");
  const int nfilters = H5Pget_nfilters(dcpl.get());
  KILN_H5_CHECK(nfilters, "reading the filters of ", ctx);
  for (int i = 0; i < nfilters; ++i) {
    char name[64] = {0};
    unsigned flags = 0, config = 0;
    size_t nelem = 0;
    const H5Z_filter_t f =
        H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &nelem, nullptr, sizeof name, name, &config);
    KILN_H5_CHECK(f, "reading filter ", i, " of ", ctx);
    // What h5py/Keras write: gzip (deflate), optionally with shuffle and fletcher32.
    KILN_CHECK(f == H5Z_FILTER_DEFLATE || f == H5Z_FILTER_SHUFFLE || f == H5Z_FILTER_FLETCHER32, ctx,
               " is compressed with filter ", f, " ('", name,
               "'); kiln reads only deflate (gzip), shuffle and fletcher32 -- rewrite the file with h5py using "
               "compression='gzip' or none");
  }
  if (layout == H5D_CHUNKED) {
    hsize_t chunk[32];
    const int rank = H5Pget_chunk(dcpl.get(), 32, chunk);
    KILN_H5_CHECK(rank, "reading the chunk shape of ", ctx);
    int64_t chunk_count = 1;
    for (int i = 0; i < rank; ++i)
      KILN_CHECK(chunk[i] <= static_cast<hsize_t>(kMaxDatasetBytes) &&
                     !__builtin_mul_overflow(chunk_count, static_cast<int64_t>(chunk[i]), &chunk_count),
                 ctx, " declares a chunk too large to be real (corrupt file?)");
    check_bytes(chunk_count, type_.size, kMaxDatasetBytes, ctx + " (one chunk)");
  }
  if (layout == H5D_CONTIGUOUS && nfilters == 0) {
    // The values must lie inside the file; HDF5 would otherwise report a short read deep
    // in its driver (a truncated or doctored file).
    const haddr_t offset = H5Dget_offset(h_.get());
    if (offset == HADDR_UNDEF) {
      H5Eclear2(H5E_DEFAULT);
      return;  // never written: HDF5 returns the fill value
    }
    const hid_t file_id = H5Iget_file_id(h_.get());
    KILN_H5_CHECK(file_id, "finding the file of ", ctx);
    Handle file(file_id, H5Fclose);
    hsize_t file_size = 0;
    KILN_H5_CHECK(H5Fget_filesize(file.get(), &file_size), "reading the size of file '", file_, "'");
    const uint64_t bytes = static_cast<uint64_t>(numel_) * type_.size;  // <= kMaxDatasetBytes, checked above
    KILN_CHECK(offset <= file_size && bytes <= file_size - offset, ctx, " should hold ", bytes, " bytes at offset ",
               offset, " but the file is only ", file_size, " bytes long (truncated download?)");
  }
}

std::vector<float> Dataset::read_f32() const {
  const Serial serial_call;
  const std::string ctx = concat("dataset '", path_, "' in file '", file_, "'");
  KILN_CHECK(type_.cls == TypeInfo::floating, ctx, ": expected float32 values, found ", type_.name());
  KILN_CHECK(standard_float_, ctx, ": expected IEEE float16/32/64 values, found a ", type_.size * 8,
             "-bit float of another layout");
  check_storage();
  std::vector<float> v(static_cast<size_t>(numel_));
  if (!v.empty())
    KILN_H5_CHECK(H5Dread(h_.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), "reading ", ctx,
                  " (truncated file?)");
  return v;
}

// ---- Dataset attributes ----
// H5A* calls take any object, so a non-owning Group view of the dataset's identifier reuses
// the group's attribute code and checks (and names the dataset in its messages).

bool Dataset::has_attribute(const std::string& name) const {
  const Serial serial_call;
  return Group(Handle(h_.get(), nullptr), file_, path_).has_attribute(name);
}

int64_t Dataset::int_attribute(const std::string& name) const {
  const Serial serial_call;
  return Group(Handle(h_.get(), nullptr), file_, path_).int_attribute(name);
}

void Dataset::set_int_attribute(const std::string& name, int64_t value) {
  const Serial serial_call;
  Group(Handle(h_.get(), nullptr), file_, path_).set_int_attribute(name, value);
}

}  // namespace kiln::io::h5
