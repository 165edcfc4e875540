// The multi-tensor Adam update: one launch covers up to kMaxTensors parameters
// (kernels/cuda/multi_tensor.h). The per-element math is common::adam_update_element, shared
// with the CPU backend; the bias-correction scalars are computed once per step on the host,
// in double, as PyTorch does.
#include <cstdint>

#include "kernels/common/adam.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/multi_tensor.h"

namespace kiln::cuda {
namespace {

using AdamBatch = MultiTensorBatch<4>;  // weight, gradient, first and second moments
static_assert(sizeof(AdamBatch) + sizeof(AdamOptions) + sizeof(common::AdamStepScalars) < 4096,
              "kernel parameters must stay under 4 KB");

__global__ void adam_kernel(AdamBatch batch, AdamOptions opt, common::AdamStepScalars sc) {
  const BlockRange r = block_range(batch, blockIdx.x);
  float* w = batch.arrays[0][r.t];
  const float* g = batch.arrays[1][r.t];
  float* m = batch.arrays[2][r.t];
  float* v = batch.arrays[3][r.t];
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kMultiThreads)
    common::adam_update_element(w[i], g[i], m[i], v[i], opt, sc);
}

}  // namespace

void CudaBackend::adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) {
  // Every ref is updated (the optimizer leaves frozen ones out); all are on one device,
  // checked by kiln::adam_update.
  if (params.empty()) return;
  OpScope scope("adam_update", params[0].param.device().index);
  const common::AdamStepScalars sc = common::adam_step_scalars(opt, step);
  pack_launches<4>(
      static_cast<int64_t>(params.size()),
      [&](int64_t i) {
        AdamParamRef& r = params[static_cast<size_t>(i)];
        return MultiTensorItem<4>{r.param.numel(), {r.param.data<float>(), r.grad.data<float>(),
                                                     r.exp_avg.data<float>(), r.exp_avg_sq.data<float>()}};
      },
      [&](const AdamBatch& batch, int64_t blocks) {
        adam_kernel<<<static_cast<unsigned>(blocks), kMultiThreads, 0, scope.stream()>>>(batch, opt, sc);
        KILN_CUDA_CHECK_LAUNCH();
      });
  scope.done();
}

}  // namespace kiln::cuda
