// Elementwise arithmetic, reductions, views (reshape, flatten, slice), the L2 penalty,
// the SGD and Adam updates, and the pixel lookups that turn bytes into network inputs.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
    case BinaryOp::rsub: return "rsub";
    case BinaryOp::rdiv: return "rdiv";
    case BinaryOp::pow: return "pow";
    case BinaryOp::rpow: return "rpow";
    case BinaryOp::maximum: return "maximum";
    case BinaryOp::minimum: return "minimum";
    case BinaryOp::gt: return "gt";
    case BinaryOp::ge: return "ge";
    case BinaryOp::lt: return "lt";
    case BinaryOp::le: return "le";
    case BinaryOp::eq: return "eq";
    case BinaryOp::ne: return "ne";
  }
  return "?";
}

// g summed down to `shape` (the gradient of an operand broadcast to g's shape); g itself
// when it has that shape already.
Tensor reduce_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor out = Tensor::empty(shape, like(g));
  backend_for(g.device()).sum_to(g, out);
  return out;
}

// op(x, y) on the backend into a new tensor of `shape` (x and y broadcast to it).
Tensor apply_binary(BinaryOp op, const Tensor& x, const Tensor& y, const Shape& shape) {
  Tensor out = Tensor::empty(shape, like(x));
  backend_for(x.device()).binary(op, x, y, out);
  return out;
}

// The share of the gradient of maximum or minimum that goes to x against y: 1, but 0 where y
// wins (x < y for maximum: loses = lt; x > y for minimum: gt) and 0.5 on a tie. A NaN on either
// side wins for both, so each gets the whole gradient there (torch's formula).
Tensor winner_weight(BinaryOp loses, const Tensor& x, const Tensor& y, const Shape& shape) {
  Tensor w = apply_binary(loses, x, y, shape);
  Tensor tie = apply_binary(BinaryOp::eq, x, y, shape);
  Backend& be = backend_for(x.device());
  be.binary_scalar(BinaryOp::mul, tie, 0.5f, tie);
  be.binary(BinaryOp::add, w, tie, w);
  be.binary_scalar(BinaryOp::rsub, w, 1.0f, w);
  return w;
}

// op(x, s) on the backend into a new tensor of x's shape.
Tensor apply_scalar(BinaryOp op, const Tensor& x, float s) {
  Tensor out = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).binary_scalar(op, x, s, out);
  return out;
}

// -t, exactly (a negation rounds nothing).
Tensor negated(const Tensor& t) { return apply_scalar(BinaryOp::mul, t, -1.0f); }

// log(x) per element on the backend, into a new tensor.
Tensor apply_log(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).unary(UnaryOp::log, x, out);
  return out;
}

// t repeated up to `shape` (t itself where it has that shape already), in `dtype`; detached.
Tensor expanded(const Tensor& t, const Shape& shape, DType dtype) {
  const Tensor typed = t.dtype() == dtype ? t.detach() : t.detach().to(dtype);
  if (typed.shape() == shape) return typed;
  Tensor out = Tensor::empty(shape, like(typed));
  backend_for(typed.device()).broadcast_to(typed, out);
  return out;
}

// cond as a mask in `dtype` that is nonzero exactly where cond is (NaN included): cond itself in
// that dtype, or cond converted to float32; for bfloat16, that float's != 0 as 0/1, since a tiny
// float (below about 4.6e-41) would round to a bfloat16 0.
Tensor mask_in(const Tensor& cond, DType dtype) {
  if (cond.dtype() == dtype) return cond.detach();
  const Tensor f = cond.dtype() == DType::f32 ? cond.detach() : cond.detach().to(DType::f32);
  if (dtype == DType::f32) return f;
  return apply_scalar(BinaryOp::ne, f, 0.0f).to(dtype);
}

// t with 0 where mask (broadcast to t's shape) is nonzero: a choice, not a product with the mask,
// so an inf or NaN of t there goes too (torch's masked_fill of a gradient).
Tensor zeroed_where(const Tensor& mask, const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), like(t));
  backend_for(t.device()).where(expanded(mask, t.shape(), t.dtype()), Tensor::zeros(t.shape(), like(t)), t, out);
  return out;
}

// The gradients of a ** b, torch's formulas and orders: g * (b * a ** (b - 1)) to a, then 0 where
// b is 0; g * (a ** b * log(a)) to b, its factor a ** b * log(a) 0 where a is 0 and b >= 0 (before
// the product: an infinite g makes NaN there, as torch's).
Tensor pow_grad_base(const Tensor& g, const Tensor& a, const Tensor& b) {
  const Tensor e = apply_scalar(BinaryOp::sub, b, 1.0f);
  const Tensor slope = apply_binary(BinaryOp::mul, b, apply_binary(BinaryOp::pow, a, e, g.shape()), g.shape());
  return zeroed_where(apply_scalar(BinaryOp::eq, b, 0.0f), apply_binary(BinaryOp::mul, g, slope, g.shape()));
}
Tensor pow_grad_exponent(const Tensor& g, const Tensor& a, const Tensor& b) {
  const Tensor y = apply_binary(BinaryOp::pow, a, b, g.shape());
  const Tensor slope = apply_binary(BinaryOp::mul, y, apply_log(a), g.shape());
  const Tensor zero_base = apply_binary(BinaryOp::mul, apply_scalar(BinaryOp::eq, a, 0.0f),
                                        apply_scalar(BinaryOp::ge, b, 0.0f), g.shape());
  return apply_binary(BinaryOp::mul, g, zeroed_where(zero_base, slope), g.shape());
}

struct BinaryNode final : Node {
  explicit BinaryNode(BinaryOp op) : Node(binary_name(op)), op(op) {}
  BinaryOp op;
  Shape a_shape, b_shape;  // the operands' shapes: a broadcast one's gradient is summed back
  SavedTensor a, b;        // mul, div, pow, maximum and minimum only, and only what the gradients need
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor ga, gb;
    const bool want_a = next[0].needed(), want_b = next[1].needed();
    switch (op) {
      case BinaryOp::add:
        if (want_a) ga = reduce_to(g, a_shape);
        if (want_b) gb = reduce_to(g, b_shape);
        break;
      case BinaryOp::sub:
        if (want_a) ga = reduce_to(g, a_shape);
        if (want_b) gb = negated(reduce_to(g, b_shape));
        break;
      case BinaryOp::mul:
        if (want_a) ga = reduce_to(apply_binary(BinaryOp::mul, g, b.get(), g.shape()), a_shape);
        if (want_b) gb = reduce_to(apply_binary(BinaryOp::mul, g, a.get(), g.shape()), b_shape);
        break;
      case BinaryOp::div:
        // PyTorch's formulas: d/da = g / b, d/db = -g * a / (b * b).
        if (want_a) ga = reduce_to(apply_binary(BinaryOp::div, g, b.get(), g.shape()), a_shape);
        if (want_b) {
          const Tensor ga_b = apply_binary(BinaryOp::mul, g, a.get(), g.shape());
          const Tensor bb = apply_binary(BinaryOp::mul, b.get(), b.get(), b_shape);
          gb = negated(reduce_to(apply_binary(BinaryOp::div, ga_b, bb, g.shape()), b_shape));
        }
        break;
      case BinaryOp::maximum:
      case BinaryOp::minimum: {
        const BinaryOp loses = op == BinaryOp::maximum ? BinaryOp::lt : BinaryOp::gt;
        if (want_a) ga = reduce_to(apply_binary(BinaryOp::mul, g, winner_weight(loses, a.get(), b.get(), g.shape()),
                                                g.shape()), a_shape);
        if (want_b) gb = reduce_to(apply_binary(BinaryOp::mul, g, winner_weight(loses, b.get(), a.get(), g.shape()),
                                                g.shape()), b_shape);
        break;
      }
      case BinaryOp::pow:
        if (want_a) ga = reduce_to(pow_grad_base(g, a.get(), b.get()), a_shape);
        if (want_b) gb = reduce_to(pow_grad_exponent(g, a.get(), b.get()), b_shape);
        break;
      default:
        break;  // never built: rsub, rdiv and rpow come from binary_scalar, and comparisons have no gradient
    }
    return {ga, gb};
  }
  bool release_saved() override { return release_all(a, b); }
};

// What a comparison takes, for the errors that meet anything else.
constexpr const char* kComparedDTypes =
    "; comparisons take float32, bfloat16, int32 or int64 tensors (convert it with astype)";

// int32 or int64: the integers kiln compares and does arithmetic on (uint8 is pixels only).
bool is_integer(const Tensor& t) { return t.defined() && (t.dtype() == DType::i32 || t.dtype() == DType::i64); }

// v as a 0-d tensor of a's integer dtype on a's device (v fits it: the callers check).
Tensor integer_scalar_like(const Tensor& a, int64_t v) {
  return Tensor::from_vector(std::vector<int64_t>{v}, Shape{}).to(a.dtype()).to(a.device());
}

// The operands of a comparison or integer arithmetic where one is an integer tensor: both int32
// or int64 (not uint8), or an error saying which to convert; arithmetic beyond integer_apply's
// is refused by name.
void integer_operands(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  checks::defined(name, "a", a);
  checks::defined(name, "b", b);
  for (const auto& [what, t] : {std::pair{"a", &a}, std::pair{"b", &b}}) {
    // arithmetic promoted an integer beside a float (promoted_operands): a float here meets a uint8
    if (is_integer(*t) || (!is_comparison(op) && is_floating(t->dtype()))) continue;
    KILN_CHECK(!is_floating(t->dtype()), name, ": a is ", a.description(), " and b is ", b.description(),
               "; integers compare with integers and floats with floats: convert one with astype (a float32 holds ",
               "every integer to 2^24 exactly, so kiln does not compare them as floats unasked)");
    KILN_FAIL(name, ": ", what, " is ", t->description(),
              is_comparison(op) ? kComparedDTypes
                                : "; kiln's arithmetic takes float32, bfloat16, int32 or int64 tensors (convert "
                                  "it with astype)");
  }
  KILN_CHECK(is_comparison(op) || is_integer_arithmetic(op), name, ": ", a.description(), " and ", b.description(),
             " are integers, which take +, -, *, /, maximum, minimum and comparisons; convert them with ",
             "astype(\"float32\") for ", name);
}

