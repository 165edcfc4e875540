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

// Adaptive average pooling of one channel: output (i, j) of an oh x ow grid over an h x w
// map. `img` points at the channel's first value in one NHWC image, `c` is the channel
// stride. Both backends compute every element through this, so they sum in one order
// and give the same bits.
// T is float or bfloat16 (read as float: the sum is fp32 either way).
template <typename T>
KILN_HD float adaptive_avg_at(const T* img, int64_t i, int64_t j, int64_t h, int64_t w, int64_t c, int64_t oh,
                              int64_t ow) {
  const WindowRange rh = adaptive_window(i, oh, h), rw = adaptive_window(j, ow, w);
  float sum = 0.0f;
  for (int64_t hh = rh.begin; hh < rh.end; ++hh)
    for (int64_t ww = rw.begin; ww < rw.end; ++ww) sum += static_cast<float>(img[(hh * w + ww) * c]);
  return sum * (1.0f / static_cast<float>((rh.end - rh.begin) * (rw.end - rw.begin)));
}
// Its gradient at input (hh, ww) of one channel: dy / area summed over the windows that
// cover it (a gather: no atomics). `grad` points at the channel's first value of dy.
template <typename T>
KILN_HD float adaptive_avg_grad_at(const T* grad, int64_t hh, int64_t ww, int64_t h, int64_t w, int64_t c,
                                   int64_t oh, int64_t ow) {
  const WindowRange ci = adaptive_covering(hh, oh, h), cj = adaptive_covering(ww, ow, w);
  float sum = 0.0f;
  for (int64_t i = ci.begin; i < ci.end; ++i) {
    const WindowRange rh = adaptive_window(i, oh, h);
    for (int64_t j = cj.begin; j < cj.end; ++j) {
      const WindowRange rw = adaptive_window(j, ow, w);
      sum += static_cast<float>(grad[(i * ow + j) * c]) * (1.0f / static_cast<float>((rh.end - rh.begin) * (rw.end - rw.begin)));
    }
  }
  return sum;
}

// Tie rule: a candidate replaces the running maximum only if strictly greater (NaN wins,
// so NaNs propagate as in PyTorch).
KILN_HD bool pool_takes(float candidate, float current) { return candidate > current || candidate != candidate; }

}  // namespace kiln::common
