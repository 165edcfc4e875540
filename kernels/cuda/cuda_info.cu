#include <cstdio>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_info.h"

namespace kiln::cuda {

std::string device_name(int index) {
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace kiln::cuda
