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

// One op at one shape: its inputs, how to run it, its reference and tolerance, its cost.
struct OpCase {
  std::string name;                        // "conv2d/k3_s2_p0_odd"
  std::string op;                          // the reference script's op name
  std::map<std::string, double> params;    // op parameters passed to the reference
  std::vector<Tensor> inputs;              // on the host
  std::vector<bool> differentiable;        // one per input
  std::function<Tensor(const std::vector<Tensor>&)> forward;
  double rtol = kRtolReduction;
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

// Inputs moved to `device`, with requires_grad set on the differentiable ones.
std::vector<Tensor> prepare_inputs(const OpCase& c, Device device, bool requires_grad);

}  // namespace kiln::check
