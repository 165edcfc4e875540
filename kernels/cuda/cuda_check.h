// One check macro per library (CUDA runtime, cuDNN, cuBLASLt): the call's text,
// the library's error, the op being run and file:line become a kiln::Error.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "core/error.h"

namespace kiln::cuda {
// The op the calling thread is running ("conv2d backward-data"), for error messages.
const char* current_op();
// cuBLAS status name (cuBLAS has no string function for all versions).
const char* cublas_status_name(cublasStatus_t s);
}  // namespace kiln::cuda

#define KILN_CUDA_CHECK(call)                                                                          \
  do {                                                                                                 \
    const cudaError_t kiln_status_ = (call);                                                           \
    if (kiln_status_ != cudaSuccess)                                                                   \
      KILN_FAIL(::kiln::cuda::current_op(), ": ", #call, " failed: ", cudaGetErrorName(kiln_status_), " (", \
                cudaGetErrorString(kiln_status_), ")");                                                \
  } while (0)

#define KILN_CUDNN_CHECK(call)                                                                         \
  do {                                                                                                 \
    const cudnnStatus_t kiln_status_ = (call);                                                         \
    if (kiln_status_ != CUDNN_STATUS_SUCCESS)                                                          \
      KILN_FAIL(::kiln::cuda::current_op(), ": ", #call, " failed: ", cudnnGetErrorString(kiln_status_)); \
  } while (0)

#define KILN_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                 \
    const cublasStatus_t kiln_status_ = (call);                                                        \
    if (kiln_status_ != CUBLAS_STATUS_SUCCESS)                                                         \
      KILN_FAIL(::kiln::cuda::current_op(), ": ", #call, " failed: ",                                  \
                ::kiln::cuda::cublas_status_name(kiln_status_));                                       \
  } while (0)

// After every kernel launch: a bad configuration surfaces here, at the launch.
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())
