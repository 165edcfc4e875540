// KILN_HD marks math that both backends compile: plain C++ for the CPU, __host__ __device__
// under nvcc. core/ never includes a CUDA header; this macro is all it knows of CUDA.
#pragma once

#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#else
#define KILN_HD inline
#endif
