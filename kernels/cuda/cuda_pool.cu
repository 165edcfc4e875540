// Max pooling on the GPU, NHWC, with the CPU's window and tie rules (kernels/common/pool.h),
// so values and argmax agree with the CPU backend element for element, in float32 and in
// bfloat16; adaptive average pooling with the CPU's per-element math. bfloat16 reads and
// sums in fp32 and rounds each result once, as the CPU backend does.
#include <cmath>
#include <cstdint>

#include "kernels/common/pool.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per output element (n, oh, ow, c), channel fastest: neighbouring threads read
// neighbouring channels of the same input pixel, so every window load is coalesced.
// x: [N, H, W, C], y and argmax: [N, OH, OW, C]; argmax may be null. T is float or
// BFloat16: comparisons run in float and the winning element is stored as it was (exact).
template <typename T>
__global__ void max_pool_forward_kernel(const T* x, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                        Pool2dParams p, int64_t total, T* y, int32_t* argmax) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const common::PoolAt a = common::pool_at(i, c, oh, ow, h, w, p);
    const int64_t b = a.b, k = a.k;
    const common::WindowRange rh = a.rh, rw = a.rw;
    float best = -INFINITY;
    T best_t = T(best);
    int64_t best_pos = rh.begin * w + rw.begin;
    for (int64_t hh = rh.begin; hh < rh.end; ++hh) {
      const T* row = x + ((b * h + hh) * w) * c + k;
      for (int64_t ww = rw.begin; ww < rw.end; ++ww) {
        const T v = row[ww * c];
        if (common::pool_takes(static_cast<float>(v), best)) {
          best = static_cast<float>(v);
          best_t = v;
          best_pos = hh * w + ww;
        }
      }
    }
    y[i] = best_t;
    if (argmax) argmax[i] = static_cast<int32_t>(best_pos);
  }
}

// The same, a pack of channels per thread (kernels/common/pool.h max_pool_pack_at): where
// the channel count and alignment allow it (common::whole_packs over the channels), which VGG's and ResNet's do.
template <typename T>
__global__ void max_pool_forward_pack_kernel(const T* x, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                             Pool2dParams p, int64_t packs, T* y, int32_t* argmax) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step)
    common::max_pool_pack_at(x, h, w, c, oh, ow, p, i, y, argmax);
}

// The route below, a pack of channels per thread (common::max_pool_route_pack_at).
template <typename T>
__global__ void max_pool_route_pack_kernel(const T* dy, const int32_t* argmax, int64_t h, int64_t w, int64_t c,
                                           int64_t oh, int64_t ow, Pool2dParams p, int64_t packs, T* dx) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step)
    common::max_pool_route_pack_at(dy, argmax, h, w, c, oh, ow, p, i, dx);
}

// Windows that do not overlap (stride >= kernel, VGG's 2x2/2): one thread per output element
// (channel fastest, so the writes are coalesced) writes every input of its window, dy at the
// argmax and 0 elsewhere. Each input is written by at most one window: no atomics, and no
// fp32 image for bfloat16. The value is 0 + dy in fp32, rounded once, as the scatter into a
// zeroed fp32 image this replaced computed it (bit for bit, -0 included). Inputs that no
// window covers are zeroed before (max_pool2d_backward).
template <typename T>
__global__ void max_pool_route_kernel(const T* dy, const int32_t* argmax, int64_t h, int64_t w, int64_t c,
                                      int64_t oh, int64_t ow, Pool2dParams p, int64_t total, T* dx) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const common::PoolAt a = common::pool_at(i, c, oh, ow, h, w, p);
    const int64_t b = a.b, k = a.k;
    const common::WindowRange rh = a.rh, rw = a.rw;
    const int64_t at = argmax[i];
    const T g = T(0.0f + static_cast<float>(dy[i]));
    const T zero = T(0.0f);
    for (int64_t hh = rh.begin; hh < rh.end; ++hh) {
      T* row = dx + ((b * h + hh) * w) * c + k;
      for (int64_t ww = rw.begin; ww < rw.end; ++ww) row[ww * c] = hh * w + ww == at ? g : zero;
    }
  }
}

