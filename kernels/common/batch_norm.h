// Batch normalisation's math (NHWC: per-channel statistics over the N*H*W rows), shared by
// the CPU loops and the CUDA kernels. The backends reduce in double and in two passes (the
// mean, then the centred squares): E[x^2] - E[x]^2 cancels catastrophically when |mean| is
// large against the spread (a channel at 1000 +- 0.01 keeps no digit of its variance in
// float, and few in double), while the centred second pass is exact to rounding whatever
// the mean. The CUDA backend makes both passes over the whole tensor; the CPU makes them per
// cache-sized block of rows and merges the blocks with bn_merge_with (Chan et al.'s update,
// whose terms are all non-negative), reading x from memory once. Each backend splits rows by a
// rule fixed by the shape alone and combines the parts in order, so results never depend on
// thread counts or timing.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace kiln::common {

// 1 / sqrt(var + eps), rounded once from double: both backends give the same bits.
KILN_HD float bn_invstd(float var, float eps) {
  return static_cast<float>(1.0 / ::sqrt(static_cast<double>(var) + static_cast<double>(eps)));
}

// The normalised value x_hat = (x - mean) * invstd.
KILN_HD float bn_xhat(float x, float mean, float invstd) { return (x - mean) * invstd; }

// y = gamma * x_hat + beta.
KILN_HD float bn_forward(float x, float mean, float invstd, float gamma, float beta) {
  return bn_xhat(x, mean, invstd) * gamma + beta;
}

// The batch statistics of one channel from its double sums over `count` rows: the mean and
// the biased variance normalise; the running statistics move towards the batch's by
// PyTorch's rule r = (1 - momentum) r + momentum * batch, with the unbiased variance
// (count / (count - 1)) for running_var. rm/rv may be null (nothing to update).
KILN_HD void bn_finish_stats(double mean, double centred_squares, int64_t count, float momentum, float* mean_out,
                             float* var_out, float* rm, float* rv) {
  const double n = static_cast<double>(count), m = static_cast<double>(momentum);
  *mean_out = static_cast<float>(mean);
  *var_out = static_cast<float>(centred_squares / n);
  if (rm) *rm = static_cast<float>((1.0 - m) * static_cast<double>(*rm) + m * mean);
  if (rv) *rv = static_cast<float>((1.0 - m) * static_cast<double>(*rv) + m * centred_squares / (n - 1.0));
}

// Running (count, mean, centred sum of squares) of one channel, merged with a block's:
// Chan, Golub and LeVeque's pairwise update, free of cancellation. Its two weights depend on
// the counts alone, so channels that have merged the same rows share them: bn_merge_weights
// once per block (the counts advance by the caller), then bn_merge_with per channel.
struct BnMergeWeights {
  double mean_w = 0, m2_w = 0;  // block_count / n and count * block_count / n
};

KILN_HD BnMergeWeights bn_merge_weights(double count, double block_count) {
  const double n = count + block_count;
  if (n == 0.0) return {};  // two empty parts: nothing moves
  return {block_count / n, count * block_count / n};
}

KILN_HD void bn_merge_with(double& mean, double& m2, BnMergeWeights w, double block_mean, double block_m2) {
  const double delta = block_mean - mean;
  mean += delta * w.mean_w;
  m2 += block_m2 + delta * delta * w.m2_w;
}

// dx of training-form batch norm, through the batch statistics: with scale = gamma * invstd,
// dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), the means over the channel's rows.
KILN_HD float bn_backward_train(float dy, float xhat, float scale, float mean_dy, float mean_dy_xhat) {
  return scale * (dy - mean_dy - xhat * mean_dy_xhat);
}

// dx of inference-form batch norm: the statistics are constants, dx = dy * gamma * invstd.
KILN_HD float bn_backward_eval(float dy, float scale) { return dy * scale; }

}  // namespace kiln::common
