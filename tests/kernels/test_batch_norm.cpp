// batch_norm2d beyond the op table (which checks both forms against finite differences,
// PyTorch and the GPU): refusals, the variance of an off-centre channel, the running
// statistics over several steps, what backward keeps, and the BatchNorm2d layer's rules.
// Also layer_norm's fused CPU kernel against its composition of kiln's ops.
#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/cpu/cpu_backend.h"
#include "layers/layers.h"
#include "tests/support/gpu.h"
#include "tests/support/require_close.h"
#include "tests/support/scoped_backend.h"

using namespace kiln;
using namespace kiln::check;
using Catch::Contains;

namespace {

// Mean and unbiased variance per channel of an NHWC tensor, in double from its floats.
void channel_stats(const Tensor& x, std::vector<double>& mean, std::vector<double>& var_unbiased) {
  const int64_t c = x.dim(3), rows = x.numel() / c;
  const std::vector<double> v = x.to_vector<double>();
  mean.assign(static_cast<size_t>(c), 0.0);
  var_unbiased.assign(static_cast<size_t>(c), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) mean[static_cast<size_t>(j)] += v[static_cast<size_t>(r * c + j)] / rows;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const double d = v[static_cast<size_t>(r * c + j)] - mean[static_cast<size_t>(j)];
      var_unbiased[static_cast<size_t>(j)] += d * d / (rows - 1);
    }
}

}  // namespace

TEST_CASE("batch_norm2d refuses one value per channel in training and bad shapes, saying why", "[batch_norm][errors]") {
  Tensor x = Tensor::ones(Shape{1, 1, 1, 3}), rm = Tensor::zeros(Shape{3}), rv = Tensor::ones(Shape{3});
  REQUIRE_THROWS_WITH(batch_norm2d(x, Tensor(), Tensor(), rm, rv, true),
                      Contains("batch_norm2d") && Contains("more than one value per channel") && Contains("[1, 1, 1, 3]"));
  // The same single pixel is fine in the inference form.
  CHECK(batch_norm2d(x, Tensor(), Tensor(), rm, rv, false).shape() == Shape{1, 1, 1, 3});
  Tensor x2 = Tensor::ones(Shape{2, 2, 2, 3}), bad = Tensor::ones(Shape{4});
  REQUIRE_THROWS_WITH(batch_norm2d(x2, bad, Tensor(), rm, rv, true), Contains("gamma") && Contains("[3]") && Contains("[4]"));
  REQUIRE_THROWS_WITH(batch_norm2d(x2, Tensor(), Tensor(), rm, bad, true), Contains("running_var"));
  Tensor none;
  REQUIRE_THROWS_WITH(batch_norm2d(x2, Tensor(), Tensor(), none, none, false), Contains("needs running_mean"));
  REQUIRE_THROWS_WITH(batch_norm2d(Tensor::ones(Shape{2, 3}), Tensor(), Tensor(), rm, rv, true), Contains("rank 4"));
  // No channels: refused before a backend divides by C.
  Tensor x0 = Tensor::ones(Shape{2, 2, 2, 0}), e0 = Tensor::zeros(Shape{0}), o0 = Tensor::ones(Shape{0});
  REQUIRE_THROWS_WITH(batch_norm2d(x0, Tensor(), Tensor(), e0, o0, true), Contains("no channels") && Contains("[2, 2, 2, 0]"));
  REQUIRE_THROWS_WITH(batch_norm2d(x0, Tensor(), Tensor(), e0, o0, false), Contains("no channels"));
}

TEST_CASE("batch_norm2d's variance of an off-centre channel keeps its digits (two-pass, double)", "[batch_norm]") {
  // Channel means 1000 and -300 with spreads 0.01 and 0.5: E[x^2] - E[x]^2 in float would
  // keep no digit of the first variance. momentum 1 puts the batch statistics in the buffers.
  Generator g(3);
  std::vector<float> v = Tensor::normal(Shape{8, 16, 16, 2}, 0.0f, 1.0f, g).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 == 0) ? 1000.0f + 0.01f * v[i] : -300.0f + 0.5f * v[i];
  const Tensor x = Tensor::from_vector(v, Shape{8, 16, 16, 2});
  Tensor rm = Tensor::zeros(Shape{2}), rv = Tensor::zeros(Shape{2});
  Tensor y = batch_norm2d(x, Tensor(), Tensor(), rm, rv, true, 1.0f, 1e-5f);
  std::vector<double> mean, var;
  channel_stats(x, mean, var);
  KILN_REQUIRE_CLOSE(rm.to_vector<double>(), mean, 0.0, 1e-7);
  KILN_REQUIRE_CLOSE(rv.to_vector<double>(), var, 0.0, 1e-5);
  // The normalised output has mean 0 up to the float rounding of the mean (half an ulp of
  // 1000 or 300 over the channel's spread) and biased variance var / (var + eps).
  std::vector<double> ym, yv;
  channel_stats(y, ym, yv);
  CHECK(std::fabs(ym[0]) < 0.5 * 6.2e-5 / 0.01);
  CHECK(std::fabs(ym[1]) < 0.5 * 3.1e-5 / 0.5);
  const double n = static_cast<double>(x.numel() / 2);
  for (size_t j = 0; j < 2; ++j) {
    const double biased = var[j] * (n - 1) / n;
    CHECK(yv[j] * (n - 1) / n == Approx(biased / (biased + 1e-5)).epsilon(1e-4));
  }
}

