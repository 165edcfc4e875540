// Sorting along rows on the CPU (sort, argsort, topk): each row's entries become
// kernels/common/sort_key.h's keys, distinct within the row, so a selection of the first k
// (std::nth_element, or for a small k a heap of the k best so far, which turns most entries away
// with one compare) and a sort of those is the one order every backend gives. argmax and argmin
// take the row's largest extreme_key, one unsigned max.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/common/sort_key.h"
#include "kernels/cpu/cpu_backend.h"

namespace kiln::cpu {
namespace {

// The k (>= 1) smallest keys of row (n entries) into best[0, k), ascending: a max-heap of the k
// best so far, an entry entering only if its key beats the heap's worst.
void smallest_keys(const float* row, int64_t n, int64_t k, bool descending, uint64_t* best) {
  for (int64_t i = 0; i < k; ++i) best[i] = common::sort_key(row[i], i, descending);
  std::make_heap(best, best + k);
  for (int64_t i = k; i < n; ++i) {
    const uint64_t key = common::sort_key(row[i], i, descending);
    if (key >= best[0]) continue;
    std::pop_heap(best, best + k);
    best[k - 1] = key;
    std::push_heap(best, best + k);
  }
  std::sort_heap(best, best + k);
}

// The position of row's (n entries) first maximum or minimum, NaN first: its largest
// extreme_key, a max reduction over 64-bit lanes (AVX-512 has the unsigned max).
template <bool kLargest>
KILN_CPU_CLONES int64_t extreme_position_in(const float* row, int64_t n) {
  uint64_t best = 0;
#pragma omp simd reduction(max : best)
  for (int64_t i = 0; i < n; ++i) best = std::max(best, common::extreme_key(row[i], i, kLargest));
  return common::extreme_position(best);
}

}  // namespace

void CpuBackend::arg_extreme(BinaryOp op, const Tensor& x, Tensor& out) {
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
  const float* px = x.data<float>();
  int64_t* po = out.data<int64_t>();
  const bool largest = op == BinaryOp::maximum;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r)
    po[r] = largest ? extreme_position_in<true>(px + r * cols, cols) : extreme_position_in<false>(px + r * cols, cols);
}

void CpuBackend::argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) {
  const int64_t rows = x.dim(0), n = x.dim(1);
  const float* px = x.data<float>();
  int64_t* pi = idx.data<int64_t>();
  constexpr int64_t kParallelFrom = 1 << 15;  // entries: below this a thread's start costs more
#pragma omp parallel if (rows > 1 && rows * n > kParallelFrom)
  {
    std::vector<uint64_t> keys(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = px + r * n;
      if (k * 64 <= n) {  // a few of many: the heap
        smallest_keys(row, n, k, descending, keys.data());
        for (int64_t j = 0; j < k; ++j) pi[r * k + j] = common::key_position(keys[static_cast<size_t>(j)]);
        continue;
      }
      for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = common::sort_key(row[i], i, descending);
      if (k < n) std::nth_element(keys.begin(), keys.begin() + k, keys.end());
      std::sort(keys.begin(), keys.begin() + k);
      for (int64_t j = 0; j < k; ++j) pi[r * k + j] = common::key_position(keys[static_cast<size_t>(j)]);
    }
  }
}

}  // namespace kiln::cpu
