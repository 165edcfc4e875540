// The autograd engine: accumulation, seeds, grad mode, freed graphs, and "frozen means
// free" proven by counting graph nodes and saved bytes.
#include <catch2/catch.hpp>

#include "core/kiln.h"
#include "layers/layers.h"

using namespace kiln;

TEST_CASE("backward on a scalar accumulates gradients into leaves", "[autograd]") {
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3}, Shape{3}).set_requires_grad(true);
  Tensor y = sum(x * x);  // dy/dx = 2x
  CHECK(y.requires_grad());
  CHECK(y.grad_fn()->name() == "sum");
  y.backward(Tensor(), /*retain_graph=*/true);
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, -4, 6});
  y.backward();  // accumulates
  CHECK(x.grad().to_vector<float>() == std::vector<float>{4, -8, 12});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("a tensor used twice receives the sum of both paths", "[autograd]") {
  Tensor x = Tensor::from_vector(std::vector<float>{2, 3}, Shape{2}).set_requires_grad(true);
  Tensor y = sum(add(mul(x, 3.0f), x * x));  // 3 + 2x
  y.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{7, 9});
}

TEST_CASE("each leaf's gradient is its own memory, apart from other leaves' and the seed", "[autograd]") {
  // add and reshape hand one gradient to each input; a caller that clips a.grad in place
  // must not change b.grad or its own seed.
  Tensor a = Tensor::ones(Shape{3}).set_requires_grad(true);
  Tensor b = Tensor::ones(Shape{3}).set_requires_grad(true);
  Tensor c = Tensor::ones(Shape{3}).set_requires_grad(true);
  const Tensor seed = Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3});
  add(add(a, b), c.reshape(Shape{3})).backward(seed);
  CHECK(a.grad().raw_data() != b.grad().raw_data());
  CHECK(a.grad().raw_data() != c.grad().raw_data());
  CHECK(a.grad().raw_data() != seed.raw_data());
  a.grad().data<float>()[0] = 0.5f;
  CHECK(b.grad().to_vector<float>() == std::vector<float>{1, 2, 3});
  CHECK(seed.to_vector<float>() == std::vector<float>{1, 2, 3});
  // A leaf's own backward: the seed is the caller's, so the gradient is a copy.
  Tensor d = Tensor::ones(Shape{3}).set_requires_grad(true);
  d.backward(seed);
  CHECK(d.grad().raw_data() != seed.raw_data());
  // A gradient nothing else holds (linear's weight gradient) is stored as it comes, and
  // accumulates into the next backward's as before.
  Tensor w = Tensor::ones(Shape{2, 3}).set_requires_grad(true);
  sum(linear(Tensor::ones(Shape{4, 3}), w)).backward();
  CHECK(w.grad().to_vector<float>() == std::vector<float>(6, 4.0f));
  sum(linear(Tensor::ones(Shape{4, 3}), w)).backward();
  CHECK(w.grad().to_vector<float>() == std::vector<float>(6, 8.0f));
}

TEST_CASE("backward on a non-scalar needs a seed gradient", "[autograd][errors]") {
  Tensor x = Tensor::ones(Shape{2, 2}).set_requires_grad(true);
  Tensor y = relu(x);
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("scalar") && Catch::Contains("float32[2, 2]"));
  y.backward(Tensor::full(Shape{2, 2}, 0.5));
  CHECK(x.grad().to_vector<float>() == std::vector<float>(4, 0.5f));
  REQUIRE_THROWS_WITH(relu(x).backward(Tensor::ones(Shape{3})), Catch::Contains("seed gradient"));
}

TEST_CASE("an undefined tensor given to backward, copy_from or a layer is named with its use", "[autograd][errors]") {
  // Each said only "use of an undefined tensor", naming no op or layer.
  const Tensor none;
  REQUIRE_THROWS_WITH(none.backward(), Catch::Contains("backward() on an undefined tensor"));
  Tensor dst = Tensor::zeros(Shape{2});
  REQUIRE_THROWS_WITH(dst.copy_from(none), Catch::Contains("copy_from: the source is an undefined tensor"));
  REQUIRE_THROWS_WITH(Tensor().copy_from(dst), Catch::Contains("copy_from: the destination is an undefined"));
  Linear fc("fc", 2, 3);
  REQUIRE_THROWS_WITH(fc(none), Catch::Contains("fc: input x is an undefined tensor"));
  REQUIRE_THROWS_WITH(-none, Catch::Contains("neg: input x is an undefined tensor"));  // not "mul: a"
}

