// kiln_bench --suite gemm: kiln::linear (y = x w^T, no bias) at VGG16's fc shapes at
// batch 1, 8 and 64, and square 1024 and 2048. Compute-bound at large batch, weight-bound
// (memory) at batch 1.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/autograd.h"
#include "core/ops.h"

namespace kiln::bench {

namespace {

struct GemmCase {
  std::string name;
  int64_t n, in, out;
};

// Rows 0 and n-1 of y against a double-precision product (all columns).
void check_gemm(const Tensor& x, const Tensor& w, const Tensor& y, Row& row) {
  Tensor xk, wk, yk;
  const float* xp = host_floats(x, xk);
  const float* wp = host_floats(w, wk);
  const float* yp = host_floats(y, yk);
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  // As vgg16_forward: float32 sums of up to 25088 products, the op table's reduction class.
  std::vector<double> got, want;
  for (const int64_t r : {int64_t{0}, n - 1}) {
    for (int64_t o = 0; o < out; ++o) {
      double ref = 0;
      for (int64_t i = 0; i < in; ++i) ref += static_cast<double>(xp[r * in + i]) * wp[o * in + i];
      got.push_back(yp[r * out + o]);
      want.push_back(ref);
    }
    if (n == 1) break;
  }
  check_row(row, got, want, kiln::check::kRtolReduction);
}

}  // namespace

SuiteResult run_gemm(const Options& opt, const MachineLimits& m) {
  kiln::NoGradGuard no_grad;
  SuiteResult res;
  set_table_widths(12, 34);
  print_table_header();
  std::vector<GemmCase> cases;
  for (const kiln::LayerPlan& l : vgg16_layers(kiln::LayerPlan::Kind::fc))
    for (const int64_t n : {1, 8, 64})
      cases.push_back({l.name + "/b" + std::to_string(n), n, l.in_channels, l.out_channels});
  for (const int64_t s : {1024, 2048}) cases.push_back({"square" + std::to_string(s), s, s, s});

  kiln::Generator gen(4242);
  Tensor w;
  int64_t w_in = 0, w_out = 0;
  for (const GemmCase& c : cases) {
    if (c.in != w_in || c.out != w_out) {  // one weight per layer, shared by its batches
      w = Tensor();
      w = to_bench_device(Tensor::uniform(Shape{c.out, c.in}, -1.0f, 1.0f, gen), opt);
      w_in = c.in;
      w_out = c.out;
    }
    const Tensor x = to_bench_device(Tensor::uniform(Shape{c.n, c.in}, -1.0f, 1.0f, gen), opt);
    Row row;
    row.name = c.name;
    row.kind = "gemm";
    row.shape = shape_str(Shape{c.n, c.in}) + "x" + shape_str(Shape{c.out, c.in}) + "^T";
    row.flops = 2.0 * c.n * c.in * c.out;
    row.bytes = 4.0 * (c.n * c.in + static_cast<double>(c.in) * c.out + c.n * c.out);
    check_gemm(x, w, kiln::linear(x, w), row);
    time_checked_row(std::move(row), opt, m, res, [&] { (void)kiln::linear(x, w); });
  }
  return res;
}

}  // namespace kiln::bench
