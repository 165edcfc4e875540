// GPU test cases report themselves skipped where no GPU is found: ctest's skip pattern
// matches the line ("CUDA case skipped"), so such a case is never counted as passed.
#pragma once

#include <catch2/catch.hpp>

#include "core/kiln.h"

namespace kiln::test {

// True when a CUDA backend is compiled in and sees at least one GPU.
inline bool have_gpu() { return device_count(DeviceType::cuda) > 0; }

}  // namespace kiln::test

// The first statement of a [cuda] case: returns from it, saying why, without a GPU.
#define KILN_SKIP_WITHOUT_GPU()                \
  do {                                         \
    if (!::kiln::test::have_gpu()) {           \
      WARN("no GPU found: CUDA case skipped"); \
      return;                                  \
    }                                          \
  } while (0)
