// Sorting along rows on the GPU (sort, argsort, topk): each entry's key from
// kernels/common/sort_key.h (the CPU's, distinct within a row), CUB's segmented sort of the keys
// (a row a segment), and the first k positions of each row read back out of the sorted keys, so
// the GPU gives the CPU's indices whatever algorithm CUB picks.
#include <cstdint>

#include <cub/device/device_segmented_sort.cuh>

#include "kernels/common/sort_key.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/grid_stride.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// keys[e] = the sort key of x's entry e (x [rows, n] flattened), its position e mod n.
__global__ void sort_keys_kernel(const float* x, int64_t total, int64_t n, bool descending, uint64_t* keys) {
  for (int64_t e = global_thread(); e < total; e += grid_threads())
    keys[e] = common::sort_key(x[e], e % n, descending);
}

// offsets[r] = r * n for r = 0 .. rows: where each row's segment begins (and the last ends).
__global__ void row_offsets_kernel(int64_t rows, int64_t n, int64_t* offsets) {
  for (int64_t r = global_thread(); r <= rows; r += grid_threads()) offsets[r] = r * n;
}

// idx[r, j] = the position in sorted row r's key j, for j < k.
__global__ void first_positions_kernel(const uint64_t* keys, int64_t rows, int64_t n, int64_t k, int64_t* idx) {
  for (int64_t e = global_thread(); e < rows * k; e += grid_threads()) {
    const int64_t r = e / k, j = e - r * k;
    idx[e] = common::key_position(keys[r * n + j]);
  }
}

}  // namespace

void CudaBackend::argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) {
  const int index = idx.device().index;
  OpScope scope("argsort_rows", index);
  const int64_t rows = x.dim(0), n = x.dim(1), total = rows * n;
  cudaStream_t stream = scope.stream();
  // Keys in, keys out, then the rows + 1 offsets.
  Workspace ws(index, (2 * static_cast<size_t>(total) + static_cast<size_t>(rows) + 1) * sizeof(uint64_t));
  auto* keys_in = static_cast<uint64_t*>(ws.data());
  uint64_t* keys_out = keys_in + total;
  auto* offsets = reinterpret_cast<int64_t*>(keys_out + total);
  sort_keys_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(x.data<float>(), total, n,
                                                                                  descending, keys_in);
  row_offsets_kernel<<<elementwise_blocks(rows + 1, kThreads), kThreads, 0, stream>>>(rows, n, offsets);
  KILN_CUDA_CHECK_LAUNCH();
  size_t temp_bytes = 0;
  KILN_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeys(nullptr, temp_bytes, keys_in, keys_out, total, rows, offsets,
                                                     offsets + 1, stream));
  Workspace temp(index, temp_bytes);
  KILN_CUDA_CHECK(cub::DeviceSegmentedSort::SortKeys(temp.data(), temp_bytes, keys_in, keys_out, total, rows, offsets,
                                                     offsets + 1, stream));
  first_positions_kernel<<<elementwise_blocks(rows * k, kThreads), kThreads, 0, stream>>>(keys_out, rows, n, k,
                                                                                         idx.data<int64_t>());
  KILN_CUDA_CHECK_LAUNCH();
  scope.done();
}

}  // namespace kiln::cuda
