// The order sort, argsort and topk give (and argmax's and argmin's, extreme_key), as one 64-bit
// integer key per entry, shared by the CPU and CUDA backends so that both sort to the same
// indices: a float's rank among floats in the high 32 bits (NaN above +inf, -0 equal to +0, as
// torch.sort), its position in the row in the low 32 (equal values keep their order: a stable
// sort, whatever algorithm runs). Every key of a row is distinct, so any sort of them --
// std::sort, a partial sort, CUB's radix sort -- gives one order.
#pragma once

#include <cstdint>

#include "core/hd.h"
#include "core/op_params.h"  // kMaxSortRow: the rows core lets through
#include "kernels/common/exp.h"

namespace kiln::common {

// x's rank among floats as an unsigned integer: every NaN the largest, -0 as +0, descending
// flipping the rank (not the position: ties stay in order either way).
KILN_HD uint32_t float_rank(float x, bool descending) {
  const uint32_t bits = x != x ? 0x7FC00000u : x == 0.0f ? 0u : bits_of(x);  // one NaN; -0 as +0
  // Positive floats order as their bits; negative ones reversed: flip all bits of a negative
  // float, only the sign bit of a positive one.
  const uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return descending ? ~ordered : ordered;
}

// The sort key of row entry i holding x.
KILN_HD uint64_t sort_key(float x, int64_t i, bool descending) {
  return (static_cast<uint64_t>(float_rank(x, descending)) << 32) | static_cast<uint64_t>(i);
}

// The row position a key holds.
KILN_HD int64_t key_position(uint64_t key) { return static_cast<int64_t>(key & 0xFFFFFFFFu); }

// argmax's (largest) or argmin's key of row entry i holding x: the row's largest key is the
// answer, torch's: the first NaN if there is one (both ways), else the first of the extreme
// values (-0 equal to +0). The position is stored complemented so that, among equal ranks, the
// first entry's key is the largest; one unsigned max over the row, which vectorises.
KILN_HD uint64_t extreme_key(float x, int64_t i, bool largest) {
  const uint32_t rank = x != x ? 0xFFFFFFFFu : largest ? float_rank(x, false) : ~float_rank(x, false);
  return (static_cast<uint64_t>(rank) << 32) | (0xFFFFFFFFu - static_cast<uint64_t>(i));
}

// The row position an extreme_key holds.
KILN_HD int64_t extreme_position(uint64_t key) { return static_cast<int64_t>(0xFFFFFFFFu - (key & 0xFFFFFFFFu)); }

}  // namespace kiln::common
