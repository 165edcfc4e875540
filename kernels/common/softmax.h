// Row math for softmax, log-softmax and the fused softmax-cross-entropy. Numerically
// stable: every exponent is taken after subtracting the row maximum.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace kiln::common {

// Maximum of a row.
KILN_HD float row_max(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// log(sum(exp(x - m))) accumulated in double.
KILN_HD double row_log_sum_exp(const float* x, int64_t n, float m) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += exp(static_cast<double>(x[i] - m));
  return log(s);
}

// y = softmax(x) or log_softmax(x) for one row.
KILN_HD void softmax_row(const float* x, int64_t n, bool log_out, float* y) {
  const float m = row_max(x, n);
  const double lse = row_log_sum_exp(x, n, m);
  for (int64_t i = 0; i < n; ++i) {
    const double l = static_cast<double>(x[i] - m) - lse;
    y[i] = static_cast<float>(log_out ? l : exp(l));
  }
}

// dx for one row given the output y and dy.
// softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy).
KILN_HD void softmax_backward_row(const float* y, const float* dy, int64_t n, bool log_out, float* dx) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += log_out ? static_cast<double>(dy[i]) : static_cast<double>(dy[i]) * y[i];
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = log_out ? static_cast<float>(dy[i] - exp(static_cast<double>(y[i])) * s)
                    : static_cast<float>(y[i] * (dy[i] - s));
  }
}

// -log softmax(x)[label] for one row.
KILN_HD double cross_entropy_row(const float* x, int64_t n, int64_t label) {
  const float m = row_max(x, n);
  return row_log_sum_exp(x, n, m) - static_cast<double>(x[label] - m);
}

// dx = (softmax(x) - onehot(label)) * scale for one row, in one pass after the reductions.
KILN_HD void cross_entropy_backward_row(const float* x, int64_t n, int64_t label, float scale, float* dx) {
  const float m = row_max(x, n);
  const double lse = row_log_sum_exp(x, n, m);
  for (int64_t i = 0; i < n; ++i) {
    const double p = exp(static_cast<double>(x[i] - m) - lse);
    dx[i] = static_cast<float>((p - (i == label ? 1.0 : 0.0)) * scale);
  }
}

}  // namespace kiln::common
