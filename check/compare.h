// The one comparison helper: |out - ref| <= atol + rtol * |ref| element by element, and a
// report of the worst element, its index and how much of the budget it used (llm.c).
#pragma once

#include <string>
#include <vector>

namespace kiln::test {

struct Comparison {
  bool ok = true;
  std::string report;  // "worst at 17: got 0.51, want 0.5, |diff| 0.01 = 83% of budget"
};

// Element-wise check of out against ref.
Comparison compare(const std::vector<double>& out, const std::vector<double>& ref, double atol, double rtol);

// Mean of |ref|: the scale for an absolute tolerance on sums of many terms, where an
// element near zero cannot be held to a relative bound.
double mean_abs(const std::vector<double>& ref);

}  // namespace kiln::test

// Catch2 assertion around compare(); prints the report on failure.
#define KILN_REQUIRE_CLOSE(out, ref, atol, rtol)                            \
  do {                                                                      \
    const auto kiln_cmp_ = ::kiln::test::compare((out), (ref), (atol), (rtol)); \
    INFO(kiln_cmp_.report);                                                 \
    REQUIRE(kiln_cmp_.ok);                                                  \
  } while (0)
