// What cuDNN offers for one forward convolution shape, timed, with kiln's own choice
// marked: lets kiln_bench show whether kiln picks the fastest algorithm.
#pragma once

#include <cstddef>
#include <vector>

#include "core/backend.h"

namespace kiln::cuda {

// One forward algorithm as cuDNN's Find measured it.
struct ConvAlgoInfo {
  int algo = 0;             // cudnnConvolutionFwdAlgo_t
  const char* name = "";    // "IMPLICIT_PRECOMP_GEMM", ...
  float ms = 0;             // cuDNN's measured time
  size_t workspace = 0;     // bytes it needs
  bool tensor_ops = false;  // may use tensor cores (only offered under TF32, or for bfloat16)
  bool chosen = false;      // the one conv2d_forward uses for this shape under the current options
};

// Runs cuDNN's Find for y = conv(x, w) under the current compute options and returns its
// successful candidates, fastest first. x: [N, H, W, C], w: [O, KH, KW, C], both float32
// or both bfloat16 (fp32 accumulation), on the same CUDA device. Writes only scratch memory.
std::vector<ConvAlgoInfo> conv_forward_candidates(const Tensor& x, const Tensor& w, const Conv2dParams& p);

}  // namespace kiln::cuda
