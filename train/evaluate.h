// Evaluation as its own piece: loss, accuracy and the confusion matrix of a classifier over
// a data set, from images (a loader) or from cached features (train/feature_cache.h); the
// trainer, the app's eval command and research code all call these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "io/loader.h"
#include "layers/layers.h"
#include "train/feature_cache.h"

namespace kiln {

// One evaluation pass.
struct EvalResult {
  double loss = 0, acc = 0;
  int64_t images = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
};

// Loss (cross-entropy, no weight decay), accuracy and confusion accumulated over batches:
// every evaluation path feeds one tally.
class EvalTally {
 public:
  explicit EvalTally(int64_t num_classes);
  // One batch: logits [n, classes], labels [n] int64.
  void add(const Tensor& logits, const Tensor& labels);
  int64_t images() const { return r_.images; }
  EvalResult finish();

 private:
  EvalResult r_;
  double loss_sum_ = 0;
  int64_t correct_ = 0;
};

// One pass of `loader` through `model` in evaluation mode, no graph kept.
EvalResult evaluate(Module& model, io::Loader& loader, int64_t num_classes);
// The same from cached features: children [cache.cut, end) of `model` on every cached row,
// in batches of `batch` rows on `device`.
EvalResult evaluate_cached(Sequential& model, const FeatureCache& cache, int64_t batch, Device device,
                           int64_t num_classes);

// Per-class accuracy and the confusion matrix, for people.
std::string eval_details(const EvalResult& r, const std::vector<std::string>& classes);

}  // namespace kiln
