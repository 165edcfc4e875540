// Broadcast indexing shared by the CPU and CUDA backends: the elementwise ops on operands of
// different shapes (NumPy's rules, checked in core), the sum of a gradient back down to an
// operand's shape, and a tensor repeated up to another's. One plan describes all three: the
// output's extents and, per operand, its stride in each (0 along a broadcast dimension).
// Dimensions are collapsed first (size-1 ones dropped, neighbours that step alike merged),
// so [N, H, W, C] + [C] runs as [N*H*W, C] with strides (C, 1) and (0, 1).
#pragma once

#include <cstdint>
#include <vector>

#include "core/hd.h"
#include "core/op_params.h"

namespace kiln::common {

// Output extents (outermost first) and each operand's element stride in them.
template <int Operands>
struct BroadcastPlan {
  int rank = 0;                      // 0: a single element
  int64_t dims[kMaxBroadcastRank] = {};
  int64_t stride[Operands][kMaxBroadcastRank] = {};
};

// Appends an output dimension of extent n, with each operand's stride along it, to p: dropped
// when n is 1 (no index runs along it), merged into p's last dimension when every operand steps
// across both alike (row-major order kept).
template <int Operands>
void collapse_into(BroadcastPlan<Operands>& p, int64_t n, const int64_t (&stride)[Operands]) {
  if (n == 1) return;
  bool merges = p.rank > 0;
  for (int k = 0; k < Operands && merges; ++k) merges = stride[k] * n == p.stride[k][p.rank - 1];
  if (merges) {
    p.dims[p.rank - 1] *= n;
    for (int k = 0; k < Operands; ++k) p.stride[k][p.rank - 1] = stride[k];
    return;
  }
  p.dims[p.rank] = n;
  for (int k = 0; k < Operands; ++k) p.stride[k][p.rank] = stride[k];
  ++p.rank;
}

// The plan for extents `out` over operands whose extents, left-padded with 1s, are out's or
// 1 in each dimension, out's rank at most kMaxBroadcastRank (core checked both).
template <int Operands>
BroadcastPlan<Operands> broadcast_plan(const std::vector<int64_t>& out,
                                       const std::vector<int64_t>* const (&operands)[Operands]) {
  const int full = static_cast<int>(out.size());
  // Each operand's contiguous strides, aligned to out's dimensions, 0 where it broadcasts.
  std::vector<int64_t> stride[Operands];
  for (int k = 0; k < Operands; ++k) {
    const std::vector<int64_t>& d = *operands[k];
    stride[k].assign(static_cast<size_t>(full), 0);
    int64_t step = 1;
    for (int i = full - 1, j = static_cast<int>(d.size()) - 1; i >= 0 && j >= 0; --i, --j) {
      if (d[static_cast<size_t>(j)] != 1) stride[k][static_cast<size_t>(i)] = step;
      step *= d[static_cast<size_t>(j)];
    }
  }
  BroadcastPlan<Operands> p;
  for (int i = 0; i < full; ++i) {
    int64_t at[Operands];
    for (int k = 0; k < Operands; ++k) at[k] = stride[k][static_cast<size_t>(i)];
    collapse_into(p, out[static_cast<size_t>(i)], at);
  }
  return p;
}

// The plan of y = x with its dimensions permuted (y's dimension i is x's dims[i]; dims a
// permutation of x's, at most kMaxBroadcastRank, core checked): y's extents and x's stride in
// each, collapsed alike, so a permutation that keeps neighbours together moves whole runs
// ([B, T, H, D] -> [B, H, T, D] copies rows of D).
inline BroadcastPlan<1> permute_plan(const std::vector<int64_t>& x_dims, const std::vector<int64_t>& dims) {
  std::vector<int64_t> x_stride(x_dims.size(), 1);
  for (size_t i = x_dims.size(); i-- > 1;) x_stride[i - 1] = x_stride[i] * x_dims[i];
  BroadcastPlan<1> p;
  for (const int64_t d : dims) {
    const int64_t at[1] = {x_stride[static_cast<size_t>(d)]};
    collapse_into(p, x_dims[static_cast<size_t>(d)], at);
  }
  return p;
}

// The plan for tensors (kiln::Tensor; this header does not include it): out's extents and
// the operands'.
template <int Operands, typename Tensor>
BroadcastPlan<Operands> broadcast_plan(const Tensor& out, const Tensor* const (&operands)[Operands]) {
  const std::vector<int64_t>* dims[Operands];
  for (int k = 0; k < Operands; ++k) dims[k] = &operands[k]->shape().dims();
  return broadcast_plan<Operands>(out.shape().dims(), dims);
}

// fn(R{}) with R the unsigned integer type of an element of `bytes` bytes (1, 2, 4 or 8): for
// the moves by a plan (a repeat, a permutation), which copy elements and never read them.
template <typename Fn>
void with_element_bits(size_t bytes, Fn&& fn) {
  if (bytes == 1) return fn(uint8_t{});
  if (bytes == 2) return fn(uint16_t{});
  if (bytes == 4) return fn(uint32_t{});
  fn(uint64_t{});
}

// The offsets of output element i (row-major over the plan's dims) in each operand.
template <int Operands>
KILN_HD void broadcast_offsets(const BroadcastPlan<Operands>& p, int64_t i, int64_t (&off)[Operands]) {
  for (int k = 0; k < Operands; ++k) off[k] = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int64_t q = i / p.dims[d];
    const int64_t r = i - q * p.dims[d];
    for (int k = 0; k < Operands; ++k) off[k] += r * p.stride[k][d];
    i = q;
  }
}

