// cumsum on the CPU: kernels/common/scan.h's sums, a line at a time where lines are rows (the last
// dimension), and otherwise a chunk of up to 256 neighbouring lines at once, their running sums
// in an array that one vector loop per step along the dimension updates.
#include <algorithm>
#include <cstdint>

#include "kernels/common/scan.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

namespace kiln::cpu {
namespace {

// x and y [outer, n, inner]: the lines (o, i) for i in chunks of kChunk, a task each.
template <typename T>
KILN_CPU_CLONES void cumsum_typed(const T* x, int64_t outer, int64_t n, int64_t inner, bool reverse, T* y) {
  constexpr int64_t kChunk = 256;
  using Acc = common::ScanAcc<T>;
  const int64_t chunks = (inner + kChunk - 1) / kChunk, tasks = outer * chunks;
#pragma omp parallel for schedule(static) if (tasks > 1 && outer * n * inner > 65536)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / chunks, c0 = (t % chunks) * kChunk, w = std::min(kChunk, inner - c0);
    const T* xo = x + o * n * inner + c0;
    T* yo = y + o * n * inner + c0;
    if (w == 1) {
      common::cumsum_line(xo, n, inner, reverse, yo);
      continue;
    }
    const auto* xr = raw(xo);  // bf16 as its bits: a BFloat16 copied per element stays scalar
    auto* yr = raw(yo);
    Acc acc[kChunk] = {};
    for (int64_t s = 0; s < n; ++s) {
      const int64_t k = (reverse ? n - 1 - s : s) * inner;
#pragma omp simd
      for (int64_t i = 0; i < w; ++i) {
        acc[i] += to_f32(xr[k + i]);
        yr[k + i] = from_f32<raw_t<T>>(static_cast<float>(acc[i]));
      }
    }
  }
}

}  // namespace

void CpuBackend::cumsum(const Tensor& x, bool reverse, Tensor& y) {
  const int64_t outer = x.dim(0), n = x.dim(1), inner = x.dim(2);
  if (x.dtype() == DType::bf16) return cumsum_typed(x.data<BFloat16>(), outer, n, inner, reverse, y.data<BFloat16>());
  cumsum_typed(x.data<float>(), outer, n, inner, reverse, y.data<float>());
}

}  // namespace kiln::cpu
