// The frozen-prefix feature cache (see feature_cache.h).
#include "train/feature_cache.h"

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

Tensor run_from(Sequential& model, size_t from, Tensor x) {
  const auto& c = model.children();
  for (size_t i = from; i < c.size(); ++i) x = (*c[i])(x);
  return x;
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
  std::vector<float> all;
  int64_t width = 0, rows = 0;
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    Tensor x = b->images;
    const auto& c = model.children();
    for (size_t i = 0; i < cut; ++i) x = (*c[i])(x);
    fc.item_shape.assign(x.shape().dims().begin() + 1, x.shape().dims().end());
    width = x.numel() / x.dim(0);
    const std::vector<float> v = x.to_vector<float>();
    all.insert(all.end(), v.begin(), v.end());
    const std::vector<int64_t> lab = b->labels.to_vector<int64_t>();
    for (size_t i = 0; i < b->indices.size(); ++i) {
      fc.row[static_cast<size_t>(b->indices[i])] = rows++;
      fc.labels.push_back(lab[i]);
    }
  }
  model.train(was_training);
  KILN_CHECK(rows > 0, "no image of '", ds.root, "' could be read");
  fc.feats = Tensor::from_vector(all, Shape{rows, width});
  return fc;
}

void gather(const FeatureCache& fc, const std::vector<int64_t>& idx, Device device, Tensor& x, Tensor& y) {
  const int64_t width = fc.feats.dim(1);
  const float* src = fc.feats.data<float>();
  std::vector<float> v;
  std::vector<int64_t> lab;
  for (int64_t i : idx) {
    const int64_t r = fc.row[static_cast<size_t>(i)];
    if (r < 0) continue;
    v.insert(v.end(), src + r * width, src + (r + 1) * width);
    lab.push_back(fc.labels[static_cast<size_t>(r)]);
  }
  if (lab.empty()) return;
  const auto n = static_cast<int64_t>(lab.size());
  std::vector<int64_t> dims{n};
  dims.insert(dims.end(), fc.item_shape.begin(), fc.item_shape.end());
  x = Tensor::from_vector(v, Shape(dims)).to(device);
  y = Tensor::from_vector(lab, Shape{n}).to(device);
}

}  // namespace kiln
