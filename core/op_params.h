// The plain parameter structs of the ops (geometry, optimizer hyper-parameters, the
// binary- and unary-op tags): what core/ops.h, the backends and the kernel math in kernels/common
// share. Kept apart from core/backend.h so kernels/common never sees the Backend
// interface or Tensor (tests/check_include_graph.py enforces it).
#pragma once

#include <cstdint>

#include "core/hd.h"

namespace kiln {

// sort, argsort and topk take rows (the entries along one dimension) shorter than this: a sort
// key holds the position in 32 bits (kernels/common/sort_key.h).
constexpr int64_t kMaxSortRow = int64_t{1} << 32;

// conv2d geometry. x: [N, H, W, C], w: [O, KH, KW, C] (OHWI), y: [N, OH, OW, O].
struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

// max_pool2d geometry; padding counts as -infinity. x: [N, H, W, C].
struct Pool2dParams {
  int64_t kernel_h = 2, kernel_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;
};

// SGD hyper-parameters (PyTorch's convention: weight decay added to the gradient,
// v = momentum * v + g, step along v, or along g + momentum * v with Nesterov).
struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

// Adam hyper-parameters (PyTorch's torch.optim.Adam without amsgrad: moments m and v,
// bias-corrected step). Weight decay is added to the gradient (L2, Adam's), or with
// decoupled_weight_decay shrinks the weight by 1 - lr * weight_decay before the update
// (torch.optim.AdamW; torch's Adam(decoupled_weight_decay=True)).
struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled_weight_decay = false;
};

// Elementwise binary ops, a op b. rsub and rdiv take the operands the other way round,
// b - a and b / a: with a scalar b they are s - t and s / t in one pass, which a scalar on
// the right cannot say (core builds them for a scalar only). maximum and minimum propagate a
// NaN in either operand, as torch's; the comparisons gt .. ne give 1 where a op b holds and 0
// where not (a NaN compares unequal to everything), in the operands' dtype. pow is a ** b and
// rpow b ** a (a number's power of a tensor, 2 ** x); kernels/common/elementwise.h says how.
// The comparisons stay last: core tells them by op >= gt.
enum class BinaryOp : uint8_t { add, sub, mul, div, rsub, rdiv, pow, rpow, maximum, minimum, gt, ge, lt, le, eq, ne };
// The comparisons: a 0/1 output, a step function of the operands, with no gradient.
constexpr bool is_comparison(BinaryOp op) { return op >= BinaryOp::gt; }
// The arithmetic that int32 and int64 tensors take, exact (common::integer_apply): torch's int
// division is true division into floats, which kiln leaves to an astype.
constexpr bool is_integer_arithmetic(BinaryOp op) {
  return op == BinaryOp::add || op == BinaryOp::sub || op == BinaryOp::mul || op == BinaryOp::maximum ||
         op == BinaryOp::minimum;
}

// The number exponents p that pow takes in an exact form, as torch's number-exponent kernels do
// (x * x for 2, sqrt for 0.5, 1 / x for -1, ...: common::pow_number has each one's form).
inline constexpr float kPowExactForms[] = {2.0f, 0.5f, 1.0f, -1.0f, 3.0f, -0.5f, -2.0f};
// Whether p is one of them.
constexpr bool pow_exact_form(float p) {
  for (const float e : kPowExactForms)
    if (p == e) return true;
  return false;
}

// Elementwise unary math (kernels/common/elementwise.h has each one's value and gradient).
// gelu is the exact (erf) form, torch's default; silu is x * sigmoid(x); softplus is
// log(1 + e^x), with no threshold (torch's beta 1, threshold 20 returns x above 20: the same float).
enum class UnaryOp : uint8_t { exp, log, sqrt, tanh, sigmoid, gelu, silu, abs, softplus };

// Whether op's gradient reads its input x (else only its output y): what autograd keeps, and
// which of the two common::unary_backward is given. exp and sqrt take y (y and 1 / 2y carry
// y's relative error unchanged); tanh and sigmoid recompute from x, as 1 - y*y and y(1 - y)
// from a bfloat16 y near 1 cancel to noise.
KILN_HD constexpr bool unary_backward_reads_input(UnaryOp op) {
  return op != UnaryOp::exp && op != UnaryOp::sqrt;
}

// The most dimensions an elementwise op's broadcast may have (kernels/common/broadcast.h
// passes a plan of this size to a GPU kernel by value).
constexpr int kMaxBroadcastRank = 8;

}  // namespace kiln
