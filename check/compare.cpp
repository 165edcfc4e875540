#include "check/compare.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace kiln::check {

Comparison compare(const std::vector<double>& out, const std::vector<double>& ref, double atol, double rtol) {
  Comparison c;
  std::ostringstream os;
  if (out.size() != ref.size()) {
    c.ok = false;
    os << "size mismatch: got " << out.size() << " elements, want " << ref.size();
    c.report = os.str();
    return c;
  }
  double worst_frac = -1;
  size_t worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double diff = std::fabs(out[i] - ref[i]);
    const double budget = atol + rtol * std::fabs(ref[i]);
    double frac = budget > 0 ? diff / budget : (diff > 0 ? INFINITY : 0);
    if (std::isnan(out[i]) != std::isnan(ref[i])) frac = INFINITY;
    if (frac > worst_frac) {
      worst_frac = frac;
      worst = i;
    }
  }
  c.ok = worst_frac <= 1.0;
  c.worst_budget = std::max(0.0, worst_frac);
  if (!out.empty()) {
    os << (c.ok ? "ok" : "MISMATCH") << ": " << out.size() << " elements, worst at " << worst << ": got "
       << out[worst] << ", want " << ref[worst] << ", |diff| " << std::fabs(out[worst] - ref[worst]) << " = "
       << 100.0 * worst_frac << "% of budget (atol " << atol << ", rtol " << rtol << ")";
  }
  c.report = os.str();
  return c;
}

double mean_abs(const std::vector<double>& ref) {
  double s = 0;
  for (double v : ref) s += std::fabs(v);
  return ref.empty() ? 0 : s / static_cast<double>(ref.size());
}

}  // namespace kiln::check