// torch's promotion across kinds, for arithmetic: an int32 or int64 tensor beside a float one is
// converted to the float's dtype (whatever either's rank, torch's category rule: labels * weights,
// a mask * x), and true division of two integer tensors computes in float32 (torch's default
// dtype). nullopt where the operands stay as they are. Comparisons are not promoted: a float32
// holds integers exactly only to 2^24, and kiln's integer comparisons are exact.
std::optional<std::pair<Tensor, Tensor>> promoted_operands(BinaryOp op, const Tensor& a, const Tensor& b) {
  if (is_comparison(op) || !a.defined() || !b.defined()) return std::nullopt;
  const bool ia = is_integer(a), ib = is_integer(b);
  if (ia && ib && op == BinaryOp::div) return std::pair{a.to(DType::f32), b.to(DType::f32)};
  if (ia && !ib && is_floating(b.dtype())) return std::pair{a.to(b.dtype()), b};
  if (ib && !ia && is_floating(a.dtype())) return std::pair{a, b.to(a.dtype())};
  return std::nullopt;
}

// A comparison or integer arithmetic of integer tensors (int32 or int64; an int32 one widened to
// int64 beside an int64), exact at any magnitude (as floats, int64s past 2^24 would round
// together): a comparison into a float32 0/1 mask (kiln has no bool, and a float mask averages
// into an accuracy), +, -, * (wrapping, as torch's), maximum and minimum into the integers' dtype.
// No gradient: integers take none.
Tensor integer_binary(BinaryOp op, const Tensor& a_in, const Tensor& b_in) {
  const char* name = binary_name(op);
  integer_operands(op, a_in, b_in);
  checks::same_device(name, "a", a_in, "b", b_in);
  const Shape shape =
      a_in.shape() == b_in.shape() ? a_in.shape() : checks::broadcast_shape(name, a_in.shape(), b_in.shape());
  // torch's promotion: the wider of the two, but in arithmetic a 0-d operand beside a dimensioned one
  // takes the latter's dtype (x_int32 - x_int32.sum() stays int32); a comparison widens, exact.
  DType common = a_in.dtype() == DType::i64 || b_in.dtype() == DType::i64 ? DType::i64 : DType::i32;
  if (!is_comparison(op) && (a_in.rank() == 0) != (b_in.rank() == 0)) common = (a_in.rank() == 0 ? b_in : a_in).dtype();
  const Tensor a = a_in.to(common), b = b_in.to(common);
  Tensor out = Tensor::empty(shape, like(a, is_comparison(op) ? DType::f32 : common));
  backend_for(a.device()).binary(op, a, b, out);
  return out;
}

// An integer tensor against a number s, exact whatever s: a non-integral s compares as the
// integer below it (x > 2.5 is x > 2, x <= 2.5 is x <= 2; == never holds, != always), and an s
// past the dtype's range, or NaN, gives every element the same answer.
Tensor compare_integers_with(BinaryOp op, const Tensor& a, double s) {
  const char* name = binary_name(op);
  checks::defined(name, "a", a);
  KILN_CHECK(is_integer(a), name, ": a is ", a.description(), kComparedDTypes);
  const auto constant = [&](bool holds) {
    return Tensor::full(a.shape(), holds ? 1.0 : 0.0, like(a, DType::f32));
  };
  const double below = std::floor(s);
  if (std::isnan(s)) return constant(op == BinaryOp::ne);
  if (below != s) {  // not an integer: no element equals it
    if (op == BinaryOp::eq || op == BinaryOp::ne) return constant(op == BinaryOp::ne);
    op = op == BinaryOp::gt || op == BinaryOp::ge ? BinaryOp::gt : BinaryOp::le;
  }
  const bool wide = a.dtype() == DType::i64;
  const double lowest = wide ? -9223372036854775808.0 : -2147483648.0, past = -lowest;  // past: max + 1
  if (below < lowest) return constant(op == BinaryOp::gt || op == BinaryOp::ge || op == BinaryOp::ne);
  if (below >= past) return constant(op == BinaryOp::lt || op == BinaryOp::le || op == BinaryOp::ne);
  // in a's dtype: no widening copy of an int32 a
  return integer_binary(op, a, integer_scalar_like(a, static_cast<int64_t>(below)));
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  if (const auto promoted = promoted_operands(op, a, b)) return binary(op, promoted->first, promoted->second);
  if ((a.defined() && !is_floating(a.dtype())) || (b.defined() && !is_floating(b.dtype())))
    return integer_binary(op, a, b);
  checks::float32_or_bf16(name, "a", a);
  checks::float32_or_bf16(name, "b", b);
  checks::same_dtype(name, "a", a, "b", b);
  checks::same_device(name, "a", a, "b", b);
  const Shape shape = a.shape() == b.shape() ? a.shape() : checks::broadcast_shape(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, like(a));
  backend_for(a.device()).binary(op, a, b, out);
  if (!is_comparison(op) && autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<BinaryNode>(op);
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    if (op == BinaryOp::maximum || op == BinaryOp::minimum || op == BinaryOp::pow) {
      node->a = a.detach();
      node->b = b.detach();
    } else if (op == BinaryOp::mul) {
      if (b.requires_grad()) node->a = a.detach();
      if (a.requires_grad()) node->b = b.detach();
    } else if (op == BinaryOp::div) {
      if (b.requires_grad()) node->a = a.detach();
      node->b = b.detach();
    }
    node->next = {autograd::edge_for(a), autograd::edge_for(b)};
    autograd::set_history(out, node);
  }
  return out;
}

// s as a tensor of t's dtype holds it: a comparison, a clamp bound or a power's number meets a
// bfloat16 tensor as bfloat16, as torch's do (x == 0.1 is true where x holds bf16's 0.1).
float in_dtype_of(const Tensor& t, float s) {
  return t.dtype() == DType::bf16 ? BFloat16::to_float(BFloat16::from_float(s)) : s;
}

struct ScalarNode final : Node {
  ScalarNode(BinaryOp op, float s, float given)
      : Node(std::string(binary_name(op)) + "_scalar"), op(op), s(s), given(given) {}
  BinaryOp op;
  float s;      // as the forward used it (a power's number rounded to bf16 for a bf16 a)
  float given;  // as the caller gave it: torch's pow gradients start from the unrounded number
  SavedTensor a;  // rdiv, pow and rpow only
  std::vector<Tensor> apply(const Tensor& g) override {
    if (op == BinaryOp::add || op == BinaryOp::sub) return {g};
    if (op == BinaryOp::rsub) return {negated(g)};
    if (op == BinaryOp::pow) return {pow_gradient(g)};
    if (op == BinaryOp::rpow) return {rpow_gradient(g)};
    // g * s or g / s; for s / a, -g * s over a * a (the tensor division's formula for its divisor).
    const bool rdiv = op == BinaryOp::rdiv;
    Tensor ga = apply_scalar(rdiv ? BinaryOp::mul : op, g, rdiv ? -s : s);
    if (!rdiv) return {ga};
    const Tensor& x = a.get();
    return {apply_binary(BinaryOp::div, ga, apply_binary(BinaryOp::mul, x, x, x.shape()), g.shape())};
  }
  // a ** p: g * (p * a ** (p - 1)), and 0 for p = 0: torch's formula and order, from p as given
  // (a ** (p - 1) is kiln's pow, which rounds p - 1 for a bf16 a as torch's does).
  Tensor pow_gradient(const Tensor& g) {
    if (given == 0.0f) return Tensor::zeros(g.shape(), like(g));
    const Tensor slope = apply_scalar(BinaryOp::mul, pow(a.get(), given - 1.0f), given);
    return apply_binary(BinaryOp::mul, g, slope, g.shape());
  }
  // s ** a: g * (s ** a * log(s)), log(s) of s as given, in double, rounded once to a's dtype (as
  // torch's scalar multiplier); for s = 0 (or -0) the factor is 0 where a >= 0, as torch's.
  Tensor rpow_gradient(const Tensor& g) {
    const Tensor& x = a.get();
    const float log_s = in_dtype_of(x, static_cast<float>(std::log(static_cast<double>(given))));
    Tensor slope = apply_scalar(BinaryOp::mul, apply_scalar(BinaryOp::rpow, x, s), log_s);
    if (s == 0.0f) slope = zeroed_where(apply_scalar(BinaryOp::ge, x, 0.0f), slope);
    return apply_binary(BinaryOp::mul, g, slope, g.shape());
  }
  bool release_saved() override { return release_all(a); }
};

// out = a (op) s's history, when a wants a gradient: s as the forward used it, given as the caller
// gave it.
void record_scalar_op(BinaryOp op, const Tensor& a, float s, float given, Tensor& out) {
  if (is_comparison(op) || !autograd::needs_grad({&a})) return;
  auto node = std::make_shared<ScalarNode>(op, s, given);
  if (op == BinaryOp::rdiv || op == BinaryOp::pow || op == BinaryOp::rpow) node->a = a.detach();
  node->next = {autograd::edge_for(a)};
  autograd::set_history(out, node);
}

// An integer tensor (op) a number: exact where the number is a whole one a's dtype holds, as a 0-d
// tensor of that dtype; another is refused (torch would promote to float).
Tensor integer_binary_number(BinaryOp op, const Tensor& a, float s) {
  const bool wide = a.dtype() == DType::i64;
  const double lowest = wide ? -9223372036854775808.0 : -2147483648.0;
  KILN_CHECK(std::floor(s) == s && s >= lowest && s < -lowest, binary_name(op), ": ", a.description(),
             " with the number ", s, ": an integer tensor takes whole numbers in its dtype's range; for ", s,
             " convert it with astype(\"float32\") (torch would promote it to float)");
  const BinaryOp plain = op == BinaryOp::rsub ? BinaryOp::sub
                         : op == BinaryOp::rdiv ? BinaryOp::div
                         : op == BinaryOp::rpow ? BinaryOp::pow
                                                : op;
  const Tensor b = integer_scalar_like(a, static_cast<int64_t>(s));
  return plain != op ? integer_binary(plain, b, a) : integer_binary(plain, a, b);
}

Tensor binary_scalar(BinaryOp op, const Tensor& a, float s) {
  if (is_integer(a)) return integer_binary_number(op, a, s);
  checks::float32_or_bf16(binary_name(op), "a", a);
  const float given = s;
  if (is_comparison(op) || op == BinaryOp::pow || op == BinaryOp::rpow) s = in_dtype_of(a, s);
  Tensor out = Tensor::empty(a.shape(), like(a));
  backend_for(a.device()).binary_scalar(op, a, s, out);
  record_scalar_op(op, a, s, given, out);
  return out;
}

