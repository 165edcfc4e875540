// Batch normalisation on the GPU with the CPU's math (kernels/common/batch_norm.h). A
// reduction is two kernels: blocks of 32 channels x 8 row lanes (channel fastest, so each
// warp reads 128 contiguous bytes of a row) sum fixed row chunks in double, then one thread
// per channel adds the chunks in order. Statistics take two such reductions (the mean,
// then the centred squares); the result depends on the input only, never on timing.
// x, y, dy and dx are float or BFloat16 (T: read to fp32, rounded once on the store, as
// the CPU's loops); statistics, gamma, beta and their gradients are float either way.
#include <algorithm>
#include <cstdint>

#include "kernels/common/batch_norm.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kTileC = 32, kLanes = 8;  // reduction block: 32 channels x 8 row lanes
constexpr int64_t kMaxChunks = 256;

// Row chunks (grid.y): a function of the row count only, so the summation order is fixed.
int64_t chunk_count(int64_t rows) { return std::clamp<int64_t>(rows / 64, 1, kMaxChunks); }

enum Mode : int { kSumX = 0, kSumCentredSquares = 1, kSumDyAndDyXhat = 2 };

// Chunk blockIdx.y's sums for channels blockIdx.x * 32 + [0, 32): p0[k * c + j] (and p1 for
// the second sum of kSumDyAndDyXhat). `a` is x (statistics) or dy (backward); x may be null
// in backward, then only sum dy is taken.
template <int kMode, typename T>
__global__ void bn_partial_kernel(const T* a, const T* x, const double* mean_d, const float* mean,
                                  const float* var, float eps, int64_t rows, int64_t c, int64_t chunks, double* p0,
                                  double* p1) {
  __shared__ double s0[kLanes][kTileC];
  __shared__ double s1[kLanes][kTileC];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTileC + threadIdx.x;
  const int64_t k = blockIdx.y;
  const int64_t begin = rows * k / chunks, end = rows * (k + 1) / chunks;
  double acc0 = 0.0, acc1 = 0.0;
  if (j < c) {
    const double md = kMode == kSumCentredSquares ? mean_d[j] : 0.0;
    const bool with_x = kMode == kSumDyAndDyXhat && x != nullptr;
    const float mj = with_x ? mean[j] : 0.0f, ij = with_x ? common::bn_invstd(var[j], eps) : 0.0f;
    for (int64_t r = begin + threadIdx.y; r < end; r += kLanes) {
      const float v = static_cast<float>(a[r * c + j]);
      if (kMode == kSumCentredSquares) {
        const double d = static_cast<double>(v) - md;
        acc0 += d * d;
      } else {
        acc0 += static_cast<double>(v);
      }
      if (with_x)
        acc1 += static_cast<double>(v) * static_cast<double>(common::bn_xhat(static_cast<float>(x[r * c + j]), mj, ij));
    }
  }
  s0[threadIdx.y][threadIdx.x] = acc0;
  s1[threadIdx.y][threadIdx.x] = acc1;
  __syncthreads();
  if (threadIdx.y == 0 && j < c) {
    double t0 = 0.0, t1 = 0.0;
    for (int l = 0; l < kLanes; ++l) t0 += s0[l][threadIdx.x], t1 += s1[l][threadIdx.x];
    p0[k * c + j] = t0;
    if (kMode == kSumDyAndDyXhat) p1[k * c + j] = t1;
  }
}

__device__ double chunk_total(const double* p, int64_t chunks, int64_t c, int64_t j) {
  double t = 0.0;
  for (int64_t k = 0; k < chunks; ++k) t += p[k * c + j];
  return t;
}

__global__ void bn_mean_kernel(const double* p0, int64_t chunks, int64_t c, int64_t rows, double* mean_d) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < c) mean_d[j] = chunk_total(p0, chunks, c, j) / static_cast<double>(rows);
}

