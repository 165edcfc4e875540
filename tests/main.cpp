// Catch2's main, plus one line saying which devices the run covers.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>

#include "core/backend.h"

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
  // The GPU cases compare with the CPU at fp32 tolerances: strict fp32 unless the run asks
  // for a TF32 mode (KILN_TF32); the [tf32] case turns TF32 on itself.
  if (std::getenv("KILN_TF32") == nullptr) {
    kiln::compute_options().conv_tf32 = false;
    kiln::compute_options().matmul_tf32 = false;
  }
  return Catch::Session().run(argc, argv);
}