// The backward of sum_to (repeat the gradient up) and of broadcast_to (sum it down).
struct BroadcastNode final : Node {
  BroadcastNode(bool sums, Shape x_shape) : Node(sums ? "sum_to" : "broadcast_to"), sums(sums), x_shape(x_shape) {}
  bool sums;
  Shape x_shape;
  std::vector<Tensor> apply(const Tensor& g) override {
    if (!sums) return {reduce_to(g, x_shape)};
    Tensor gx = Tensor::empty(x_shape, like(g));
    backend_for(g.device()).broadcast_to(g, gx);
    return {gx};
  }
};

// sum_to (sums) or broadcast_to of x to `shape`.
Tensor resize_by_broadcast(const Tensor& x, const Shape& shape, bool sums) {
  const char* name = sums ? "sum_to" : "broadcast_to";
  if (sums) checks::float32_or_bf16(name, "input x", x);
  else checks::defined(name, "input x", x);  // a repeat moves bits: any dtype, as torch's expand
  const Shape& big = sums ? x.shape() : shape;  // the one the other repeats to
  const Shape& small = sums ? shape : x.shape();
  for (int64_t d : shape.dims())
    KILN_CHECK(d >= 0, name, ": the shape ", shape, " has a negative extent");
  KILN_CHECK(checks::broadcasts_to(small, big), name, ": ", sums ? "x's shape " : "shape ", big,
             " is not a broadcast of ", sums ? "shape " : "x's shape ", small, " (aligned from the right, each of ",
             small, "'s extents must be ", big, "'s or 1, and ", small, " may not have more dimensions)");
  if (shape == x.shape()) return x;
  KILN_CHECK(big.rank() <= kMaxBroadcastRank, name, ": ", big, " has more than ", kMaxBroadcastRank,
             " dimensions, more than kiln broadcasts; reshape it first");
  Tensor out = Tensor::empty(shape, like(x));
  Backend& be = backend_for(x.device());
  if (sums) be.sum_to(x, out);
  else be.broadcast_to(x, out);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<BroadcastNode>(sums, x.shape());
    node->next = {autograd::edge_for(x)};
    autograd::set_history(out, node);
  }
  return out;
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::gelu: return "gelu";
    case UnaryOp::silu: return "silu";
    case UnaryOp::abs: return "abs";
    case UnaryOp::softplus: return "softplus";
  }
  return "?";
}

// Keeps the input or the output, whichever the op's gradient reads (unary_backward_reads_input).
struct UnaryNode final : Node {
  explicit UnaryNode(UnaryOp op) : Node(unary_name(op)), op(op) {}
  UnaryOp op;
  SavedTensor saved;  // x or y
  std::vector<Tensor> apply(const Tensor& dy) override {
    Tensor dx = Tensor::empty(dy.shape(), like(dy));
    const Tensor t = saved.get();
    const bool reads_x = unary_backward_reads_input(op);
    backend_for(dy.device()).unary_backward(op, reads_x ? t : Tensor(), reads_x ? Tensor() : t, dy, dx);
    return {dx};
  }
  bool release_saved() override { return release_all(saved); }
};

Tensor unary(UnaryOp op, const Tensor& x) {
  checks::float32_or_bf16(unary_name(op), "input x", x);
  Tensor y = Tensor::empty(x.shape(), like(x));
  backend_for(x.device()).unary(op, x, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<UnaryNode>(op);
    node->saved = (unary_backward_reads_input(op) ? x : y).detach();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace

Tensor exp(const Tensor& x) { return unary(UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::sqrt, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::sigmoid, x); }
Tensor gelu(const Tensor& x) { return unary(UnaryOp::gelu, x); }
Tensor silu(const Tensor& x) { return unary(UnaryOp::silu, x); }
namespace {
// 0 - x for an integer x, wrapping as torch's (the lowest value stays itself).
Tensor integer_negated(const Tensor& x) {
  return integer_binary(BinaryOp::sub, Tensor::zeros(Shape{}, like(x)), x);
}
}  // namespace

Tensor abs(const Tensor& x) {
  if (is_integer(x)) return integer_binary(BinaryOp::maximum, x, integer_negated(x));  // torch's, exact
  return unary(UnaryOp::abs, x);
}
Tensor softplus(const Tensor& x) { return unary(UnaryOp::softplus, x); }

Tensor softplus(const Tensor& x, float beta, float threshold) {
  KILN_CHECK(beta != 0 && std::isfinite(beta), "softplus: beta must be finite and nonzero, got ", beta);
  // kiln's softplus is exact where torch's switches to x (past 20, log1p(e^-x) is below float32's ulp there)
  if (beta == 1.0f && threshold >= 20.0f) return softplus(x);
  checks::float32_or_bf16("softplus", "x", x);
  const Tensor f = x.dtype() == DType::bf16 ? x.to(DType::f32) : x;  // torch's bf16 kernel computes in float
  const Tensor scaled = beta == 1.0f ? f : mul(f, beta);
  const Tensor curve = beta == 1.0f ? softplus(scaled) : div(softplus(scaled), beta);
  return where(gt(scaled, threshold), f, curve).to(x.dtype());
}

Tensor gelu_tanh(const Tensor& x) {
  checks::float32_or_bf16("gelu_tanh", "x", x);
  const Tensor f = x.dtype() == DType::bf16 ? x.to(DType::f32) : x;  // torch's bf16 kernel computes in float
  const float beta = 0.7978845608028654f, kappa = 0.044715f;       // sqrt(2 / pi), and the cubic's weight
  const Tensor inner = mul(add(f, mul(mul(mul(f, f), f), kappa)), beta);
  return mul(mul(f, 0.5f), add(tanh(inner), 1.0f)).to(x.dtype());
}

Tensor neg(const Tensor& a) {
  if (is_integer(a)) return integer_negated(a);
  checks::float32_or_bf16("neg", "input x", a);  // else mul's words
  return mul(a, -1.0f);
}

Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }
Tensor add(const Tensor& a, float s) { return binary_scalar(BinaryOp::add, a, s); }
Tensor sub(const Tensor& a, float s) { return binary_scalar(BinaryOp::sub, a, s); }
Tensor mul(const Tensor& a, float s) { return binary_scalar(BinaryOp::mul, a, s); }
Tensor div(const Tensor& a, float s) { return binary_scalar(BinaryOp::div, a, s); }
Tensor sub(float s, const Tensor& a) { return binary_scalar(BinaryOp::rsub, a, s); }
Tensor div(float s, const Tensor& a) { return binary_scalar(BinaryOp::rdiv, a, s); }
Tensor pow(const Tensor& a, const Tensor& b) { return binary(BinaryOp::pow, a, b); }
Tensor pow(const Tensor& x, float p) {
  checks::float32_or_bf16("pow", "x", x);
  // A bfloat16 x meets p rounded to bfloat16, as torch's; but torch picks its exact forms by p as
  // given, so a p that only rounds to one (0.501 to 0.5) takes the tensor exponent's path (powf's
  // answer, or on the CPU the double power's: powf's for bf16, whose rounding hides their ulp).
  // Its gradient is still the number exponent's, from p as given.
  const float rounded = in_dtype_of(x, p);
  if (rounded == p || !pow_exact_form(rounded)) return binary_scalar(BinaryOp::pow, x, p);
  Tensor out = apply_binary(BinaryOp::pow, x, Tensor::full(Shape{}, rounded, like(x)), x.shape());
  record_scalar_op(BinaryOp::pow, x, rounded, p, out);
  return out;
}
Tensor pow(float base, const Tensor& x) {
  checks::float32_or_bf16("pow", "the exponent x of base ** x", x);
  return binary_scalar(BinaryOp::rpow, x, base);
}
// ---------------------------------------------------------------- in place
namespace {
// The name torch gives op's in-place method: add_, mul_, maximum_.
std::string in_place_name(BinaryOp op) { return std::string(binary_name(op)) + "_"; }
}  // namespace

// A leaf that requires grad is torch's refusal too; the rest torch records and kiln asks for the
// out-of-place form.
void check_in_place(const std::string& name, const Tensor& t, const Tensor* other) {
  checks::defined(name.c_str(), "the tensor written", t);
  if (other != nullptr) checks::defined(name.c_str(), "the operand", *other);
  if (!grad_enabled()) return;
  KILN_CHECK(!(t.requires_grad() && t.is_leaf()), name, ": ", t.description(),
             " is a leaf that requires grad (a parameter): writing it in place would bypass its gradient, and torch "
             "refuses it too; run the write under no_grad (kiln.no_grad() in Python, NoGradGuard in C++), as an "
             "initialization or a hand-written update is");
  const bool from_t = t.requires_grad();
  KILN_CHECK(!from_t && !(other != nullptr && other->requires_grad()), name, ": ",
             from_t ? "the tensor written, " : "the operand, ", (from_t ? t : *other).description(),
             ", requires grad, and kiln records no gradient through in-place writes; use the out-of-place form (y = ",
             "x + other, y = x.clamp(...)), or write under no_grad where no gradient is wanted");
}

namespace {
// other as an in-place write may read it while t changes: a fresh copy where it shares t's memory
// but is not t's view exactly (x.add_(x) reads each element before writing it; x.add_(x[0]) would not).
Tensor unaliased(const Tensor& t, const Tensor& other) {
  const bool same_view = other.raw_data() == t.raw_data() && other.shape() == t.shape() && other.dtype() == t.dtype();
  return other.impl().storage == t.impl().storage && !same_view ? other.clone() : other;
}

// t = r, the result of an in-place op computed out of place (checked by the caller).
void store_result(const std::string& name, const Tensor& t, const Tensor& r) {
  checks::defined(name.c_str(), "the result", r);
  KILN_CHECK(r.shape() == t.shape(), name, ": the result has shape ", r.shape(), ", which ", t.description(),
             " cannot hold in place (an operand broadcast it to more dimensions or larger extents); use the "
             "out-of-place form, which returns the larger tensor");
  KILN_CHECK(is_floating(t.dtype()) || !is_floating(r.dtype()), name, ": the result is ", dtype_name(r.dtype()),
             ", which ", t.description(), " cannot store in place (torch refuses it too); use the out-of-place "
             "form, or convert the tensor first with astype(\"float32\")");
  Tensor dst = t;
  dst.copy_from(r);  // converts the dtype; marks t modified
}
}  // namespace

void store_in_place(const std::string& name, const Tensor& t, const Tensor& r) {
  check_in_place(name, t, nullptr);
  store_result(name, t, r);
}

void binary_in_place(BinaryOp op, const Tensor& t, const Tensor& other_in) {
  const std::string name = in_place_name(op);
  KILN_CHECK(!is_comparison(op) && op != BinaryOp::rsub && op != BinaryOp::rdiv && op != BinaryOp::rpow, name,
             ": not an in-place op (add, sub, mul, div, pow, maximum and minimum are)");
  check_in_place(name, t, &other_in);
  NoGradGuard no_grad;  // refused above where a gradient was wanted
  Tensor other = unaliased(t, other_in);
  // torch's: a 0-d CPU tensor is a number to a tensor on any device
  if (other.rank() == 0 && other.device() != t.device() && other.device().is_cpu()) other = other.to(t.device());
  const bool one_pass = other.dtype() == t.dtype() && other.device() == t.device() &&
                        (t.dtype() == DType::f32 || t.dtype() == DType::bf16 ||
                         (is_integer(t) && is_integer_arithmetic(op))) &&
                        checks::broadcasts_to(other.shape(), t.shape());
  if (!one_pass) {
    store_result(name, t, binary(op, t, other));  // binary's promotion and errors; the result checked
    return;
  }
  Tensor out = t;  // binary's kernel on the same operands: its bits, written over t
  backend_for(t.device()).binary(op, t, other, out);
  t.mark_modified();
}

void binary_in_place(BinaryOp op, const Tensor& t, float s) {
  const std::string name = in_place_name(op);
  check_in_place(name, t, nullptr);
  KILN_CHECK(t.dtype() != DType::u8, name, ": ", t.description(), " takes no arithmetic (kiln's uint8 holds pixels); "
             "convert it first with astype(\"int32\") or astype(\"float32\")");
  NoGradGuard no_grad;
  const bool one_pass = op == BinaryOp::add || op == BinaryOp::sub || op == BinaryOp::mul || op == BinaryOp::div;
  if (!one_pass || !is_floating(t.dtype())) {  // an integer t with a number: binary_scalar's answer or error
    KILN_CHECK(!is_integer(t), name, ": ", t.description(), " with the number ", s, ": the result is float32 (torch's "
               "promotion), which an integer tensor cannot store in place; give an int, or convert the tensor first "
               "with astype(\"float32\")");
    store_result(name, t, binary_scalar(op, t, s));
    return;
  }
  Tensor out = t;  // binary_scalar's kernel and number: its bits
  backend_for(t.device()).binary_scalar(op, t, s, out);
  t.mark_modified();
}

void copy_in_place(const Tensor& t, const Tensor& src_in, bool non_blocking, const std::string& name) {
  check_in_place(name, t, &src_in);
  NoGradGuard no_grad;
  KILN_CHECK(checks::broadcasts_to(src_in.shape(), t.shape()), name, ": the source ", src_in.description(),
             " does not broadcast to ", t.description(), " (aligned from the right, each of its extents must be the "
             "destination's or 1)");
  Tensor src = unaliased(t, src_in);
  if (src.shape() != t.shape()) src = broadcast_to(src.to(t.device()).to(t.dtype()), t.shape());
  Tensor dst = t;
  dst.copy_from(src, non_blocking);  // any dtype to any (astype's rules), any device
}

void unary_in_place(UnaryOp op, const Tensor& t) {
  const std::string name = std::string(unary_name(op)) + "_";
  check_in_place(name, t, nullptr);
  NoGradGuard no_grad;
  if (!is_floating(t.dtype())) return store_result(name, t, op == UnaryOp::abs ? abs(t) : unary(op, t));
  Tensor out = t;  // unary's kernel over t: its bits (an elementwise loop, each element read before written)
  backend_for(t.device()).unary(op, t, out);
  t.mark_modified();
}

void fill_in_place(const Tensor& t, double value, const std::string& name) {
  check_in_place(name, t, nullptr);
  Tensor dst = t;
  backend_for(t.device()).fill(dst, value);
  t.mark_modified();
}

// ---------------------------------------------------------------- clamp
namespace {
// torch's gradient: g where lo <= x <= hi, the bounds included; 0 outside and at a NaN x.
struct ClampNode final : Node {
  ClampNode(float lo, float hi) : Node("clamp"), lo(lo), hi(hi) {}
  float lo, hi;
  SavedTensor x;
  std::vector<Tensor> apply(const Tensor& g) override {
    const Tensor& xv = x.get();
    Backend& be = backend_for(g.device());
    Tensor inside = Tensor::empty(xv.shape(), like(xv)), below = Tensor::empty(xv.shape(), like(xv));
    be.binary_scalar(BinaryOp::ge, xv, lo, inside);
    be.binary_scalar(BinaryOp::le, xv, hi, below);
    be.binary(BinaryOp::mul, inside, below, inside);
    be.binary(BinaryOp::mul, inside, g, inside);
    return {inside};
  }
  bool release_saved() override { return release_all(x); }
};
}  // namespace

namespace {
// out = x clamped into [lo, hi] (out may be x), the bounds checked and taken in x's dtype; returns
// them as used.
std::pair<float, float> clamp_into(const char* name, const Tensor& x, float lo, float hi, Tensor& out) {
  checks::float32_or_bf16(name, "input x", x);
  KILN_CHECK(!std::isnan(lo) && !std::isnan(hi), name, ": a bound is NaN (lo ", lo, ", hi ", hi,
             "); pass -inf or inf for a side that is not bounded");
  KILN_CHECK(lo <= hi, name, ": lo ", lo, " is above hi ", hi, ", so no value lies between them");
  lo = in_dtype_of(x, lo);  // so the gradient's bounds are the values the forward clamps to
  hi = in_dtype_of(x, hi);
  Backend& be = backend_for(x.device());
  be.binary_scalar(BinaryOp::maximum, x, lo, out);  // NaN stays NaN through both, as torch.clamp
  be.binary_scalar(BinaryOp::minimum, out, hi, out);
  return {lo, hi};
}
}  // namespace

void clamp_in_place(const Tensor& t, float lo, float hi) {
  check_in_place("clamp_", t, nullptr);
  Tensor out = t;
  (void)clamp_into("clamp_", t, lo, hi, out);
  t.mark_modified();
}

Tensor clamp(const Tensor& x, float lo_given, float hi_given) {
  checks::float32_or_bf16("clamp", "input x", x);
  Tensor out = Tensor::empty(x.shape(), like(x));
  const auto [lo, hi] = clamp_into("clamp", x, lo_given, hi_given, out);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<ClampNode>(lo, hi);
    node->x = x.detach();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(out, node);
  }
  return out;
}

