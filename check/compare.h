// The one comparison helper, shared by the tests and kiln_bench: |out - ref| <= atol +
// rtol * |ref| element by element, and a report of the worst element, its index and how
// much of the budget it used (llm.c). Catch2's KILN_REQUIRE_CLOSE around it lives with the
// tests (tests/support/require_close.h).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace kiln::check {

// What compare() found: pass or fail, and the worst element in words.
struct Comparison {
  bool ok = true;
  std::string report;       // "worst at 17: got 0.51, want 0.5, |diff| 0.01 = 83% of budget"
  double worst_budget = 0;  // the worst |diff| / (atol + rtol * |ref|); ok when <= 1
};

// Element-wise check of out against ref.
Comparison compare(const std::vector<double>& out, const std::vector<double>& ref, double atol, double rtol);

// As compare, over n elements read through out(i) and ref(i): large tensors (kiln_bench's
// copies, activations) are judged without first copying them into vectors of doubles.
Comparison compare(size_t n, const std::function<double(size_t)>& out, const std::function<double(size_t)>& ref,
                   double atol, double rtol);

// Mean of |ref|: the scale for an absolute tolerance on sums of many terms, where an
// element near zero cannot be held to a relative bound.
double mean_abs(const std::vector<double>& ref);
double mean_abs(size_t n, const std::function<double(size_t)>& ref);

}  // namespace kiln::check
