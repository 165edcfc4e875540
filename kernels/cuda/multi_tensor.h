// Multi-tensor launches for the optimizers (cuda_sgd.cu, cuda_adam.cu): one kernel launch
// updates up to kMaxTensors parameters (VGG16 has 32), so a step costs one or two launches
// rather than one per tensor. Plain C++ with KILN_HD, so the CPU tests check the packing
// and each block's element range (tests/kernels/test_multi_tensor.cpp) without a GPU.
#pragma once

#include <array>
#include <cstdint>

#include "core/hd.h"

namespace kiln::cuda {

constexpr int kMultiThreads = 256;     // threads per block
constexpr int64_t kMultiChunk = 4096;  // elements per block
constexpr int kMaxTensors = 48;        // tensors per launch
constexpr int64_t kMaxBlocks = 2147483647;  // gridDim.x's limit, 2^31 - 1

// A launch's tensors, passed by value as a kernel parameter (under the classic 4 KB limit
// for A <= 5). Each tensor has A float arrays of n elements (SGD: weight, gradient, momentum).
// Block b updates tensor t, the last with block_start[t] <= b, elements from
// (b - block_start[t]) * kMultiChunk.
template <int A>
struct MultiTensorBatch {
  float* arrays[A][kMaxTensors];
  int64_t n[kMaxTensors];
  int64_t block_start[kMaxTensors];
  int count;
};

// The elements one block updates: tensor t's [begin, end).
struct BlockRange {
  int t;
  int64_t begin, end;
};

// Block `block`'s range in `b` (a linear search: at most kMaxTensors steps, once per block).
template <int A>
KILN_HD BlockRange block_range(const MultiTensorBatch<A>& b, int64_t block) {
  int t = 0;
  while (t + 1 < b.count && b.block_start[t + 1] <= block) ++t;
  const int64_t begin = (block - b.block_start[t]) * kMultiChunk;
  const int64_t end = begin + kMultiChunk < b.n[t] ? begin + kMultiChunk : b.n[t];
  return BlockRange{t, begin, end};
}

// One tensor as pack_launches takes it: its element count and its A arrays.
template <int A>
struct MultiTensorItem {
  int64_t n;
  std::array<float*, A> arrays;
};

// Packs count tensors (item(i) gives tensor i) into batches and calls launch(batch, blocks)
// for each: a batch ends at kMaxTensors tensors or before its grid would pass kMaxBlocks.
// Empty tensors are left out.
template <int A, class Item, class Launch>
void pack_launches(int64_t count, Item item, Launch launch) {
  MultiTensorBatch<A> batch{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    launch(batch, blocks);
    batch = MultiTensorBatch<A>{};
    blocks = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    const MultiTensorItem<A> it = item(i);
    if (it.n == 0) continue;
    const int64_t tensor_blocks = (it.n + kMultiChunk - 1) / kMultiChunk;
    if (batch.count == kMaxTensors || blocks + tensor_blocks > kMaxBlocks) flush();
    const int k = batch.count++;
    for (int a = 0; a < A; ++a) batch.arrays[a][k] = it.arrays[static_cast<size_t>(a)];
    batch.n[k] = it.n;
    batch.block_start[k] = blocks;
    blocks += tensor_blocks;
  }
  flush();
}

}  // namespace kiln::cuda
