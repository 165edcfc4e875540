// GPU test cases report themselves skipped where no GPU is found: ctest's skip pattern
// matches the line ("CUDA case skipped"), so such a case is never counted as passed.
#pragma once

#include <catch2/catch.hpp>

#include "core/kiln.h"

namespace kiln::test {

// True when a CUDA backend is compiled in and sees at least one GPU.
inline bool have_gpu() { return device_count(DeviceType::cuda) > 0; }

// compute_options() as they were when it was made, restored when it goes (a test's scope
// that changes TF32, the algorithm search or determinism).
class ScopedComputeOptions {
 public:
  ScopedComputeOptions() = default;
  ~ScopedComputeOptions() { compute_options() = was_; }
  ScopedComputeOptions(const ScopedComputeOptions&) = delete;
  ScopedComputeOptions& operator=(const ScopedComputeOptions&) = delete;

 private:
  ComputeOptions was_ = compute_options();
};

}  // namespace kiln::test

// The first statement of a [cuda] case: returns from it, saying why, without a GPU.
#define KILN_SKIP_WITHOUT_GPU()                \
  do {                                         \
    if (!::kiln::test::have_gpu()) {           \
      WARN("no GPU found: CUDA case skipped"); \
      return;                                  \
    }                                          \
  } while (0)
