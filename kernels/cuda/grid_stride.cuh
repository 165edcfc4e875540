// Grid-stride loops' indices, for kernels that take any n with a capped grid
// (elementwise_blocks): for (i = global_thread(); i < n; i += grid_threads()).
#pragma once

#include <cstdint>

namespace kiln::cuda {

// This thread's index in the whole grid.
__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
// The grid's thread count: a grid-stride loop's step.
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

}  // namespace kiln::cuda
