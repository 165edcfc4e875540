// Classification losses with torch's options (cross_entropy, nll_loss), composed from ops that
// have gradients: log_softmax over the classes, gather of each target's entry, weights and
// reductions as sums. Nothing here has a kernel or a node of its own.
#include <cmath>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

// Class indices pass through float32 to zero the ignored ones (kiln's where is float-only):
// exact up to 2^24, so the classes must fit.
constexpr int64_t kMaxClasses = int64_t{1} << 24;

// The input as rows [M, C] with the class dimension last, the target as [M] (indices) or [M, C]
// (probabilities), and the shape of the per-element loss (the target's, for indices).
struct ClassRows {
  Tensor x, target;
  Shape per_element;
  int64_t classes = 0;
  bool indices = true;
};

// x [N, C, d1, ...] with C moved last and everything else flattened into rows.
Tensor classes_last(const Tensor& x) {
  if (x.rank() <= 2) return x.rank() == 1 ? reshape(x, Shape{1, x.dim(0)}) : x;
  std::vector<int64_t> order{0};
  for (int64_t d = 2; d < x.rank(); ++d) order.push_back(d);
  order.push_back(1);
  return reshape(permute(x, order), Shape{-1, x.dim(1)});
}

ClassRows class_rows(const char* op, const char* what, const Tensor& x, const Tensor& target, bool probabilities_ok) {
  checks::float32(op, what, x);
  checks::defined(op, "target", target);
  checks::same_device(op, what, x, "target", target);
  KILN_CHECK(x.rank() >= 1, op, ": ", what, " must be [C], [N, C] or [N, C, d1, ...] (classes second), got ",
             x.description());
  ClassRows r;
  r.classes = x.rank() == 1 ? x.dim(0) : x.dim(1);
  KILN_CHECK(r.classes >= 1, op, ": ", what, " ", x.shape(), " has no classes");
  KILN_CHECK(r.classes <= kMaxClasses, op, ": ", r.classes, " classes; at most 2^24 are taken");
  std::vector<int64_t> dims = x.shape().dims();
  if (x.rank() >= 2) dims.erase(dims.begin() + 1);
  else dims.clear();
  r.per_element = Shape(dims);
  r.indices = target.dtype() == DType::i32 || target.dtype() == DType::i64;
  if (r.indices) {
    KILN_CHECK(target.shape() == r.per_element, op, ": target ", target.shape(), " does not fit ", what, " ",
               x.shape(), ": class indices take its shape without the class dimension, ", r.per_element);
  } else {
    KILN_CHECK(probabilities_ok, op, ": target must be int32 or int64 class indices, got ", target.description());
    KILN_CHECK(target.dtype() == DType::f32 && target.shape() == x.shape(), op, ": target must be int32/int64 class "
               "indices of shape ", r.per_element, ", or float32 class probabilities of ", what, "'s shape ",
               x.shape(), "; got ", target.description());
  }
  r.x = classes_last(x);
  r.target = r.indices ? reshape(target, Shape{-1}) : classes_last(target);
  return r;
}

// Raises for the first target that is neither a class nor ignored, naming it; returns when there
// is none (read on the host: only after gather refused, whose error is then the one to give).
void refuse_bad_target(const char* op, const Tensor& target, int64_t classes, int64_t ignore) {
  const std::vector<int64_t> t = target.to(DType::i64).to_vector<int64_t>();
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == ignore || (t[i] >= 0 && t[i] < classes)) continue;
    std::string at;
    for (int64_t d = target.rank() - 1, rest = static_cast<int64_t>(i); d >= 0; --d) {
      at = std::to_string(rest % target.dim(d)) + (at.empty() ? "" : ", ") + at;
      rest /= target.dim(d);
    }
    KILN_FAIL(op, ": target", at.empty() ? "" : "[" + at + "]", " is ", t[i], ", not a class index in [0, ", classes,
              ") nor ignore_index (", ignore, ")");
  }
}

// -sum over classes of w_c * terms[:, c] per row: the smoothing term (terms log_probs) or the
// probability target's loss (terms p * log_probs).
Tensor weighted_row_sums(const Tensor& terms, const Tensor& weight) {
  const Tensor t = weight.defined() ? mul(terms, reshape(weight, Shape{1, -1})) : terms;
  return neg(sum(t, 1));
}

// The loss of probability rows: -sum_c w_c p_c log_probs_c, p mixed with uniform by eps; the
// mean is over the rows, as torch's. The weight takes a gradient here, as torch's does.
Tensor probability_loss(const Tensor& log_probs, const ClassRows& r, const ClassLossOptions& o) {
  const float eps = o.label_smoothing;
  const Tensor p = eps > 0 ? add(mul(r.target, 1.0f - eps), eps / static_cast<float>(r.classes)) : r.target;
  const Tensor per = weighted_row_sums(mul(log_probs, p), o.weight);
  if (o.reduction == Reduction::none) return reshape(per, r.per_element);
  const Tensor total = sum(per);
  return o.reduction == Reduction::sum ? total : div(total, static_cast<float>(per.numel()));
}

