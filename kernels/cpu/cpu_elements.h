// Element access for the CPU loops over float and bfloat16 arrays. A bfloat16 goes through
// its raw bits: a BFloat16 struct copied per element kept GCC from vectorising (the bf16 relu
// ran 25x slower than fp32's, branching on every element).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/hd.h"  // KILN_CPU_CLONES: these loops compiled once per ISA

namespace kiln::cpu {

// The storage type a loop reads and writes: float, or bfloat16's 16 bits.
template <typename T> struct Raw { using type = float; };
template <> struct Raw<BFloat16> { using type = uint16_t; };
template <typename T> using raw_t = typename Raw<T>::type;

// The array as its storage type.
template <typename T> const raw_t<T>* raw(const T* p) { return reinterpret_cast<const raw_t<T>*>(p); }
template <typename T> raw_t<T>* raw(T* p) { return reinterpret_cast<raw_t<T>*>(p); }

// A stored value in fp32 (exact), and fp32 rounded to the storage type (once).
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t b) { return BFloat16::to_float(b); }
template <typename R> R from_f32(float v);
template <> inline float from_f32<float>(float v) { return v; }
template <> inline uint16_t from_f32<uint16_t>(float v) { return BFloat16::from_float(v); }

}  // namespace kiln::cpu
