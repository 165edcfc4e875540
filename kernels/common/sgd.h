// The SGD update of one element, shared by both backends' multi-tensor launchers.
#pragma once

#include "core/op_params.h"
#include "core/hd.h"

namespace kiln::common {

// PyTorch's SGD: g += wd * w; v = momentum * v + g; step = nesterov ? g + momentum * v : v;
// w -= lr * step. With momentum 0 the buffer is not touched (v may be null).
KILN_HD void sgd_update_element(float& w, float g, float* v, const SgdOptions& o) {
  g += o.weight_decay * w;
  float step = g;
  if (o.momentum != 0.0f) {
    const float vn = o.momentum * (*v) + g;
    *v = vn;
    step = o.nesterov ? g + o.momentum * vn : vn;
  }
  w -= o.lr * step;
}

}  // namespace kiln::common
