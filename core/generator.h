// A seeded source of Philox streams. It hands out disjoint counter ranges, so every fill
// or dropout mask is reproducible from (seed, offset) alone and on any device.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "core/philox.h"

namespace kiln {

// Seed plus a running counter offset; thread-safe.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  // Reserves counters for `n` numbers and returns where they start.
  PhiloxState reserve(uint64_t n);
  // The current (seed, offset), e.g. to checkpoint it.
  PhiloxState state() const;
  // Restores a state saved by state().
  void set_state(PhiloxState s);
  // Restarts the stream at offset 0 with a new seed.
  void manual_seed(uint64_t seed) { set_state(PhiloxState{seed, 0}); }
  // Data-parallel training: until cleared (local = 0), a reservation of n numbers is taken
  // as this process's `local` rows (n / local numbers each) of a global batch of `global`
  // rows whose first here is row `first`. The stream advances as for the whole batch and the
  // returned offset is row `first`'s, so a row's numbers (its dropout mask) do not depend on
  // how the batch is split across processes. A row's numbers must be a multiple of 4 when
  // first > 0 (offsets count Philox blocks of 4).
  void set_row_window(int64_t first, int64_t local, int64_t global);
  // Expires when this generator is destroyed: a layer that keeps a Generator* (Dropout) checks
  // it before drawing, so a generator that went out of scope is an error, not freed memory read.
  std::weak_ptr<const void> lifetime() const { return alive_; }

 private:
  std::shared_ptr<const int> alive_ = std::make_shared<const int>(0);
  mutable std::mutex mu_;
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
  int64_t first_ = 0, local_ = 0, global_ = 0;  // the row window; local_ 0: none
};

// The process-wide generator used when an op is given none.
Generator& default_generator();

// Reseeds the default generator.
void manual_seed(uint64_t seed);

}  // namespace kiln