namespace {

// where's gradient: g to a where cond holds and to b elsewhere (0 in the other's places: a
// choice, not a product, so an infinite g stays out of the branch not taken), each summed back
// to its operand's shape.
struct WhereNode final : Node {
  WhereNode() : Node("where") {}
  Shape a_shape, b_shape;
  SavedTensor cond;  // mask_in's, in the output's dtype, at its own shape (a [T, T] mask stays that size)
  std::vector<Tensor> apply(const Tensor& g) override {
    Backend& be = backend_for(g.device());
    const Tensor zeros = Tensor::zeros(g.shape(), like(g));
    const Tensor c = expanded(cond.get(), g.shape(), g.dtype());
    const auto share = [&](bool to_a, const Shape& shape) {
      Tensor t = Tensor::empty(g.shape(), like(g));
      be.where(c, to_a ? g : zeros, to_a ? zeros : g, t);
      return reduce_to(t, shape);
    };
    return {next[0].needed() ? share(true, a_shape) : Tensor(), next[1].needed() ? share(false, b_shape) : Tensor()};
  }
  bool release_saved() override { return release_all(cond); }
};

}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  checks::defined("where", "cond", cond);
  checks::float32_or_bf16("where", "a", a);
  checks::float32_or_bf16("where", "b", b);
  checks::same_dtype("where", "a", a, "b", b);
  checks::same_device("where", "a", a, "b", b);
  checks::same_device("where", "a", a, "cond", cond);
  const Shape shape = checks::broadcast_shape("where", cond.shape(), checks::broadcast_shape("where", a.shape(),
                                                                                              b.shape()));
  const Tensor mask = mask_in(cond, a.dtype());
  Tensor out = Tensor::empty(shape, like(a));
  backend_for(a.device()).where(expanded(mask, shape, a.dtype()), expanded(a, shape, a.dtype()),
                                expanded(b, shape, a.dtype()), out);
  if (autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<WhereNode>();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->cond = mask;
    node->next = {autograd::edge_for(a), autograd::edge_for(b)};
    autograd::set_history(out, node);
  }
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, float b) {
  checks::float32_or_bf16("where", "a", a);
  return where(cond, a, Tensor::full(Shape{}, b, like(a)));
}

Tensor where(const Tensor& cond, float a, const Tensor& b) {
  checks::float32_or_bf16("where", "b", b);
  return where(cond, Tensor::full(Shape{}, a, like(b)), b);
}

Tensor where(const Tensor& cond, float a, float b) {
  checks::defined("where", "cond", cond);
  const TensorOptions f32{DType::f32, cond.device()};
  return where(cond, Tensor::full(Shape{}, a, f32), Tensor::full(Shape{}, b, f32));
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, float value) {
  checks::float32_or_bf16("masked_fill", "x", x);
  checks::defined("masked_fill", "mask", mask);
  KILN_CHECK(checks::broadcasts_to(mask.shape(), x.shape()), "masked_fill: mask ", mask.shape(),
             " does not broadcast to x's shape ", x.shape(), " (the result keeps x's shape; aligned from the right, "
             "each of the mask's extents must be x's or 1)");
  return where(mask, value, x);
}

namespace {
// x's lower (tril) or upper triangle of its last two dimensions, the rest 0: element (i, j) kept
// where j - i <= diagonal (tril) or >= diagonal, the mask [M, N] built from two aranges. Floats
// through where (a -inf outside stays out: no inf * 0), integers multiplied by the 0/1 mask.
Tensor triangle(const Tensor& x, int64_t diagonal, bool lower) {
  const char* op = lower ? "tril" : "triu";
  checks::float_or_integer(op, "x", x);
  KILN_CHECK(x.rank() >= 2, op, ": x ", x.description(), " needs two dimensions or more (a matrix or a batch)");
  const TensorOptions i64{DType::i64, x.device()};
  const int64_t m = x.dim(-2), n = x.dim(-1);
  const Tensor offset = sub(reshape(Tensor::arange(n, 0, 1, i64), Shape{1, n}),
                            reshape(Tensor::arange(m, 0, 1, i64), Shape{m, 1}));  // j - i
  const auto d = static_cast<double>(diagonal);
  const Tensor keep = lower ? le(offset, d) : ge(offset, d);
  return is_integer(x) ? mul(x, keep.to(x.dtype())) : where(keep, x, 0.0f);
}
}  // namespace

