// Every op's backward against central finite differences computed in double from the
// float32 forward (Caffe's gradient checker, with its "kink" care built into the inputs).
#include <catch2/catch.hpp>
#include <cmath>

#include "check/op_cases.h"
#include "tests/support/require_close.h"

using namespace kiln;
using namespace kiln::check;

namespace {

// L(inputs) = sum_k out_k * r_k, accumulated in double.
double objective(const OpCase& c, const std::vector<Tensor>& inputs, const std::vector<double>& r) {
  NoGradGuard no_grad;
  const std::vector<double> out = c.forward(inputs).to_vector<double>();
  double l = 0;
  for (size_t k = 0; k < out.size(); ++k) l += out[k] * r[k];
  return l;
}

}  // namespace

TEST_CASE("op backward matches central finite differences on small odd shapes", "[gradcheck][ops]") {
  const std::vector<OpCase> cases = all_op_cases();
  for (const OpCase& c : cases) {
    // bf16 cases: a finite difference cannot resolve bf16's rounding; their gradients are
    // held to the fp32 op's (tests/kernels/test_bf16_backward.cpp).
    if (c.dtype != DType::f32) continue;
    DYNAMIC_SECTION(c.name) {
      std::vector<Tensor> inputs = prepare_inputs(c, Device::cpu(), true);
      Tensor out = c.forward(inputs);
      Generator rg(5);
      Tensor r = Tensor::normal(out.shape(), 0.0f, 1.0f, rg);
      if (has_gradient(c)) out.backward(r);  // else a comparison, checked forward only
      const std::vector<double> rv = r.to_vector<double>();
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (!c.differentiable[i]) continue;
        INFO("input " << i << " " << inputs[i].description());
        REQUIRE(inputs[i].grad().defined());
        const std::vector<double> analytic_all = inputs[i].grad().to_vector<double>();
        const std::vector<float> base = c.inputs[i].to_vector<float>();
        // Up to 48 elements per input, spread over the whole tensor.
        const size_t n = base.size(), picks = std::min<size_t>(n, 48);
        std::vector<double> numeric, analytic;
        for (size_t p = 0; p < picks; ++p) {
          const size_t j = p * n / picks;
          const float eps = 1e-2f;
          std::vector<float> plus = base, minus = base;
          plus[j] = base[j] + eps;
          minus[j] = base[j] - eps;
          std::vector<Tensor> in_p = prepare_inputs(c, Device::cpu(), false), in_m = in_p;
          in_p[i] = Tensor::from_vector(plus, c.inputs[i].shape());
          in_m[i] = Tensor::from_vector(minus, c.inputs[i].shape());
          const double step = static_cast<double>(plus[j]) - static_cast<double>(minus[j]);
          numeric.push_back((objective(c, in_p, rv) - objective(c, in_m, rv)) / step);
          analytic.push_back(analytic_all[j]);
        }
        // 1% relative, plus an absolute floor for float32 rounding of the objective.
        KILN_REQUIRE_CLOSE(analytic, numeric, 2e-3 * std::max(1.0, mean_abs(numeric)), 1e-2);
      }
    }
  }
}
