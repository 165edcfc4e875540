// Features of a frozen prefix computed once: when a phase trains only the layers after a
// frozen, deterministic prefix and the input does not vary between epochs (no
// augmentation), the prefix's output is the same every epoch and is cached instead of
// recomputed. Where the cut falls is derived from the model and the phase's freezing, never
// named per model.
#pragma once

#include <cstdint>
#include <vector>

#include "core/kiln.h"
#include "io/dataset.h"
#include "io/loader.h"
#include "layers/layers.h"

namespace kiln {

// Where the cached prefix ends: the index of the first child of `model` that still runs each
// step. The children are taken as layers (a child with parameters and the parameter-free
// children after it: conv, relu, pool); the prefix is the longest run of layers none of whose
// parameters trains under the freezing now applied and none of which holds a Dropout (its
// output varies per step in training mode). 0: nothing can be cached (or the prefix holds
// no frozen parameter, so caching would save nothing).
size_t feature_cut(Sequential& model);

// The output of children [0, cut) for a whole data set, one row per readable image.
struct FeatureCache {
  size_t cut = 0;               // the first child run on these features
  // [n, F] on the host, one row per readable image, in the dtype the prefix computes in:
  // bfloat16 under a bf16 precision policy (half the memory, no rounding beyond the prefix's).
  Tensor feats;
  std::vector<int64_t> item_shape;  // one image's output shape (F = its element count)
  std::vector<int64_t> row;     // dataset index -> row, -1 when the image could not be read
  std::vector<int64_t> labels;  // per row
};

// Runs children [0, cut) on every image of `ds` (no augmentation, in order, evaluation mode,
// no graph) through a loader built from `opt`.
FeatureCache compute_features(Sequential& model, size_t cut, const io::Dataset& ds, io::LoaderOptions opt);

// Rows of features collected batch by batch, kept as the bytes of their dtype.
class FeatureRows {
 public:
  // Appends a batch [n, ...] (any device); every batch must have the same item shape and dtype.
  void add(const Tensor& batch);
  int64_t rows() const { return rows_; }
  const std::vector<int64_t>& item_shape() const { return item_shape_; }
  // The rows as one [n, F] host tensor (undefined when there are none).
  Tensor take();

 private:
  std::vector<char> bytes_;
  std::vector<int64_t> item_shape_;
  DType dtype_ = DType::f32;
  int64_t rows_ = 0, width_ = 0;
};

// Runs children [from, end) of `model` on x.
Tensor run_from(Sequential& model, size_t from, Tensor x);

// The rows of dataset indices `idx` (unreadable images left out) as a batch on `device`;
// x and y stay undefined when none of them was readable.
void gather(const FeatureCache& cache, const std::vector<int64_t>& idx, Device device, Tensor& x, Tensor& y);

}  // namespace kiln
