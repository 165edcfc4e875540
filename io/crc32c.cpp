// CRC32C: the SSE4.2 crc32 instruction over three interleaved streams (the instruction has
// a latency of three cycles and a throughput of one, so one stream would leave two thirds
// of it idle), the streams joined with precomputed "append N zero bytes" operators (Mark
// Adler's method, crc32c.c, zlib licence); a byte table where the instruction is missing.
#include "io/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define KILN_CRC32C_HW 1
#else
#define KILN_CRC32C_HW 0
#endif

namespace kiln::io {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_byte_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kByteTable = make_byte_table();

// A CRC register is a vector over GF(2); appending zero bits is a 32x32 matrix (one column
// per input bit) applied to it.
using Gf2Matrix = std::array<uint32_t, 32>;

constexpr uint32_t gf2_times(const Gf2Matrix& m, uint32_t v) {
  uint32_t sum = 0;
  for (int i = 0; v != 0; ++i, v >>= 1)
    if (v & 1) sum ^= m[static_cast<size_t>(i)];
  return sum;
}

constexpr Gf2Matrix gf2_square(const Gf2Matrix& m) {
  Gf2Matrix sq{};
  for (size_t n = 0; n < 32; ++n) sq[n] = gf2_times(m, m[n]);
  return sq;
}

// The operator that appends `len` zero bytes (a power of two) to a raw CRC register.
constexpr Gf2Matrix zeros_operator(size_t len) {
  Gf2Matrix op{};  // one zero bit: bit 0 shifts out and folds in the polynomial
  op[0] = kPoly;
  for (size_t n = 1; n < 32; ++n) op[n] = 1u << (n - 1);
  for (int i = 0; i < 3; ++i) op = gf2_square(op);  // 8 bits: one byte
  for (; len > 1; len >>= 1) op = gf2_square(op);
  return op;
}

// zeros_operator(len) tabulated per byte of the register: four lookups apply it.
struct ShiftTable {
  uint32_t t[4][256];
};

constexpr ShiftTable make_shift_table(size_t len) {
  const Gf2Matrix op = zeros_operator(len);
  ShiftTable s{};
  for (uint32_t n = 0; n < 256; ++n)
    for (int k = 0; k < 4; ++k) s.t[k][n] = gf2_times(op, n << (8 * k));
  return s;
}

inline uint32_t shift(const ShiftTable& s, uint32_t crc) {
  return s.t[0][crc & 0xFF] ^ s.t[1][(crc >> 8) & 0xFF] ^ s.t[2][(crc >> 16) & 0xFF] ^ s.t[3][crc >> 24];
}

#if KILN_CRC32C_HW

// Stream lengths: long blocks for bulk data, short ones for the tail of a buffer.
constexpr size_t kLong = 8192, kShort = 256;
static_assert((kLong & (kLong - 1)) == 0 && (kShort & (kShort - 1)) == 0, "zeros_operator needs powers of two");
constexpr ShiftTable kLongShift = make_shift_table(kLong);
constexpr ShiftTable kShortShift = make_shift_table(kShort);

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // unaligned-safe; compiles to one load
  return v;
}

// Consumes whole 3*len blocks from p: the register c0 continues over the first stream, the
// second and third start from zero and are joined by linearity: crc(a|b) = shift(crc(a), |b|) ^ crc0(b).
__attribute__((target("sse4.2"))) const uint8_t* interleaved(uint64_t& c0, const uint8_t* p, size_t& n, size_t len,
                                                              const ShiftTable& s) {
  while (n >= 3 * len) {
    uint64_t c1 = 0, c2 = 0;
    const uint8_t* end = p + len;
    do {
      c0 = _mm_crc32_u64(c0, load64(p));
      c1 = _mm_crc32_u64(c1, load64(p + len));
      c2 = _mm_crc32_u64(c2, load64(p + 2 * len));
      p += 8;
    } while (p < end);
    c0 = shift(s, static_cast<uint32_t>(c0)) ^ c1;
    c0 = shift(s, static_cast<uint32_t>(c0)) ^ c2;
    p += 2 * len;
    n -= 3 * len;
  }
  return p;
}

__attribute__((target("sse4.2"))) uint32_t hardware(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc ^ 0xFFFFFFFFu;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --n;
  }
  p = interleaved(c, p, n, kLong, kLongShift);
  p = interleaved(c, p, n, kShort, kShortShift);
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, load64(p));
  for (; n > 0; --n) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return static_cast<uint32_t>(c) ^ 0xFFFFFFFFu;
}

#endif  // KILN_CRC32C_HW

}  // namespace

namespace crc32c_detail {

bool hardware_available() {
#if KILN_CRC32C_HW
  static const bool yes = [] {
    __builtin_cpu_init();  // needed when called before the runtime's own constructors ran
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return yes;
#else
  return false;
#endif
}

uint32_t extend_hardware(uint32_t crc, const void* data, size_t n) {
#if KILN_CRC32C_HW
  return hardware(crc, static_cast<const uint8_t*>(data), n);
#else
  return extend_table(crc, data, n);  // not x86-64: there is no instruction to use
#endif
}

uint32_t extend_table(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = kByteTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

}  // namespace crc32c_detail

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
  return crc32c_detail::hardware_available() ? crc32c_detail::extend_hardware(crc, data, n)
                                             : crc32c_detail::extend_table(crc, data, n);
}

uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }

}  // namespace kiln::io
