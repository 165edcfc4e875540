// Max-pooling window rules shared by both backends: which input rows/columns a window
// covers, and the tie rule (the first maximum in row-major window order wins, as PyTorch).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"
#include "core/op_params.h"
#include "kernels/common/pack.h"

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
// stride. The GPU computes every element through this; the CPU adds the same terms in the
// same order a row of channels at a time (cpu_pool.cpp), so both give the same bits.
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
// cover it (a gather: no atomics). `grad` points at the channel's first value of dy. The
// CPU's row-wise loop follows this order too.
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

// ---- Channel packs (kernels/common/pack.h): 16 bytes of T per GPU thread ----
// One thread per output element spent its time on 64-bit index arithmetic, not on memory:
// on the H200 (2026-12-04) bf16 max-pool forward over VGG16's pool1 at batch 256 took
// 3.4 ms for 2 GB moved (0.6 TB/s of 4.8). A pack per thread does that arithmetic once per
// 8 channels and loads and stores 16 bytes at a time. The functions below are what the
// GPU kernels run for each pack; the CPU tests call them too, against the CPU backend's bits.
// An NHWC map is read by packs where its channel count is whole packs and its first pixel
// 16-byte aligned (whole_packs(c, data)): then every pixel's is.

// Where output element (or pack) i of an [N, OH, OW, groups] walk stands, channels fastest
// (groups: the channels, or the packs of them): its image, row, column and group, and the
// input window it pools over. Every max-pool kernel starts here.
struct PoolAt {
  int64_t b, r, j, k;
  WindowRange rh, rw;
};
KILN_HD PoolAt pool_at(int64_t i, int64_t groups, int64_t oh, int64_t ow, int64_t h, int64_t w,
                       const Pool2dParams& p) {
  PoolAt a;
  a.k = i % groups;
  int64_t rest = i / groups;
  a.j = rest % ow;
  rest /= ow;
  a.r = rest % oh;
  a.b = rest / oh;
  a.rh = pool_window(a.r, p.stride_h, p.pad_h, p.kernel_h, h);
  a.rw = pool_window(a.j, p.stride_w, p.pad_w, p.kernel_w, w);
  return a;
}

// Pack i of max pooling [N, H, W, C] -> [N, OH, OW, C] (packs numbered as the output's
// channels, so pack i is y[i * pack, (i + 1) * pack)): per channel the scalar path's window
// order, tie rule (pool_takes) and argmax; the winner stored as it was. argmax may be null.
template <typename T>
KILN_HD void max_pool_pack_at(const T* x, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                              const Pool2dParams& p, int64_t i, T* y, int32_t* argmax) {
  constexpr int64_t V = Pack16<T>::n;
  const PoolAt a = pool_at(i, c / V, oh, ow, h, w, p);
  const int64_t b = a.b, kv = a.k;
  const WindowRange rh = a.rh, rw = a.rw;
  float best[V];
  int32_t pos[V];
  Pack16<T> out;
  for (int64_t l = 0; l < V; ++l) {
    best[l] = -INFINITY;
    out.v[l] = T(-INFINITY);
    pos[l] = static_cast<int32_t>(rh.begin * w + rw.begin);
  }
  for (int64_t hh = rh.begin; hh < rh.end; ++hh)
    for (int64_t ww = rw.begin; ww < rw.end; ++ww) {
      const Pack16<T> in = *reinterpret_cast<const Pack16<T>*>(x + ((b * h + hh) * w + ww) * c + kv * V);
      for (int64_t l = 0; l < V; ++l) {
        const float f = static_cast<float>(in.v[l]);
        if (pool_takes(f, best[l])) {
          best[l] = f;
          out.v[l] = in.v[l];
          pos[l] = static_cast<int32_t>(hh * w + ww);
        }
      }
    }
  *reinterpret_cast<Pack16<T>*>(y + i * V) = out;
  if (argmax != nullptr)
    for (int64_t l = 0; l < V; ++l) argmax[i * V + l] = pos[l];
}

// Pack i of max pooling's backward where windows do not overlap: writes every input of
// output pack i's window, 0 + dy in fp32 (rounded once to T) at the argmax and 0 elsewhere,
// which is the CPU's scatter into a zeroed map, bit for bit. Inputs no window covers are
// the caller's to zero.
template <typename T>
KILN_HD void max_pool_route_pack_at(const T* dy, const int32_t* argmax, int64_t h, int64_t w, int64_t c, int64_t oh,
                                    int64_t ow, const Pool2dParams& p, int64_t i, T* dx) {
  constexpr int64_t V = Pack16<T>::n;
  const PoolAt a = pool_at(i, c / V, oh, ow, h, w, p);
  const int64_t b = a.b, kv = a.k;
  const WindowRange rh = a.rh, rw = a.rw;
  const Pack16<T> g = *reinterpret_cast<const Pack16<T>*>(dy + i * V);
  T routed[V];
  int32_t at[V];
  for (int64_t l = 0; l < V; ++l) {
    routed[l] = T(0.0f + static_cast<float>(g.v[l]));
    at[l] = argmax[i * V + l];
  }
  for (int64_t hh = rh.begin; hh < rh.end; ++hh)
    for (int64_t ww = rw.begin; ww < rw.end; ++ww) {
      const int32_t here = static_cast<int32_t>(hh * w + ww);
      Pack16<T> o;
      for (int64_t l = 0; l < V; ++l) o.v[l] = at[l] == here ? routed[l] : T(0.0f);
      *reinterpret_cast<Pack16<T>*>(dx + ((b * h + hh) * w + ww) * c + kv * V) = o;
    }
}

}  // namespace kiln::common
