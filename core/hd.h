// KILN_HD marks math that both backends compile: plain C++ for the CPU, __host__ __device__
// under nvcc. core/ never includes a CUDA header; this macro is all it knows of CUDA.
#pragma once

// Always inlined on the host too: the CPU's hot loops are compiled once per ISA
// (KILN_CPU_CLONES, below), and a callee left out of line would run as the baseline
// x86-64 copy inside an AVX-512 loop, unvectorised.
#if defined(__CUDACC__)
#define KILN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define KILN_HD inline __attribute__((always_inline))
#else
#define KILN_HD inline
#endif

// kiln's own hot loops (elementwise, batch norm, pooling, casts, optimizer updates) are
// compiled three times -- AVX-512 (x86-64-v4), AVX2 with FMA (x86-64-v3) and the x86-64
// baseline -- and the dynamic loader picks the best this CPU runs (GCC's target_clones, an
// ifunc), so a portable build vectorises as -march=native would: bf16 rounding in SSE2 has
// no blend and took the ResNet-50 bf16 step 26% longer (docs/performance.md, 2026-12-03).
// Every clone computes the same bits: -ffp-contract=off forbids FMA the source did not
// write, and GCC reorders no float reduction without -ffast-math. Off (one baseline copy)
// under KILN_NATIVE, sanitizers, fuzzing, and compilers other than GCC 12+ with glibc (ifunc)
// on x86-64 (GCC 11 has no dispatcher for arch= clones).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__GLIBC__) && \
    !defined(KILN_NO_CPU_CLONES)
#define KILN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define KILN_HAS_CPU_CLONES 1  // tests/kernels/test_clones_agree.sh has three copies to compare
#else
#define KILN_CPU_CLONES
#endif