TEST_CASE("running statistics follow PyTorch's momentum rule over several steps", "[batch_norm]") {
  Generator g(9);
  Tensor rm = Tensor::from_vector(std::vector<float>{0.5f, -1.0f, 2.0f}, Shape{3});
  Tensor rv = Tensor::from_vector(std::vector<float>{1.5f, 0.25f, 3.0f}, Shape{3});
  std::vector<double> em = rm.to_vector<double>(), ev = rv.to_vector<double>();
  const double momentum = 0.2;
  for (int step = 0; step < 4; ++step) {
    Tensor x = add(mul(Tensor::normal(Shape{2, 3, 5, 3}, 0.0f, 1.0f, g), 2.0f), static_cast<float>(step));
    batch_norm2d(x, Tensor(), Tensor(), rm, rv, true, static_cast<float>(momentum));
    std::vector<double> mean, var;
    channel_stats(x, mean, var);
    for (size_t j = 0; j < 3; ++j) {
      em[j] = (1 - momentum) * em[j] + momentum * mean[j];
      ev[j] = (1 - momentum) * ev[j] + momentum * var[j];
    }
  }
  KILN_REQUIRE_CLOSE(rm.to_vector<double>(), em, 1e-6, 1e-5);
  KILN_REQUIRE_CLOSE(rv.to_vector<double>(), ev, 1e-6, 1e-5);
  // The inference form leaves them alone.
  batch_norm2d(Tensor::ones(Shape{2, 2, 2, 3}), Tensor(), Tensor(), rm, rv, false);
  KILN_REQUIRE_CLOSE(rm.to_vector<double>(), em, 1e-6, 1e-5);
}

TEST_CASE("inference-form backward uses the statistics of its forward, not later updates", "[batch_norm]") {
  Generator g(4);
  Tensor x = Tensor::normal(Shape{2, 2, 3, 2}, 0.0f, 1.0f, g).set_requires_grad(true);
  Tensor rm = Tensor::from_vector(std::vector<float>{0.3f, -0.2f}, Shape{2});
  Tensor rv = Tensor::from_vector(std::vector<float>{4.0f, 0.25f}, Shape{2});
  Tensor y = batch_norm2d(x, Tensor(), Tensor(), rm, rv, false);
  // A training step in between moves the buffers (as the next batch of a loop would).
  batch_norm2d(mul(Tensor::normal(Shape{2, 2, 3, 2}, 0.0f, 1.0f, g), 10.0f), Tensor(), Tensor(), rm, rv, true, 0.9f);
  y.backward(Tensor::ones(y.shape()));
  const std::vector<float> dx = x.grad().to_vector<float>();
  for (size_t i = 0; i < dx.size(); ++i)
    CHECK(dx[i] == Approx(1.0 / std::sqrt((i % 2 == 0 ? 4.0 : 0.25) + 1e-5)).epsilon(1e-6));
}

TEST_CASE("BatchNorm2d: torchvision's names, no decay, buffers, and frozen means frozen statistics",
          "[batch_norm][layers][frozen]") {
  Sequential net("net");
  auto bn = net.add(std::make_shared<BatchNorm2d>("bn1", 3));
  const std::vector<ParameterRef> p = net.parameters();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "net/bn1/weight");
  CHECK(p[1].name == "net/bn1/bias");
  CHECK_FALSE(p[0].decay);
  CHECK_FALSE(p[1].decay);
  const std::vector<BufferRef> b = net.buffers();
  REQUIRE(b.size() == 2);
  CHECK(b[0].name == "net/bn1/running_mean");
  CHECK(b[1].name == "net/bn1/running_var");
  CHECK(b[1].tensor->to_vector<float>() == std::vector<float>(3, 1.0f));

  Generator g(6);
  Tensor x = add(mul(Tensor::normal(Shape{4, 3, 3, 3}, 0.0f, 1.0f, g), 3.0f), 5.0f);
  net.train();
  CHECK(bn->uses_batch_statistics());
  net(x);
  const std::vector<float> moved = bn->running_mean().to_vector<float>();
  CHECK(moved[0] > 0.3f);  // 0.1 * ~5
  net.eval();
  CHECK_FALSE(bn->uses_batch_statistics());
  const Tensor y_eval = net(x);
  CHECK(bn->running_mean().to_vector<float>() == moved);

  // Frozen in training mode: the inference form, buffers untouched, output as in eval().
  net.train();
  REQUIRE(net.freeze("net/bn1/") == 2);
  CHECK_FALSE(bn->uses_batch_statistics());
  const Tensor y_frozen = net(x);
  CHECK(bn->running_mean().to_vector<float>() == moved);
  CHECK(y_frozen.to_vector<float>() == y_eval.to_vector<float>());
  net.unfreeze("net/bn1/");
  CHECK(bn->uses_batch_statistics());
}

