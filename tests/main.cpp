// Catch2's main, plus one line saying which devices the run covers.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>

#if defined(KILN_HAS_CUDA)
#include "kernels/cuda/cuda_info.h"
#endif

int main(int argc, char** argv) {
#if defined(KILN_HAS_CUDA)
  const int gpus = kiln::cuda::device_count();
  if (gpus == 0) std::fprintf(stderr, "kiln_tests: no GPU found; CUDA cases are skipped (CPU cases run)\n");
#else
  std::fprintf(stderr, "kiln_tests: built without CUDA; CUDA cases are skipped (CPU cases run)\n");
#endif
  return Catch::Session().run(argc, argv);
}
