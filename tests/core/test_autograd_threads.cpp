// Backward from several threads (found from Python, whose backward releases the GIL): passes
// into shared leaves sum exactly, and reading .grad or zero_grad while another thread runs
// backward is safe. Also in kiln_thread_tests, under ThreadSanitizer in CI.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "core/kiln.h"

using namespace kiln;

namespace {

// sum(x w^T + b) with w [4, 8], b [4]: every pass adds the same gradient to w and b.
struct Shared {
  Tensor w = Tensor::uniform(Shape{4, 8}, -1.0f, 1.0f, default_generator()).set_requires_grad(true);
  Tensor b = Tensor::zeros(Shape{4}).set_requires_grad(true);
  Tensor x = Tensor::uniform(Shape{3, 8}, -1.0f, 1.0f, default_generator());
  void pass() const { sum(linear(x, w, b)).backward(); }
};

}  // namespace

TEST_CASE("backward passes from several threads into shared leaves sum exactly", "[autograd][threads]") {
  const int threads = 4, passes = 200;
  Shared s;
  // The same number of passes on one thread: every pass adds an identical gradient, so the
  // sum is the same whichever thread adds which.
  Tensor w1 = s.w.detach().clone().set_requires_grad(true), b1 = s.b.detach().clone().set_requires_grad(true);
  for (int i = 0; i < threads * passes; ++i) sum(linear(s.x, w1, b1)).backward();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int i = 0; i < passes; ++i) s.pass();
    });
  for (std::thread& t : pool) t.join();
  CHECK(s.w.grad().to_vector<float>() == w1.grad().to_vector<float>());
  CHECK(s.b.grad().to_vector<float>() == b1.grad().to_vector<float>());
  CHECK(s.b.grad().to_vector<float>() == std::vector<float>(4, 3.0f * threads * passes));
}

TEST_CASE("reading grad and zero_grad while another thread runs backward is safe", "[autograd][threads]") {
  Shared s;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    int64_t seen = 0;
    while (!done.load()) {
      const Tensor g = s.b.grad();
      if (g.defined()) seen += g.numel();
      if (seen % 3 == 0) s.b.zero_grad();
    }
  });
  for (int i = 0; i < 300; ++i) s.pass();
  done = true;
  reader.join();
  const Tensor g = s.b.grad();
  if (g.defined()) {  // some multiple of 3 per element, whatever zero_grad dropped
    for (const float v : g.to_vector<float>()) CHECK(std::fmod(v, 3.0f) == 0.0f);
  }
}
