// Element types a tensor can hold. Compute ops run in float32 (fp32 master weights);
// bfloat16 is a storage format with conversions and the dtype of the ops core/ops.h lists
// for it (forward and backward, fp32 accumulation); integers hold labels, indices, pixels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/hd.h"

namespace kiln {

// The element type of a tensor.
enum class DType : uint8_t { f32, bf16, i32, i64, u8 };
// Every DType, in the enum's order (for loops over them and name lookups).
inline constexpr DType kDTypes[] = {DType::f32, DType::bf16, DType::i32, DType::i64, DType::u8};

// Bytes per element.
constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

// Short name used in error messages and printouts ("float32", "bfloat16", ...).
const char* dtype_name(DType t);

// True for float32 and bfloat16.
constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::bf16; }

// bfloat16 as 16 raw bits; conversion rounds to nearest even and keeps NaN a NaN.
struct BFloat16 {
  uint16_t bits = 0;

  KILN_HD BFloat16() = default;
  KILN_HD explicit BFloat16(float f) : bits(from_float(f)) {}
  KILN_HD explicit operator float() const { return to_float(bits); }

  // float32 -> bfloat16 bits, round to nearest even.
  // Branch-free (a select, not a jump), so loops over arrays of them vectorise.
  KILN_HD static uint16_t from_float(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x0040u;
    return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
  // bfloat16 bits -> float32 (exact).
  KILN_HD static float to_float(uint16_t b) {
    uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
};

// Maps a C++ type to its DType, for typed element access.
template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };

}  // namespace kiln