__global__ void bn_var_kernel(const double* p0, const double* mean_d, int64_t chunks, int64_t c, int64_t rows,
                              float momentum, float* mean, float* var, float* rm, float* rv) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < c)
    common::bn_finish_stats(mean_d[j], chunk_total(p0, chunks, c, j), rows, momentum, mean + j, var + j,
                            rm ? rm + j : nullptr, rv ? rv + j : nullptr);
}

// dbeta, dgamma and the row means of dy and dy * x_hat that a training-form dx needs.
__global__ void bn_grad_sums_kernel(const double* p0, const double* p1, int64_t chunks, int64_t c, int64_t rows,
                                    float* dgamma, float* dbeta, float* mean_dy, float* mean_dy_xhat) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  const double sdy = chunk_total(p0, chunks, c, j), sdyx = chunk_total(p1, chunks, c, j);
  if (dbeta) dbeta[j] = static_cast<float>(sdy);
  if (dgamma) dgamma[j] = static_cast<float>(sdyx);
  mean_dy[j] = static_cast<float>(sdy / static_cast<double>(rows));
  mean_dy_xhat[j] = static_cast<float>(sdyx / static_cast<double>(rows));
}

template <typename T>
__global__ void bn_forward_kernel(const T* x, const float* mean, const float* var, const float* gamma,
                                  const float* beta, float eps, int64_t c, int64_t total, T* y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t j = i % c;
    y[i] = T(common::bn_forward(static_cast<float>(x[i]), mean[j], common::bn_invstd(var[j], eps),
                                gamma ? gamma[j] : 1.0f, beta ? beta[j] : 0.0f));
  }
}

// mean_dy/mean_dy_xhat are read only in the training form.
template <typename T>
__global__ void bn_dx_kernel(const T* dy, const T* x, const float* mean, const float* var, const float* gamma,
                             float eps, bool training, const float* mean_dy, const float* mean_dy_xhat, int64_t c,
                             int64_t total, T* dx) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t j = i % c;
    const float invstd = common::bn_invstd(var[j], eps);
    const float scale = (gamma ? gamma[j] : 1.0f) * invstd;
    const float g = static_cast<float>(dy[i]);
    dx[i] = T(training ? common::bn_backward_train(g, common::bn_xhat(static_cast<float>(x[i]), mean[j], invstd), scale,
                                                   mean_dy[j], mean_dy_xhat[j])
                       : common::bn_backward_eval(g, scale));
  }
}