Tensor tril(const Tensor& x, int64_t diagonal) { return triangle(x, diagonal, true); }
Tensor triu(const Tensor& x, int64_t diagonal) { return triangle(x, diagonal, false); }

Tensor square(const Tensor& x) {
  checks::float_or_integer("square", "x", x);
  return mul(x, x);
}
Tensor reciprocal(const Tensor& x) {
  checks::float_or_integer("reciprocal", "x", x);
  return div(1.0f, is_integer(x) ? x.to(DType::f32) : x);
}
Tensor rsqrt(const Tensor& x) {  // in float32 for an integer or bfloat16 x, rounded once (torch's)
  checks::float_or_integer("rsqrt", "x", x);
  const Tensor y = div(1.0f, sqrt(x.dtype() == DType::f32 ? x : x.to(DType::f32)));
  return x.dtype() == DType::bf16 ? y.to(DType::bf16) : y;
}

namespace {
// isnan/isinf/isfinite of an integer x: every element the same answer, a float32 mask.
Tensor integer_class(const Tensor& x, bool holds) {
  return Tensor::full(x.shape(), holds ? 1.0 : 0.0, like(x, DType::f32));
}
}  // namespace

Tensor isnan(const Tensor& x) {
  checks::float_or_integer("isnan", "x", x);
  return is_integer(x) ? integer_class(x, false) : ne(x, x);
}
Tensor isinf(const Tensor& x) {
  checks::float_or_integer("isinf", "x", x);
  return is_integer(x) ? integer_class(x, false) : eq(abs(x), std::numeric_limits<double>::infinity());
}
Tensor isfinite(const Tensor& x) {
  checks::float_or_integer("isfinite", "x", x);
  return is_integer(x) ? integer_class(x, true) : lt(abs(x), std::numeric_limits<double>::infinity());
}

Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::minimum, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(BinaryOp::ge, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(BinaryOp::le, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary(BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(BinaryOp::ne, a, b); }
// A comparison with a number: exact for an integer tensor, the number in the dtype of a float one.
namespace {
Tensor compare_number(BinaryOp op, const Tensor& a, double s) {
  if (a.defined() && !is_floating(a.dtype())) return compare_integers_with(op, a, s);
  return binary_scalar(op, a, static_cast<float>(s));
}
}  // namespace

Tensor gt(const Tensor& a, double s) { return compare_number(BinaryOp::gt, a, s); }
Tensor ge(const Tensor& a, double s) { return compare_number(BinaryOp::ge, a, s); }
Tensor lt(const Tensor& a, double s) { return compare_number(BinaryOp::lt, a, s); }
Tensor le(const Tensor& a, double s) { return compare_number(BinaryOp::le, a, s); }
Tensor eq(const Tensor& a, double s) { return compare_number(BinaryOp::eq, a, s); }
Tensor ne(const Tensor& a, double s) { return compare_number(BinaryOp::ne, a, s); }
Tensor sum_to(const Tensor& x, const Shape& shape) { return resize_by_broadcast(x, shape, true); }
Tensor broadcast_to(const Tensor& x, const Shape& shape) { return resize_by_broadcast(x, shape, false); }

// ---------------------------------------------------------------- sum / mean
namespace {
struct SumNode final : Node {
  explicit SumNode(float scale) : Node(scale == 1.0f ? "sum" : "mean"), scale(scale) {}
  Shape x_shape;
  float scale;
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gx = Tensor::empty(x_shape, like(g));
    backend_for(g.device()).broadcast_scalar(g, scale, gx);
    return {gx};
  }
};

// A bfloat16 x is summed (and scaled, for a mean) as float32 and rounded to bf16 at the end, as
// torch.sum of a bf16 tensor gives a bf16 scalar: the whole-tensor kernel is float32's, and the
// reduction over every dimension instead was a column sum of one column (4.7x float32's time).
Tensor reduce_sum(const Tensor& x, bool is_mean) {
  const char* op = is_mean ? "mean" : "sum";
  if (!is_mean && is_integer(x)) {
    Tensor out = Tensor::empty(Shape{}, like(x, DType::i64));  // torch's: int64, exact, wrapping
    backend_for(x.device()).sum(x, out);
    return out;
  }
  KILN_CHECK(!is_mean || !x.defined() || is_floating(x.dtype()), "mean: ", x.description(),
             " is integer; convert it with astype(\"float32\") first (torch's mean takes floats only)");
  checks::float32_or_bf16(op, "input x", x);
  KILN_CHECK(!is_mean || x.numel() > 0, "mean: empty input ", x.description());
  if (x.dtype() == DType::bf16) return reduce_sum(x.to(DType::f32), is_mean).to(DType::bf16);
  Tensor out = Tensor::empty(Shape{}, like(x));
  Backend& be = backend_for(x.device());
  be.sum(x, out);
  const float scale = is_mean ? 1.0f / static_cast<float>(x.numel()) : 1.0f;
  if (is_mean) be.binary_scalar(BinaryOp::mul, out, scale, out);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<SumNode>(scale);
    node->x_shape = x.shape();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(out, node);
  }
  return out;
}
}  // namespace

Tensor sum(const Tensor& x) { return reduce_sum(x, false); }
Tensor mean(const Tensor& x) { return reduce_sum(x, true); }

namespace {
// x's shape with `dims` reduced: kept (each reduced extent 1, keepdim's shape), dropped (without
// them), reduced (per dimension) and count (the elements each result takes). Each dim in
// [-rank, rank), none twice, at least one.
struct ReducedDims {
  Shape kept, dropped;
  std::vector<bool> reduced;
  int64_t count = 1;
};
ReducedDims reduction_of(const char* op, const Tensor& x, const std::vector<int64_t>& dims) {
  KILN_CHECK(!dims.empty(), op, ": no dimension given; ", op, "(x) reduces every one");
  const int64_t rank = x.rank();
  std::vector<int64_t> kept = x.shape().dims(), dropped;
  ReducedDims r;
  r.reduced.assign(static_cast<size_t>(rank), false);
  if (rank == 0) {  // a scalar: dimension 0 or -1 names the value itself, as torch takes it
    for (int64_t d : dims)
      KILN_CHECK(d == 0 || d == -1, op, ": dimension ", d, " is out of range for a scalar (0 or -1 only)");
    KILN_CHECK(dims.size() == 1, op, ": dimension 0 is named twice in the dimensions given (0 and -1 are both it)");
    return r;
  }
  for (int64_t d : dims) {
    const auto k = static_cast<size_t>(checks::resolve_dim(op, d, rank, x.description()));
    KILN_CHECK(!r.reduced[k], op, ": dimension ", k, " is named twice in the dimensions given");
    r.reduced[k] = true;
    r.count *= kept[k];
    kept[k] = 1;
  }
  for (size_t k = 0; k < r.reduced.size(); ++k)
    if (!r.reduced[k]) dropped.push_back(x.dim(static_cast<int64_t>(k)));
  r.kept = Shape(kept);
  r.dropped = Shape(dropped);
  return r;
}

// sum or mean of x over `dims`, as sum_to a shape with those extents 1, then a view without them
// unless keepdim. The gradient is sum_to's: a repeat.
Tensor reduce_dims(const char* op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
  KILN_CHECK(!x.defined() || is_floating(x.dtype()), op, ": ", x.description(), " is integer, which kiln sums ",
             "whole (sum(x), int64) but not over dimensions; convert it with astype(\"float32\") (exact to 2^24)");
  checks::float32_or_bf16(op, "input x", x);
  const ReducedDims r = reduction_of(op, x, dims);
  KILN_CHECK(!is_mean || r.count > 0, op, ": the dimensions given of ", x.description(),
             " hold no element, so they have no mean");
  // A bfloat16 mean scales the bf16 sum, rounded twice (1.2 ulp off seen): through a float32 copy
  // of x it was rounded once, but that copy made mean(x, 0) of 16.8 million elements 4.2x slower.
  // Summed extents of 1 leave the shape: sum_to would return x itself, which a result may not be.
  Tensor out = r.kept == x.shape() ? mul(x, 1.0f) : sum_to(x, r.kept);
  if (is_mean) out = mul(out, 1.0f / static_cast<float>(r.count));
  return keepdim ? out : reshape(out, r.dropped);
}

// amax and amin's gradient, torch's: g shared evenly among the elements equal to the result
// (a NaN result matches none, so its gradient is NaN, as torch's).
struct ExtremeNode final : Node {
  explicit ExtremeNode(BinaryOp op) : Node(op == BinaryOp::maximum ? "amax" : "amin") {}
  SavedTensor x, result;  // result in the kept shape (reduced extents 1)
  std::vector<Tensor> apply(const Tensor& g) override {
    const Tensor xv = x.get(), r = result.get();
    Backend& be = backend_for(g.device());
    Tensor mask = apply_binary(BinaryOp::eq, xv, r, xv.shape());
    Tensor share = Tensor::empty(r.shape(), like(r));
    be.sum_to(mask, share);
    be.binary(BinaryOp::rdiv, share, g.detach().reshape(r.shape()), share);  // g / count
    be.binary(BinaryOp::mul, mask, share, mask);
    return {mask};
  }
  bool release_saved() override { return release_all(x, result); }
};

// amax (op maximum) or amin over `dims`: one reduce_extreme pass per dimension, exact.
Tensor reduce_extreme_dims(BinaryOp op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  const char* name = op == BinaryOp::maximum ? "amax" : "amin";
  checks::float_or_integer(name, "input x", x);
  const ReducedDims r = reduction_of(name, x, dims);
  KILN_CHECK(r.count > 0, name, ": the dimensions given of ", x.description(),
             " hold no element, so they have no ", op == BinaryOp::maximum ? "maximum" : "minimum");
  if (x.rank() == 0)  // a scalar's extreme is itself (a new tensor, gradient 1)
    return is_floating(x.dtype()) ? mul(x, 1.0f) : copy_of(x);
  Backend& be = backend_for(x.device());
  Tensor cur = x;
  for (int64_t d = 0; d < x.rank(); ++d) {
    if (!r.reduced[static_cast<size_t>(d)]) continue;
    std::vector<int64_t> next = cur.shape().dims();
    next[static_cast<size_t>(d)] = 1;
    Tensor out = Tensor::empty(Shape(next), like(x));
    be.reduce_extreme(op, cur, cur.shape().numel_before(d), cur.dim(d), cur.shape().numel_after(d), out);
    cur = out;
  }
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<ExtremeNode>(op);
    node->x = x.detach();
    node->result = cur.detach();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(cur, node);
  }
  return keepdim ? cur : reshape(cur, r.dropped);
}
}  // namespace

