#include "tests/support/npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kiln::test {

void write_npy(const std::string& path, const Tensor& t_in) {
  Tensor t = t_in.cpu();
  const char* descr = nullptr;
  switch (t.dtype()) {
    case DType::f32: descr = "<f4"; break;
    case DType::i64: descr = "<i8"; break;
    case DType::i32: descr = "<i4"; break;
    default: KILN_FAIL("write_npy: unsupported dtype ", dtype_name(t.dtype()));
  }
  std::ostringstream h;
  h << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (int64_t d = 0; d < t.rank(); ++d) h << t.dim(d) << (t.rank() == 1 || d + 1 < t.rank() ? ", " : "");
  h << "), }";
  std::string header = h.str();
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), "write_npy: cannot open ", path);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << header;
  f.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  KILN_CHECK(f.good(), "write_npy: write failed for ", path);
}

std::vector<double> read_npy(const std::string& path, std::vector<int64_t>* shape) {
  std::ifstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), "read_npy: cannot open ", path);
  char magic[8];
  f.read(magic, 8);
  KILN_CHECK(f.good() && std::memcmp(magic, "\x93NUMPY", 6) == 0, "read_npy: ", path, " is not a .npy file");
  uint32_t len = 0;
  if (magic[6] == 1) {
    uint16_t l16;
    f.read(reinterpret_cast<char*>(&l16), 2);
    len = l16;
  } else {
    f.read(reinterpret_cast<char*>(&len), 4);
  }
  std::string header(len, '\0');
  f.read(header.data(), len);
  auto field = [&](const std::string& key) {
    const size_t p = header.find("'" + key + "'");
    KILN_CHECK(p != std::string::npos, "read_npy: ", path, " header lacks ", key);
    return header.substr(p + key.size() + 2);
  };
  const std::string d = field("descr");
  const size_t q = d.find('\'');
  const std::string descr = d.substr(q + 1, 3);
  KILN_CHECK(field("fortran_order").find("False") < 3, "read_npy: ", path, " is Fortran-ordered");
  const std::string s = field("shape");
  std::vector<int64_t> dims;
  int64_t n = 1;
  for (size_t i = s.find('(') + 1; s[i] != ')'; ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(s[i]))) v = v * 10 + (s[i++] - '0');
      dims.push_back(v);
      n *= v;
      --i;
    }
  }
  if (shape) *shape = dims;
  std::vector<double> out(static_cast<size_t>(n));
  auto read_as = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> buf(out.size());
    f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(buf.size() * sizeof(T)));
    KILN_CHECK(f.good() || buf.empty(), "read_npy: ", path, " is truncated");
    for (size_t i = 0; i < buf.size(); ++i) out[i] = static_cast<double>(buf[i]);
  };
  if (descr == "<f4") read_as(float{});
  else if (descr == "<f8") read_as(double{});
  else if (descr == "<i8") read_as(int64_t{});
  else if (descr == "<i4") read_as(int32_t{});
  else KILN_FAIL("read_npy: ", path, " has unsupported dtype ", descr);
  return out;
}

}  // namespace kiln::test
