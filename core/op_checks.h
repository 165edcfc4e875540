// Argument checks shared by the op files, every message naming the op and what it got, and
// the options of the tensors the ops make.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/op_params.h"
#include "core/tensor.h"

namespace kiln::checks {

// The largest stride, padding or kernel extent a window op takes: oneDNN and cuDNN hold them
// as 32-bit ints (a stride of 2^31 failed inside oneDNN as "status 2", naming no argument).
inline constexpr int64_t kMaxWindowArg = 2147483647;

// A window argument (h, w) within [lo, kMaxWindowArg], or an error naming it and the range.
inline void window_arg(const char* op, const char* what, int64_t h, int64_t w, int64_t lo) {
  KILN_CHECK(h >= lo && w >= lo && h <= kMaxWindowArg && w <= kMaxWindowArg, op, ": ", what, " must be in [", lo,
             ", ", kMaxWindowArg, "], got ", h, "x", w);
}

// A convolution's geometry: stride in [1, 2^31 - 1], padding in [0, 2^31 - 1] (checked by
// the op, and by Conv2d when it is made, so a bad layer is named before the first forward).
inline void conv_params(const char* op, const Conv2dParams& p) {
  window_arg(op, "stride", p.stride_h, p.stride_w, 1);
  window_arg(op, "padding", p.pad_h, p.pad_w, 0);
}

// A max pool's geometry: kernel and stride in [1, 2^31 - 1], padding in [0, kernel/2].
inline void pool_params(const char* op, const Pool2dParams& p) {
  window_arg(op, "kernel", p.kernel_h, p.kernel_w, 1);
  window_arg(op, "stride", p.stride_h, p.stride_w, 1);
  KILN_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w, op,
             ": padding must be in [0, kernel/2], got ", p.pad_h, "x", p.pad_w, " for kernel ", p.kernel_h, "x",
             p.kernel_w);
}

// dim in [-rank, rank) as a non-negative index, or a message naming op and `what` (the tensor).
inline int64_t resolve_dim(const char* op, int64_t dim, int64_t rank, const std::string& what) {
  KILN_CHECK(dim >= -rank && dim < rank, op, ": dimension ", dim, " is out of range for ", what, " (", rank,
             " dimensions: ", -rank, " to ", rank - 1, ")");
  return dim < 0 ? dim + rank : dim;
}

// dim resolved against x as an op along one dimension takes it: a 0-d x as [1], its dimension 0
// or -1 (torch's), with a message that says so.
inline int64_t resolve_dim_of(const char* op, int64_t dim, const Tensor& x) {
  KILN_CHECK(x.rank() > 0 || dim == 0 || dim == -1, op, ": dimension ", dim, " is out of range for ",
             x.description(), ", a 0-d tensor (dimension 0 or -1 names its value)");
  return x.rank() == 0 ? 0 : resolve_dim(op, dim, x.rank(), x.description());
}

// Dimension d of x holds an entry, so a maximum (largest) or minimum along it exists (argmax, max).
inline void extreme_exists(const char* op, const Tensor& x, int64_t d, bool largest) {
  KILN_CHECK(x.dim(d) > 0, op, ": dimension ", d, " of ", x.description(), " is empty: it has no ",
             largest ? "maximum" : "minimum");
}

// Dimension d of x holds fewer than 2^32 entries: sort's and argmax's keys keep 32-bit positions.
inline void positions_fit(const char* op, const Tensor& x, int64_t d) {
  KILN_CHECK(x.dim(d) < kMaxSortRow, op, ": dimension ", d, " of ", x.description(), " holds ", x.dim(d),
             " entries; kiln orders and searches rows of fewer than 2^32");
}

inline void defined(const char* op, const char* what, const Tensor& t) {
  KILN_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

inline void float32(const char* op, const char* what, const Tensor& t) {
  defined(op, what, t);
  KILN_CHECK(t.dtype() == DType::f32, op, ": ", what, " must be float32, got ", t.description(),
             "; convert it with .to(DType::f32)");
}

// The ops a bf16 segment runs (core/ops.h lists them) also take bfloat16, forward and
// backward: storage, output and gradients in bf16, arithmetic accumulated in fp32.
inline void float32_or_bf16(const char* op, const char* what, const Tensor& t) {
  defined(op, what, t);
  KILN_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16, op, ": ", what,
             " must be float32 or bfloat16, got ", t.description());
}

