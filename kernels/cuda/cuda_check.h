// One check macro for the CUDA runtime: the call's text, the CUDA error and file:line
// become a kiln::Error. Kernel launches are followed by KILN_CUDA_CHECK_LAUNCH().
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define KILN_CUDA_CHECK(call)                                                                      \
  do {                                                                                             \
    const cudaError_t kiln_status_ = (call);                                                       \
    if (kiln_status_ != cudaSuccess)                                                               \
      KILN_FAIL(#call, " failed: ", cudaGetErrorName(kiln_status_), " (", cudaGetErrorString(kiln_status_), ")"); \
  } while (0)

#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())
