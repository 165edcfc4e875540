// KILN_HD marks math that both backends compile: plain C++ for the CPU, __host__ __device__
// under nvcc. core/ never includes a CUDA header; this macro is all it knows of CUDA.
#pragma once

// Always inlined on the host too: the CPU's hot loops are compiled once per ISA
// (kernels/cpu/cpu_elements.h), and a callee left out of line would run as the baseline
// x86-64 copy inside an AVX-512 loop, unvectorised.
#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define KILN_HD inline __attribute__((always_inline))
#else
#define KILN_HD inline
#endif
