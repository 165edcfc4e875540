// The table of op cases (ggml's test-backend-ops idea): each case builds its inputs,
// knows how to run the op, which inputs are differentiable, and what the PyTorch
// reference script should compute. The gradient checker and the PyTorch comparison both
// walk this one table; a CUDA backend will be checked against the CPU with it too.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/kiln.h"

namespace kiln::test {

// Tolerance classes, set once (STYLE.md): relative error per the issue, with an absolute
// floor of rtol * mean|ref| for sums of many terms whose elements can be near zero.
constexpr double kRtolElementwise = 1e-5;
constexpr double kRtolReduction = 1e-4;  // conv, linear, softmax-CE, sums

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
};

// Every op case, inputs generated deterministically.
std::vector<OpCase> all_op_cases();

// Inputs moved to `device`, with requires_grad set on the differentiable ones.
std::vector<Tensor> prepare_inputs(const OpCase& c, Device device, bool requires_grad);

}  // namespace kiln::test
