// The multi-tensor Adam update, packed like cuda_sgd.cu: one launch covers up to kMaxTensors
// parameters. The per-element math is common::adam_update_element, shared with the CPU backend;
// the bias-correction scalars are computed once per step on the host, in double, as PyTorch does.
#include <cstdint>

#include "kernels/common/adam.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per block
constexpr int kMaxTensors = 48;

// Passed by value as a kernel parameter (about 2.3 KB, under the classic 4 KB limit). Block b
// updates tensor t, the last with block_start[t] <= b, elements from (b - block_start[t]) * kChunk.
struct AdamBatch {
  float* w[kMaxTensors];
  const float* g[kMaxTensors];
  float* m[kMaxTensors];
  float* v[kMaxTensors];
  int64_t n[kMaxTensors];
  int64_t block_start[kMaxTensors];
  int count;
};
static_assert(sizeof(AdamBatch) + sizeof(AdamOptions) + sizeof(common::AdamStepScalars) < 4096,
              "kernel parameters must stay under 4 KB");

__global__ void adam_kernel(AdamBatch batch, AdamOptions opt, common::AdamStepScalars sc) {
  const int64_t b = blockIdx.x;
  int t = 0;
  while (t + 1 < batch.count && batch.block_start[t + 1] <= b) ++t;
  const int64_t n = batch.n[t];
  const int64_t begin = (b - batch.block_start[t]) * kChunk;
  const int64_t end = begin + kChunk < n ? begin + kChunk : n;
  float* w = batch.w[t];
  const float* g = batch.g[t];
  float* m = batch.m[t];
  float* v = batch.v[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
    common::adam_update_element(w[i], g[i], m[i], v[i], opt, sc);
}

}  // namespace

void CudaBackend::adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) {
  // Every ref is updated (the optimizer leaves frozen ones out); all are on one device,
  // checked by kiln::adam_update.
  if (params.empty()) return;
  OpScope scope("adam_update", params[0].param.device().index);
  const common::AdamStepScalars sc = common::adam_step_scalars(opt, step);
  AdamBatch batch{};
  int64_t blocks = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    adam_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, scope.stream()>>>(batch, opt, sc);
    KILN_CUDA_CHECK_LAUNCH();
    batch = AdamBatch{};
    blocks = 0;
  };
  for (AdamParamRef& r : params) {
    const int64_t n = r.param.numel();
    if (n == 0) continue;
    const int64_t tensor_blocks = (n + kChunk - 1) / kChunk;
    // gridDim.x is at most 2^31 - 1; start a new launch before a batch would exceed it.
    if (batch.count == kMaxTensors || blocks + tensor_blocks > INT32_MAX) flush();
    const int k = batch.count++;
    batch.w[k] = r.param.data<float>();
    batch.g[k] = r.grad.data<float>();
    batch.m[k] = r.exp_avg.data<float>();
    batch.v[k] = r.exp_avg_sq.data<float>();
    batch.n[k] = n;
    batch.block_start[k] = blocks;
    blocks += tensor_blocks;
  }
  flush();
  scope.done();
}

}  // namespace kiln::cuda
