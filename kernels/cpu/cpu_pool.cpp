// Max pooling on the CPU, NHWC: the channel loop is innermost and contiguous, so it
// vectorises. Own code rather than oneDNN so both backends share one tie rule
// (kernels/common/pool.h) and backward routes to the first maximum exactly as PyTorch.
// bfloat16 compares the values as floats and stores them back exactly; its backward sums
// in fp32.
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/common/pool.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

namespace kiln::cpu {

namespace {

// T is float or BFloat16; the comparisons run in float, the values move as stored (bits).
template <typename T>
KILN_CPU_CLONES
void max_pool2d_loop(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = y.dim(1), ow = y.dim(2);
  const auto* px = raw(x.data<T>());
  auto* py = raw(y.data<T>());
  int32_t* pi = argmax.defined() ? argmax.data<int32_t>() : nullptr;
  const auto lowest = from_f32<raw_t<T>>(-std::numeric_limits<float>::infinity());
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t i = 0; i < oh; ++i) {
      const common::WindowRange rh = common::pool_window(i, p.stride_h, p.pad_h, p.kernel_h, h);
      for (int64_t j = 0; j < ow; ++j) {
        const common::WindowRange rw = common::pool_window(j, p.stride_w, p.pad_w, p.kernel_w, w);
        auto* out = py + ((b * oh + i) * ow + j) * c;
        int32_t* idx = pi ? pi + ((b * oh + i) * ow + j) * c : nullptr;
        for (int64_t k = 0; k < c; ++k) out[k] = lowest;
        if (idx)
          for (int64_t k = 0; k < c; ++k) idx[k] = static_cast<int32_t>(rh.begin * w + rw.begin);
        for (int64_t hh = rh.begin; hh < rh.end; ++hh) {
          for (int64_t ww = rw.begin; ww < rw.end; ++ww) {
            const auto* in = px + ((b * h + hh) * w + ww) * c;
            const int32_t pos = static_cast<int32_t>(hh * w + ww);
            if (idx) {
              for (int64_t k = 0; k < c; ++k) {
                const bool take = common::pool_takes(to_f32(in[k]), to_f32(out[k]));
                out[k] = take ? in[k] : out[k];
                idx[k] = take ? pos : idx[k];
              }
            } else {
              for (int64_t k = 0; k < c; ++k) out[k] = common::pool_takes(to_f32(in[k]), to_f32(out[k])) ? in[k] : out[k];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void CpuBackend::max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  if (x.dtype() == DType::bf16) return max_pool2d_loop<BFloat16>(x, p, y, argmax);
  max_pool2d_loop<float>(x, p, y, argmax);
}

namespace {

// One image per thread: overlapping windows of one image never race across threads. A
// bf16 gradient sums into an fp32 image and rounds once per element.
template <typename T>
KILN_CPU_CLONES
void max_pool2d_backward_loop(const Tensor& dy, const Tensor& argmax, Tensor& dx) {
  const int64_t n = dx.dim(0), hw = dx.dim(1) * dx.dim(2), c = dx.dim(3);
  const int64_t ohw = dy.dim(1) * dy.dim(2);
  const T* pdy = dy.data<T>();
  const int32_t* pi = argmax.data<int32_t>();
  T* pdx = dx.data<T>();
#pragma omp parallel
  {
    std::vector<float> acc(std::is_same_v<T, float> ? 0 : static_cast<size_t>(hw * c));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < n; ++b) {
      float* img = acc.data();
      if constexpr (std::is_same_v<T, float>) img = pdx + b * hw * c;
      for (int64_t i = 0; i < hw * c; ++i) img[i] = 0.0f;
      for (int64_t o = 0; o < ohw; ++o) {
        const T* g = pdy + (b * ohw + o) * c;
        const int32_t* idx = pi + (b * ohw + o) * c;
        for (int64_t k = 0; k < c; ++k) img[idx[k] * c + k] += static_cast<float>(g[k]);
      }
      if constexpr (!std::is_same_v<T, float>)
        for (int64_t i = 0; i < hw * c; ++i) pdx[b * hw * c + i] = T(img[i]);
    }
  }
}

// Adaptive average pooling, a row of C channels at a time: the window bounds and the area's
// reciprocal once per output position, then vectorised loops over the channels. Each
// channel still adds the same terms in the same order as kernels/common/pool.h's
// adaptive_avg_at and adaptive_avg_grad_at (which the GPU runs per element), so the bits are
// the same; per element, the integer divisions of the windows kept the loops scalar (the
// global pool's backward at [8, 7, 7, 512] took 0.77 ms, 1% of the memory roof).
template <typename T>
KILN_CPU_CLONES
void adaptive_avg_forward_loop(const Tensor& x, Tensor& y) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  const int64_t oh = y.dim(1), ow = y.dim(2);
  const T* px = x.data<T>();
  T* py = y.data<T>();
#pragma omp parallel for collapse(2) schedule(static) if (parallel : n * oh * ow * c > 16384)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i) {
      std::vector<float> sum(static_cast<size_t>(c));
      for (int64_t j = 0; j < ow; ++j) {
        const common::WindowRange rh = common::adaptive_window(i, oh, h), rw = common::adaptive_window(j, ow, w);
        std::fill(sum.begin(), sum.end(), 0.0f);
        float* acc = sum.data();
        for (int64_t hh = rh.begin; hh < rh.end; ++hh)
          for (int64_t ww = rw.begin; ww < rw.end; ++ww) {
            const T* in = px + ((b * h + hh) * w + ww) * c;
#pragma omp simd
            for (int64_t k = 0; k < c; ++k) acc[k] += static_cast<float>(in[k]);
          }
        const float inv = 1.0f / static_cast<float>((rh.end - rh.begin) * (rw.end - rw.begin));
        T* out = py + ((b * oh + i) * ow + j) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) out[k] = T(acc[k] * inv);
      }
    }
}

template <typename T>
KILN_CPU_CLONES
void adaptive_avg_backward_loop(const Tensor& dy, Tensor& dx) {
  const int64_t n = dx.dim(0), h = dx.dim(1), w = dx.dim(2), c = dx.dim(3);
  const int64_t oh = dy.dim(1), ow = dy.dim(2);
  const T* pdy = dy.data<T>();
  T* pdx = dx.data<T>();
#pragma omp parallel for collapse(2) schedule(static) if (parallel : n * h * w * c > 16384)
  for (int64_t b = 0; b < n; ++b)
    for (int64_t hh = 0; hh < h; ++hh) {
      std::vector<float> sum(static_cast<size_t>(c));
      for (int64_t ww = 0; ww < w; ++ww) {
        const common::WindowRange ci = common::adaptive_covering(hh, oh, h), cj = common::adaptive_covering(ww, ow, w);
        std::fill(sum.begin(), sum.end(), 0.0f);
        float* acc = sum.data();
        for (int64_t i = ci.begin; i < ci.end; ++i) {
          const common::WindowRange rh = common::adaptive_window(i, oh, h);
          for (int64_t j = cj.begin; j < cj.end; ++j) {
            const common::WindowRange rw = common::adaptive_window(j, ow, w);
            const float inv = 1.0f / static_cast<float>((rh.end - rh.begin) * (rw.end - rw.begin));
            const T* g = pdy + ((b * oh + i) * ow + j) * c;
#pragma omp simd
            for (int64_t k = 0; k < c; ++k) acc[k] += static_cast<float>(g[k]) * inv;
          }
        }
        T* out = pdx + ((b * h + hh) * w + ww) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) out[k] = T(acc[k]);
      }
    }
}

}  // namespace

// A scatter in output order; p is not needed (one image per thread never races).
void CpuBackend::max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams&, Tensor& dx) {
  if (dy.dtype() == DType::bf16) return max_pool2d_backward_loop<BFloat16>(dy, argmax, dx);
  max_pool2d_backward_loop<float>(dy, argmax, dx);
}

// bf16: the window sums run in fp32 (kernels/common/pool.h) and round once.
void CpuBackend::adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::bf16) return adaptive_avg_forward_loop<BFloat16>(x, y);
  adaptive_avg_forward_loop<float>(x, y);
}

void CpuBackend::adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) {
  if (dy.dtype() == DType::bf16) return adaptive_avg_backward_loop<BFloat16>(dy, dx);
  adaptive_avg_backward_loop<float>(dy, dx);
}

}  // namespace kiln::cpu
