// The frozen-prefix feature cache (see feature_cache.h).
#include "train/feature_cache.h"

#include <algorithm>

namespace kiln {

namespace {

bool has_trainable(Module& m) {
  for (const ParameterRef& p : m.parameters())
    if (p.trainable) return true;
  return false;
}

}  // namespace

size_t feature_cut(Sequential& model) {
  const auto& c = model.children();
  size_t cut = 0;
  bool weights = false;  // a prefix of parameter-free children alone saves nothing worth a cache
  for (size_t start = 0; start < c.size();) {
    // One layer: c[start] and the parameter-free children after it.
    size_t end = start + 1;
    while (end < c.size() && c[end]->parameters().empty()) ++end;
    for (size_t i = start; i < end; ++i) {
      if (has_trainable(*c[i]) || dynamic_cast<Dropout*>(c[i].get()) != nullptr) return weights ? cut : 0;
      weights = weights || !c[i]->parameters().empty();
    }
    cut = end;
    start = end;
  }
  return weights ? cut : 0;
}

void FeatureRows::add(const Tensor& batch) {
  const Tensor h = batch.cpu();
  const std::vector<int64_t> item(h.shape().dims().begin() + 1, h.shape().dims().end());
  if (rows_ == 0) {
    item_shape_ = item;
    dtype_ = h.dtype();
    width_ = h.dim(0) > 0 ? h.numel() / h.dim(0) : 0;
  }
  KILN_CHECK(item == item_shape_ && h.dtype() == dtype_, "feature rows: a batch of ", h.description(),
             " after batches of ", dtype_name(dtype_), " items of ", Shape(item_shape_).str());
  const auto* p = static_cast<const char*>(h.raw_data());
  bytes_.insert(bytes_.end(), p, p + h.nbytes());
  rows_ += h.dim(0);
}

Tensor FeatureRows::take() {
  if (rows_ == 0) return Tensor();
  Tensor t = Tensor::empty(Shape{rows_, width_}, TensorOptions{dtype_, Device::cpu()});
  std::copy(bytes_.begin(), bytes_.end(), static_cast<char*>(t.raw_data()));
  bytes_ = {};
  return t;
}

Tensor run_from(Sequential& model, size_t from, Tensor x) {
  return model.forward_range(from, model.children().size(), std::move(x));
}

FeatureCache compute_features(Sequential& model, size_t cut, const io::Dataset& ds, io::LoaderOptions opt) {
  opt.shuffle = false;
  opt.augment = false;
  opt.start_epoch = 0;
  io::Loader loader(ds, opt);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  FeatureCache fc;
  fc.cut = cut;
  fc.row.assign(ds.size(), -1);
  FeatureRows all;
  int64_t rows = 0;
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    const Tensor x = model.forward_range(0, cut, b->images);
    all.add(x);
    const std::vector<int64_t> lab = b->labels.to_vector<int64_t>();
    for (size_t i = 0; i < b->indices.size(); ++i) {
      fc.row[static_cast<size_t>(b->indices[i])] = rows++;
      fc.labels.push_back(lab[i]);
    }
  }
  model.train(was_training);
  KILN_CHECK(rows > 0, "no image of '", ds.root, "' could be read");
  fc.item_shape = all.item_shape();
  fc.feats = all.take();
  return fc;
}

void gather(const FeatureCache& fc, const std::vector<int64_t>& idx, Device device, Tensor& x, Tensor& y) {
  const auto row_bytes = static_cast<size_t>(fc.feats.dim(1)) * dtype_size(fc.feats.dtype());
  const auto* src = static_cast<const char*>(fc.feats.raw_data());
  std::vector<int64_t> rows, lab;
  for (int64_t i : idx) {
    const int64_t r = fc.row[static_cast<size_t>(i)];
    if (r < 0) continue;
    rows.push_back(r);
    lab.push_back(fc.labels[static_cast<size_t>(r)]);
  }
  if (lab.empty()) return;
  const auto n = static_cast<int64_t>(lab.size());
  std::vector<int64_t> dims{n};
  dims.insert(dims.end(), fc.item_shape.begin(), fc.item_shape.end());
  Tensor host = Tensor::empty(Shape(dims), TensorOptions{fc.feats.dtype(), Device::cpu()});
  auto* dst = static_cast<char*>(host.raw_data());
  for (size_t k = 0; k < rows.size(); ++k)
    std::copy(src + static_cast<size_t>(rows[k]) * row_bytes, src + static_cast<size_t>(rows[k] + 1) * row_bytes,
              dst + k * row_bytes);
  x = host.to(device);
  y = Tensor::from_vector(lab, Shape{n}).to(device);
}

}  // namespace kiln