Tensor amax(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_extreme_dims(BinaryOp::maximum, x, dims, keepdim);
}
Tensor amin(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_extreme_dims(BinaryOp::minimum, x, dims, keepdim);
}
Tensor amax(const Tensor& x, int64_t dim, bool keepdim) { return amax(x, std::vector<int64_t>{dim}, keepdim); }
Tensor amin(const Tensor& x, int64_t dim, bool keepdim) { return amin(x, std::vector<int64_t>{dim}, keepdim); }
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  checks::float32_or_bf16("logsumexp", "input x", x);
  KILN_CHECK(!dims.empty(), "logsumexp: no dimension given; name the ones to reduce (torch's logsumexp takes dim)");
  const ReducedDims r = reduction_of("logsumexp", x, dims);
  const Tensor xf = x.to(DType::f32);
  // The shift, torch's: each row's maximum, 0 where that is infinite (-inf - -inf would be NaN) or
  // the row empty. Not differentiated: it cancels from the value, and the gradient is softmax's.
  Tensor shift;
  if (r.count > 0) {
    const Tensor m = amax(xf.detach(), dims, true);
    shift = masked_fill(m, eq(abs(m), static_cast<double>(INFINITY)), 0.0f);
  } else {
    shift = Tensor::zeros(r.kept, like(xf));
  }
  Tensor y = add(log(sum(exp(sub(xf, shift)), dims, true)), shift);
  if (!keepdim) y = reshape(y, r.dropped);
  return y.to(x.dtype());
}
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_dims("sum", x, dims, keepdim, false);
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_dims("mean", x, dims, keepdim, true);
}
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return sum(x, std::vector<int64_t>{dim}, keepdim); }
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) { return mean(x, std::vector<int64_t>{dim}, keepdim); }

namespace {

// The variance for var and stddev (op names the caller). A bfloat16 x is computed in float32 and
// rounded once (its mean rounded to bf16 before the subtraction biased the variance by n times
// that rounding squared: 3x at [100, 100, 100.5, ...]). The divisor is count - correction, at
// least 0 (torch's: inf past the count), and an empty reduction is NaN, as torch's.
Tensor variance(const char* op, const Tensor& x, const std::vector<int64_t>& dims, int64_t correction,
                bool keepdim) {
  checks::float32_or_bf16(op, "input x", x);
  KILN_CHECK(correction >= 0, op, ": correction ", correction, " is negative (1: unbiased, 0: the population's)");
  const ReducedDims r = reduction_of(op, x, dims);
  if (r.count == 0) return Tensor::full(keepdim ? r.kept : r.dropped, NAN, like(x));
  if (x.dtype() == DType::bf16) return variance(op, x.to(DType::f32), dims, correction, keepdim).to(DType::bf16);
  const Tensor d = sub(x, mean(x, dims, true));
  return div(sum(mul(d, d), dims, keepdim), static_cast<float>(std::max<int64_t>(r.count - correction, 0)));
}

// sqrt's gradient, but 0 where the deviation is 0 (torch's std_backward): a constant row, a
// padding feature, must not turn every gradient NaN through 1 / (2 * 0).
struct StdNode final : Node {
  explicit StdNode(const char* op) : Node(op) {}
  SavedTensor y;
  std::vector<Tensor> apply(const Tensor& g) override {
    const Tensor& s = y.get();
    const Tensor half_over = apply_binary(BinaryOp::div, g, apply_scalar(BinaryOp::mul, s, 2.0f), g.shape());
    return {zeroed_where(apply_scalar(BinaryOp::eq, s, 0.0f), half_over)};
  }
  bool release_saved() override { return release_all(y); }
};

// sqrt(v) whose gradient is 0 where v is 0 (torch's std and norm there), not the inf that 1 / (2
// sqrt(v)) gives, which times a zero gradient is NaN.
Tensor root_of(const char* op, const Tensor& v) {
  Tensor y = Tensor::empty(v.shape(), like(v));
  backend_for(v.device()).unary(UnaryOp::sqrt, v, y);
  if (autograd::needs_grad({&v})) {
    auto node = std::make_shared<StdNode>(op);
    node->y = y.detach();
    node->next = {autograd::edge_for(v)};
    autograd::set_history(y, node);
  }
  return y;
}

}  // namespace

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  return variance("var", x, dims, correction, keepdim);
}

Tensor stddev(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  return root_of("std", variance("std", x, dims, correction, keepdim));
}

Tensor vector_norm(const Tensor& x, double p, const std::vector<int64_t>& dims, bool keepdim) {
  checks::float32_or_bf16("norm", "x", x);
  KILN_CHECK(p > 0, "norm: p must be positive or inf, got ", p);
  const Tensor f = x.dtype() == DType::bf16 ? x.to(DType::f32) : x;  // summed in float32, rounded once
  Tensor y;
  if (std::isinf(p)) {
    y = amax(abs(f), dims, keepdim);
  } else if (p == 1) {
    y = sum(abs(f), dims, keepdim);
  } else if (p == 2) {
    y = root_of("norm", sum(mul(f, f), dims, keepdim));
  } else {  // the root's gradient at 0 is infinite: a norm of 0 is the constant 0 there (torch's zero gradient)
    const Tensor s = sum(pow(abs(f), static_cast<float>(p)), dims, keepdim);
    const Tensor zero = eq(s, 0.0);
    y = where(zero, 0.0f, pow(where(zero, 1.0f, s), static_cast<float>(1.0 / p)));
  }
  return y.to(x.dtype());
}

namespace {
// A loss's operands: float32, one device, one shape, so that its error names the loss and not
// the sub or mean it is made of.
void check_loss_operands(const char* op, const char* what_a, const Tensor& a, const char* what_b, const Tensor& b) {
  checks::float32(op, what_a, a);
  checks::float32(op, what_b, b);
  checks::same_device(op, what_a, a, what_b, b);
  KILN_CHECK(a.shape() == b.shape(), op, ": ", what_a, " is ", a.shape(), " but ", what_b, " is ", b.shape(),
             " (a loss compares them element by element; reshape one to match)");
  KILN_CHECK(a.numel() > 0, op, ": ", what_a, " has no elements (", a.description(),
             "); the mean of none is undefined");
}
}  // namespace

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_loss_operands("mse_loss", "pred", pred, "target", target);
  const Tensor d = sub(pred, target);
  return mean(mul(d, d));
}

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  check_loss_operands("l1_loss", "pred", pred, "target", target);
  return mean(abs(sub(pred, target)));
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& targets) {
  check_loss_operands("binary_cross_entropy_with_logits", "logits", logits, "targets", targets);
  // y softplus(-x) + (1 - y) softplus(x): no cancellation for a confident logit of either sign
  // (softplus(x) - x y lost the loss of x = 16, y = 1 to rounding), and the gradient is
  // sigmoid(x) - y at every x (through relu and abs it was -y at x = 0, where a
  // zero-initialised head starts).
  return mean(add(mul(targets, softplus(neg(logits))), mul(sub(1.0f, targets), softplus(logits))));
}

// ---------------------------------------------------------------- views
namespace {
struct ReshapeNode final : Node {
  ReshapeNode() : Node("reshape") {}
  Shape x_shape;
  std::vector<Tensor> apply(const Tensor& g) override { return {g.detach().reshape(x_shape)}; }
};

struct SliceNode final : Node {
  SliceNode() : Node("slice") {}
  Shape x_shape;
  int64_t begin = 0;
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gx = Tensor::zeros(x_shape, like(g));
    Tensor window = gx.slice(begin, begin + g.dim(0));
    window.copy_from(g);
    return {gx};
  }
};

// transpose's gradient is the transpose of dy.
struct TransposeNode final : Node {
  TransposeNode() : Node("transpose") {}
  std::vector<Tensor> apply(const Tensor& g) override { return {transpose(g.detach())}; }
};

Tensor make_view(const Tensor& x, const Shape& shape, size_t extra_offset_bytes) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl().storage;
  impl->offset_bytes = x.impl().offset_bytes + extra_offset_bytes;
  impl->shape = shape;
  impl->strides = shape.contiguous_strides();
  impl->dtype = x.dtype();
  return Tensor(impl);
}
}  // namespace

