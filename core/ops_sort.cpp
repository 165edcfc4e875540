// Ops that order a tensor's entries along a dimension: sort, argsort and topk, and max and min
// along one. The backends sort float32 rows into positions (Backend::argsort_rows, the order of
// kernels/common/sort_key.h) or find argmax's; core moves the dimension last and back, and
// gathers the values, so their gradient is gather's.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/op_checks.h"
#include "core/ops.h"

namespace kiln {
namespace {

// The positions along d of x's first k entries in sorted order, int64, x's shape but k along d
// (checked: x float32 or bfloat16 of rank >= 1, d resolved, 0 <= k <= x.dim(d)).
Tensor sorted_positions(const Tensor& x, int64_t d, int64_t k, bool descending) {
  const int64_t last = x.rank() - 1, n = x.dim(d);
  const Tensor moved = d == last ? x.detach() : transpose(x.detach(), d, last);  // a copy: n last
  const Tensor keys = moved.to(DType::f32);  // bf16 widens exactly
  std::vector<int64_t> dims = moved.shape().dims();
  dims.back() = k;
  Tensor idx = Tensor::empty(Shape(dims), TensorOptions{DType::i64, x.device()});
  if (idx.numel() > 0) {
    const int64_t rows = moved.shape().numel_before(last);
    Tensor idx2 = idx.reshape(Shape{rows, k});
    backend_for(x.device()).argsort_rows(keys.reshape(Shape{rows, n}), k, descending, idx2);
  }
  return d == last ? idx : transpose(idx, d, last);
}

// x as sort and topk take it (float32 or bfloat16; a 0-d x as [1]) and dim resolved against it.
std::pair<Tensor, int64_t> sortable(const char* op, const Tensor& x, int64_t dim) {
  checks::defined(op, "x", x);
  checks::float32_or_bf16(op, "x", x);
  const int64_t d = checks::resolve_dim_of(op, dim, x);
  const Tensor x1 = x.rank() == 0 ? reshape(x, Shape{1}) : x;
  checks::positions_fit(op, x1, d);
  return {x1, d};
}

// The first k (none: all) in sorted order along dim, values gathered (0-d x: 0-d results).
ValuesIndices sorted_first(const char* op, const Tensor& x, int64_t dim, std::optional<int64_t> first,
                           bool descending) {
  const auto [x1, d] = sortable(op, x, dim);
  const int64_t k = first.value_or(x1.dim(d));
  KILN_CHECK(x.rank() > 0 || k == 1, op, ": k = ", k, " is outside 1 to 1: a 0-d tensor holds one entry");
  KILN_CHECK(k >= 0 && k <= x1.dim(d), op, ": k = ", k, " is outside 0 to ", x1.dim(d), ", the extent of dimension ",
             d, " of ", x.description());
  const Tensor idx = sorted_positions(x1, d, k, descending);
  ValuesIndices s{gather(x1, d, idx), idx};
  if (x.rank() == 0) s = {reshape(s.values, Shape{}), reshape(s.indices, Shape{})};
  return s;
}

// The largest (max) or smallest entry along dim and its position, checked and named as op: argmax's
// or argmin's positions kept as extents of 1, the values gathered at them, so the gradient reaches
// those positions only.
ValuesIndices extreme_along(const char* op, bool largest, const Tensor& x, int64_t dim, bool keepdim) {
  checks::float_or_integer(op, "x", x);
  const int64_t d = checks::resolve_dim_of(op, dim, x);
  const Tensor x1 = x.rank() == 0 ? reshape(x, Shape{1}) : x;
  checks::extreme_exists(op, x1, d, largest);
  const Tensor at = largest ? argmax(x1, d, true) : argmin(x1, d, true);
  ValuesIndices r{gather(x1, d, at), at};
  if (x.rank() == 0 || !keepdim) r = {squeeze(r.values, d), squeeze(r.indices, d)};
  return r;
}

}  // namespace

ValuesIndices sort(const Tensor& x, int64_t dim, bool descending) {
  return sorted_first("sort", x, dim, std::nullopt, descending);
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  const auto [x1, d] = sortable("argsort", x, dim);
  const Tensor idx = sorted_positions(x1, d, x1.dim(d), descending);
  return x.rank() == 0 ? reshape(idx, Shape{}) : idx;
}

ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  return sorted_first("topk", x, dim, k, largest);
}

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_along("max", true, x, dim, keepdim);
}

ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) {
  return extreme_along("min", false, x, dim, keepdim);
}

}  // namespace kiln
