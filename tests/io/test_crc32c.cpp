// CRC32C (io/crc32c.h): known answers for both implementations, the SSE4.2 path equal to
// the byte table on every length and alignment around its block boundaries, streaming
// (crc32c_extend), and a hidden speed check ("[.crc32c_speed]") on a VGG16-sized buffer.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "io/crc32c.h"

using namespace kiln::io;
namespace cd = kiln::io::crc32c_detail;

namespace {

// Deterministic pseudo-random bytes (splitmix64), no dependence on kiln's generators.
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t s = seed;
  for (size_t i = 0; i < n; ++i) {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    v[i] = static_cast<uint8_t>(z ^ (z >> 31));
  }
  return v;
}

}  // namespace

TEST_CASE("crc32c: known answers from both implementations", "[crc32c]") {
  struct Vector {
    std::string data;
    uint32_t crc;
  };
  std::string inc(32, '\0'), dec(32, '\0');
  for (int i = 0; i < 32; ++i) {
    inc[static_cast<size_t>(i)] = static_cast<char>(i);
    dec[static_cast<size_t>(i)] = static_cast<char>(31 - i);
  }
  const std::vector<Vector> known = {
      {"", 0x00000000u},
      {"123456789", 0xE3069283u},
      {"a", 0xC1D04330u},
      // RFC 3720 (iSCSI) appendix B.4.
      {std::string(32, '\0'), 0x8A9136AAu},
      {std::string(32, '\xff'), 0x62A8AB43u},
      {inc, 0x46DD794Eu},
      {dec, 0x113FDB5Cu},
  };
  for (const Vector& k : known) {
    INFO("length " << k.data.size());
    CHECK(crc32c(k.data.data(), k.data.size()) == k.crc);
    CHECK(cd::extend_table(0, k.data.data(), k.data.size()) == k.crc);
    if (cd::hardware_available()) CHECK(cd::extend_hardware(0, k.data.data(), k.data.size()) == k.crc);
  }
  // Streaming: any split point gives the whole buffer's CRC.
  const std::string s = "123456789";
  for (size_t cut = 0; cut <= s.size(); ++cut)
    CHECK(crc32c_extend(crc32c(s.data(), cut), s.data() + cut, s.size() - cut) == 0xE3069283u);
}

TEST_CASE("crc32c: the SSE4.2 path equals the byte table on all lengths and alignments", "[crc32c]") {
  if (!cd::hardware_available()) {
    WARN("this CPU has no SSE4.2: crc32c uses the byte table alone, nothing to compare");
    return;
  }
  // Long enough for the 3 x 8192-byte blocks, then the 3 x 256-byte ones, then the tail.
  const std::vector<uint8_t> buf = random_bytes(3 * 8192 * 3 + 3 * 256 * 2 + 64, 42);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 80; ++n) lengths.push_back(n);
  for (size_t edge : {size_t{3 * 256}, size_t{3 * 8192}, size_t{2 * 3 * 8192}})
    for (size_t d = 0; d < 20; ++d) {
      lengths.push_back(edge + d);
      lengths.push_back(edge - d);
    }
  const std::vector<uint8_t> picks = random_bytes(64, 7);
  for (uint8_t r : picks) lengths.push_back(static_cast<size_t>(r) * 293 + r);  // up to ~75 KB
  size_t checked = 0;
  for (size_t off = 0; off < 16; ++off)
    for (size_t n : lengths) {
      if (off + n > buf.size()) continue;
      const uint32_t seed_crc = static_cast<uint32_t>(n * 2654435761u);  // a nonzero running CRC too
      const uint32_t table = cd::extend_table(seed_crc, buf.data() + off, n);
      const uint32_t hw = cd::extend_hardware(seed_crc, buf.data() + off, n);
      if (table != hw) FAIL("offset " << off << " length " << n << ": table " << table << ", hardware " << hw);
      ++checked;
    }
  CHECK(checked > 3000);
}

// Hidden: run with `kiln_tests "[.crc32c_speed]"` (528 MB, VGG16's float32 weights).
TEST_CASE("crc32c: speed on a 528 MB buffer", "[.crc32c_speed]") {
  const size_t n = size_t{528} << 20;
  std::vector<uint8_t> buf(n);
  for (size_t i = 0; i < n; i += 4096) buf[i] = static_cast<uint8_t>(i >> 12);  // touch every page
  auto time = [&](const char* what, uint32_t (*fn)(uint32_t, const void*, size_t)) {
    double best = 1e9;
    uint32_t crc = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      crc = fn(0, buf.data(), n);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("crc32c %-8s %zu MB: %.3f s, %.2f GB/s (crc %08x)\n", what, n >> 20, best, n / best / 1e9, crc);
    return crc;
  };
  const uint32_t t = time("table", cd::extend_table);
  if (cd::hardware_available()) CHECK(time("sse4.2", cd::extend_hardware) == t);
}