// The loss of class-index rows. Each row's terms are scaled by a factor made without a gradient:
// its weight (0 where ignored), over the summed weights for the mean. Ignored rows are selected
// away (where), not multiplied by 0, so a -inf or NaN logit in a padding row, or a mean over no
// target, leaves every other gradient finite, as torch's.
Tensor index_loss(const char* op, const Tensor& log_probs, const ClassRows& r, const Tensor& target,
                  const ClassLossOptions& o) {
  Tensor valid, safe, scale, smooth_scale, empty;
  {
    const NoGradGuard no_grad;
    valid = ne(r.target, static_cast<double>(o.ignore_index));  // 0/1 float32
    safe = mul(r.target.to(DType::f32), valid).to(DType::i64);  // ignored ones read class 0
    Tensor w = valid;
    if (o.weight.defined()) w = mul(index_select(o.weight, 0, safe), valid);
    const Tensor denominator = o.reduction == Reduction::mean ? sum(w) : Tensor::ones(Shape{}, like(w));
    scale = where(valid, div(w, denominator), 0.0f);
    smooth_scale = where(valid, div(1.0f, denominator), 0.0f);
    empty = where(eq(denominator, 0.0), NAN, 0.0f);  // torch's mean over no weight: NaN (0 / 0)
  }
  Tensor picked;
  try {
    picked = reshape(gather(log_probs, 1, reshape(safe, Shape{-1, 1})), Shape{-1});
  } catch (const Error&) {
    refuse_bad_target(op, target, r.classes, o.ignore_index);
    throw;  // not a target's fault
  }
  const float eps = o.label_smoothing;
  Tensor per = mul(where(valid, neg(picked), 0.0f), scale);
  if (eps > 0) {
    const Tensor smooth = mul(where(valid, weighted_row_sums(log_probs, o.weight), 0.0f), smooth_scale);
    per = add(mul(per, 1.0f - eps), mul(smooth, eps / static_cast<float>(r.classes)));
  }
  if (o.reduction == Reduction::none) return reshape(per, r.per_element);
  const Tensor total = sum(per);
  return o.reduction == Reduction::sum ? total : add(total, empty);
}

void check_options(const char* op, const Tensor& x, const ClassRows& r, const ClassLossOptions& o) {
  KILN_CHECK(o.reduction == Reduction::mean || o.reduction == Reduction::sum || o.reduction == Reduction::none, op,
             ": unknown reduction");
  KILN_CHECK(o.label_smoothing >= 0 && o.label_smoothing <= 1, op, ": label_smoothing must be in [0, 1], got ",
             o.label_smoothing);
  KILN_CHECK(r.indices || o.ignore_index < 0, op, ": ignore_index ", o.ignore_index, " applies to class index "
             "targets; a probability target has no index to ignore (give the ignored rows zero probability)");
  KILN_CHECK(std::abs(static_cast<double>(o.ignore_index)) <= 0x1p53, op, ": ignore_index ", o.ignore_index,
             " is past 2^53, where targets are compared through doubles");
  if (!o.weight.defined()) return;
  // As torch's nll_loss: with class indices the loss has no gradient in weight.
  KILN_CHECK(!r.indices || !autograd::needs_grad({&o.weight}), op, ": weight requires grad, but the loss of class "
             "index targets has no gradient in it (torch's raises too); pass weight.detach()");
  checks::float32(op, "weight", o.weight);
  checks::same_device(op, "weight", o.weight, "input", x);
  KILN_CHECK(o.weight.shape() == Shape{r.classes}, op, ": weight must be [", r.classes, "], one per class, got ",
             o.weight.shape());
}

}  // namespace

// Whether cross_entropy's plain form (class indices, no weight, no smoothing, the mean) over these
// targets is softmax_cross_entropy's, one fused kernel (about twice as fast): every target a class
// and none ignored. Reads the targets' extremes on the host (a wait on a GPU, as gather's check is).
bool fused_form_fits(const ClassRows& r, const ClassLossOptions& o) {
  if (!r.indices || o.weight.defined() || o.label_smoothing != 0 || o.reduction != Reduction::mean) return false;
  if (r.target.numel() == 0 || (o.ignore_index >= 0 && o.ignore_index < r.classes)) return false;
  const NoGradGuard no_grad;
  const Tensor t = r.target.to(DType::i64);  // 1-d
  const Tensor both_ends = concat({amin(t, 0, true), amax(t, 0, true)}, 0);
  const std::vector<int64_t> ends = both_ends.to(Device::cpu()).to_vector<int64_t>();
  return ends[0] >= 0 && ends[1] < r.classes;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const ClassLossOptions& opt) {
  constexpr const char* op = "cross_entropy";
  const ClassRows r = class_rows(op, "logits", logits, target, true);
  check_options(op, logits, r, opt);
  if (fused_form_fits(r, opt)) {
    // The fused kernel's backward reads the logits and labels again, where the composed path keeps
    // results of its own: a caller's tensor (a leaf an optimizer may step, memory NumPy may write)
    // is copied first (differentiably), so a change between forward and backward changes nothing.
    const bool saves = autograd::needs_grad({&r.x});
    const bool callers = saves && (r.x.is_leaf() || r.x.shared_outside());
    return softmax_cross_entropy(callers ? copy_of(r.x) : r.x, saves ? r.target.clone() : r.target);
  }
  const Tensor log_probs = log_softmax(r.x);
  return r.indices ? index_loss(op, log_probs, r, target, opt) : probability_loss(log_probs, r, opt);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, const ClassLossOptions& opt) {
  constexpr const char* op = "nll_loss";
  const ClassRows r = class_rows(op, "log_probs", log_probs, target, false);
  check_options(op, log_probs, r, opt);
  KILN_CHECK(opt.label_smoothing == 0, op, ": label_smoothing is cross_entropy's; nll_loss takes none");
  return index_loss(op, r.x, r, target, opt);
}

}  // namespace kiln
