// The SGD update of one element, shared by both backends' multi-tensor launchers.
#pragma once

#include "core/op_params.h"
#include "core/hd.h"

namespace kiln::common {

// PyTorch's SGD: g += wd * w; v = momentum * v + g; step = nesterov ? g + momentum * v : v;
// w -= lr * step. kMomentum: o.momentum != 0, chosen once per tensor (a CPU loop with that
// branch inside does not vectorise); without momentum the buffer is not touched (v may be null).
template <bool kMomentum>
KILN_HD void sgd_update_element(float& w, float g, float* v, const SgdOptions& o) {
  g += o.weight_decay * w;
  float step = g;
  if constexpr (kMomentum) {
    const float vn = o.momentum * (*v) + g;
    *v = vn;
    step = o.nesterov ? g + o.momentum * vn : vn;
  }
  w -= o.lr * step;
}

}  // namespace kiln::common