// The ops that order values (amax, amin, max, min, argmax, argmin) also take int32 and int64,
// compared exactly, as torch's do.
inline void float_or_integer(const char* op, const char* what, const Tensor& t) {
  defined(op, what, t);
  KILN_CHECK(t.dtype() != DType::u8, op, ": ", what, " must be float32, bfloat16, int32 or int64, got ",
             t.description(), "; widen it with astype");
}

// One float dtype per op call: kiln never casts between float32 and bfloat16 unasked (an integer
// tensor beside a float one is promoted, as torch's: ops_math.cpp's promoted_operands).
inline void same_dtype(const char* op, const char* what_a, const Tensor& a, const char* what_b, const Tensor& b) {
  if (!b.defined() || a.dtype() == b.dtype()) return;
  const auto to = [](DType d) { return d == DType::bf16 ? ".to(DType::bf16)" : ".to(DType::f32)"; };
  const auto is_float = [](DType d) { return d == DType::f32 || d == DType::bf16; };
  // Advice that names real conversions: to the other's float type, never an int to an int.
  const std::string advice =
      is_float(a.dtype()) && is_float(b.dtype())
          ? std::string("convert one with ") + to(a.dtype()) + " or " + to(b.dtype()) + " so that both match"
          : std::string("convert ") + (is_float(a.dtype()) ? what_b : what_a) + " with " +
                to(is_float(a.dtype()) ? a.dtype() : b.dtype());
  KILN_FAIL(op, ": ", what_a, " is ", dtype_name(a.dtype()), " but ", what_b, " is ", dtype_name(b.dtype()), " (",
            a.description(), " vs ", b.description(), "); ", advice);
}

inline void rank(const char* op, const char* what, const Tensor& t, int64_t r, const char* layout) {
  KILN_CHECK(t.rank() == r, op, ": ", what, " must be rank ", r, " ", layout, ", got ", t.description());
}

inline void same_device(const char* op, const char* what_a, const Tensor& a, const char* what_b, const Tensor& b) {
  if (!b.defined()) return;
  KILN_CHECK(a.device() == b.device(), op, ": ", what_a, " is on ", a.device().str(), " but ", what_b, " is on ",
             b.device().str(), " (", a.description(), " vs ", b.description(), ")");
}

inline void same_shape(const char* op, const Tensor& a, const Tensor& b) {
  KILN_CHECK(a.shape() == b.shape(), op, ": shapes differ: ", a.shape(), " vs ", b.shape());
}

// Whether `from` repeats to `to` unchanged otherwise: aligned from the right, each of from's
// extents is to's or 1, and from has no more dimensions.
inline bool broadcasts_to(const Shape& from, const Shape& to) {
  if (from.rank() > to.rank()) return false;
  for (int64_t i = 1; i <= from.rank(); ++i)
    if (from[-i] != 1 && from[-i] != to[-i]) return false;
  return true;
}

// The shape a and b broadcast to, by NumPy's and PyTorch's rule: dimensions aligned from
// the right, each pair equal or one of them 1 (a missing one counts as 1); at most
// kMaxBroadcastRank dimensions.
inline Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const int64_t rank = std::max(a.rank(), b.rank());
  KILN_CHECK(rank <= kMaxBroadcastRank, op, ": ", a, " and ", b, " have more than ", kMaxBroadcastRank,
             " dimensions, more than kiln broadcasts; reshape them first");
  std::vector<int64_t> dims(static_cast<size_t>(rank));
  for (int64_t i = 1; i <= rank; ++i) {
    const int64_t da = i <= a.rank() ? a[-i] : 1, db = i <= b.rank() ? b[-i] : 1;
    KILN_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b, " do not broadcast: dimension ", -i,
               " is ", da, " against ", db, " (aligned from the right, each pair of extents must be equal or one "
               "of them 1)");
    dims[static_cast<size_t>(rank - i)] = da == 1 ? db : da;
  }
  return Shape(std::move(dims));
}

}  // namespace kiln::checks

namespace kiln {

// Options for a new tensor on t's device, of t's dtype unless told otherwise.
inline TensorOptions like(const Tensor& t) { return TensorOptions{t.dtype(), t.device()}; }
inline TensorOptions like(const Tensor& t, DType dt) { return TensorOptions{dt, t.device()}; }

}  // namespace kiln
