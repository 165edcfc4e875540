#include "check/compare.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace kiln::check {

Comparison compare(const std::vector<double>& out, const std::vector<double>& ref, double atol, double rtol) {
  if (out.size() != ref.size()) {
    Comparison c;
    c.ok = false;
    c.report = "size mismatch: got " + std::to_string(out.size()) + " elements, want " + std::to_string(ref.size());
    return c;
  }
  return compare(
      out.size(), [&](size_t i) { return out[i]; }, [&](size_t i) { return ref[i]; }, atol, rtol);
}

Comparison compare(size_t n, const std::function<double(size_t)>& out, const std::function<double(size_t)>& ref,
                   double atol, double rtol) {
  Comparison c;
  double worst_frac = -1, worst_out = 0, worst_ref = 0;
  size_t worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double o = out(i), r = ref(i);
    const double diff = std::fabs(o - r);
    const double budget = atol + rtol * std::fabs(r);
    double frac = budget > 0 ? diff / budget : (diff > 0 ? INFINITY : 0);
    if (std::isnan(o) != std::isnan(r)) frac = INFINITY;
    if (frac > worst_frac) {
      worst_frac = frac;
      worst = i;
      worst_out = o;
      worst_ref = r;
    }
  }
  c.ok = worst_frac <= 1.0;
  c.worst_budget = std::max(0.0, worst_frac);
  if (n > 0) {
    std::ostringstream os;
    os << (c.ok ? "ok" : "MISMATCH") << ": " << n << " elements, worst at " << worst << ": got " << worst_out
       << ", want " << worst_ref << ", |diff| " << std::fabs(worst_out - worst_ref) << " = " << 100.0 * worst_frac
       << "% of budget (atol " << atol << ", rtol " << rtol << ")";
    c.report = os.str();
  }
  return c;
}

double mean_abs(const std::vector<double>& ref) {
  return mean_abs(ref.size(), [&](size_t i) { return ref[i]; });
}

double mean_abs(size_t n, const std::function<double(size_t)>& ref) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += std::fabs(ref(i));
  return n == 0 ? 0 : s / static_cast<double>(n);
}

}  // namespace kiln::check
