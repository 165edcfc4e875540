// Whole-tensor sums and row-wise argmax and argmin on the GPU. Sums run in two passes of fixed shape
// (partials in double, or for integers in wrapping 64-bit unsigned, then one block adds them in a
// fixed tree), so a result depends only on the input, never on timing or on the GPU model.
#include <cstdint>

#include "kernels/common/sort_key.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxPartials = 1024;  // pass-1 blocks; pass 2 is one block of this many threads

// Fixed-order block sum; the total is valid in thread 0. smem: kBlock / 32. A: the accumulator,
// double for float32, unsigned 64-bit for int32 and int64 (wrapping as two's complement).
template <int kBlock, typename A>
__device__ A block_sum(A v, A* smem) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
  __syncthreads();
  A total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kBlock / 32; ++w) total += smem[w];
  return total;
}

// An element as the sum accumulates it: a float in double, an integer sign-extended to 64 bits.
__device__ double accumulated(float v, double) { return v; }
template <typename I>
__device__ unsigned long long accumulated(I v, unsigned long long) {
  return static_cast<unsigned long long>(static_cast<long long>(v));
}

// Pass 1: block b sums the elements b*kThreads + t + k*(blocks*kThreads) in A.
template <bool kSquare, typename T, typename A>
__global__ void sum_partial_kernel(const T* x, int64_t n, A* partial) {
  __shared__ A smem[kThreads / 32];
  A s = 0;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += step) {
    const A v = accumulated(x[i], A{});
    s += kSquare ? v * v : v;  // a float squared is exact in double, FMA or not
  }
  s = block_sum<kThreads>(s, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Pass 2: one block adds the partials and writes the result (float32, or int64 for integers).
template <typename A, typename O>
__global__ void sum_finish_kernel(const A* partial, int64_t count, O* out) {
  __shared__ A smem[kMaxPartials / 32];
  const A v = threadIdx.x < count ? partial[threadIdx.x] : A{0};
  const A total = block_sum<kMaxPartials>(v, smem);
  if (threadIdx.x == 0) out[0] = static_cast<O>(total);
}

// Row-wise argmax and argmin, one block per row: each thread keeps the largest
// kernels/common/sort_key.h extreme_key of its entries, then the block's largest wins. A max is
// associative and commutative and every key of a row distinct, so the tree order cannot change
// the answer, the CPU's: the first NaN, else the first extreme value.
template <int kBlock>
__global__ void arg_extreme_kernel(const float* x, int64_t rows, int64_t cols, bool largest, int64_t* out) {
  __shared__ unsigned long long best_of_warp[kBlock / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = x + r * cols;
    unsigned long long best = 0;
    for (int64_t c = threadIdx.x; c < cols; c += kBlock) {
      const unsigned long long key = common::extreme_key(row[c], c, largest);
      best = key > best ? key : best;
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      const unsigned long long other = __shfl_xor_sync(0xffffffffu, best, offset);
      best = other > best ? other : best;
    }
    if constexpr (kBlock > 32) {
      __syncthreads();  // the previous row may still be reading best_of_warp
      if (threadIdx.x % 32 == 0) best_of_warp[threadIdx.x / 32] = best;
      __syncthreads();
      if (threadIdx.x == 0)
        for (int w = 1; w < kBlock / 32; ++w) best = best_of_warp[w] > best ? best_of_warp[w] : best;
    }
    if (threadIdx.x == 0) out[r] = common::extreme_position(best);
  }
}

// T: x's element, A: the accumulator, O: out's element.
template <bool kSquare, typename T, typename A, typename O>
void launch_sum(const Tensor& x, Tensor& out, OpScope& scope) {
  const int64_t n = x.numel();
  O* po = out.data<O>();
  if (n == 0) {
    KILN_CUDA_CHECK(cudaMemsetAsync(po, 0, sizeof(O), scope.stream()));
    return;
  }
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  const int64_t blocks = wanted < kMaxPartials ? wanted : kMaxPartials;
  Workspace ws(x.device().index, static_cast<size_t>(blocks) * sizeof(A));
  A* partial = static_cast<A*>(ws.data());
  sum_partial_kernel<kSquare, T, A><<<static_cast<unsigned>(blocks), kThreads, 0, scope.stream()>>>(x.data<T>(), n,
                                                                                                    partial);
  KILN_CUDA_CHECK_LAUNCH();
  sum_finish_kernel<A, O><<<1, kMaxPartials, 0, scope.stream()>>>(partial, blocks, po);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::sum(const Tensor& x, Tensor& out) {
  OpScope scope("sum", out.device().index);
  using Wide = unsigned long long;
  if (x.dtype() == DType::i64) launch_sum<false, int64_t, Wide, int64_t>(x, out, scope);
  else if (x.dtype() == DType::i32) launch_sum<false, int32_t, Wide, int64_t>(x, out, scope);
  else launch_sum<false, float, double, float>(x, out, scope);
  scope.done();
}

void CudaBackend::sum_squares(const Tensor& x, Tensor& out) {
  OpScope scope("sum_squares", out.device().index);
  launch_sum<true, float, double, float>(x, out, scope);
  scope.done();
}

void CudaBackend::arg_extreme(BinaryOp op, const Tensor& x, Tensor& out) {
  OpScope scope("arg_extreme", out.device().index);
  const int64_t cols = x.dim(-1);
  const int64_t rows = cols > 0 ? x.numel() / cols : 0;
  const bool largest = op == BinaryOp::maximum;
  if (rows > 0) {
    const unsigned grid = static_cast<unsigned>(rows < (int64_t{1} << 20) ? rows : (int64_t{1} << 20));
    const float* px = x.data<float>();
    int64_t* po = out.data<int64_t>();
    if (cols <= 256) arg_extreme_kernel<32><<<grid, 32, 0, scope.stream()>>>(px, rows, cols, largest, po);
    else arg_extreme_kernel<256><<<grid, 256, 0, scope.stream()>>>(px, rows, cols, largest, po);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

}  // namespace kiln::cuda
