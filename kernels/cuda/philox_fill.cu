// The Philox uniform stream on the GPU, from the same core/philox.h the CPU uses.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_info.h"

namespace kiln::cuda {
namespace {

__global__ void philox_uniform_kernel(PhiloxState s, int64_t n, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = philox_uniform(s, static_cast<uint64_t>(i));
}

}  // namespace

void philox_uniform_on_device(PhiloxState s, int64_t n, float* host_out) {
  KILN_CHECK(n >= 0, "philox_uniform_on_device: negative count ", n);
  if (n == 0) return;
  float* dev = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&dev, static_cast<size_t>(n) * sizeof(float)));
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  philox_uniform_kernel<<<static_cast<unsigned>(blocks), threads>>>(s, n, dev);
  cudaError_t launch = cudaGetLastError();
  cudaError_t copy = cudaMemcpy(host_out, dev, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(dev);
  KILN_CUDA_CHECK(launch);
  KILN_CUDA_CHECK(copy);
}

}  // namespace kiln::cuda
