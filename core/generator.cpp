#include "core/generator.h"

#include "core/error.h"

namespace kiln {

PhiloxState Generator::reserve(uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  PhiloxState s{seed_, offset_};
  if (local_ > 0) {
    const auto local = static_cast<uint64_t>(local_);
    KILN_CHECK(n % local == 0, "random numbers for ", n, " values cannot be split into ", local_,
               " rows of a data-parallel batch");
    const uint64_t width = n / local, shift = static_cast<uint64_t>(first_) * width;
    KILN_CHECK(shift % 4 == 0, "data-parallel dropout needs rows of a multiple of 4 values to key masks by sample; "
               "this layer's rows have ", width);
    s.offset += shift / 4;
    n = width * static_cast<uint64_t>(global_);
  }
  offset_ += (n + 3) / 4;
  return s;
}

void Generator::set_row_window(int64_t first, int64_t local, int64_t global) {
  KILN_CHECK(local == 0 || (first >= 0 && local > 0 && first + local <= global), "Generator: rows [", first, ", ",
             first + local, ") are not within a batch of ", global);
  std::lock_guard<std::mutex> lock(mu_);
  first_ = first, local_ = local, global_ = global;
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
