#include "core/generator.h"

namespace kiln {

PhiloxState Generator::reserve(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  PhiloxState s{seed_, offset_};
  offset_ += (n + 3) / 4;
  return s;
}

PhiloxState Generator::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return PhiloxState{seed_, offset_};
}

void Generator::set_state(PhiloxState s) {
  std::lock_guard<std::mutex> lock(mu_);
  seed_ = s.seed;
  offset_ = s.offset;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace kiln
