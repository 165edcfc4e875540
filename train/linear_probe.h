// A linear classifier fitted in closed form on fixed features (a "linear probe"): ridge
// regression to one-hot targets on standardised features, solved in double, with the ridge
// strength chosen on a held-out part of the training rows. The trainer uses it to start a
// head from the features of its frozen layers instead of from random weights; apps use it
// for baselines on hand-made features.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/kiln.h"

namespace kiln {

// How a probe is fitted.
struct LinearProbeOptions {
  // Ridge strengths to try, as multiples of the feature count D (standardised features give
  // a Gram matrix whose diagonal averages D, so these are scale-free). One value: no
  // selection.
  std::vector<double> lambdas = {3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1, 3};
  // Lambda is chosen by k-fold cross-validation over the training rows (row i of each class,
  // by order of appearance, is in fold i % folds): the best held-out accuracy, ties to the
  // lower held-out squared error; then refitted on all rows and scaled (see LinearProbe::scale).
  int folds = 5;
};

// The fitted classifier, in the features' own units (the standardisation folded in):
// scores = weight * x + bias.
struct LinearProbe {
  int64_t classes = 0, dim = 0;
  std::vector<float> weight;  // [classes, dim], row-major: a Linear layer's [out, in]
  std::vector<float> bias;    // [classes]
  double lambda = 0;          // the chosen strength (the multiple of dim times dim)
  double holdout_acc = -1;    // cross-validated accuracy at that lambda; -1: no selection
  // The factor the scores carry (folded into weight and bias): ridge scores sit on the one-hot
  // scale, whose softmax is nearly flat; this one minimises the cross-entropy of the
  // cross-validated scores (1 without selection). It changes no prediction.
  double scale = 1;
  double train_acc = 0;       // accuracy of the final fit on every row
};

// Fits a probe on feats [N, D] (float32, any device) with labels in [0, classes).
// Throws kiln::Error on mismatched sizes, labels out of range or fewer than 2 rows.
LinearProbe fit_linear_probe(const Tensor& feats, const std::vector<int64_t>& labels, int64_t classes,
                             const LinearProbeOptions& options = {});

// Class scores [N, classes] of feats [N, D] under `probe` (for checks and baselines).
std::vector<float> probe_scores(const LinearProbe& probe, const Tensor& feats);

// Accuracy of `probe` on feats [N, D] with `labels`.
double probe_accuracy(const LinearProbe& probe, const Tensor& feats, const std::vector<int64_t>& labels);

namespace detail {
// Solves (A + lambda I) X = B in place for symmetric positive definite A + lambda I [n, n]
// (row-major, only the lower triangle read) and B [n, m] (row-major, overwritten by X), by
// Cholesky. Throws when the matrix is not positive definite.
void ridge_solve(std::vector<double> a, double lambda, int64_t n, std::vector<double>& b, int64_t m);
}  // namespace detail

}  // namespace kiln
