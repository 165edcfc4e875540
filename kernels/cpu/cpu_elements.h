// Element access for the CPU loops over float and bfloat16 arrays. A bfloat16 goes through
// its raw bits: a BFloat16 struct copied per element kept GCC from vectorising (the bf16 relu
// ran 25x slower than fp32's, branching on every element).
#pragma once

#include <cstdint>

#include "core/dtype.h"

// kiln's own hot loops (elementwise, batch norm, pooling, casts, optimizer updates) are
// compiled three times -- AVX-512 (x86-64-v4), AVX2 with FMA (x86-64-v3) and the x86-64
// baseline -- and the dynamic loader picks the best this CPU runs (GCC's target_clones, an
// ifunc), so a portable build vectorises as -march=native would: bf16 rounding in SSE2 has
// no blend and took the ResNet-50 bf16 step 26% longer (docs/performance.md, 2026-12-03).
// Every clone computes the same bits: -ffp-contract=off forbids FMA the source did not
// write, and GCC reorders no float reduction without -ffast-math. Off (one baseline copy)
// under KILN_NATIVE, sanitizers, fuzzing, and compilers other than GCC 12+ with glibc (ifunc)
// on x86-64 (GCC 11 has no dispatcher for arch= clones).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__GLIBC__) && \
    !defined(KILN_NO_CPU_CLONES)
#define KILN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KILN_CPU_CLONES
#endif

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
