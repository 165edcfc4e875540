// The table of op cases (ggml's test-backend-ops idea): each case builds its inputs,
// knows how to run the op, which inputs are differentiable, what the PyTorch reference
// script should compute, and what one forward costs. The tests (gradient check, PyTorch
// comparison, CUDA against CPU) and kiln_bench --suite ops all walk this one table, so it
// lives in check/, below both.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/kiln.h"

namespace kiln::check {

// Tolerance classes, set once (STYLE.md): relative error per the issue, with an absolute
// floor of rtol * mean|ref| for sums of many terms whose elements can be near zero.
constexpr double kRtolElementwise = 1e-5;
constexpr double kRtolReduction = 1e-4;  // conv, linear, softmax-CE, sums
// bfloat16 cases against the fp32 op on the same bf16-rounded values: one rounding of the
// result (or gradient) to bf16, at most 2^-8 of its value, plus fp32 accumulation-order
// differences (at most K * 2^-24 of the sum of |terms|, K <= 100 in the table); 2^-7
// leaves a factor two for the latter.
constexpr double kRtolBf16 = 1.0 / 128;
// TF32 (GPU convolutions by default, KILN_TF32): each input rounded to 10 mantissa bits,
// 2^-11 of its value, so each product within ~2^-10 of the exact one; 3e-3 leaves a factor
// three. Measured on an H200 (kiln_bench --suite conv, VGG16 at batch 64): up to ~1e-3.
constexpr double kRtolTf32 = 3e-3;
// Ops whose every output and gradient element is an input value or 0 (relu, max-pool
// without overlapping windows, the bf16 -> f32 -> bf16 round trip, eval dropout): no
// rounding, so no tolerance.
constexpr double kRtolExact = 0;

// One op at one shape: its inputs, how to run it, its reference and tolerance, its cost.
struct OpCase {
  std::string name;                        // "conv2d/k3_s2_p0_odd"
  std::string op;                          // the reference script's op name
  std::map<std::string, double> params;    // op parameters passed to the reference
  std::vector<Tensor> inputs;              // on the host
  std::vector<bool> differentiable;        // one per input
  std::function<Tensor(const std::vector<Tensor>&)> forward;
  double rtol = kRtolReduction;
  // The dtype the op gets its floating inputs in. A bfloat16 case holds them here in
  // float32, already bf16-rounded, so its forward on float32 inputs is the fp32 op on the
  // same values: the reference its output and gradients are held to (at rtol).
  DType dtype = DType::f32;
  // Floating inputs the op takes in float32 whatever `dtype` is (batch norm's gamma, beta and
  // running statistics), by index.
  std::vector<size_t> fp32_inputs;
  // Values whose reference needs more than the inputs (the dropout mask), written as
  // extra inputs for the reference script only.
  std::vector<Tensor> reference_extras;
  // Inputs the op updates in place (batch norm's running statistics): after one forward,
  // compared with what the reference's op left in them.
  std::vector<size_t> updated_inputs;
  // Cost of one forward at these shapes, for kiln_bench's GFLOP/s, GB/s and roofline:
  // the arithmetic the op must do, and the bytes it must read and write at least once
  // (0 and 0 for views such as reshape, which move no data).
  double flops = 0;
  double bytes = 0;
};

// Every op case, inputs generated deterministically.
std::vector<OpCase> all_op_cases();

// Whether some input of c is differentiable: a case without one (a comparison, an integer concat)
// is checked forward only, and every other runs a backward.
inline bool has_gradient(const OpCase& c) {
  for (bool d : c.differentiable)
    if (d) return true;
  return false;
}

// Inputs moved to `device`, floating ones in the case's dtype, with requires_grad set on
// the differentiable ones.
std::vector<Tensor> prepare_inputs(const OpCase& c, Device device, bool requires_grad);
// The same inputs with the floating ones in float32: the fp32 op's run of a bf16 case.
std::vector<Tensor> prepare_fp32_inputs(const OpCase& c, Device device, bool requires_grad);


}  // namespace kiln::check
