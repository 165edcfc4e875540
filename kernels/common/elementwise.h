// Per-element math shared by the CPU and CUDA backends: one definition, two launchers.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/op_params.h"
#include "core/hd.h"
#include "core/philox.h"
#include "kernels/common/exp.h"

namespace kiln::common {

// x ** p for a number p, as torch's number-exponent kernels compute it in float32: the exponents
// they give exact forms take the same forms here (x * x for 2, sqrt for 0.5, 1 / x for -1, ...), so
// x ** 2 is exactly x * x and (-0) ** 0.5 is -0 as torch's; every other p is the C library's powf
// (glibc's within an ulp of powf's exact value; CUDA's within a few: they agree to a few ulp, as exp
// does), except in the CPU's vector loop, whose positive finite x take pow_positive (exp.h; within
// half an ulp but for ~1e-13); that loop also takes a tensor exponent (broadcast or not) and a
// number base (2 ** x), which on the GPU take powf per element (binary_apply). The branches
// are on p alone: the same for every element, and a loop that fixes p at compile time (the CPU's
// pow_exponent_loop) folds them into one form.
// Its list is kPowExactForms (core/op_params.h).
KILN_HD float pow_number(float x, float p) {
  if (p == 2.0f) return x * x;
  if (p == 0.5f) return sqrtf(x);
  if (p == 1.0f) return x;
  if (p == -1.0f) return 1.0f / x;
  if (p == 3.0f) return x * x * x;
  if (p == -0.5f) return 1.0f / sqrtf(x);
  if (p == -2.0f) return 1.0f / (x * x);
  return powf(x, p);
}

// A comparison, 1 or 0, of two floats or of two integers (int32 or int64, compared as themselves,
// not as floats: past 2^24 neighbours would round together); a NaN compares unequal to everything.
template <typename T>
KILN_HD float compare_apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::gt: return a > b ? 1.0f : 0.0f;
    case BinaryOp::ge: return a >= b ? 1.0f : 0.0f;
    case BinaryOp::lt: return a < b ? 1.0f : 0.0f;
    case BinaryOp::le: return a <= b ? 1.0f : 0.0f;
    case BinaryOp::eq: return a == b ? 1.0f : 0.0f;
    case BinaryOp::ne: return a != b ? 1.0f : 0.0f;
    default: return 0.0f;  // not a comparison
  }
}

// The arithmetic integer tensors take (is_integer_arithmetic), exact: add, sub and mul wrap as
// two's complement, as torch's do (taken unsigned: a signed overflow is undefined in C++).
template <typename I>
KILN_HD I integer_apply(BinaryOp op, I a, I b) {
  using U = std::make_unsigned_t<I>;
  switch (op) {
    case BinaryOp::add: return static_cast<I>(static_cast<U>(a) + static_cast<U>(b));
    case BinaryOp::sub: return static_cast<I>(static_cast<U>(a) - static_cast<U>(b));
    case BinaryOp::mul: return static_cast<I>(static_cast<U>(a) * static_cast<U>(b));
    case BinaryOp::maximum: return a > b ? a : b;
    case BinaryOp::minimum: return a < b ? a : b;
    default: return 0;  // not integer arithmetic
  }
}

KILN_HD float binary_apply(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;  // IEEE division on both (no reciprocal, no fast math)
    case BinaryOp::rsub: return b - a;
    case BinaryOp::rdiv: return b / a;
    case BinaryOp::pow: return powf(a, b);
    case BinaryOp::rpow: return powf(b, a);
    // Selects, not fmaxf: fmaxf drops a NaN operand, torch.maximum returns it.
    case BinaryOp::maximum: return (a > b || a != a) ? a : b;
    case BinaryOp::minimum: return (a < b || a != a) ? a : b;
    case BinaryOp::gt:
    case BinaryOp::ge:
    case BinaryOp::lt:
    case BinaryOp::le:
    case BinaryOp::eq:
    case BinaryOp::ne: return compare_apply(op, a, b);
  }
  return 0.0f;
}

// a (op) s for a number s: binary_apply's, but for a number exponent's exact forms (pow_number).
KILN_HD float binary_scalar_apply(BinaryOp op, float a, float s) {
  return op == BinaryOp::pow ? pow_number(a, s) : binary_apply(op, a, s);
}

