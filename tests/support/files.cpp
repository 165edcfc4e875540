// See files.h.
#include "tests/support/files.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

namespace kiln::test {

void overwrite_first_float(const std::string& path, const Tensor& t, float value) {
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::vector<float> v = t.to_vector<float>();
  REQUIRE(v.size() >= 4);
  const std::string head(reinterpret_cast<const char*>(v.data()), 16);
  const size_t at = bytes.find(head);
  REQUIRE(at != std::string::npos);
  REQUIRE(bytes.find(head, at + 1) == std::string::npos);
  std::memcpy(&bytes[at], &value, sizeof value);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace kiln::test
