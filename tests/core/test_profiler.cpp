// core/profiler.h: per-op timing through a forwarding backend. On the CPU here; the GPU
// path differs only in Backend::time_ms (CUDA events), which kiln_bench's rows use already.
#include <catch2/catch.hpp>

#include <string>
#include <thread>

#include "core/kiln.h"

using namespace kiln;

namespace {

// A tiny conv net's step: conv, relu, sum, backward.
void small_step(Generator& g) {
  Tensor x = Tensor::normal(Shape{2, 8, 8, 3}, 0, 1, g);
  Tensor w = Tensor::normal(Shape{4, 3, 3, 3}, 0, 0.1f, g).set_requires_grad(true);
  Tensor b = Tensor::zeros(Shape{4}).set_requires_grad(true);
  sum(relu(conv2d(x, w, b, Conv2dParams{1, 1, 1, 1}))).backward();
}

const ProfileRow* find(const std::vector<ProfileRow>& rows, const std::string& op) {
  for (const ProfileRow& r : rows)
    if (r.op == op) return &r;
  return nullptr;
}

}  // namespace

TEST_CASE("the profiler counts each backend call of a step, by op and by input shape", "[profiler]") {
  Generator g(3);
  small_step(g);  // warm: first-call costs (oneDNN primitive creation) out of the way
  {
    Profiler p;
    small_step(g);
    small_step(g);
    const std::vector<ProfileRow> rows = p.rows();
    for (const char* op : {"conv2d_forward", "relu", "relu_backward", "sum", "conv2d_backward_filter"}) {
      INFO(op << "\n" << p.table(0));
      const ProfileRow* r = find(rows, op);
      REQUIRE(r != nullptr);
      CHECK(r->calls == 2);
      CHECK(r->total_ms >= 0);
      CHECK(r->shape.empty());
    }
    for (size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1].total_ms >= rows[i].total_ms);
    const std::string t = p.table(3);
    CHECK(t.find("profile: ") == 0);
    CHECK(t.find("more rows") != std::string::npos);
    CHECK(p.untimed_calls() == 0);
  }
  Profiler by_shape(true);
  small_step(g);
  const std::vector<ProfileRow> rows = by_shape.rows();
  const ProfileRow* conv = find(rows, "conv2d_forward");
  REQUIRE(conv != nullptr);
  CHECK(conv->shape == std::string(dtype_name(DType::f32)) + Shape{2, 8, 8, 3}.str());
  const std::string t = by_shape.table(0);
  CHECK(t.find("conv2d_forward") != std::string::npos);
  // Grouped by shape, the table starts with each op's total over its shapes.
  const size_t by_op = t.find("\nby op: ");
  REQUIRE(by_op != std::string::npos);
  CHECK(t.find("conv2d_forward", by_op) < t.find("\nop ", by_op));
}

TEST_CASE("a stopped profiler counts nothing more, reset forgets, and one runs at a time", "[profiler]") {
  Generator g(4);
  Profiler p;
  CHECK_THROWS_WITH(Profiler(), Catch::Contains("another profiler is running"));
  small_step(g);
  REQUIRE(find(p.rows(), "relu") != nullptr);
  p.reset();
  CHECK(p.rows().empty());
  small_step(g);
  const int64_t relus = find(p.rows(), "relu")->calls;
  p.stop();
  small_step(g);
  CHECK(find(p.rows(), "relu")->calls == relus);
  Profiler next;  // stop() freed the slot
  small_step(g);
  CHECK(find(next.rows(), "relu")->calls == 1);
}

TEST_CASE("another thread's calls pass through the profiler untimed, and are counted apart", "[profiler]") {
  Generator g(5);
  Profiler p;
  std::thread other([] {
    Generator h(6);
    small_step(h);
  });
  other.join();
  CHECK(p.rows().empty());
  CHECK(p.untimed_calls() > 0);
  small_step(g);
  CHECK_FALSE(p.rows().empty());
}