// Unary math in fp32 through kiln's own exp.h (plain arithmetic, so the CPU's loops vectorise;
// exp, log and tanh within 2 ulp, gelu's normal CDF within 12 above -2); sqrt and abs exact. CPU and
// GPU agree to a few ulp, not bit for bit (nvcc contracts multiply-adds). sigmoid saturates to
// exactly 1 as torch's, and to 0 only below -103.9, where e^x leaves the denormals (torch's from
// -88.7, where its e^-x overflows).
KILN_HD float unary_apply(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::exp: return exp_float(x);
    case UnaryOp::log: return log_float(x);
    case UnaryOp::sqrt: return sqrtf(x);
    case UnaryOp::tanh: return tanh_float(x);
    case UnaryOp::sigmoid: return sigmoid_float(x);
    case UnaryOp::gelu: return x * normal_cdf(x);
    case UnaryOp::silu: return sigmoid_float(x, x);
    case UnaryOp::abs: return fabsf(x);
    case UnaryOp::softplus: return softplus_float(x);
  }
  return 0.0f;
}

// dx of unary op `op` from its input x, its output y and dy (each op reads one of x and y:
// unary_backward_reads_input, core/op_params.h).
// At the kinks the gradient is torch's: abs' is 0 at 0, sqrt's is inf at 0.
KILN_HD float unary_backward(UnaryOp op, float x, float y, float dy) {
  switch (op) {
    case UnaryOp::exp: return dy * y;
    case UnaryOp::log: return dy / x;
    case UnaryOp::sqrt: return dy / (2.0f * y);
    case UnaryOp::tanh: {  // from x: 1 - y*y from a bf16 y near 1 cancels to noise
      const float t = tanh_float(x);
      return dy * (1.0f - t * t);
    }
    case UnaryOp::sigmoid: {
      const float s = sigmoid_float(x);
      return dy * (s * (1.0f - s));
    }
    case UnaryOp::gelu: {
      const float cdf = normal_cdf(x);
      return dy * (cdf + x * normal_pdf(x));
    }
    case UnaryOp::silu: {
      const float s = sigmoid_float(x);
      return dy * (s * (1.0f + x * (1.0f - s)));
    }
    case UnaryOp::abs: return x > 0.0f ? dy : (x < 0.0f ? -dy : 0.0f);
    case UnaryOp::softplus: return dy * sigmoid_float(x);
  }
  return 0.0f;
}

// Whether where(cond, a, b) takes a: cond nonzero, NaN included (torch's bool(NaN) is true).
KILN_HD bool where_chooses_a(float cond) { return cond != 0.0f; }

KILN_HD float relu(float x) { return x > 0.0f ? x : 0.0f; }

// Gradient passes where the output was positive (the subgradient at 0 is 0, as PyTorch).
KILN_HD float relu_backward(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

// Element i of dropout: kept with probability `keep`, scaled by 1/keep. The mask is a
// pure function of (state, i), so CPU and GPU agree bit for bit and backward regenerates it.
KILN_HD bool dropout_keep(PhiloxState s, uint64_t i, float keep) { return philox_uniform(s, i) < keep; }
// Dropout of x whose uniform draw is u (philox_uniform's element i, or one of a block's four).
KILN_HD float dropout_given(float x, float u, float keep) { return u < keep ? x * (1.0f / keep) : 0.0f; }
KILN_HD float dropout(float x, PhiloxState s, uint64_t i, float keep) {
  return dropout_given(x, philox_uniform(s, i), keep);
}

// The atlas byte where output pixel (y, x) of a crop_flip_lut_u8 window starts (its first
// channel); d: the window's desc row (offset, height, width, y0, x0, flip), s: the crop side.
// A flipped window reads column s - 1 - x, as io::crop_to_bytes does.
KILN_HD int64_t crop_flip_source(const int64_t* d, int64_t s, int64_t y, int64_t x) {
  return d[0] + ((d[3] + y) * d[2] + d[4] + (d[5] != 0 ? s - 1 - x : x)) * 3;
}

}  // namespace kiln::common