// Overlapping windows: one thread per input element (n, hh, ww, c) gathers its gradient
// from the windows that cover it (kernels/common/pool.h), in the CPU's order: no atomics,
// the same bits on every run and as the CPU. dx is float or BFloat16 (rounded once).
template <typename T>
__global__ void max_pool_gather_kernel(const T* dy, const int32_t* argmax, int64_t h, int64_t w, int64_t c,
                                       int64_t oh, int64_t ow, Pool2dParams p, int64_t total, T* dx) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t k = e % c, ww = (e / c) % w, hh = (e / c / w) % h, b = e / c / w / h;
    const int64_t first = b * oh * ow * c + k;
    dx[e] = T(common::max_pool_grad_at(dy + first, argmax + first, hh, ww, w, c, oh, ow, p));
  }
}

// Adaptive average pooling, one thread per output element (channel fastest, coalesced);
// the element math is kernels/common's, as on the CPU. T is float or BFloat16 (the window
// sum in fp32, rounded once on the store).
template <typename T>
__global__ void adaptive_avg_forward_kernel(const T* x, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                            int64_t total, T* y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t k = i % c, j = (i / c) % ow, r = (i / c / ow) % oh, b = i / c / ow / oh;
    y[i] = T(common::adaptive_avg_at(x + b * h * w * c + k, r, j, h, w, c, oh, ow));
  }
}

// One thread per input element gathers its gradient (no atomics); T as above.
template <typename T>
__global__ void adaptive_avg_backward_kernel(const T* dy, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                             int64_t total, T* dx) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t k = e % c, ww = (e / c) % w, hh = (e / c / w) % h, b = e / c / w / h;
    dx[e] = T(common::adaptive_avg_grad_at(dy + b * oh * ow * c + k, hh, ww, h, w, c, oh, ow));
  }
}

template <typename T>
void adaptive_avg_forward(const Tensor& x, Tensor& y, cudaStream_t stream) {
  const int64_t total = y.numel();
  adaptive_avg_forward_kernel<T><<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(
      x.data<T>(), x.dim(1), x.dim(2), x.dim(3), y.dim(1), y.dim(2), total, y.data<T>());
  KILN_CUDA_CHECK_LAUNCH();
}

template <typename T>
void adaptive_avg_backward(const Tensor& dy, Tensor& dx, cudaStream_t stream) {
  const int64_t total = dx.numel();
  adaptive_avg_backward_kernel<T><<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(
      dy.data<T>(), dx.dim(1), dx.dim(2), dx.dim(3), dy.dim(1), dy.dim(2), total, dx.data<T>());
  KILN_CUDA_CHECK_LAUNCH();
}

// Max pooling forward of x into y (argmax when not null): by packs where whole_packs allows.
template <typename T>
void max_pool_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, int32_t* argmax, cudaStream_t stream) {
  const int64_t h = x.dim(1), w = x.dim(2), c = x.dim(3), oh = y.dim(1), ow = y.dim(2);
  if (common::whole_packs<T>(c, x.raw_data()) && common::whole_packs<T>(c, y.raw_data())) {
    const int64_t packs = y.numel() / common::Pack16<T>::n;
    max_pool_forward_pack_kernel<T><<<elementwise_blocks(packs, kThreads), kThreads, 0, stream>>>(
        x.data<T>(), h, w, c, oh, ow, p, packs, y.data<T>(), argmax);
  } else {
    max_pool_forward_kernel<T><<<elementwise_blocks(y.numel(), kThreads), kThreads, 0, stream>>>(
        x.data<T>(), h, w, c, oh, ow, p, y.numel(), y.data<T>(), argmax);
  }
  KILN_CUDA_CHECK_LAUNCH();
}

