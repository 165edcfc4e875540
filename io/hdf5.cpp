// The HDF5 wrappers: every status checked, HDF5's own error printing silenced, and its
// innermost error description carried into the kiln::Error with the file and object.
#include "io/hdf5.h"

#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <type_traits>

#include "core/error.h"

static_assert(std::is_same_v<hid_t, kiln::h5::Id>, "kiln::h5::Id must be hid_t (HDF5 >= 1.10)");
static_assert(std::is_same_v<herr_t, int>, "kiln::h5::Handle's close functions return herr_t");

namespace kiln::h5 {
namespace {

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
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

}  // namespace
}  // namespace kiln::h5

using kiln::detail::concat;  // for the wrappers below

// Checks an HDF5 return value (negative = failure); the context says which file and object.
#define KILN_H5_CHECK(call, ...)                                                                  \
  do {                                                                                            \
    if ((call) < 0) ::kiln::h5::fail(#call, __FILE__, __LINE__, ::kiln::detail::concat(__VA_ARGS__)); \
  } while (0)

namespace kiln::h5 {
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

std::vector<int64_t> extent(hid_t space) {
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd <= 0) return {};
  std::vector<hsize_t> d(static_cast<size_t>(nd));
  H5Sget_simple_extent_dims(space, d.data(), nullptr);
  return std::vector<int64_t>(d.begin(), d.end());
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

void Handle::reset() {
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

// ---- File ----

File File::open_read(const std::string& path) {
  quiet();
  KILN_CHECK(std::filesystem::exists(path), "weights file '", path, "' does not exist");
  KILN_CHECK(!std::filesystem::is_directory(path), "'", path, "' is a directory, expected an HDF5 file");
  const htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0) {
    const std::string why = hdf5_error_text();
    KILN_FAIL("'", path, "' is not an HDF5 file (no HDF5 signature found", why.empty() ? "" : ": ", why, ")");
  }
  KILN_H5_OPEN(f, H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening HDF5 file '", path,
               "' (truncated or corrupt?)");
  return File(std::move(f), path);
}

File File::create(const std::string& path) {
  quiet();
  KILN_H5_OPEN(f, H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
               "creating HDF5 file '", path, "'");
  return File(std::move(f), path);
}

Group File::root() const {
  KILN_CHECK(h_.valid(), "HDF5 file '", path_, "' is closed");
  KILN_H5_OPEN(g, H5Gopen2(h_.get(), "/", H5P_DEFAULT), H5Gclose, "opening the root group of '", path_, "'");
  return Group(std::move(g), path_, "/");
}

void File::flush() {
  KILN_H5_CHECK(H5Fflush(h_.get(), H5F_SCOPE_GLOBAL), "flushing HDF5 file '", path_, "'");
}

void File::close() {
  if (!h_.valid()) return;
  KILN_H5_CHECK(H5Fclose(h_.release()), "closing HDF5 file '", path_, "'");
}

// ---- Group ----

std::string Group::where(const std::string& child) const {
  return concat("'", child.empty() ? path_ : join_path(path_, child), "' in file '", file_, "'");
}

bool Group::exists(const std::string& rel) const {
  // H5Lexists fails (rather than saying false) when an intermediate group is missing,
  // so test each prefix of the path in turn.
  size_t pos = 0;
  while (true) {
    const size_t slash = rel.find('/', pos);
    const std::string prefix = rel.substr(0, slash);
    const htri_t e = H5Lexists(h_.get(), prefix.c_str(), H5P_DEFAULT);
    if (e < 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (e == 0) return false;
    if (slash == std::string::npos) return true;
    if (!is_group(prefix)) return false;
    pos = slash + 1;
  }
}

bool Group::is_group(const std::string& rel) const {
  hid_t o = H5Oopen(h_.get(), rel.c_str(), H5P_DEFAULT);
  if (o < 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  const bool g = H5Iget_type(o) == H5I_GROUP;
  H5Oclose(o);
  return g;
}

bool Group::is_dataset(const std::string& rel) const {
  hid_t o = H5Oopen(h_.get(), rel.c_str(), H5P_DEFAULT);
  if (o < 0) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  const bool d = H5Iget_type(o) == H5I_DATASET;
  H5Oclose(o);
  return d;
}

std::vector<std::string> Group::children() const {
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  KILN_H5_CHECK(H5Literate(h_.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, cb, &names), "listing the members of ",
                where());
  return names;
}

Group Group::group(const std::string& rel) const {
  KILN_CHECK(exists(rel) && is_group(rel), "expected a group ", where(rel), ", found ",
             exists(rel) ? "a non-group object" : "nothing");
  KILN_H5_OPEN(g, H5Gopen2(h_.get(), rel.c_str(), H5P_DEFAULT), H5Gclose, "opening group ", where(rel));
  return Group(std::move(g), file_, join_path(path_, rel));
}

Dataset Group::dataset(const std::string& rel) const {
  KILN_CHECK(exists(rel) && is_dataset(rel), "expected a dataset ", where(rel), ", found ",
             exists(rel) ? "a non-dataset object" : "nothing");
  KILN_H5_OPEN(d, H5Dopen2(h_.get(), rel.c_str(), H5P_DEFAULT), H5Dclose, "opening dataset ", where(rel));
  return Dataset(std::move(d), file_, join_path(path_, rel));
}

Group Group::create_group(const std::string& rel) {
  if (exists(rel)) return group(rel);
  Handle lcpl = intermediate_lcpl();
  KILN_H5_OPEN(g, H5Gcreate2(h_.get(), rel.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
               "creating group ", where(rel));
  return Group(std::move(g), file_, join_path(path_, rel));
}

void Group::write_f32(const std::string& rel, const std::vector<int64_t>& shape, const float* data) {
  write_dataset(*this, rel, shape, H5T_NATIVE_FLOAT, data);
}

void Group::write_i32(const std::string& rel, const std::vector<int64_t>& shape, const int32_t* data) {
  write_dataset(*this, rel, shape, H5T_NATIVE_INT32, data);
}

bool Group::has_attribute(const std::string& name) const {
  const htri_t e = H5Aexists(h_.get(), name.c_str());
  KILN_H5_CHECK(e, "looking for attribute '", name, "' of ", where());
  return e > 0;
}

std::vector<std::string> Group::attribute_names() const {
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
  const std::string ctx = concat("attribute '", name, "' of ", where());
  KILN_CHECK(has_attribute(name), "missing ", ctx);
  KILN_H5_OPEN(a, H5Aopen(h_.get(), name.c_str(), H5P_DEFAULT), H5Aclose, "opening ", ctx);
  KILN_H5_OPEN(space, H5Aget_space(a.get()), H5Sclose, "reading the dataspace of ", ctx);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  KILN_H5_CHECK(n, "counting the elements of ", ctx);
  // Keras writes an empty name list as an empty float array: no elements means no names.
  if (n == 0) return {};
  KILN_H5_OPEN(type, H5Aget_type(a.get()), H5Tclose, "reading the type of ", ctx);
  const TypeInfo ti = describe(type.get());
  KILN_CHECK(ti.cls == TypeInfo::string, "expected strings in ", ctx, ", found ", ti.name());
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
  const std::vector<std::string> v = string_list_attribute(name);
  KILN_CHECK(v.size() == 1, "expected one string in attribute '", name, "' of ", where(), ", found ", v.size());
  return v[0];
}

int64_t Group::int_attribute(const std::string& name) const {
  const std::string ctx = concat("attribute '", name, "' of ", where());
  KILN_CHECK(has_attribute(name), "missing ", ctx);
  KILN_H5_OPEN(a, H5Aopen(h_.get(), name.c_str(), H5P_DEFAULT), H5Aclose, "opening ", ctx);
  KILN_H5_OPEN(type, H5Aget_type(a.get()), H5Tclose, "reading the type of ", ctx);
  KILN_H5_OPEN(space, H5Aget_space(a.get()), H5Sclose, "reading the dataspace of ", ctx);
  const TypeInfo ti = describe(type.get());
  KILN_CHECK(ti.cls == TypeInfo::integer, "expected an integer in ", ctx, ", found ", ti.name());
  KILN_CHECK(H5Sget_simple_extent_npoints(space.get()) == 1, "expected one integer in ", ctx);
  int64_t v = 0;
  KILN_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &v), "reading ", ctx);
  return v;
}

void Group::set_string_attribute(const std::string& name, const std::string& value) {
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
  const std::string ctx = concat("attribute '", name, "' of ", where());
  if (has_attribute(name)) KILN_H5_CHECK(H5Adelete(h_.get(), name.c_str()), "replacing ", ctx);
  KILN_H5_OPEN(space, H5Screate(H5S_SCALAR), H5Sclose, "making a scalar dataspace for ", ctx);
  KILN_H5_OPEN(a, H5Acreate2(h_.get(), name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT),
               H5Aclose, "creating ", ctx);
  KILN_H5_CHECK(H5Awrite(a.get(), H5T_NATIVE_INT64, &value), "writing ", ctx);
}

// ---- Dataset ----

Dataset::Dataset(Handle h, std::string file, std::string path) : h_(std::move(h)), file_(std::move(file)), path_(std::move(path)) {
  const std::string ctx = concat("dataset '", path_, "' in file '", file_, "'");
  KILN_H5_OPEN(space, H5Dget_space(h_.get()), H5Sclose, "reading the dataspace of ", ctx);
  shape_ = extent(space.get());
  KILN_H5_OPEN(type, H5Dget_type(h_.get()), H5Tclose, "reading the type of ", ctx);
  type_ = describe(type.get());
}

int64_t Dataset::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::vector<float> Dataset::read_f32() const {
  const std::string ctx = concat("dataset '", path_, "' in file '", file_, "'");
  KILN_CHECK(type_.cls == TypeInfo::floating, ctx, ": expected float32 values, found ", type_.name());
  std::vector<float> v(static_cast<size_t>(numel()));
  if (!v.empty())
    KILN_H5_CHECK(H5Dread(h_.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), "reading ", ctx,
                  " (truncated file?)");
  return v;
}

}  // namespace kiln::h5
