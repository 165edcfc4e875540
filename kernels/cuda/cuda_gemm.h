// The linear layer's GEMM called straight through cuBLAS, bypassing kiln's cuBLASLt path:
// the "library called directly" baseline kiln_bench times linear_forward against.
#pragma once

#include "core/tensor.h"

namespace kiln::cuda {

// y = x w^T with cublasSgemm on x's device, no bias; TF32 only when allow_tf32.
// x: [N, in], w: [out, in], y: [N, out], float32, contiguous, on one CUDA device.
void sgemm_reference(const Tensor& x, const Tensor& w, Tensor& y);

}  // namespace kiln::cuda
