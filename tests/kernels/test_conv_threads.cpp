// Convolutions from several threads at once (a data loader's threads, research code running
// models side by side): the first calls of a new shape build its oneDNN primitives, and two
// threads meeting there must build each once, not race (ThreadSanitizer runs this case in
// scripts/sanitize.sh; it flagged oneDNN's primitive cache when each call built its filter
// reorder, and a matmul built beside a convolution meets that cache too). Every thread's
// results equal one thread's alone, bit for bit.
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>
#include <vector>

#include "core/kiln.h"

using namespace kiln;

namespace {

// Forward, both gradients, and the fused conv + ReLU of frozen layers, of one convolution
// (each lazily built primitive of the shape), then a linear layer over its pixels (oneDNN's
// matmul from 8 rows up).
std::vector<std::vector<float>> conv_pass(const Tensor& x0, const Tensor& w0, const Tensor& fc) {
  Tensor x = x0.clone().set_requires_grad(true);
  Tensor w = w0.clone().set_requires_grad(true);
  const Tensor y = conv2d(x, w, Tensor(), Conv2dParams{1, 1, 1, 1});
  sum(mul(y, y)).backward();
  const NoGradGuard frozen;
  const Tensor r = conv2d_relu(x0, w0, Tensor(), Conv2dParams{1, 1, 1, 1});
  const Tensor pixels = reshape(r, Shape{r.dim(0) * r.dim(1) * r.dim(2), r.dim(3)});
  const Tensor z = linear(pixels, fc);
  return {y.to_vector<float>(), x.grad().to_vector<float>(), w.grad().to_vector<float>(), r.to_vector<float>(),
          z.to_vector<float>()};
}

}  // namespace

TEST_CASE("threads meeting a new convolution shape build its primitives once and agree", "[kernels][conv][threads]") {
  Generator g(71);
  for (int64_t side = 11; side <= 13; ++side) {
    INFO("input side " << side);
    // Shapes no other test uses (17 channels in, 19 out), so the plans are new when the
    // threads meet them; the one-thread reference runs after.
    const Tensor x = Tensor::normal(Shape{2, side, side, 17}, 0, 1, g);
    const Tensor w = Tensor::normal(Shape{19, 3, 3, 17}, 0, 0.1f, g);
    const Tensor fc = Tensor::normal(Shape{side, 19}, 0, 0.1f, g);
    std::vector<std::vector<std::vector<float>>> got(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t) threads.emplace_back([&, t] { got[t] = conv_pass(x, w, fc); });
    for (std::thread& t : threads) t.join();
    const std::vector<std::vector<float>> ref = conv_pass(x, w, fc);
    for (const auto& r : got) {
      REQUIRE(r.size() == ref.size());
      for (size_t i = 0; i < r.size(); ++i) {
        INFO("output " << i << " (y, dx, dw, fused, linear)");
        REQUIRE(r[i].size() == ref[i].size());
        CHECK(std::memcmp(r[i].data(), ref[i].data(), r[i].size() * sizeof(float)) == 0);
      }
    }
  }
}
