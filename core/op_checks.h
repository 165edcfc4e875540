// Argument checks shared by the op files; every message names the op and what it got.
#pragma once

#include "core/error.h"
#include "core/tensor.h"

namespace kiln::checks {

inline void defined(const char* op, const char* what, const Tensor& t) {
  KILN_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

inline void float32(const char* op, const char* what, const Tensor& t) {
  defined(op, what, t);
  KILN_CHECK(t.dtype() == DType::f32, op, ": ", what, " must be float32, got ", t.description());
}

// The ops a bf16 segment runs (core/ops.h lists them) also take bfloat16, forward and
// backward: storage, output and gradients in bf16, arithmetic accumulated in fp32.
inline void float32_or_bf16(const char* op, const char* what, const Tensor& t) {
  defined(op, what, t);
  KILN_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16, op, ": ", what,
             " must be float32 or bfloat16, got ", t.description());
}

// One dtype per op call: kiln never casts an operand silently.
inline void same_dtype(const char* op, const char* what_a, const Tensor& a, const char* what_b, const Tensor& b) {
  if (!b.defined()) return;
  KILN_CHECK(a.dtype() == b.dtype(), op, ": ", what_a, " is ", dtype_name(a.dtype()), " but ", what_b, " is ",
             dtype_name(b.dtype()), " (", a.description(), " vs ", b.description(), "); convert one with .to(DType::",
             a.dtype() == DType::bf16 ? "bf16" : "f32", ") or .to(DType::", b.dtype() == DType::bf16 ? "bf16" : "f32",
             ") so that both match");
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

}  // namespace kiln::checks
