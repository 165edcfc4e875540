// The precision policy (see precision.h).
#include "train/precision.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "layers/layers.h"

namespace kiln {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16_frozen: return "bf16-frozen";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& name) {
  for (Precision p : {Precision::fp32, Precision::bf16_frozen, Precision::bf16})
    if (name == precision_name(p)) return p;
  KILN_FAIL("unknown precision '", name, "' (the choices: fp32, bf16-frozen, bf16)");
}

bool native_bf16(Device device) { return backend_for(device).native_bf16(device.index); }

std::string PrecisionUse::describe() const {
  std::ostringstream o;
  o << precision_name(policy) << ": ";
  if (bf16 == 0) {
    o << "all " << layers << " weight layers in fp32";
    if (policy == Precision::bf16_frozen) o << " (nothing is frozen in this phase)";
  } else if (bf16 == layers) {
    o << "all " << layers << " weight layers in bf16";
  } else {
    o << bf16 << " of " << layers << " weight layers in bf16, fp32 from " << first_fp32;
  }
  return o.str();
}

PrecisionUse apply_precision(Module& model, Precision p) {
  PrecisionUse u;
  u.policy = p;
  std::map<const Tensor*, std::string> scope;  // a weight -> its layer's scoped name, for people
  for (const ParameterRef& r : model.parameters()) scope[r.tensor] = r.name.substr(0, r.name.rfind('/'));
  WeightLayer* last = nullptr;
  for_each_module<WeightLayer>(model, [&](WeightLayer& l) { last = &l; });
  for_each_module<WeightLayer>(model, [&](WeightLayer& l) {
    const bool frozen = !l.weight().requires_grad();
    const bool bf16 = p == Precision::bf16 || (p == Precision::bf16_frozen && frozen);
    l.set_compute(bf16 ? DType::bf16 : DType::f32, &l == last);
    ++u.layers;
    u.frozen += frozen ? 1 : 0;
    if (bf16) {
      ++u.bf16;
    } else if (u.first_fp32.empty()) {
      u.first_fp32 = scope[&l.weight()];
    }
  });
  return u;
}

namespace {

// Sum of squares of x and of x - y, in double, over host copies.
void accumulate_error(const Tensor& test, const Tensor& ref, double& diff2, double& ref2) {
  const std::vector<float> a = test.to(DType::f32).to_vector<float>();
  const std::vector<float> b = ref.to(DType::f32).to_vector<float>();
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff2 += d * d;
    ref2 += static_cast<double>(b[i]) * b[i];
  }
}

// KL, top-1 agreement and correctness of one batch of logits.
void compare_outputs(const Tensor& ref_logits, const Tensor& test_logits, const Tensor& labels,
                     PrecisionComparison& c) {
  const std::vector<float> pr = softmax(ref_logits.to(DType::f32)).to_vector<float>();
  const std::vector<float> pt = softmax(test_logits.to(DType::f32)).to_vector<float>();
  const std::vector<int64_t> y = labels.to_vector<int64_t>();
  const int64_t n = ref_logits.dim(0), k = ref_logits.dim(1);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = pr.data() + i * k;
    const float* t = pt.data() + i * k;
    int64_t r1 = 0, t1 = 0;
    double kl = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (r[j] > r[r1]) r1 = j;
      if (t[j] > t[t1]) t1 = j;
      if (r[j] > 0) kl += r[j] * (std::log(static_cast<double>(r[j])) - std::log(std::max<double>(t[j], 1e-30)));
    }
    double second = 0;
    for (int64_t j = 0; j < k; ++j)
      if (j != r1) second = std::max<double>(second, r[j]);
    c.kl += std::max(kl, 0.0);  // >= 0 in exact arithmetic; two probability rows' roundings can dip below
    const bool clear = r[r1] - second >= c.margin;
    c.clear += clear;
    c.agree_clear += clear && r1 == t1;
    c.agree_all += r1 == t1;
    c.correct_ref += r1 == y[static_cast<size_t>(i)];
    c.correct_test += t1 == y[static_cast<size_t>(i)];
  }
  c.images += n;
}

}  // namespace

PrecisionComparison compare_precision(Sequential& ref, Sequential& test, io::Loader& loader) {
  KILN_CHECK(ref.children().size() == test.children().size(), "compare_precision: the models differ (",
             ref.children().size(), " and ", test.children().size(), " layers)");
  PrecisionComparison c;
  const size_t n = ref.children().size();
  for (const auto& ch : ref.children()) c.layers.push_back(ch->name());
  std::vector<double> diff2(n, 0), ref2(n, 0);
  const bool ref_training = ref.training(), test_training = test.training();
  ref.eval();
  test.eval();
  NoGradGuard no_grad;
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    Tensor x = b->images, y = b->images;
    for (size_t i = 0; i < n; ++i) {
      x = (*ref.children()[i])(x);
      y = (*test.children()[i])(y);
      accumulate_error(y, x, diff2[i], ref2[i]);
    }
    compare_outputs(x, y, b->labels, c);
  }
  ref.train(ref_training);
  test.train(test_training);
  for (size_t i = 0; i < n; ++i) c.rel_error.push_back(ref2[i] > 0 ? std::sqrt(diff2[i] / ref2[i]) : 0.0);
  if (c.images > 0) c.kl /= static_cast<double>(c.images);
  return c;
}

}  // namespace kiln
