// The multi-tensor SGD update: one launch covers up to kMaxTensors parameters (VGG16 has 32),
// so a step costs one or two launches rather than one per tensor. The per-element math is
// common::sgd_update_element, shared with the CPU backend.
#include <cstdint>

#include "kernels/common/sgd.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block
constexpr int kMaxTensors = 48;

// Passed by value as a kernel parameter (about 2 KB, under the classic 4 KB limit). Block b
// updates tensor t, the last with block_start[t] <= b, elements from (b - block_start[t]) * kChunk.
struct SgdBatch {
  float* w[kMaxTensors];
  const float* g[kMaxTensors];
  float* v[kMaxTensors];  // null when momentum is 0
  int64_t n[kMaxTensors];
  int64_t block_start[kMaxTensors];
  int count;
};
static_assert(sizeof(SgdBatch) + sizeof(SgdOptions) < 4096, "kernel parameters must stay under 4 KB");

__global__ void sgd_kernel(SgdBatch batch, SgdOptions opt) {
  const int64_t b = blockIdx.x;
  int t = 0;
  while (t + 1 < batch.count && batch.block_start[t + 1] <= b) ++t;
  const int64_t n = batch.n[t];
  const int64_t begin = (b - batch.block_start[t]) * kChunk;
  const int64_t end = begin + kChunk < n ? begin + kChunk : n;
  float* w = batch.w[t];
  const float* g = batch.g[t];
  float* v = batch.v[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
    common::sgd_update_element(w[i], g[i], v ? v + i : nullptr, opt);
}

}  // namespace

void CudaBackend::sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) {
  // Every ref is updated (the optimizer leaves frozen ones out); all are on one device,
  // checked by kiln::sgd_update.
  if (params.empty()) return;
  OpScope scope("sgd_update", params[0].param.device().index);
  const bool momentum = opt.momentum != 0.0f;
  SgdBatch batch{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    sgd_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, scope.stream()>>>(batch, opt);
    KILN_CUDA_CHECK_LAUNCH();
    batch = SgdBatch{};
    blocks = 0;
  };
  for (SgdParamRef& r : params) {
    const int64_t n = r.param.numel();
    if (n == 0) continue;
    const int64_t tensor_blocks = (n + kChunk - 1) / kChunk;
    // gridDim.x is at most 2^31 - 1; start a new launch before a batch would exceed it.
    if (batch.count == kMaxTensors || blocks + tensor_blocks > INT32_MAX) flush();
    const int k = batch.count++;
    batch.w[k] = r.param.data<float>();
    batch.g[k] = r.grad.data<float>();
    batch.v[k] = momentum ? r.momentum_buf.data<float>() : nullptr;
    batch.n[k] = n;
    batch.block_start[k] = blocks;
    blocks += tensor_blocks;
  }
  flush();
  scope.done();
}

}  // namespace kiln::cuda
