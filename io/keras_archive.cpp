// Reading model.weights.h5 out of a Keras 3 .keras archive with libzip, checking the
// archive's declarations (member, encryption, method, size, CRC) before trusting them.
#include "io/keras_archive.h"

#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>

#include "core/error.h"

namespace kiln::io {

using kiln::detail::concat;

namespace {

// Chunks the member is read in: memory grows with what libzip actually produces, never
// with what the archive declares.
constexpr size_t kReadChunk = size_t{1} << 20;

// A member name from the archive, printable: control and non-ASCII bytes as \xNN.
std::string printable(const char* s) {
  std::string out;
  for (const unsigned char* p = reinterpret_cast<const unsigned char*>(s); *p && out.size() < 200; ++p) {
    if (*p >= 0x20 && *p < 0x7f) {
      out += static_cast<char>(*p);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", *p);
      out += buf;
    }
  }
  return out;
}

// An open archive, discarded (never written back) when it goes out of scope; an open member.
struct DiscardArchive {
  void operator()(zip_t* za) const { zip_discard(za); }
};
struct CloseMember {
  void operator()(zip_file_t* zf) const { zip_fclose(zf); }
};
using Archive = std::unique_ptr<zip_t, DiscardArchive>;
using Member = std::unique_ptr<zip_file_t, CloseMember>;

// Opens the archive over `src` (taken over: freed here on failure, by the archive otherwise).
Archive open_archive(zip_source_t* src, const std::string& name) {
  zip_error_t err;
  zip_error_init(&err);
  // ZIP_CHECKCONS: libzip's stricter checks of the directory against the file.
  Archive a(zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &err));
  if (!a) {
    zip_source_free(src);
    const int code = zip_error_code_zip(&err);
    const std::string why = zip_error_strerror(&err);
    zip_error_fini(&err);
    // ZIP_CHECKCONS refuses two members of one name: which was meant would be a guess.
    KILN_CHECK(code != ZIP_ER_EXISTS, "'", name, "' is a zip archive holding two members of the same name (libzip: ",
               why, "); Keras writes each member once, and kiln will not guess which one was meant");
    KILN_FAIL("'", name, "' starts like a zip archive (a Keras 3 .keras file) but libzip cannot read it: ", why,
              " (truncated download or corrupt file?)");
  }
  zip_error_fini(&err);
  return a;
}

// The index of the model.weights.h5 entry (one at most: open_archive refused duplicates).
zip_uint64_t find_weights_member(zip_t* za, const std::string& name) {
  const zip_int64_t at = zip_name_locate(za, kKerasWeightsMember, ZIP_FL_ENC_RAW);
  if (at >= 0) return static_cast<zip_uint64_t>(at);
  // Not there: say what the archive holds instead (the first few names, made printable).
  const zip_int64_t n = zip_get_num_entries(za, 0);
  std::string others;
  for (zip_int64_t i = 0; i < std::min<zip_int64_t>(n, 4); ++i)
    if (const char* entry = zip_get_name(za, static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW))
      others += concat(others.empty() ? "" : ", ", "'", printable(entry), "'");
  KILN_FAIL("'", name, "' is a zip archive without ", kKerasWeightsMember, ": not a Keras 3 .keras file (it holds ",
            std::max<zip_int64_t>(n, 0), " member(s)", others.empty() ? "" : ": ", others, n > 4 ? ", ..." : "", ")");
}

// Checks what the directory declares about the member before anything is read; returns
// its uncompressed size.
uint64_t check_member(zip_t* za, zip_uint64_t index, const std::string& name, uint64_t max_bytes) {
  zip_stat_t st;
  zip_stat_init(&st);
  KILN_CHECK(zip_stat_index(za, index, 0, &st) == 0, "'", name, "': cannot read the zip entry of ",
             kKerasWeightsMember, ": ", zip_strerror(za));
  const zip_uint64_t need = ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
  KILN_CHECK((st.valid & need) == need, "'", name, "': the zip entry of ", kKerasWeightsMember,
             " lacks its size, compression or encryption fields (corrupt archive?)");
  const std::string member = concat("'", name, "': ", kKerasWeightsMember, " ");
  KILN_CHECK(st.encryption_method == ZIP_EM_NONE, member, "is encrypted (zip encryption method ",
             st.encryption_method, "); Keras never encrypts its archives, and kiln reads only unencrypted ones");
  KILN_CHECK(st.comp_method == ZIP_CM_STORE || st.comp_method == ZIP_CM_DEFLATE, member,
             "is compressed with zip method ", st.comp_method,
             "; kiln reads stored or deflate members (what Keras and Python's zipfile write)");
  KILN_CHECK(st.size <= max_bytes, member, "declares ", st.size, " bytes uncompressed, over kiln's limit of ",
             max_bytes, " bytes");
  KILN_CHECK(st.size > 0, member, "is empty");
  KILN_CHECK(st.comp_method != ZIP_CM_STORE || st.comp_size == st.size, member, "is stored uncompressed but declares ",
             st.comp_size, " bytes in the archive and ", st.size, " bytes of content (corrupt archive?)");
  return st.size;
}

// Reads exactly `size` bytes of the member; more or fewer than declared is an error.
std::vector<uint8_t> read_member(zip_t* za, zip_uint64_t index, uint64_t size, const std::string& name) {
  const Member m(zip_fopen_index(za, index, 0));
  KILN_CHECK(m != nullptr, "'", name, "': cannot open ", kKerasWeightsMember, " in the archive: ",
             zip_strerror(za));
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(std::min<uint64_t>(size, 64 * kReadChunk)));
  for (;;) {
    const size_t have = out.size();
    out.resize(have + kReadChunk);
    const zip_int64_t n = zip_fread(m.get(), out.data() + have, kReadChunk);
    if (n < 0) {
      KILN_FAIL("'", name, "': reading ", kKerasWeightsMember, " failed after ", have,
                " bytes: ", zip_file_strerror(m.get()), " (truncated download or corrupt file?)");
    }
    out.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
    KILN_CHECK(out.size() <= size, "'", name, "': ", kKerasWeightsMember, " holds more than the ", size,
               " bytes its zip entry declares (corrupt or crafted archive)");
  }
  KILN_CHECK(out.size() == size, "'", name, "': ", kKerasWeightsMember, " holds ", out.size(),
             " bytes, its zip entry declares ", size, " (truncated download or corrupt file?)");
  return out;
}