TEST_CASE("backward twice through a freed graph is an error, retained graphs allow it", "[autograd][errors]") {
  Tensor w = Tensor::ones(Shape{2, 3}).set_requires_grad(true);
  Tensor x = Tensor::ones(Shape{4, 3});
  Tensor loss = sum(linear(x, w));
  loss.backward();
  REQUIRE_THROWS_WITH(loss.backward(), Catch::Contains("already freed") && Catch::Contains("retain_graph"));
}

TEST_CASE("a graph whose ops saved nothing for backward runs again without retain_graph, as torch's", "[autograd]") {
  Tensor x = Tensor::ones(Shape{3}).set_requires_grad(true);
  Tensor y = sum(reshape(add(x, 1.0f), Shape{3, 1}));  // add of a number, reshape and sum keep no tensor
  y.backward();
  y.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
  // mul by a number saves nothing either; mul of two tensors saves each for the other's gradient.
  Tensor z = sum(mul(mul(x, 3.0f), Tensor::full(Shape{3}, 2.0)));
  z.backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{8, 8, 8});
  CHECK(sum(mul(x, 3.0f)).grad_fn()->release_saved() == false);
  CHECK(sum(mul(x, x)).grad_fn()->next[0].fn->release_saved() == true);
  REQUIRE_THROWS_WITH(z.backward(), Catch::Contains("already freed (op mul)"));
  Tensor e = add(sum(exp(x)), sum(x));  // exp keeps its result; the adds and sums nothing
  e.backward();
  const std::vector<float> after_one = x.grad().to_vector<float>();
  REQUIRE_THROWS_WITH(e.backward(), Catch::Contains("already freed (op exp)"));
  CHECK(x.grad().to_vector<float>() == after_one);  // refused before the sums' part reached x
}

TEST_CASE("a saved tensor changed in place before backward is refused, naming the op", "[autograd][errors]") {
  // PyTorch's version counter: backward would otherwise use the new values, silently.
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<float>{10, 20, 30}, Shape{3});
  Tensor y = sum(mul(a, b));
  b.copy_from(Tensor::full(Shape{3}, -1.0));  // a view would count too: versions live on the storage
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("backward of mul") && Catch::Contains("changed in place") &&
                                        Catch::Contains("1 write(s)"));
  CHECK_FALSE(a.grad().defined());

  // The multi-loss pattern: an optimizer step between two backwards through one graph.
  Tensor w = Tensor::from_vector(std::vector<float>{1, 2}, Shape{1, 2}).set_requires_grad(true);
  Tensor x = Tensor::from_vector(std::vector<float>{3, 4}, Shape{1, 2}).set_requires_grad(true);
  Tensor loss = sum(linear(x, w));
  loss.backward(Tensor(), /*retain_graph=*/true);
  CHECK(x.grad().to_vector<float>() == std::vector<float>{1, 2});
  SgdParamRef ref{w, w.grad(), Tensor()};
  sgd_update(std::span<SgdParamRef>(&ref, 1), SgdOptions{0.5f});
  CHECK(w.version() == 1);
  REQUIRE_THROWS_WITH(loss.backward(), Catch::Contains("changed in place"));

  // Unchanged, or changed before the forward: no complaint.
  Tensor c = Tensor::from_vector(std::vector<float>{1, 2}, Shape{2});
  c.copy_from(Tensor::full(Shape{2}, 2.0));
  Tensor z = sum(mul(a.slice(0, 2), c));
  z.backward();
  CHECK(a.grad().to_vector<float>() == std::vector<float>{2, 2, 0});
}

