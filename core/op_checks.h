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