std::vector<uint8_t> read_from_source(zip_source_t* src, const std::string& name, uint64_t max_bytes) {
  const Archive a = open_archive(src, name);
  const zip_uint64_t index = find_weights_member(a.get(), name);
  const uint64_t size = check_member(a.get(), index, name, max_bytes);
  return read_member(a.get(), index, size, name);
}

// HDF5's signature lies at offset 0 or, after a user block, at 512, 1024, 2048, ...
bool has_hdf5_signature(const std::vector<uint8_t>& b) {
  static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  for (size_t off = 0; off + sizeof sig <= b.size(); off = off == 0 ? 512 : off * 2)
    if (std::memcmp(b.data() + off, sig, sizeof sig) == 0) return true;
  return false;
}

// The member's bytes as an HDF5 file image named `name` (open_image copies them).
h5::File open_member(const std::vector<uint8_t>& bytes, const std::string& name) {
  KILN_CHECK(has_hdf5_signature(bytes), "'", name, "' is a zip archive whose ", kKerasWeightsMember,
             " is not an HDF5 file (no HDF5 signature found): not a Keras 3 .keras file kiln can read");
  return h5::File::open_image(bytes.data(), bytes.size(), name);
}

}  // namespace

bool is_zip_signature(const void* data, size_t size) {
  if (data == nullptr || size < 4) return false;
  const auto* p = static_cast<const unsigned char*>(data);
  return p[0] == 'P' && p[1] == 'K' && ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6));
}

bool is_zip_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[4] = {};
  return in.read(head, sizeof head) && is_zip_signature(head, sizeof head);
}

std::vector<uint8_t> read_keras_weights(const std::string& path, uint64_t max_bytes) {
  zip_error_t err;
  zip_error_init(&err);
  zip_source_t* src = zip_source_file_create(path.c_str(), 0, -1, &err);  // -1: to the end
  if (!src) {
    const std::string why = zip_error_strerror(&err);
    zip_error_fini(&err);
    KILN_FAIL("cannot open the .keras archive '", path, "': ", why);
  }
  zip_error_fini(&err);
  return read_from_source(src, path, max_bytes);
}

std::vector<uint8_t> read_keras_weights(const void* data, size_t size, const std::string& name, uint64_t max_bytes) {
  KILN_CHECK(data != nullptr && size > 0, "'", name, "' is empty");
  zip_error_t err;
  zip_error_init(&err);
  // freep = 0: libzip borrows the caller's bytes for the life of the archive (this call).
  zip_source_t* src = zip_source_buffer_create(data, size, 0, &err);
  if (!src) {
    const std::string why = zip_error_strerror(&err);
    zip_error_fini(&err);
    KILN_FAIL("'", name, "': cannot hand the archive to libzip: ", why);
  }
  zip_error_fini(&err);
  return read_from_source(src, name, max_bytes);
}

h5::File open_keras_weights(const void* data, size_t size, const std::string& name, uint64_t max_bytes) {
  return open_member(read_keras_weights(data, size, name, max_bytes), name);
}

h5::File open_weights_file(const std::string& path) {
  if (!is_zip_file(path)) return h5::File::open_read(path);
  return open_member(read_keras_weights(path), path);
}

}  // namespace kiln::io
