// Max-pooling window rules shared by both backends: which input rows/columns a window
// covers, and the tie rule (the first maximum in row-major window order wins, as PyTorch).
#pragma once

#include <cstdint>

#include "core/hd.h"

namespace kiln::common {

// Input range [begin, end) covered by output position o along one axis, clipped to [0, in).
struct WindowRange {
  int64_t begin, end;
};
KILN_HD WindowRange pool_window(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t in) {
  int64_t b = o * stride - pad;
  int64_t e = b + kernel;
  if (b < 0) b = 0;
  if (e > in) e = in;
  return WindowRange{b, e};
}

// Adaptive pooling (torch.nn.AdaptiveAvgPool2d's windows): output o of `out` covers input
// [floor(o * in / out), ceil((o + 1) * in / out)). When out > in, windows repeat inputs.
KILN_HD WindowRange adaptive_window(int64_t o, int64_t out, int64_t in) {
  return WindowRange{(o * in) / out, ((o + 1) * in + out - 1) / out};
}
// The outputs whose adaptive windows cover input i: [floor(i * out / in),
// ceil((i + 1) * out / in)). Backward gathers over them, so no atomics are needed.
KILN_HD WindowRange adaptive_covering(int64_t i, int64_t out, int64_t in) {
  return WindowRange{(i * out) / in, ((i + 1) * out + in - 1) / in};
}

// Tie rule: a candidate replaces the running maximum only if strictly greater (NaN wins,
// so NaNs propagate as in PyTorch).
KILN_HD bool pool_takes(float candidate, float current) { return candidate > current || candidate != candidate; }

}  // namespace kiln::common