// Max pooling's backward where windows do not overlap (max_pool2d_backward zeroed what no
// window covers): by packs where whole_packs allows.
template <typename T>
void max_pool_route(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx, cudaStream_t stream) {
  const int64_t h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), oh = dy.dim(1), ow = dy.dim(2);
  const int32_t* a = argmax.data<int32_t>();
  if (common::whole_packs<T>(c, dy.raw_data()) && common::whole_packs<T>(c, dx.raw_data())) {
    const int64_t packs = dy.numel() / common::Pack16<T>::n;
    max_pool_route_pack_kernel<T><<<elementwise_blocks(packs, kThreads), kThreads, 0, stream>>>(
        dy.data<T>(), a, h, w, c, oh, ow, p, packs, dx.data<T>());
  } else {
    max_pool_route_kernel<T><<<elementwise_blocks(dy.numel(), kThreads), kThreads, 0, stream>>>(
        dy.data<T>(), a, h, w, c, oh, ow, p, dy.numel(), dx.data<T>());
  }
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) {
  OpScope scope("adaptive_avg_pool2d", y.device().index);
  if (y.numel() > 0) {
    if (x.dtype() == DType::bf16) adaptive_avg_forward<BFloat16>(x, y, scope.stream());
    else adaptive_avg_forward<float>(x, y, scope.stream());
  }
  scope.done();
}

void CudaBackend::adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) {
  OpScope scope("adaptive_avg_pool2d backward", dx.device().index);
  if (dx.numel() > 0) {
    if (dy.dtype() == DType::bf16) adaptive_avg_backward<BFloat16>(dy, dx, scope.stream());
    else adaptive_avg_backward<float>(dy, dx, scope.stream());
  }
  scope.done();
}

void CudaBackend::max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  OpScope scope("max_pool2d", y.device().index);
  if (y.numel() > 0) {
    int32_t* pi = argmax.defined() ? argmax.data<int32_t>() : nullptr;
    if (x.dtype() == DType::bf16) max_pool_forward<BFloat16>(x, p, y, pi, scope.stream());
    else max_pool_forward<float>(x, p, y, pi, scope.stream());
  }
  scope.done();
}

// Backward, two ways, both without atomics (the same bits on every run and as the CPU).
// Windows that overlap (ResNet's 3x3/2): a gather per input element over the windows that
// cover it. Windows that do not (VGG's 2x2/2): each window writes its inputs (route above),
// after zeroing dx only when some input lies in no window. On the H200 (2026-12-04) the
// scatter this replaced (zero an fp32 image, atomicAdd dy at each argmax, round to bf16)
// took 1.29 ms for bf16 conv1_2's pool at batch 64, ~12 bytes moved per input element
// where the route moves ~3.5 (bf16).
void CudaBackend::max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) {
  const int dev = dx.device().index;
  OpScope scope("max_pool2d backward", dev);
  const bool bf16 = dy.dtype() == DType::bf16;
  const int64_t n = dx.numel();
  if (n == 0) {  // dy is empty too
    scope.done();
    return;
  }
  if (common::pool_windows_overlap(p)) {
    const int64_t h = dx.dim(1), w = dx.dim(2), c = dx.dim(3), oh = dy.dim(1), ow = dy.dim(2);
    if (bf16)
      max_pool_gather_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
          dy.data<BFloat16>(), argmax.data<int32_t>(), h, w, c, oh, ow, p, n, dx.data<BFloat16>());
    else
      max_pool_gather_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
          dy.data<float>(), argmax.data<int32_t>(), h, w, c, oh, ow, p, n, dx.data<float>());
    KILN_CUDA_CHECK_LAUNCH();
    scope.done();
    return;
  }
  // The windows tile the input exactly (no padding, stride = kernel, no rows or columns
  // left over): every input is written. Otherwise the ones left out are zeros.
  const bool tiles = p.pad_h == 0 && p.pad_w == 0 && p.stride_h == p.kernel_h && p.stride_w == p.kernel_w &&
                     dy.dim(1) * p.stride_h == dx.dim(1) && dy.dim(2) * p.stride_w == dx.dim(2);
  if (!tiles) KILN_CUDA_CHECK(cudaMemsetAsync(dx.raw_data(), 0, dx.nbytes(), scope.stream()));
  if (dy.numel() > 0) {
    if (bf16) max_pool_route<BFloat16>(dy, argmax, p, dx, scope.stream());
    else max_pool_route<float>(dy, argmax, p, dx, scope.stream());
  }
  scope.done();
}

}  // namespace kiln::cuda
