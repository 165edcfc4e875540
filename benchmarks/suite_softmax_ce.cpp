// kiln_bench --suite softmax_ce: the fused softmax cross-entropy, forward (mean loss) and
// backward (dlogits), at batch 64..1024 and 8 or 1000 classes, through the backend.
// Memory-bound: judged against the measured copy bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/backend.h"

namespace kiln::bench {

SuiteResult run_softmax_ce(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(16, 34);
  print_table_header();
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  kiln::Generator gen(99);
  for (const int64_t k : {8, 1000}) {
    for (const int64_t n : {64, 256, 1024}) {
      const Tensor logits_host = Tensor::uniform(Shape{n, k}, -4.0f, 4.0f, gen);
      std::vector<int64_t> lab(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) lab[static_cast<size_t>(i)] = (i * 7919) % k;
      const Tensor logits = to_bench_device(logits_host, opt);
      const Tensor labels = to_bench_device(Tensor::from_vector(lab, Shape{n}), opt);
      Tensor loss = empty_on_bench_device(Shape{1}, opt);
      const Tensor dloss = to_bench_device(Tensor::full(Shape{1}, 1.0), opt);
      Tensor dlogits = empty_on_bench_device(Shape{n, k}, opt);
      be.softmax_cross_entropy(logits, labels, loss);
      be.softmax_cross_entropy_backward(logits, labels, dloss, dlogits);
      const Tensor loss_host = loss.cpu(), dlogits_host = dlogits.cpu();

      // Double-precision reference of both.
      const float* lp = logits_host.data<float>();
      const float* dp = dlogits_host.data<float>();
      // Sums over a row: the op table's softmax-CE (reduction) class.
      std::vector<double> g_ref(static_cast<size_t>(n * k));
      double loss_ref = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* row = lp + i * k;
        const double mx = *std::max_element(row, row + k);
        double z = 0;
        for (int64_t j = 0; j < k; ++j) z += std::exp(row[j] - mx);
        const double lse = mx + std::log(z);
        const int64_t y = lab[static_cast<size_t>(i)];
        loss_ref += (lse - row[y]) / static_cast<double>(n);
        for (int64_t j = 0; j < k; ++j)
          g_ref[static_cast<size_t>(i * k + j)] = (std::exp(row[j] - lse) - (j == y ? 1.0 : 0.0)) / static_cast<double>(n);
      }

      const std::string tag = std::to_string(n) + "x" + std::to_string(k);
      const std::string shape = shape_str(Shape{n, k}) + "+labels";
      const double el = static_cast<double>(n * k);
      Row rf;
      rf.name = "ce_fwd/" + tag;
      rf.kind = "softmax_ce";
      rf.shape = shape + "->loss";
      rf.flops = 4.0 * el;                          // max, subtract, exp, sum (an exp counted as one)
      rf.bytes = 4.0 * el + 8.0 * n + 4.0;          // logits and int64 labels in, the loss out
      check_row(rf, {loss_host.data<float>()[0]}, {loss_ref}, kiln::check::kRtolReduction, "loss");
      time_checked_row(std::move(rf), opt, m, res, [&] { be.softmax_cross_entropy(logits, labels, loss); });

      Row rb;
      rb.name = "ce_bwd/" + tag;
      rb.kind = "softmax_ce";
      rb.shape = shape + "->dlogits";
      rb.flops = 6.0 * el;
      rb.bytes = 8.0 * el + 8.0 * n + 4.0;          // logits in, dlogits out
      check_row(
          rb, g_ref.size(), [&](size_t e) { return dp[e]; }, [&](size_t e) { return g_ref[e]; },
          kiln::check::kRtolReduction, "dlogits");
      time_checked_row(std::move(rb), opt, m, res,
                       [&] { be.softmax_cross_entropy_backward(logits, labels, dloss, dlogits); });
    }
  }
  return res;
}

}  // namespace kiln::bench