Tensor transpose(const Tensor& x) {
  checks::float32_or_bf16("transpose", "input x", x);
  KILN_CHECK(x.rank() >= 2, "transpose: swaps the last two dimensions, so x needs at least two, got ",
             x.description());
  std::vector<int64_t> dims = x.shape().dims();
  std::swap(dims[dims.size() - 2], dims[dims.size() - 1]);
  Tensor y = Tensor::empty(Shape(dims), like(x));
  backend_for(x.device()).transpose(x, y);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<TransposeNode>();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

namespace {
// Matrix i of a [B, R, C] tensor as an [R, C] view of its memory.
Tensor matrix_view(const Tensor& t, int64_t i) {
  const int64_t r = t.dim(-2), c = t.dim(-1);
  return make_view(t, Shape{r, c}, static_cast<size_t>(i * r * c) * dtype_size(t.dtype()));
}

// A batched matmul's gradient, matrix by matrix through linear's backward: da_i = dy_i b_i^T and
// db_i^T = dy_i^T a_i, written straight into views of da and of db^T, then db^T transposed.
struct BatchedMatmulNode final : Node {
  BatchedMatmulNode() : Node("matmul") {}
  SavedTensor a, bt;  // a [B, M, K] (for db) and b transposed, [B, N, K] (for da)
  Shape a_shape, b_shape, g3_shape;  // g3_shape: [B, M, N]
  int64_t k_extent = 0;
  std::vector<Tensor> apply(const Tensor& g) override {
    const bool want_a = next[0].needed(), want_b = next[1].needed();
    const Tensor av = want_b ? a.get() : Tensor(), btv = want_a ? bt.get() : Tensor();
    const int64_t batch = g3_shape[0], m = g3_shape[1], n = g3_shape[2], k = k_extent;
    const Tensor g3 = g.detach().reshape(g3_shape);
    Tensor da = want_a ? Tensor::empty(Shape{batch, m, k}, like(g)) : Tensor();
    Tensor dbt = want_b ? Tensor::empty(Shape{batch, n, k}, like(g)) : Tensor();
    Backend& be = backend_for(g.device());
    for (int64_t i = 0; i < batch; ++i) {
      Tensor dai = want_a ? matrix_view(da, i) : Tensor(), dbti = want_b ? matrix_view(dbt, i) : Tensor(), none;
      be.linear_backward(matrix_view(g3, i), want_b ? matrix_view(av, i) : Tensor(),
                         want_a ? matrix_view(btv, i) : Tensor(), dai, dbti, none);
    }
    Tensor db;
    if (want_b) {
      db = Tensor::empty(Shape{batch, k, n}, like(g));
      be.transpose(dbt, db);
    }
    return {want_a ? da.reshape(a_shape) : Tensor(), want_b ? db.reshape(b_shape) : Tensor()};
  }
  bool release_saved() override { return release_all(a, bt); }
};

// a [..., M, K] @ b [..., K, N] with the same leading dimensions: one product per matrix.
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  // The leading dimensions' product (a.numel() / (m k) fails where m or k is 0).
  const int64_t m = a.dim(-2), k = a.dim(-1), n = b.dim(-1), batch = a.shape().numel_before(a.rank() - 2);
  const Tensor a3 = a.detach().reshape(Shape{batch, m, k}), b3 = b.detach().reshape(Shape{batch, k, n});
  Backend& be = backend_for(a.device());
  Tensor bt = Tensor::empty(Shape{batch, n, k}, like(b));
  be.transpose(b3, bt);  // linear's w for each product
  Tensor y3 = Tensor::empty(Shape{batch, m, n}, like(a));
  for (int64_t i = 0; i < batch; ++i) {
    Tensor yi = matrix_view(y3, i);
    be.linear_forward(matrix_view(a3, i), matrix_view(bt, i), Tensor(), yi);
  }
  std::vector<int64_t> dims = a.shape().dims();
  dims.back() = n;
  Tensor y = y3.reshape(Shape(dims));
  if (autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<BatchedMatmulNode>();
    if (b.requires_grad()) node->a = a3;  // db needs a, da needs b: each kept only when asked for
    if (a.requires_grad()) node->bt = bt;
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->g3_shape = Shape{batch, m, n};
    node->k_extent = k;
    node->next = {autograd::edge_for(a), autograd::edge_for(b)};
    autograd::set_history(y, node);
  }
  return y;
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  checks::float32_or_bf16(op, "a", a);
  checks::float32_or_bf16(op, "b", b);
  checks::same_dtype(op, "a", a, "b", b);
  checks::same_device(op, "a", a, "b", b);
  KILN_CHECK(a.rank() >= 1 && b.rank() >= 1, op, ": a ", a.shape(), " and b ", b.shape(),
             " must each have a dimension or more (a 0-d tensor is a number: mul multiplies by one)");
  if (a.rank() == 1 || b.rank() == 1) {
    // torch's vectors: a 1-d a is a [1, K] row, a 1-d b a [K, 1] column, and each added extent is
    // removed from the result again (vector @ vector: the 0-d dot product). Views: no copy.
    KILN_CHECK(a.dim(-1) == b.dim(b.rank() == 1 ? 0 : -2), op, ": a ", a.shape(), " has ", a.dim(-1),
               " columns but b ", b.shape(), " has ", b.dim(b.rank() == 1 ? 0 : -2),
               " rows (a [..., M, K] or [K] @ b [..., K, N] or [K])");
    Tensor y = matmul(a.rank() == 1 ? unsqueeze(a, 0) : a, b.rank() == 1 ? unsqueeze(b, 1) : b);
    if (b.rank() == 1) y = squeeze(y, -1);
    return a.rank() == 1 ? squeeze(y, b.rank() == 1 ? -1 : -2) : y;
  }
  KILN_CHECK(a.dim(-1) == b.dim(-2), op, ": a ", a.shape(), " has ", a.dim(-1), " columns but b ", b.shape(), " has ",
             b.dim(-2), " rows (a [..., M, K] @ b [..., K, N])");
  if (b.rank() == 2) {
    // linear computes x w^T: b's transpose is its w (a copy of K N elements, small beside the
    // product's 2 M K N flops). Every row of a meets the same b: one product for all of them.
    if (a.rank() == 2) return linear(a, transpose(b));
    std::vector<int64_t> dims = a.shape().dims();
    dims.back() = b.dim(1);
    // a's rows, counted explicitly (reshape cannot infer -1 where K is 0).
    const int64_t rows = a.shape().numel_before(a.rank() - 1);
    return reshape(linear(reshape(a, Shape{rows, a.dim(-1)}), transpose(b)), Shape(dims));
  }
  std::vector<int64_t> lead_a = a.shape().dims(), lead_b = b.shape().dims();
  lead_a.resize(lead_a.size() - 2);
  lead_b.resize(lead_b.size() - 2);
  if (lead_a == lead_b) return batched_matmul(a, b);
  // Batch dimensions broadcast as torch.matmul's (aligned from the right, equal or one of them 1).
  // lead: the common batch; kept: its extents but the 1s, with each operand's there (ka, kb), so
  // padding with 1s stays a view and only a real repeat copies.
  const size_t rank = std::max(lead_a.size(), lead_b.size());
  std::vector<int64_t> lead(rank), kept, ka, kb;
  for (size_t j = 0; j < rank; ++j) {
    const size_t i = rank - j;  // from the right
    const int64_t da = i <= lead_a.size() ? lead_a[lead_a.size() - i] : 1;
    const int64_t db = i <= lead_b.size() ? lead_b[lead_b.size() - i] : 1;
    KILN_CHECK(da == db || da == 1 || db == 1, op, ": a ", a.shape(), " and b ", b.shape(),
               " have batch dimensions that do not broadcast: ", da, " against ", db, " at dimension -", i + 2,
               " (aligned from the right, each pair of extents equal or one of them 1)");
    lead[j] = da == 1 ? db : da;
    if (lead[j] != 1) kept.push_back(lead[j]), ka.push_back(da), kb.push_back(db);
  }
  const auto matrices = [](std::vector<int64_t> batch, int64_t rows, int64_t cols) {
    batch.insert(batch.end(), {rows, cols});
    return Shape(std::move(batch));
  };
  const Shape out = matrices(lead, a.dim(-2), b.dim(-1));
  // One b for every batch (its batch extents all 1): a's rows through one product.
  if (Shape(lead_b).numel() == 1) return reshape(matmul(a, reshape(b, Shape{b.dim(-2), b.dim(-1)})), out);
  KILN_CHECK((ka == kept && kb == kept) || kept.size() + 2 <= static_cast<size_t>(kMaxBroadcastRank), op, ": a ",
             a.shape(), " and b ", b.shape(), " broadcast over more than ", kMaxBroadcastRank - 2,
             " batch dimensions that are not 1; reshape them first");
  // Each operand repeated to the common batch where it has 1s (broadcast_to: a copy of the one
  // with fewer matrices, its gradient summed back by broadcast_to's).
  const auto batched = [&](const Tensor& t, const std::vector<int64_t>& own) {
    const Tensor v = reshape(t, matrices(own, t.dim(-2), t.dim(-1)));
    return own == kept ? v : broadcast_to(v, matrices(kept, t.dim(-2), t.dim(-1)));
  };
  return reshape(batched_matmul(batched(a, ka), batched(b, kb)), out);
}

Tensor reshape(const Tensor& x, const Shape& shape_in) {
  checks::defined("reshape", "input x", x);
  std::vector<int64_t> dims = shape_in.dims();
  int64_t infer = -1;
  std::vector<int64_t> given;  // the extents besides the -1
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      KILN_CHECK(infer < 0, "reshape: more than one -1 in ", shape_in);
      infer = static_cast<int64_t>(i);
    } else {
      KILN_CHECK(dims[i] >= 0, "reshape: negative extent in ", shape_in);
      given.push_back(dims[i]);
    }
  }
  const int64_t known = Shape(std::move(given)).numel();  // refuses more than 2^63 - 1 elements
  if (infer >= 0) {
    KILN_CHECK(known > 0 && x.numel() % known == 0, "reshape: cannot infer -1 in ", shape_in, " for ",
               x.description());
    dims[static_cast<size_t>(infer)] = x.numel() / known;
  }
  const Shape shape(dims);
  KILN_CHECK(shape.numel() == x.numel(), "reshape: ", x.description(), " has ", x.numel(),
             " elements, target shape ", shape, " has ", shape.numel());
  Tensor y = make_view(x, shape, 0);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<ReshapeNode>();
    node->x_shape = x.shape();
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

Tensor flatten(const Tensor& x) {
  checks::defined("flatten", "input x", x);
  KILN_CHECK(x.rank() >= 1, "flatten: needs rank >= 1, got ", x.description());
  int64_t features = 1;  // the product of the trailing extents, also for an empty batch
  for (int64_t d = 1; d < x.rank(); ++d) features *= x.dim(d);
  return reshape(x, Shape{x.dim(0), features});
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  checks::defined("flatten", "input x", x);
  const int64_t start = checks::resolve_dim_of("flatten", start_dim, x);
  const int64_t end = checks::resolve_dim_of("flatten", end_dim, x);
  KILN_CHECK(start <= end, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim, " in ", x.description());
  if (x.rank() == 0) return reshape(x, Shape{1});  // torch's: a 0-d tensor flattens to [1]
  std::vector<int64_t> dims(x.shape().dims().begin(), x.shape().dims().begin() + start);
  int64_t joined = 1;  // the product, also where an extent is 0 (a -1 could not be solved)
  for (int64_t d = start; d <= end; ++d) joined *= x.dim(d);
  dims.push_back(joined);
  dims.insert(dims.end(), x.shape().dims().begin() + end + 1, x.shape().dims().end());
  return reshape(x, Shape(dims));
}

