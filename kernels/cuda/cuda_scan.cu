// cumsum on the GPU: a thread per line, walking it in order with kernels/common/scan.h's sums,
// the CPU's, so both give the same bits. Neighbouring threads take neighbouring lines, whose
// entries neighbour each other when the dimension is not the last (coalesced reads); along the
// last dimension each thread reads its own row, and one long row is one thread's walk.
#include <cstdint>

#include "kernels/common/scan.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/grid_stride.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// x and y [outer, n, inner]: line e = (o, i) for e < outer * inner.
template <typename T>
__global__ void cumsum_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, bool reverse, T* y) {
  for (int64_t e = global_thread(); e < outer * inner; e += grid_threads()) {
    const int64_t o = e / inner, start = o * n * inner + (e - o * inner);
    common::cumsum_line(x + start, n, inner, reverse, y + start);
  }
}

template <typename T>
void launch_cumsum(const Tensor& x, bool reverse, Tensor& y, cudaStream_t stream) {
  const int64_t outer = x.dim(0), n = x.dim(1), inner = x.dim(2);
  cumsum_kernel<T><<<elementwise_blocks(outer * inner, kThreads), kThreads, 0, stream>>>(x.data<T>(), outer, n,
                                                                                       inner, reverse, y.data<T>());
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::cumsum(const Tensor& x, bool reverse, Tensor& y) {
  OpScope scope("cumsum", y.device().index);
  if (x.dim(0) * x.dim(2) > 0 && x.dim(1) > 0) {
    if (x.dtype() == DType::bf16) launch_cumsum<BFloat16>(x, reverse, y, scope.stream());
    else launch_cumsum<float>(x, reverse, y, scope.stream());
  }
  scope.done();
}

}  // namespace kiln::cuda