template <typename T = float>
const T* ptr_or_null(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
float* mut_ptr_or_null(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

// Device scratch for one reduction: two [chunks, c] partial arrays, the double mean and two
// float per-channel vectors.
struct Scratch {
  Workspace ws;
  double *p0, *p1, *mean_d;
  float *f0, *f1;
  Scratch(int device, int64_t chunks, int64_t c)
      : ws(device, static_cast<size_t>((2 * chunks + 1) * c) * sizeof(double) + static_cast<size_t>(2 * c) * sizeof(float)) {
    p0 = static_cast<double*>(ws.data());
    p1 = p0 + chunks * c;
    mean_d = p1 + chunks * c;
    f0 = reinterpret_cast<float*>(mean_d + c);
    f1 = f0 + c;
  }
};

unsigned channel_blocks(int64_t c) { return static_cast<unsigned>((c + kThreads - 1) / kThreads); }


template <typename T>
void stats_as(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean, Tensor& running_var) {
  OpScope scope("batch_norm2d statistics", x.device().index);
  const int64_t c = x.dim(3), rows = x.numel() / c, chunks = chunk_count(rows);
  Scratch s(x.device().index, chunks, c);
  const dim3 grid(static_cast<unsigned>((c + kTileC - 1) / kTileC), static_cast<unsigned>(chunks)), block(kTileC, kLanes);
  bn_partial_kernel<kSumX, T><<<grid, block, 0, scope.stream()>>>(x.data<T>(), nullptr, nullptr, nullptr, nullptr,
                                                               0.0f, rows, c, chunks, s.p0, nullptr);
  KILN_CUDA_CHECK_LAUNCH();
  bn_mean_kernel<<<channel_blocks(c), kThreads, 0, scope.stream()>>>(s.p0, chunks, c, rows, s.mean_d);
  KILN_CUDA_CHECK_LAUNCH();
  bn_partial_kernel<kSumCentredSquares, T><<<grid, block, 0, scope.stream()>>>(
      x.data<T>(), nullptr, s.mean_d, nullptr, nullptr, 0.0f, rows, c, chunks, s.p0, nullptr);
  KILN_CUDA_CHECK_LAUNCH();
  bn_var_kernel<<<channel_blocks(c), kThreads, 0, scope.stream()>>>(s.p0, s.mean_d, chunks, c, rows, momentum,
                                                                    mean.data<float>(), var.data<float>(),
                                                                    mut_ptr_or_null(running_mean),
                                                                    mut_ptr_or_null(running_var));
  KILN_CUDA_CHECK_LAUNCH();
  scope.done();
}

template <typename T>
void forward_as(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, const Tensor& beta, float eps,
                Tensor& y) {
  OpScope scope("batch_norm2d", y.device().index);
  const int64_t total = y.numel();
  if (total > 0) {
    bn_forward_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, scope.stream()>>>(
        x.data<T>(), mean.data<float>(), var.data<float>(), ptr_or_null(gamma), ptr_or_null(beta), eps, x.dim(3),
        total, y.data<T>());
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

template <typename T>
void backward_as(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma, float eps,
                 bool training, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  OpScope scope("batch_norm2d backward", dy.device().index);
  const int64_t c = dy.dim(3), rows = dy.numel() / c, chunks = chunk_count(rows);
  const bool train_dx = training && dx.defined();
  Scratch s(dy.device().index, chunks, c);
  if (rows > 0 && (dgamma.defined() || dbeta.defined() || train_dx)) {
    const dim3 grid(static_cast<unsigned>((c + kTileC - 1) / kTileC), static_cast<unsigned>(chunks)),
        block(kTileC, kLanes);
    bn_partial_kernel<kSumDyAndDyXhat, T><<<grid, block, 0, scope.stream()>>>(
        dy.data<T>(), ptr_or_null<T>(x), nullptr, mean.data<float>(), var.data<float>(), eps, rows, c, chunks, s.p0,
        s.p1);
    KILN_CUDA_CHECK_LAUNCH();
    bn_grad_sums_kernel<<<channel_blocks(c), kThreads, 0, scope.stream()>>>(
        s.p0, s.p1, chunks, c, rows, mut_ptr_or_null(dgamma), mut_ptr_or_null(dbeta), s.f0, s.f1);
    KILN_CUDA_CHECK_LAUNCH();
  }
  const int64_t total = dy.numel();
  if (dx.defined() && total > 0) {
    bn_dx_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, scope.stream()>>>(
        dy.data<T>(), ptr_or_null<T>(x), mean.data<float>(), var.data<float>(), ptr_or_null(gamma), eps, train_dx,
        s.f0, s.f1, c, total, dx.data<T>());
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

}  // namespace

// Each entry runs the float or the BFloat16 kernels by x's (or dy's) dtype.
void CudaBackend::batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean,
                                   Tensor& running_var) {
  if (x.dtype() == DType::bf16) stats_as<BFloat16>(x, momentum, mean, var, running_mean, running_var);
  else stats_as<float>(x, momentum, mean, var, running_mean, running_var);
}

void CudaBackend::batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                                     const Tensor& beta, float eps, Tensor& y) {
  if (x.dtype() == DType::bf16) forward_as<BFloat16>(x, mean, var, gamma, beta, eps, y);
  else forward_as<float>(x, mean, var, gamma, beta, eps, y);
}

void CudaBackend::batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                                      const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                                      Tensor& dbeta) {
  if (dy.dtype() == DType::bf16) backward_as<BFloat16>(dy, x, mean, var, gamma, eps, training, dx, dgamma, dbeta);
  else backward_as<float>(dy, x, mean, var, gamma, eps, training, dx, dgamma, dbeta);
}

}  // namespace kiln::cuda
