// Element conversions between kiln's dtypes, shared by the CPU and CUDA backends so that a
// copy to another dtype gives the same bits on both. C++ leaves a float out of an integer's
// range (and NaN) undefined, so the result is spelled out: truncation toward zero, and out of
// range INT32_MIN / INT64_MIN, uint8 taking the low byte of that int32 (what x86's cvttsd2si
// and a byte store gave before this was written down; the GPU would saturate). Integer to
// integer wraps modulo 2^bits, C++20's rule and PyTorch's result; it no longer goes through a
// double, which rounded int64 values above 2^53 first.
#pragma once

#include <cstdint>
#include <type_traits>

#include "core/hd.h"

namespace kiln::common {

// T is one of kiln's element types; the one that is not arithmetic is BFloat16 (core/dtype.h,
// which kernels/common does not include): made from a float, read as one.

// v (a double holding a value of any kiln dtype) as T.
template <typename T>
KILN_HD T from_double(double v) {
  if constexpr (!std::is_arithmetic_v<T>) {
    return T(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(v);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return (v >= -9223372036854775808.0 && v < 9223372036854775808.0) ? static_cast<int64_t>(v) : INT64_MIN;
  } else {
    const int32_t i = (v > -2147483649.0 && v < 2147483648.0) ? static_cast<int32_t>(v) : INT32_MIN;
    return static_cast<T>(i);
  }
}

// v as a double (bfloat16 through float; exact for every kiln dtype but int64 beyond 2^53).
template <typename T>
KILN_HD double to_double(T v) {
  if constexpr (!std::is_arithmetic_v<T>) return static_cast<double>(static_cast<float>(v));
  else return static_cast<double>(v);
}

// s converted to D.
template <typename S, typename D>
KILN_HD D convert(S s) {
  if constexpr (std::is_integral_v<S> && std::is_integral_v<D>) return static_cast<D>(s);
  else if constexpr (std::is_integral_v<S> && std::is_same_v<D, float>) return static_cast<float>(s);
  else return from_double<D>(to_double(s));
}

}  // namespace kiln::common