// The extent of the innermost collapsed dimension (1 for a single element): the run that
// the CPU loops over with constant strides.
template <int Operands>
KILN_HD int64_t inner_extent(const BroadcastPlan<Operands>& p) {
  return p.rank == 0 ? 1 : p.dims[p.rank - 1];
}

// The dimensions of a sum_to plan (below) that out keeps (its stride != 0), outermost first,
// into `kept`; returns how many.
inline int kept_dims(const BroadcastPlan<2>& p, int (&kept)[kMaxBroadcastRank]) {
  int n = 0;
  for (int d = 0; d < p.rank; ++d)
    if (p.stride[1][d] != 0) kept[n++] = d;
  return n;
}

// Column sums, [rows, cols] -> [cols], in an order built for a GPU (many threads per column,
// fixed whatever the GPU): the rows split into column_chunks() chunks of
// ceil(rows / chunks) rows; in a chunk, row r adds into lane (r - chunk begin) %
// kColumnRowLanes; a chunk's sum is its lanes added in lane order, a column's its chunks'
// sums added in chunk order from 0; all in double. sum_to takes it for a plan of that shape
// (a channel sum of NHWC, a bias's gradient); CUDA's linear bias gradient runs it too.
constexpr int64_t kColumnChunks = 256;
constexpr int kColumnRowLanes = 8;
constexpr int64_t kColumnPartials = int64_t{1} << 23;  // chunk sums held at most (64 MiB of doubles)

// How many chunks the rows of a [rows, cols] column sum split into (rows > 0).
KILN_HD int64_t column_chunks(int64_t rows, int64_t cols) {
  const int64_t by_rows = rows < kColumnChunks ? rows : kColumnChunks;
  const int64_t by_memory = cols > 0 && kColumnPartials / cols > 0 ? kColumnPartials / cols : 1;
  return by_rows < by_memory ? by_rows : by_memory;
}

// One column's sum in that order; load(r) reads its element in row r as a double.
template <typename Load>
KILN_HD double column_sum_element(int64_t rows, int64_t cols, Load load) {
  if (rows <= 0) return 0.0;
  const int64_t chunks = column_chunks(rows, cols), per = (rows + chunks - 1) / chunks;
  double total = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t begin = k * per, end = begin + per < rows ? begin + per : rows;
    double lane[kColumnRowLanes] = {};
    for (int64_t r = begin; r < end; ++r) lane[(r - begin) % kColumnRowLanes] += load(r);
    double s = lane[0];
    for (int l = 1; l < kColumnRowLanes; ++l) s += lane[l];
    total += s;
  }
  return total;
}

