// cumsum's arithmetic, shared by the CPU and CUDA backends so both give the same bits: each line
// summed in order from its start (or, reverse, from its end: cumsum's gradient), float32 in a
// double accumulator and bfloat16 in a float one (torch's CPU cumsum, at::acc_type), every
// output rounded once from the running sum.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/hd.h"

namespace kiln::common {

// The running sum's type for a line of T: float's is double; the other, BFloat16 (core/dtype.h,
// which kernels/common does not include; made from a float, read as one), sums in float.
template <typename T>
using ScanAcc = std::conditional_t<std::is_same_v<T, float>, double, float>;

// y[k * stride] = the sum of x[j * stride] over j <= k (j >= k when reverse), k < n.
template <typename T>
KILN_HD void cumsum_line(const T* x, int64_t n, int64_t stride, bool reverse, T* y) {
  ScanAcc<T> acc = 0;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t k = (reverse ? n - 1 - s : s) * stride;
    acc += static_cast<float>(x[k]);
    y[k] = T(static_cast<float>(acc));
  }
}

}  // namespace kiln::common