Tensor slice(const Tensor& x, int64_t begin, int64_t end) {
  checks::defined("slice", "input x", x);
  KILN_CHECK(x.rank() >= 1, "slice: needs rank >= 1, got ", x.description());
  KILN_CHECK(0 <= begin && begin <= end && end <= x.dim(0), "slice: rows [", begin, ", ", end,
             ") out of range for ", x.description());
  std::vector<int64_t> dims = x.shape().dims();
  dims[0] = end - begin;
  const size_t row_bytes = static_cast<size_t>(x.strides()[0]) * dtype_size(x.dtype());
  Tensor y = make_view(x, Shape(dims), static_cast<size_t>(begin) * row_bytes);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<SliceNode>();
    node->x_shape = x.shape();
    node->begin = begin;
    node->next = {autograd::edge_for(x)};
    autograd::set_history(y, node);
  }
  return y;
}

// ---------------------------------------------------------------- L2 penalty
namespace {
struct L2Node final : Node {
  L2Node() : Node("l2_penalty") {}
  std::vector<std::unique_ptr<SavedTensor>> ws;
  float scale = 0;
  std::vector<Tensor> apply(const Tensor& g) override {
    // d/dw (scale * |w|^2 / 2) = scale * w, times the incoming scalar gradient.
    std::vector<Tensor> out(ws.size());
    for (size_t i = 0; i < ws.size(); ++i) {
      if (!next[i].needed()) continue;
      const Tensor& w = ws[i]->get();
      Tensor gs = Tensor::empty(w.shape(), like(w));
      Backend& be = backend_for(w.device());
      be.broadcast_scalar(g, scale, gs);
      be.binary(BinaryOp::mul, gs, w, gs);
      out[i] = gs;
    }
    return out;
  }
  bool release_saved() override {
    bool held = false;
    for (auto& w : ws) held = release_all(*w) || held;
    return held;
  }
};
}  // namespace

Tensor l2_penalty(std::span<const Tensor> weights, float scale) {
  KILN_CHECK(!weights.empty(), "l2_penalty: no weights given");
  for (size_t i = 0; i < weights.size(); ++i)
    KILN_CHECK(weights[i].defined(), "l2_penalty: weight ", i, " of ", weights.size(),
               " is an undefined Tensor (default-constructed, or a parameter never set)");
  const Device dev = weights[0].device();
  Tensor total = Tensor::zeros(Shape{}, TensorOptions{DType::f32, dev});
  Tensor part = Tensor::empty(Shape{}, TensorOptions{DType::f32, dev});
  Backend& be = backend_for(dev);
  bool record = false;
  for (size_t i = 0; i < weights.size(); ++i) {
    const Tensor& w = weights[i];
    checks::float32("l2_penalty", "weight", w);
    KILN_CHECK(w.device() == dev, "l2_penalty: weight ", i, " is on ", w.device().str(), ", weight 0 on ", dev.str());
    be.sum_squares(w, part);
    be.binary(BinaryOp::add, total, part, total);
    record = record || autograd::needs_grad({&w});
  }
  be.binary_scalar(BinaryOp::mul, total, 0.5f * scale, total);
  if (record) {
    auto node = std::make_shared<L2Node>();
    node->scale = scale;
    for (const Tensor& w : weights) {
      node->ws.push_back(std::make_unique<SavedTensor>(w.requires_grad() ? w.detach() : Tensor()));
      node->next.push_back(autograd::edge_for(w));
    }
    autograd::set_history(total, node);
  }
  return total;
}

// ---------------------------------------------------------------- SGD
void sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) {
  const char* op = "sgd_update";
  KILN_CHECK(opt.lr >= 0 && opt.momentum >= 0 && opt.weight_decay >= 0, op,
             ": lr, momentum and weight_decay must be >= 0, got ", opt.lr, ", ", opt.momentum, ", ",
             opt.weight_decay);
  KILN_CHECK(!opt.nesterov || opt.momentum > 0, op, ": Nesterov needs momentum > 0");
  if (params.empty()) return;
  const Device dev = params[0].param.device();
  for (size_t i = 0; i < params.size(); ++i) {
    const SgdParamRef& r = params[i];
    checks::float32(op, "param", r.param);
    KILN_CHECK(r.param.device() == dev, op, ": param ", i, " is on ", r.param.device().str(), ", param 0 on ",
               dev.str(), " (one update covers one device)");
    checks::float32(op, "grad", r.grad);
    KILN_CHECK(r.grad.shape() == r.param.shape() && r.grad.device() == dev, op, ": grad ", r.grad.description(),
               " does not match param ", i, " ", r.param.description());
    if (opt.momentum > 0) {
      checks::float32(op, "momentum buffer", r.momentum_buf);
      KILN_CHECK(r.momentum_buf.shape() == r.param.shape() && r.momentum_buf.device() == dev, op,
                 ": momentum buffer ", r.momentum_buf.description(), " does not match param ", i, " ",
                 r.param.description());
    }
  }
  NoGradGuard no_grad;
  backend_for(dev).sgd_update(params, opt);
  for (const SgdParamRef& r : params) {
    r.param.mark_modified();
    if (opt.momentum > 0) r.momentum_buf.mark_modified();
  }
}

// ---------------------------------------------------------------- Adam
void adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) {
  const char* op = "adam_update";
  KILN_CHECK(opt.lr >= 0 && opt.weight_decay >= 0, op, ": lr and weight_decay must be >= 0, got ", opt.lr, ", ",
             opt.weight_decay);
  KILN_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1, op,
             ": beta1 and beta2 must be in [0, 1), got ", opt.beta1, ", ", opt.beta2);
  KILN_CHECK(opt.eps > 0, op, ": eps must be > 0, got ", opt.eps);
  KILN_CHECK(step >= 1, op, ": step counts from 1 (bias correction), got ", step);
  if (params.empty()) return;
  const Device dev = params[0].param.device();
  for (size_t i = 0; i < params.size(); ++i) {
    const AdamParamRef& r = params[i];
    checks::float32(op, "param", r.param);
    KILN_CHECK(r.param.device() == dev, op, ": param ", i, " is on ", r.param.device().str(), ", param 0 on ",
               dev.str(), " (one update covers one device)");
    const std::pair<const char*, const Tensor*> others[] = {{"grad", &r.grad}, {"exp_avg", &r.exp_avg},
                                                            {"exp_avg_sq", &r.exp_avg_sq}};
    for (const auto& [what, t] : others) {
      checks::float32(op, what, *t);
      KILN_CHECK(t->shape() == r.param.shape() && t->device() == dev, op, ": ", what, " ", t->description(),
                 " does not match param ", i, " ", r.param.description());
    }
  }
  NoGradGuard no_grad;
  backend_for(dev).adam_update(params, opt, step);
  for (const AdamParamRef& r : params) {
    r.param.mark_modified();
    r.exp_avg.mark_modified();
    r.exp_avg_sq.mark_modified();
  }
}

// ---------------------------------------------------------------- pixel lookup
Tensor lut_u8(const Tensor& u8, const Tensor& lut) {
  const char* op = "lut_u8";
  checks::defined(op, "pixels", u8);
  checks::float32(op, "table", lut);
  KILN_CHECK(u8.dtype() == DType::u8, op, ": pixels must be uint8, got ", u8.description());
  KILN_CHECK(lut.rank() == 2 && lut.dim(1) == 256, op, ": table must be [channels, 256], got ", lut.shape());
  KILN_CHECK(u8.rank() >= 1 && u8.dim(-1) == lut.dim(0), op, ": pixels ", u8.shape(), " have ",
             u8.rank() >= 1 ? u8.dim(-1) : 0, " channels, the table ", lut.dim(0));
  checks::same_device(op, "pixels", u8, "table", lut);
  Tensor out = Tensor::empty(u8.shape(), like(u8, DType::f32));
  if (out.numel() > 0) backend_for(u8.device()).lut_u8(u8, lut, out);
  return out;
}

Tensor crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, int64_t crop) {
  const char* op = "crop_flip_lut_u8";
  checks::defined(op, "atlas", atlas);
  checks::defined(op, "desc", desc);
  checks::float32(op, "table", lut);
  KILN_CHECK(atlas.dtype() == DType::u8 && atlas.rank() == 1, op, ": atlas must be uint8 [bytes], got ",
             atlas.description());
  KILN_CHECK(desc.dtype() == DType::i64 && desc.rank() == 2 && desc.dim(1) == 6, op,
             ": desc must be int64 [n, 6] (offset, height, width, y0, x0, flip), got ", desc.description());
  KILN_CHECK(desc.device().is_cpu(), op, ": desc must be on the host (it is checked there before the launch), got ",
             desc.description());
  KILN_CHECK(lut.rank() == 2 && lut.dim(0) == 3 && lut.dim(1) == 256, op, ": table must be [3, 256], got ",
             lut.shape());
  checks::same_device(op, "atlas", atlas, "table", lut);
  // The kernels index within one output image in 32 bits.
  KILN_CHECK(crop > 0 && crop <= 16384, op, ": crop must be in [1, 16384], got ", crop);
  const int64_t bytes = atlas.numel(), n = desc.dim(0);
  const int64_t* d = desc.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = d[i * 6], h = d[i * 6 + 1], w = d[i * 6 + 2], y0 = d[i * 6 + 3], x0 = d[i * 6 + 4],
                  flip = d[i * 6 + 5];
    KILN_CHECK(h > 0 && w > 0 && (flip == 0 || flip == 1), op, ": desc row ", i, ": height ", h, " and width ", w,
               " must be positive and flip ", flip, " 0 or 1");
    KILN_CHECK(y0 >= 0 && x0 >= 0 && y0 <= h - crop && x0 <= w - crop, op, ": desc row ", i, ": the ", crop, "x",
               crop, " window at (y0 ", y0, ", x0 ", x0, ") lies outside its image of height ", h, ", width ", w);
    // off + h * w * 3 <= bytes, without overflow.
    const int64_t room = off >= 0 && off <= bytes ? bytes - off : -1;
    KILN_CHECK(room >= 0 && h <= room / 3 && w <= room / 3 / h, op, ": desc row ", i, ": an image of height ", h,
               ", width ", w, " at byte offset ", off, " does not lie inside the atlas of ", bytes, " bytes");
  }
  Tensor out = Tensor::empty(Shape{n, crop, crop, 3}, like(atlas, DType::f32));
  if (out.numel() == 0) return out;
  Tensor on_device = desc;
  if (!atlas.device().is_cpu()) {
    // Ordered before the kernel on the device's streams; the backend keeps a pinned source alive.
    on_device = Tensor::empty(desc.shape(), like(atlas, DType::i64));
    on_device.copy_from(desc, /*non_blocking=*/true);
  }
  backend_for(atlas.device()).crop_flip_lut_u8(atlas, on_device, lut, out);
  return out;
}

}  // namespace kiln
