// The Adam update of one element, shared by both backends' multi-tensor launchers.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/op_params.h"
#include "core/hd.h"

namespace kiln::common {

// The per-step scalars of the bias correction. PyTorch computes them in double on the host
// (Python floats); so do we, once per step, then round to float for the kernels.
struct AdamStepScalars {
  float step_size;             // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float shrink;                // 1 - lr * weight_decay: AdamW's factor on the weight
};

inline AdamStepScalars adam_step_scalars(const AdamOptions& o, int64_t step) {
  const double s = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), s);
  const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), s);
  const double lr = static_cast<double>(o.lr);
  return {static_cast<float>(lr / bc1), static_cast<float>(std::sqrt(bc2)),
          static_cast<float>(1.0 - lr * static_cast<double>(o.weight_decay))};
}

// PyTorch's Adam (torch.optim.Adam, amsgrad off), in its order of operations:
// g += wd * w (AdamW instead: w *= 1 - lr * wd, torch's param.mul_);
// m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;
// w -= step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
KILN_HD void adam_update_element(float& w, float g, float& m, float& v, const AdamOptions& o,
                                 const AdamStepScalars& s) {
  if (o.decoupled_weight_decay)
    w *= s.shrink;
  else
    g += o.weight_decay * w;
  m = o.beta1 * m + (1.0f - o.beta1) * g;
  v = o.beta2 * v + (1.0f - o.beta2) * g * g;
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + o.eps;
  w -= s.step_size * (m / denom);
}

}  // namespace kiln::common