// Whether a sum_to plan (below) is a column sum, [rows, cols] -> [cols], and its rows and
// cols: a sum of everything is one column (a 0-d operand's gradient: many threads on a GPU,
// where a row-major order would be one).
KILN_HD bool column_sum_shape(const BroadcastPlan<2>& p, int64_t& rows, int64_t& cols) {
  if (p.rank == 2 && p.stride[1][0] == 0 && p.stride[1][1] == 1) {
    rows = p.dims[0];
    cols = p.dims[1];
    return true;
  }
  if (p.rank <= 1 && (p.rank == 0 || p.stride[1][0] == 0)) {
    rows = p.rank == 0 ? 1 : p.dims[0];
    cols = 1;
    return true;
  }
  return false;
}

// The sum of a run of n terms in double (sum_to's innermost summed dimension): term k into lane
// k % kRunLanes, each lane from +0 in order, then the lanes added in lane order. Eight chains of
// adds, not one: one chain in order (before 2026-12-06) was latency-bound, a sum over a last
// dimension at a third of torch's speed on the CPU; the GPU's thread per output runs it too.
constexpr int kRunLanes = 8;
template <typename Load>
KILN_HD double run_sum(int64_t n, Load load) {
  double lane[kRunLanes] = {};
  int64_t k = 0;
  for (; k + kRunLanes <= n; k += kRunLanes)
    for (int l = 0; l < kRunLanes; ++l) lane[l] += load(k + l);
  for (int l = 0; k + l < n; ++l) lane[l] += load(k + l);
  double s = lane[0];
  for (int l = 1; l < kRunLanes; ++l) s += lane[l];
  return s;
}

// sum_to's order, which both backends keep so that they give the same bits: a column sum as
// above; otherwise output element j sums, in double from 0, x's elements that broadcast from
// it in x's row-major order; where x's innermost (collapsed) dimension is summed too, each run
// along it is summed first (run_sum) and the run's sum added. Plan: over x's extents, operand 0
// x, operand 1 out. `kept` lists the plan dimensions out has (out stride != 0), outermost first;
// load(o) reads x's element o as a double.
template <typename Load>
KILN_HD double sum_to_element(const BroadcastPlan<2>& p, const int* kept, int n_kept, int64_t j, Load load) {
  int64_t rows = 0, cols = 0;
  if (column_sum_shape(p, rows, cols))
    return column_sum_element(rows, cols, [&](int64_t r) { return load(r * cols + j); });
  // j over the kept dimensions (out is contiguous in them, in this order) gives x's base.
  int64_t base = 0;
  for (int k = n_kept - 1; k >= 0; --k) {
    const int d = kept[k];
    const int64_t q = j / p.dims[d];
    base += (j - q * p.dims[d]) * p.stride[0][d];
    j = q;
  }
  const bool inner_summed = p.rank > 0 && p.stride[1][p.rank - 1] == 0;
  const int64_t inner = inner_summed ? p.dims[p.rank - 1] : 1;
  const int64_t inner_step = inner_summed ? p.stride[0][p.rank - 1] : 0;
  // The summed dimensions outside the innermost run, counted in row-major order.
  int64_t count = 1;
  for (int d = 0; d < p.rank - (inner_summed ? 1 : 0); ++d)
    if (p.stride[1][d] == 0) count *= p.dims[d];
  double acc = 0;
  for (int64_t m = 0; m < count; ++m) {
    int64_t off = base, rest = m;
    for (int d = p.rank - (inner_summed ? 2 : 1); d >= 0; --d) {
      if (p.stride[1][d] != 0) continue;
      const int64_t q = rest / p.dims[d];
      off += (rest - q * p.dims[d]) * p.stride[0][d];
      rest = q;
    }
    if (!inner_summed) {
      acc += load(off);
      continue;
    }
    acc += run_sum(inner, [&](int64_t k) { return load(off + k * inner_step); });
  }
  return acc;
}

}  // namespace kiln::common
