// End-to-end on the core: a small convnet learns generated data with SGD, runs are
// bit-reproducible from the seed, and frozen parameters stay bit-for-bit unchanged.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "core/kiln.h"

using namespace kiln;

namespace {

// 3 classes of 8x8 images: bright blob top-left, bright blob bottom-right, or stripes,
// under unit Gaussian noise.
void batch(Generator& g, int64_t n, Tensor& x, Tensor& y) {
  std::vector<float> px = Tensor::normal(Shape{n, 8, 8, 2}, 0, 1, g).to_vector<float>();
  std::vector<float> pick = Tensor::uniform(Shape{n}, 0, 3, g).to_vector<float>();
  std::vector<int64_t> lab(static_cast<size_t>(n));
  for (int64_t b = 0; b < n; ++b) {
    const int64_t k = std::min<int64_t>(2, static_cast<int64_t>(pick[static_cast<size_t>(b)]));
    lab[static_cast<size_t>(b)] = k;
    for (int64_t i = 0; i < 8; ++i)
      for (int64_t j = 0; j < 8; ++j) {
        float v = 0;
        if (k == 0 && i < 4 && j < 4) v = 1.5f;
        if (k == 1 && i >= 4 && j >= 4) v = 1.5f;
        if (k == 2 && i % 2 == 0) v = 1.0f;
        for (int64_t c = 0; c < 2; ++c) px[static_cast<size_t>(((b * 8 + i) * 8 + j) * 2 + c)] += v;
      }
  }
  x = Tensor::from_vector(px, Shape{n, 8, 8, 2});
  y = Tensor::from_vector(lab, Shape{n});
}

std::vector<float> train(uint64_t seed, int steps, std::vector<Tensor>* params_out = nullptr,
                         const std::vector<bool>& frozen = {}) {
  Generator init(seed), data(seed + 1), drop(seed + 2);
  std::vector<Tensor> p = {Tensor::normal(Shape{6, 3, 3, 2}, 0, 0.3f, init), Tensor::zeros(Shape{6}),
                           Tensor::normal(Shape{3, 4 * 4 * 6}, 0, 0.1f, init), Tensor::zeros(Shape{3})};
  for (size_t i = 0; i < p.size(); ++i)
    if (frozen.empty() || !frozen[i]) p[i].set_requires_grad(true);
  std::vector<Tensor> mom;
  for (const Tensor& t : p) mom.push_back(Tensor::zeros(t.shape()));
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    Tensor x, y;
    batch(data, 16, x, y);
    Tensor h = max_pool2d(relu(conv2d(x, p[0], p[1], Conv2dParams{1, 1, 1, 1})));
    h = dropout(flatten(h), 0.9f, true, drop);
    Tensor loss = add(softmax_cross_entropy(linear(h, p[2], p[3]), y), l2_penalty(std::vector<Tensor>{p[0], p[2]}, 5e-4f));
    for (Tensor& t : p) t.zero_grad();
    loss.backward();
    std::vector<SgdParamRef> refs;
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i].requires_grad()) refs.push_back({p[i], p[i].grad(), mom[i]});  // as an optimizer does
    sgd_update(refs, SgdOptions{0.05f, 0.9f, 0.0f, false});
    losses.push_back(static_cast<float>(loss.item()));
  }
  if (params_out) *params_out = p;
  return losses;
}

double mean_of(const std::vector<float>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

}  // namespace

TEST_CASE("a small convnet trained with SGD brings its loss below half its start", "[training]") {
  const std::vector<float> losses = train(11, 80);
  const double start = mean_of(losses, 0, 5), end = mean_of(losses, losses.size() - 10, losses.size());
  INFO("start " << start << " end " << end);
  CHECK(end < 0.5 * start);
}

TEST_CASE("two runs with the same seed give bit-identical losses", "[training][determinism]") {
  const std::vector<float> a = train(5, 12), b = train(5, 12), c = train(6, 12);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  CHECK(a != c);
}

TEST_CASE("SGD leaves frozen parameters bit-for-bit unchanged", "[training][frozen][sgd]") {
  std::vector<Tensor> initial;
  train(9, 0, &initial);
  std::vector<Tensor> trained;
  train(9, 5, &trained, {true, true, false, false});
  for (size_t i = 0; i < 2; ++i) {
    const std::vector<float> a = initial[i].to_vector<float>(), b = trained[i].to_vector<float>();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
  CHECK(initial[2].to_vector<float>() != trained[2].to_vector<float>());
}

TEST_CASE("the SGD update follows PyTorch's momentum, Nesterov and weight decay formulas", "[sgd]") {
  for (bool nesterov : {false, true}) {
    Tensor w = Tensor::from_vector(std::vector<float>{1.0f, -2.0f}, Shape{2});
    Tensor g = Tensor::from_vector(std::vector<float>{0.5f, 0.25f}, Shape{2});
    Tensor v = Tensor::from_vector(std::vector<float>{0.1f, -0.1f}, Shape{2});
    std::vector<SgdParamRef> refs = {{w, g, v}};
    const SgdOptions o{0.1f, 0.9f, 0.01f, nesterov};
    sgd_update(refs, o);
    const double w0[2] = {1.0, -2.0}, g0[2] = {0.5, 0.25}, v0[2] = {0.1, -0.1};
    for (int i = 0; i < 2; ++i) {
      const double gg = g0[i] + 0.01 * w0[i];
      const double vn = 0.9 * v0[i] + gg;
      const double step = nesterov ? gg + 0.9 * vn : vn;
      CHECK(v.at({i}) == Approx(vn).epsilon(1e-6));
      CHECK(w.at({i}) == Approx(w0[i] - 0.1 * step).epsilon(1e-6));
    }
  }
}

TEST_CASE("l2_penalty names an undefined weight by its position", "[training][errors]") {
  const Tensor w = Tensor::ones(Shape{2});
  CHECK_THROWS_WITH(l2_penalty(std::vector<Tensor>{w, Tensor()}, 1.0f),
                    Catch::Matchers::Contains("l2_penalty: weight 1 of 2 is an undefined Tensor"));
  CHECK(l2_penalty(std::vector<Tensor>{w}, 1.0f).item() == 1.0);  // 0.5 * scale * (1 + 1)
}