TEST_CASE("backward on a tensor that needs no gradient says so", "[autograd][errors]") {
  Tensor x = Tensor::ones(Shape{3});
  REQUIRE_THROWS_WITH(sum(x).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("requires_grad propagates and no-grad mode records nothing", "[autograd]") {
  Tensor a = Tensor::ones(Shape{3}).set_requires_grad(true);
  Tensor b = Tensor::ones(Shape{3});
  CHECK((a + b).requires_grad());
  CHECK_FALSE((b * b).requires_grad());
  const AutogradStats before = autograd_stats();
  {
    NoGradGuard guard;
    CHECK_FALSE(grad_enabled());
    Tensor c = relu(a * a);
    CHECK_FALSE(c.requires_grad());
    CHECK(autograd_stats().nodes_alive == before.nodes_alive);
  }
  CHECK(grad_enabled());
}

TEST_CASE("GradModeGuard(true) records again inside a no-grad region, and guards restore on exit", "[autograd]") {
  Tensor a = Tensor::ones(Shape{3}).set_requires_grad(true);
  NoGradGuard off;
  CHECK_FALSE((a * a).requires_grad());
  {
    GradModeGuard on(true);
    CHECK(grad_enabled());
    Tensor y = sum(a * a);
    CHECK(y.requires_grad());
    y.backward();
    CHECK(a.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
    {
      GradModeGuard off_again(false);
      CHECK_FALSE(grad_enabled());
    }
    CHECK(grad_enabled());
  }
  CHECK_FALSE(grad_enabled());
}

TEST_CASE("an op with no input requiring grad records no node and saves nothing", "[autograd][frozen]") {
  Tensor x = Tensor::ones(Shape{2, 4, 4, 3});
  Tensor w = Tensor::ones(Shape{5, 3, 3, 3});
  const AutogradStats before = autograd_stats();
  Tensor y = max_pool2d(relu(conv2d(x, w, Tensor(), Conv2dParams{1, 1, 1, 1})));
  const AutogradStats after = autograd_stats();
  CHECK(after.nodes_alive == before.nodes_alive);
  CHECK(after.saved_bytes == before.saved_bytes);
  CHECK(y.is_leaf());
}

TEST_CASE("five layers with the first four frozen record nodes only for the last", "[autograd][frozen]") {
  Generator g(3);
  const Conv2dParams same{1, 1, 1, 1};
  std::vector<Tensor> frozen_w = {Tensor::normal(Shape{4, 3, 3, 3}, 0, 0.3f, g), Tensor::normal(Shape{4, 3, 3, 4}, 0, 0.3f, g),
                                  Tensor::normal(Shape{4, 3, 3, 4}, 0, 0.3f, g), Tensor::normal(Shape{4, 3, 3, 4}, 0, 0.3f, g)};
  Tensor fc_w = Tensor::normal(Shape{3, 4 * 4 * 4}, 0, 0.1f, g).set_requires_grad(true);
  Tensor fc_b = Tensor::zeros(Shape{3}).set_requires_grad(true);
  Tensor x = Tensor::normal(Shape{2, 8, 8, 3}, 0, 1, g);
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 2}, Shape{2});

  const AutogradStats before = autograd_stats();
  Tensor h = x;
  for (size_t i = 0; i < frozen_w.size(); ++i) {
    h = relu(conv2d(h, frozen_w[i], Tensor(), same));
    if (i == 1) h = max_pool2d(h);
  }
  const AutogradStats after_frozen = autograd_stats();
  CHECK(after_frozen.nodes_alive == before.nodes_alive);
  CHECK(after_frozen.saved_bytes == before.saved_bytes);

  Tensor features = flatten(h);  // no node: h needs no grad
  Tensor logits = linear(features, fc_w, fc_b);
  Tensor loss = softmax_cross_entropy(logits, labels);
  const AutogradStats after = autograd_stats();
  CHECK(after.nodes_alive - before.nodes_alive == 2);  // linear and the loss
  // Saved: fc's input (for dW), and the loss's logits and labels. Nothing of conv1..conv4.
  CHECK(after.saved_bytes - before.saved_bytes ==
        static_cast<int64_t>(features.nbytes() + logits.nbytes() + labels.nbytes()));
  loss.backward();
  CHECK(fc_w.grad().defined());
  CHECK(fc_b.grad().defined());
  for (const Tensor& w : frozen_w) CHECK_FALSE(w.grad().defined());
  CHECK(autograd_stats().saved_bytes == before.saved_bytes);  // released after backward
}

TEST_CASE("requires_grad changes only on leaves, and the refusal names detach()", "[autograd][errors]") {
  Tensor a = Tensor::ones(Shape{2}).set_requires_grad(true);
  Tensor y = a * 2.0f;
  CHECK_THROWS_WITH(y.set_requires_grad(false), Catch::Contains("only leaves can change requires_grad") &&
                                                    Catch::Contains("made by mul_scalar") &&
                                                    Catch::Contains("detach()"));
  CHECK(y.requires_grad());
  CHECK_FALSE(y.detach().set_requires_grad(false).requires_grad());
}
