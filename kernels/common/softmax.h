// Row math for softmax, log-softmax and the fused softmax-cross-entropy. Numerically
// stable: every exponent is taken after subtracting the row maximum, so it is <= 0, and
// exp_nonpositive (kernels/common/exp.h) computes it in float; sums of exponentials accumulate in double.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hd.h"
#include "kernels/common/exp.h"

namespace kiln::common {

// Maximum of a row. A value replaces the maximum only if strictly greater, so a NaN in x[0]
// stays and later NaNs are ignored. Eight lanes (element i in lane i % 8), each started at
// x[0], then combined by the same rule: the value one pass gives (a zero's sign aside, which
// no x - m shows), as eight independent comparisons a vector max can run.
KILN_HD float row_max(const float* x, int64_t n) {
  float m[8] = {x[0], x[0], x[0], x[0], x[0], x[0], x[0], x[0]};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
  for (; i < n; ++i) m[i % 8] = x[i] > m[i % 8] ? x[i] : m[i % 8];
  float r = m[0];
  for (int k = 1; k < 8; ++k) r = m[k] > r ? m[k] : r;
  return r;
}

// sum(e^(x[i] - m)) over a row, in double: element i goes into partial sum i % 8 and the
// eight are added pairwise at the end. A fixed order (independent of threads and vector
// width) with eight independent chains instead of one dependent one; the exponentials are
// taken a chunk at a time in a loop of their own, which vectorises. With `out`, they are
// also stored there (out may be x: each is written after its own element is read).
KILN_HD double row_sum_exp(const float* x, int64_t n, float m, float* out = nullptr) {
  constexpr int64_t kChunk = 256;  // a multiple of 8: chunk offsets keep i % 8
  float buf[kChunk];
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t len = n - i0 < kChunk ? n - i0 : kChunk;
    float* e = out ? out + i0 : buf;
    for (int64_t j = 0; j < len; ++j) e[j] = exp_nonpositive(x[i0 + j] - m);
    int64_t j = 0;
    for (; j + 8 <= len; j += 8)
      for (int k = 0; k < 8; ++k) s[k] += static_cast<double>(e[j + k]);
    for (; j < len; ++j) s[j % 8] += static_cast<double>(e[j]);
  }
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// y = softmax(x) or log_softmax(x) for one row (y may be x).
KILN_HD void softmax_row(const float* x, int64_t n, bool log_out, float* y) {
  const float m = row_max(x, n);
  if (log_out) {
    const double lse = ::log(row_sum_exp(x, n, m));
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<double>(x[i] - m) - lse);
  } else {
    const float inv = static_cast<float>(1.0 / row_sum_exp(x, n, m, y));  // y holds the exps
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// dx for one row given the output y and dy.
// softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy) (y <= 0).
KILN_HD void softmax_backward_row(const float* y, const float* dy, int64_t n, bool log_out, float* dx) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += log_out ? static_cast<double>(dy[i]) : static_cast<double>(dy[i]) * y[i];
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = log_out ? static_cast<float>(dy[i] - static_cast<double>(exp_nonpositive(y[i])) * s)
                    : static_cast<float>(y[i] * (dy[i] - s));
  }
}

// -log softmax(x)[label] for one row.
KILN_HD double cross_entropy_row(const float* x, int64_t n, int64_t label) {
  const float m = row_max(x, n);
  return ::log(row_sum_exp(x, n, m)) - static_cast<double>(x[label] - m);
}

// dx = (softmax(x) - onehot(label)) * scale for one row (dx not x): the exps are kept in dx
// by the sum's pass, then scaled in one more.
KILN_HD void cross_entropy_backward_row(const float* x, int64_t n, int64_t label, float scale, float* dx) {
  const float m = row_max(x, n);
  const float inv = static_cast<float>(1.0 / row_sum_exp(x, n, m, dx));  // dx holds the exps
  for (int64_t i = 0; i < n; ++i) dx[i] = (dx[i] * inv - (i == label ? 1.0f : 0.0f)) * scale;
}

}  // namespace kiln::common
