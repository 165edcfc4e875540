// Max-pooling window rules shared by both backends: which input rows/columns a window
// covers, and the tie rule (the first maximum in row-major window order wins, as PyTorch).
#pragma once

#include <cstdint>

#include "core/hd.h"
#include "core/op_params.h"

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

// Whether neighbouring max-pool windows share inputs (stride below kernel on an axis): then
// an input's gradient is a sum over several windows rather than one routed value.
KILN_HD bool pool_windows_overlap(const Pool2dParams& p) { return p.stride_h < p.kernel_h || p.stride_w < p.kernel_w; }

// The outputs whose max-pool windows cover input i along one axis: o with
// o * stride - pad <= i < o * stride - pad + kernel, within [0, out).
KILN_HD WindowRange pool_covering(int64_t i, int64_t stride, int64_t pad, int64_t kernel, int64_t out) {
  const int64_t lo = i + pad - kernel + 1;  // o * stride >= lo
  int64_t b = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  int64_t e = (i + pad) / stride + 1;       // o * stride <= i + pad
  if (e > out) e = out;
  if (b > e) b = e;
  return WindowRange{b, e};
}

// Max pooling's gradient at input (hh, ww) of one channel, gathered: the sum of dy over
// the covering windows whose argmax is this input, in increasing output order, which is
// the order the CPU backend's scatter adds them (so the bits agree, and no atomics are
// needed when windows overlap). `grad` and `arg` point at the channel's first value of dy
// and argmax in one image, `c` is the channel stride.
template <typename T>
KILN_HD float max_pool_grad_at(const T* grad, const int32_t* arg, int64_t hh, int64_t ww, int64_t w, int64_t c,
                               int64_t oh, int64_t ow, const Pool2dParams& p) {
  const WindowRange ci = pool_covering(hh, p.stride_h, p.pad_h, p.kernel_h, oh);
  const WindowRange cj = pool_covering(ww, p.stride_w, p.pad_w, p.kernel_w, ow);
  const int64_t here = hh * w + ww;
  float sum = 0.0f;
  for (int64_t i = ci.begin; i < ci.end; ++i)
    for (int64_t j = cj.begin; j < cj.end; ++j) {
      const int64_t o = (i * ow + j) * c;
      if (arg[o] == here) sum += static_cast<float>(grad[o]);
    }
  return sum;
}

// Tie rule: a candidate replaces the running maximum only if strictly greater (NaN wins,
// so NaNs propagate as in PyTorch).
KILN_HD bool pool_takes(float candidate, float current) { return candidate > current || candidate != candidate; }

}  // namespace kiln::common
