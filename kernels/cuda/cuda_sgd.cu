// The multi-tensor SGD update: one launch covers up to kMaxTensors parameters
// (kernels/cuda/multi_tensor.h). The per-element math is common::sgd_update_element, shared
// with the CPU backend.
#include <cstdint>

#include "kernels/common/sgd.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/multi_tensor.h"

namespace kiln::cuda {
namespace {

using SgdBatch = MultiTensorBatch<3>;  // weight, gradient, momentum (null when momentum is 0)
static_assert(sizeof(SgdBatch) + sizeof(SgdOptions) < 4096, "kernel parameters must stay under 4 KB");

template <bool kMomentum>
__global__ void sgd_kernel(SgdBatch batch, SgdOptions opt) {
  const BlockRange r = block_range(batch, blockIdx.x);
  float* w = batch.arrays[0][r.t];
  const float* g = batch.arrays[1][r.t];
  float* v = batch.arrays[2][r.t];
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kMultiThreads)
    common::sgd_update_element<kMomentum>(w[i], g[i], kMomentum ? v + i : nullptr, opt);
}

}  // namespace

void CudaBackend::sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) {
  // Every ref is updated (the optimizer leaves frozen ones out); all are on one device,
  // checked by kiln::sgd_update.
  if (params.empty()) return;
  OpScope scope("sgd_update", params[0].param.device().index);
  const bool momentum = opt.momentum != 0.0f;
  pack_launches<3>(
      static_cast<int64_t>(params.size()),
      [&](int64_t i) {
        SgdParamRef& r = params[static_cast<size_t>(i)];
        return MultiTensorItem<3>{r.param.numel(), {r.param.data<float>(), r.grad.data<float>(),
                                                     momentum ? r.momentum_buf.data<float>() : nullptr}};
      },
      [&](const SgdBatch& batch, int64_t blocks) {
        const auto kernel = momentum ? sgd_kernel<true> : sgd_kernel<false>;
        kernel<<<static_cast<unsigned>(blocks), kMultiThreads, 0, scope.stream()>>>(batch, opt);
        KILN_CUDA_CHECK_LAUNCH();
      });
  scope.done();
}

}  // namespace kiln::cuda
