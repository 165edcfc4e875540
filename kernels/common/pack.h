// Sixteen bytes of T (8 bfloat16, 4 float) loaded and stored whole: the unit the GPU's
// memory-bound kernels move per thread where a tensor's size and alignment allow. One
// element per thread (2 bytes for bf16) left a kernel on 64-bit index arithmetic and narrow
// accesses, far below the memory's rate (docs/performance.md, 2026-12-04, session 17).
// Host code runs the same functions in the CPU tests.
#pragma once

#include <cstdint>

#include "core/hd.h"

namespace kiln::common {

template <typename T>
struct alignas(16) Pack16 {
  static constexpr int64_t n = static_cast<int64_t>(16 / sizeof(T));  // elements in one pack
  T v[n];
};

// Whether `count` elements of T at `data` are whole packs, the first 16-byte aligned.
template <typename T>
KILN_HD bool whole_packs(int64_t count, const void* data) {
  return count % Pack16<T>::n == 0 && reinterpret_cast<uintptr_t>(data) % 16 == 0;
}

// Pack i of `data` (which whole_packs admitted).
template <typename T>
KILN_HD Pack16<T> load_pack(const T* data, int64_t i) {
  return *reinterpret_cast<const Pack16<T>*>(data + i * Pack16<T>::n);
}
template <typename T>
KILN_HD void store_pack(T* data, int64_t i, const Pack16<T>& p) {
  *reinterpret_cast<Pack16<T>*>(data + i * Pack16<T>::n) = p;
}

}  // namespace kiln::common