TEST_CASE("batch_norm2d on the GPU matches the CPU at a ResNet-50 shape, running statistics included",
          "[cuda][batch_norm]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  Generator g(10);
  const Tensor x = add(mul(Tensor::normal(Shape{4, 28, 28, 128}, 0.0f, 1.0f, g), 2.0f), 1.0f);
  const Tensor gamma = Tensor::uniform(Shape{128}, 0.5f, 1.5f, g), beta = Tensor::normal(Shape{128}, 0.0f, 1.0f, g);
  const Tensor dy = Tensor::normal(x.shape(), 0.0f, 1.0f, g);
  for (bool training : {true, false}) {
    struct Out {
      std::vector<double> y, dx, dg, db, rm, rv;
    };
    auto run = [&](Device d) {
      // clone(): to(cpu) of a CPU tensor is the tensor itself, and the CPU run would make
      // the shared x require grad (the GPU run's copies then carry history, not leaves).
      Tensor xd = x.clone().to(d).set_requires_grad(true), gd = gamma.clone().to(d).set_requires_grad(true),
             bd = beta.clone().to(d).set_requires_grad(true);
      Tensor rm = Tensor::full(Shape{128}, 0.5f).to(d), rv = Tensor::full(Shape{128}, 2.0f).to(d);
      Tensor y = batch_norm2d(xd, gd, bd, rm, rv, training);
      y.backward(dy.to(d));
      return Out{y.to_vector<double>(), xd.grad().to_vector<double>(), gd.grad().to_vector<double>(),
                 bd.grad().to_vector<double>(), rm.to_vector<double>(), rv.to_vector<double>()};
    };
    const Out c = run(Device::cpu()), d = run(gpu);
    INFO((training ? "training form" : "inference form"));
    KILN_REQUIRE_CLOSE(d.y, c.y, 1e-5 * mean_abs(c.y), 1e-5);
    KILN_REQUIRE_CLOSE(d.dx, c.dx, 1e-4 * mean_abs(c.dx), 1e-4);
    KILN_REQUIRE_CLOSE(d.dg, c.dg, 1e-4 * mean_abs(c.dg), 1e-4);
    KILN_REQUIRE_CLOSE(d.db, c.db, 1e-4 * mean_abs(c.db), 1e-4);
    KILN_REQUIRE_CLOSE(d.rm, c.rm, 1e-6, 1e-6);
    KILN_REQUIRE_CLOSE(d.rv, c.rv, 1e-6, 1e-6);
  }
}

namespace {
// The CPU backend without its fused layer_norm: core composes the op of mean, sub, mul, div and
// sqrt, as on a backend with no kernel for it (CUDA today).
class ComposingCpu final : public cpu::CpuBackend {
 public:
  bool has_layer_norm() const override { return false; }
};

// layer_norm of fixed inputs on whatever backend the CPU has now: y, then the gradients of
// sum(y * w) to x, gamma and beta, all flattened into one vector.
std::vector<double> layer_norm_run() {
  Generator g(11);
  Tensor x = add(mul(Tensor::normal(Shape{6, 37}, 0, 1, g), 3.0f), 2.0f);
  Tensor gamma = Tensor::uniform(Shape{37}, 0.5f, 2, g);
  Tensor beta = Tensor::normal(Shape{37}, 0, 1, g), w = Tensor::normal(Shape{6, 37}, 0, 1, g);
  for (Tensor* t : {&x, &gamma, &beta}) t->set_requires_grad(true);
  const Tensor y = layer_norm(x, gamma, beta, 1e-5f);
  sum(mul(y, w)).backward();
  std::vector<double> all = y.to_vector<double>();
  for (const Tensor* t : {&x, &gamma, &beta}) {
    const std::vector<double> gr = t->grad().to_vector<double>();
    all.insert(all.end(), gr.begin(), gr.end());
  }
  return all;
}
}  // namespace

TEST_CASE("layer_norm composed of kiln's ops matches the fused CPU kernel in forward and gradients",
          "[ops][layer_norm]") {
  const std::vector<double> fused = layer_norm_run();
  std::vector<double> composed;
  {
    ComposingCpu composing;
    const test::ScopedBackend installed(DeviceType::cpu, &composing);
    composed = layer_norm_run();  // every tensor it made is gone before the backend is
  }
  KILN_REQUIRE_CLOSE(composed, fused, 1e-5 * mean_abs(fused), 1e-5);
}
