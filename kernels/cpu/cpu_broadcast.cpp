// CPU launchers for broadcasting (kernels/common/broadcast.h): elementwise ops on operands of
// different shapes, a tensor summed down to a broadcast operand's shape, and one repeated up.
// Each walks the plan's rows (every dimension but the innermost; the elementwise ops split long
// rows into pieces, for_each_piece) in parallel and runs the innermost dimension with constant
// strides, 0 or 1, known at compile time so it vectorises.
// Beside them the layout moves: transpose (32 x 32 tiles of 8 x 8 blocks in registers), permute
// (by a plan, as the repeat; core sends a swap of two groups of dimensions to transpose),
// copy_block (a memcpy per row) and the
// gathers of index_select, embedding and gather, and their gradients' scatter-add.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/common/broadcast.h"
#include "kernels/common/elementwise.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

namespace kiln::cpu {
namespace {

// Loops run on more threads from this many elements on (as the same-shape loops).
constexpr int64_t kParallelFrom = 65536;

// The plan's rows: the product of every extent but the innermost.
template <int Operands>
int64_t rows_of(const common::BroadcastPlan<Operands>& p) {
  int64_t n = 1;
  for (int d = 0; d + 1 < p.rank; ++d) n *= p.dims[d];
  return n;
}

// One row of out = a (Op) b; SA, SB: the operands' steps along it (0 or 1).
template <BinaryOp Op, int SA, int SB, typename R>
KILN_CPU_CLONES void binary_row(const R* a, const R* b, R* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = from_f32<R>(common::binary_apply(Op, to_f32(a[i * SA]), to_f32(b[i * SB])));
}

// Operand k's step along the plan's innermost dimension (0 or 1; 0 for a 0-d plan).
int64_t inner_step(const common::BroadcastPlan<2>& p, int k) { return p.rank == 0 ? 0 : p.stride[k][p.rank - 1]; }

// Walks a two-operand plan in pieces of up to kPiece elements of a row, in parallel from
// kParallelFrom elements, so that one long row (a tensor against a 0-d one) splits across threads
// as many short rows do. For each piece: row(SA, SB, a offset, b offset, out offset, n), SA and SB
// the operands' steps along the row (0 or 1) as std::integral_constant, so its loop vectorises.
template <typename Row>
void for_each_piece(const common::BroadcastPlan<2>& p, Row&& row) {
  constexpr int64_t kPiece = 16384;
  const int64_t inner = common::inner_extent(p), n_rows = rows_of(p), pieces = (inner + kPiece - 1) / kPiece;
  const int64_t sa = inner_step(p, 0), sb = inner_step(p, 1);
  using One = std::integral_constant<int, 1>;
  using Zero = std::integral_constant<int, 0>;
#pragma omp parallel for schedule(static) if (n_rows * inner > kParallelFrom && n_rows * pieces > 1)
  for (int64_t t = 0; t < n_rows * pieces; ++t) {
    const int64_t r = t / pieces, i0 = (t % pieces) * kPiece, n = std::min(kPiece, inner - i0);
    int64_t off[2];
    common::broadcast_offsets(p, r * inner, off);
    const int64_t ia = off[0] + i0 * sa, ib = off[1] + i0 * sb, io = r * inner + i0;
    if (sa == 1 && sb == 1) row(One{}, One{}, ia, ib, io, n);
    else if (sa == 1) row(One{}, Zero{}, ia, ib, io, n);
    else if (sb == 1) row(Zero{}, One{}, ia, ib, io, n);
    else row(Zero{}, Zero{}, ia, ib, io, n);
  }
}

template <BinaryOp Op, typename T>
void binary_rows(const common::BroadcastPlan<2>& p, const T* a, const T* b, T* out) {
  const raw_t<T>* ra = raw(a);
  const raw_t<T>* rb = raw(b);
  raw_t<T>* ro = raw(out);
  for_each_piece(p, [&](auto sa, auto sb, int64_t ia, int64_t ib, int64_t io, int64_t n) {
    binary_row<Op, decltype(sa)::value, decltype(sb)::value>(ra + ia, rb + ib, ro + io, n);
  });
}

// n elements of x from x[0] on, step 0 (one element repeated) or 1. A plain loop: a memcpy or fill
// call per run of two elements cost more than the copy.
template <typename R>
void gather_run(const R* x, int64_t step, R* to, int64_t n) {
  for (int64_t j = 0; j < n; ++j) to[j] = x[j * step];
}

// The operands' offsets at the start of a plan's row, stepped row by row as an odometer over the
// outer dimensions (a division per dimension per row, broadcast_offsets', cost [N, 2] ** [2] half
// its time).
struct RowCursor {
  const common::BroadcastPlan<2>& p;
  int64_t off[2] = {0, 0};
  int64_t coord[kMaxBroadcastRank] = {};
  RowCursor(const common::BroadcastPlan<2>& plan, int64_t row) : p(plan) {
    for (int d = p.rank - 2; d >= 0; --d) {
      coord[d] = row % p.dims[d];
      row /= p.dims[d];
      for (int k = 0; k < 2; ++k) off[k] += coord[d] * p.stride[k][d];
    }
  }
  void next() {
    for (int d = p.rank - 2; d >= 0; --d) {
      for (int k = 0; k < 2; ++k) off[k] += p.stride[k][d];
      if (++coord[d] < p.dims[d]) return;
      for (int k = 0; k < 2; ++k) off[k] -= p.dims[d] * p.stride[k][d];
      coord[d] = 0;
    }
  }
};

// a ** b broadcast: out in blocks of kPowBlock elements, each block's bases and exponents gathered
// (runs of rows, or an element repeated) into scratch, then pow's same-shape vector loop over the
// block, so the bits are the same-shape pow's. Row by row, a short row ([N, 2] ** [2]) and every
// row's tail went to the scalar double math, 28 ns an element (5x the powf loop it replaced).
template <typename T>
void pow_broadcast(const common::BroadcastPlan<2>& p, const T* a, const T* b, T* out, int64_t n) {
  using R = raw_t<T>;
  const R* ra = raw(a);
  const R* rb = raw(b);
  R* ro = raw(out);
  const int64_t inner = common::inner_extent(p), blocks = (n + kPowBlock - 1) / kPowBlock;
  const int64_t sa = inner_step(p, 0), sb = inner_step(p, 1);
#pragma omp parallel for schedule(static) if (n > kParallelFrom && blocks > 1)
  for (int64_t k = 0; k < blocks; ++k) {
    R ga[kPowBlock], gb[kPowBlock];
    const int64_t o0 = k * kPowBlock, o1 = std::min(n, o0 + kPowBlock);
    RowCursor at(p, o0 / inner);
    for (int64_t o = o0, i = o0 % inner; o < o1; i = 0, at.next()) {
      const int64_t len = std::min(inner - i, o1 - o);
      gather_run(ra + at.off[0] + i * sa, sa, ga + (o - o0), len);
      gather_run(rb + at.off[1] + i * sb, sb, gb + (o - o0), len);
      o += len;
    }
    pow_contiguous(ga, gb, ro + o0, o1 - o0);
  }
}

template <typename T>
void binary_broadcast_typed(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const common::BroadcastPlan<2> p = common::broadcast_plan<2>(out, {&a, &b});
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  if (op == BinaryOp::pow) return pow_broadcast(p, pa, pb, po, out.numel());
  with_binary_op(op, [&](auto o) { binary_rows<decltype(o)::value>(p, pa, pb, po); });
}

// Adds row `x` into the double accumulators `acc` element by element (out keeps x's
// innermost dimension).
template <typename R>
KILN_CPU_CLONES void accumulate_row(const R* x, double* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(to_f32(x[i]));
}

// acc = +0 + x (a sum from +0 after its first term: -0 becomes +0, as it does on the GPU),
// or +0 where x is null (an empty chunk).
template <typename R>
KILN_CPU_CLONES void start_row(const R* x, double* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = x != nullptr ? 0.0 + static_cast<double>(to_f32(x[i])) : 0.0;
}

// The sum of row `x` in double, in sum_to_element's order for a run (common::run_sum's lanes).
template <typename R>
KILN_CPU_CLONES double row_sum(const R* x, int64_t n) {
  return common::run_sum(n, [x](int64_t k) { return static_cast<double>(to_f32(x[k])); });
}

// A column sum of x [rows, cols] into acc [cols] (zeros) in kernels/common/broadcast.h's
// column order: the chunks in parallel, each a block of columns at a time through its rows
// into its lanes, then each column's chunk sums added in chunk order.
template <typename R>
void column_sums_in_chunks(const R* x, int64_t rows, int64_t cols, double* acc) {
  constexpr int64_t kBlock = 512;
  constexpr int kLanes = common::kColumnRowLanes;
  const int64_t chunks = common::column_chunks(rows, cols), per = (rows + chunks - 1) / chunks;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
  // Every chunk sum is written below: no zeroing.
  std::vector<double> once;
  double* const partial = reduction_scratch<struct ColumnSumsSite>(static_cast<size_t>(chunks * cols), once);
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols > kParallelFrom)
  for (int64_t k = 0; k < chunks; ++k) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = k * per, end = std::min(begin + per, rows);
      const int64_t c0 = blk * kBlock, n = std::min(cols - c0, kBlock);
      double* out = partial + k * cols + c0;
      if (end - begin <= kLanes) {  // a row per lane: the lanes' sum is the rows' in order
        start_row(end > begin ? x + begin * cols + c0 : nullptr, out, n);
        for (int64_t r = begin + 1; r < end; ++r) accumulate_row(x + r * cols + c0, out, n);
        continue;
      }
      // A lane starts at its first row (+0 plus it, as a sum from +0 does), so none is zeroed.
      double lane[kLanes * kBlock];
      for (int64_t r = begin; r < end; ++r) {
        double* l = lane + (r - begin) % kLanes * n;
        if (r - begin < kLanes) start_row(x + r * cols + c0, l, n);
        else accumulate_row(x + r * cols + c0, l, n);
      }
      for (int64_t i = 0; i < n; ++i) {
        double s = lane[i];
        for (int64_t l = 1; l < kLanes; ++l) s += lane[l * n + i];
        out[i] = s;
      }
    }
  }
  // Chunk by chunk into acc (from +0, as the column order starts), a block of columns per
  // thread: contiguous reads, where a column at a time strode through the partials.
#pragma omp parallel for schedule(static) if (chunks * cols > kParallelFrom && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, n = std::min(cols - c0, kBlock);
    for (int64_t k = 0; k < chunks; ++k) {
      const double* p = partial + k * cols + c0;
      for (int64_t i = 0; i < n; ++i) acc[c0 + i] += p[i];
    }
  }
}

// sum_to's other plans, in kernels/common/broadcast.h's order: rows walked in x's order.
// Where out keeps the innermost dimension, each thread takes a block of its columns through
// every row; where it is summed too, the rows' runs are summed in parallel and added in row
// order.
template <typename R>
void sum_in_rows(const common::BroadcastPlan<2>& p, const R* px, std::vector<double>& acc) {
  const int64_t inner = common::inner_extent(p), n_rows = rows_of(p);
  const bool inner_kept = p.rank > 0 && p.stride[1][p.rank - 1] != 0;
  const auto row_out = [&](int64_t r) {
    int64_t off[2];
    common::broadcast_offsets(p, r * inner, off);
    return off[1];
  };
  if (inner_kept) {
    // A block per thread, 64 to 512 columns (whole cache lines of accumulators): a sum down
    // to 512 channels in one 512-column block ran on one thread.
    const int64_t threads = omp_get_max_threads();
    const int64_t width = std::clamp<int64_t>(((inner + threads - 1) / threads + 15) & ~int64_t{15}, 64, 512);
    const int64_t blocks = (inner + width - 1) / width;
#pragma omp parallel for schedule(static) if (n_rows * inner > kParallelFrom && blocks > 1)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * width, n = std::min(inner - c0, width);
      for (int64_t r = 0; r < n_rows; ++r) accumulate_row(px + r * inner + c0, acc.data() + row_out(r) + c0, n);
    }
  } else {
    std::vector<double> runs(static_cast<size_t>(n_rows));
#pragma omp parallel for schedule(static) if (n_rows * inner > kParallelFrom && n_rows > 1)
    for (int64_t r = 0; r < n_rows; ++r) runs[static_cast<size_t>(r)] = row_sum(px + r * inner, inner);
    for (int64_t r = 0; r < n_rows; ++r) acc[static_cast<size_t>(row_out(r))] += runs[static_cast<size_t>(r)];
  }
}

// sum_to in kernels/common/broadcast.h's order, column sums apart.
template <typename T>
void sum_to_typed(const Tensor& x, Tensor& out) {
  using R = raw_t<T>;
  const common::BroadcastPlan<2> p = common::broadcast_plan<2>(x, {&x, &out});
  const R* px = raw(x.data<T>());
  R* po = raw(out.data<T>());
  if (p.rank == 2 && p.stride[1][0] == 1 && p.stride[1][1] == 0) {
    // Each row's run is one output (a sum over the last dimension): written as it is summed,
    // where the general path below adds runs into outputs one row at a time on one thread
    // (7 ms of a 401408-row sum, torch's 2.7).
    const int64_t rows = p.dims[0], n = p.dims[1];
#pragma omp parallel for schedule(static) if (x.numel() > kParallelFrom && rows > 1)
    for (int64_t r = 0; r < rows; ++r) po[r] = from_f32<R>(static_cast<float>(0.0 + row_sum(px + r * n, n)));
    return;
  }
  std::vector<double> acc(static_cast<size_t>(out.numel()), 0.0);
  int64_t rows = 0, cols = 0;
  if (common::column_sum_shape(p, rows, cols)) {
    column_sums_in_chunks(px, rows, cols, acc.data());
  } else {
    sum_in_rows(p, px, acc);
  }
  for (size_t j = 0; j < acc.size(); ++j) po[j] = from_f32<R>(static_cast<float>(acc[j]));
}

// One row of a move by a plan: out[i] = x[i * S] (S 0 for a repeat, 1 for a run).
template <int S, typename R>
KILN_CPU_CLONES void repeat_row(const R* x, R* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = x[i * S];
}

// The same with any step: a permutation that moves x's innermost dimension (a transposing one).
template <typename R>
KILN_CPU_CLONES void strided_row(const R* x, R* o, int64_t n, int64_t step) {
  for (int64_t i = 0; i < n; ++i) o[i] = x[i * step];
}

// out[i] = x[offset(i)] for every element of out, by a one-operand plan (broadcast_to's repeat
// or a permutation): rows in parallel, each a run, a repeat or a strided gather. R: the
// elements' bits (common::with_element_bits).
template <typename R>
void move_by_plan(const common::BroadcastPlan<1>& p, const Tensor& x, Tensor& out) {
  const int64_t inner = common::inner_extent(p), n_rows = rows_of(p);
  const int64_t step = p.rank > 0 ? p.stride[0][p.rank - 1] : 0;
  const R* px = static_cast<const R*>(x.raw_data());
  R* po = static_cast<R*>(out.raw_data());
#pragma omp parallel for schedule(static) if (out.numel() > kParallelFrom && n_rows > 1)
  for (int64_t r = 0; r < n_rows; ++r) {
    int64_t off[1];
    common::broadcast_offsets(p, r * inner, off);
    if (step == 1) repeat_row<1>(px + off[0], po + r * inner, inner);
    else if (step == 0) repeat_row<0>(px + off[0], po + r * inner, inner);
    else strided_row(px + off[0], po + r * inner, inner, step);
  }
}

void move_by_plan(const common::BroadcastPlan<1>& p, const Tensor& x, Tensor& out) {
  common::with_element_bits(dtype_size(x.dtype()), [&](auto r) { move_by_plan<decltype(r)>(p, x, out); });
}

}  // namespace

namespace {

// One run of out = a (Op) b for integers, SA and SB the operands' steps (0 or 1): a comparison
// into float32 0/1, integer arithmetic (common::integer_apply) into the integers' own type.
template <BinaryOp Op, int SA, int SB, typename I, typename O>
KILN_CPU_CLONES void integer_row(const I* a, const I* b, O* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (is_comparison(Op)) o[i] = common::compare_apply(Op, a[i * SA], b[i * SB]);
    else o[i] = common::integer_apply(Op, a[i * SA], b[i * SB]);
  }
}

// out = a (Op) b for integer a and b by the plan.
template <BinaryOp Op, typename I, typename O>
void integer_rows(const common::BroadcastPlan<2>& p, const I* pa, const I* pb, O* po) {
  for_each_piece(p, [&](auto sa, auto sb, int64_t ia, int64_t ib, int64_t io, int64_t n) {
    integer_row<Op, decltype(sa)::value, decltype(sb)::value>(pa + ia, pb + ib, po + io, n);
  });
}

template <typename I>
void integer_binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const common::BroadcastPlan<2> p = common::broadcast_plan<2>(out, {&a, &b});
  with_binary_op(op, [&](auto op_constant) {
    constexpr BinaryOp kOp = decltype(op_constant)::value;
    if constexpr (is_comparison(kOp)) integer_rows<kOp>(p, a.data<I>(), b.data<I>(), out.data<float>());
    else if constexpr (is_integer_arithmetic(kOp)) integer_rows<kOp>(p, a.data<I>(), b.data<I>(), out.data<I>());
    // core refuses the rest (division, powers) for integers before a backend sees them
  });
}

}  // namespace

void integer_binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (out.numel() == 0) return;
  if (a.dtype() == DType::i64) return integer_binary_typed<int64_t>(op, a, b, out);
  integer_binary_typed<int32_t>(op, a, b, out);
}

void binary_broadcast(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (out.numel() == 0) return;
  if (out.dtype() == DType::bf16) return binary_broadcast_typed<BFloat16>(op, a, b, out);
  binary_broadcast_typed<float>(op, a, b, out);
}

void CpuBackend::sum_to(const Tensor& x, Tensor& out) {
  if (x.numel() == 0) return fill(out, 0.0);
  if (x.dtype() == DType::bf16) return sum_to_typed<BFloat16>(x, out);
  sum_to_typed<float>(x, out);
}

namespace {

// Eight elements of T as one vector (GCC's and clang's vector extensions): each target_clones ISA
// picks its own instructions for the shuffles below (x86-64-v4: one vpermt2d each for 32-bit
// elements, punpck[lh]wd for 16-bit ones).
template <typename T>
struct Lanes8 {
  typedef T type __attribute__((vector_size(8 * sizeof(T))));
};

// y's 8 x 8 block = the transpose of x's: eight row loads, three rounds of a perfect shuffle of
// row i with row i + 4 (each round rotates an element's 6-bit (row, column) address by one bit,
// so three swap row and column), eight row stores. Element by element the same block took 12%
// of the copy roof: a scalar load and store per element, the stores a stride apart.
template <typename T>
KILN_HD void transpose_8x8(const T* x, int64_t ldx, T* y, int64_t ldy) {
#if !defined(__clang__) && defined(__GNUC__) && __GNUC__ < 12  // no __builtin_shufflevector before GCC 12
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) y[j * ldy + i] = x[i * ldx + j];
#else
  using V = typename Lanes8<T>::type;
  V r[8], n[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&r[i], x + i * ldx, sizeof(V));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) {
      n[2 * i] = __builtin_shufflevector(r[i], r[i + 4], 0, 8, 1, 9, 2, 10, 3, 11);
      n[2 * i + 1] = __builtin_shufflevector(r[i], r[i + 4], 4, 12, 5, 13, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; ++i) r[i] = n[i];
  }
  for (int j = 0; j < 8; ++j) std::memcpy(y + j * ldy, &r[j], sizeof(V));
#endif
}

// y[j][i] = x[i][j] for i in [i0, i1), j in [j0, j1): 8 x 8 blocks, elements at the edges.
template <typename T>
KILN_HD void transpose_tile(const T* x, T* y, int64_t rows, int64_t cols, int64_t i0, int64_t i1, int64_t j0,
                            int64_t j1) {
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    int64_t j = j0;
    for (; j + 8 <= j1; j += 8) transpose_8x8(x + i * cols + j, cols, y + j * rows + i, rows);
    for (; j < j1; ++j)
      for (int64_t k = i; k < i + 8; ++k) y[j * rows + k] = x[k * cols + j];
  }
  for (; i < i1; ++i)
    for (int64_t j = j0; j < j1; ++j) y[j * rows + i] = x[i * cols + j];
}

// y[b][j][i] = x[b][i][j] over a [batch, rows, cols] x, in 32 x 32 tiles: within a tile both
// the reads and the writes stay on a few cache lines (a row of y is a column of x).
template <typename Bits>
KILN_CPU_CLONES void transpose_tiles(const Bits* x, Bits* y, int64_t batch, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  const int64_t tile_rows = (rows + kTile - 1) / kTile, tile_cols = (cols + kTile - 1) / kTile;
  const int64_t tiles = batch * tile_rows * tile_cols;
#pragma omp parallel for schedule(static) if (batch * rows * cols > 65536)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t b = t / (tile_rows * tile_cols), in_b = t % (tile_rows * tile_cols);
    const int64_t i0 = (in_b / tile_cols) * kTile, j0 = (in_b % tile_cols) * kTile;
    transpose_tile(x + b * rows * cols, y + b * rows * cols, rows, cols, i0, std::min(rows, i0 + kTile), j0,
                   std::min(cols, j0 + kTile));
  }
}

}  // namespace

void CpuBackend::transpose(const Tensor& x, Tensor& y) {
  if (x.numel() == 0) return;
  const int64_t rows = x.dim(-2), cols = x.dim(-1), batch = x.numel() / (rows * cols);
  if (x.dtype() == DType::bf16)
    return transpose_tiles(static_cast<const uint16_t*>(x.raw_data()), static_cast<uint16_t*>(y.raw_data()), batch,
                           rows, cols);
  transpose_tiles(static_cast<const uint32_t*>(x.raw_data()), static_cast<uint32_t*>(y.raw_data()), batch, rows, cols);
}

void CpuBackend::copy_block(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                            int64_t width) {
  if (rows == 0 || width == 0) return;
  const auto es = static_cast<int64_t>(dtype_size(src.dtype()));
  const int64_t src_pitch = src.numel() / rows * es, dst_pitch = dst.numel() / rows * es, bytes = width * es;
  const auto* ps = static_cast<const char*>(src.raw_data()) + src_col * es;
  auto* pd = static_cast<char*>(dst.raw_data()) + dst_col * es;
#pragma omp parallel for schedule(static) if (rows * bytes > 4 * kParallelFrom && rows > 1)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(pd + r * dst_pitch, ps + r * src_pitch, static_cast<size_t>(bytes));
}

namespace {

constexpr int64_t kNoBadIndex = INT64_MAX;  // what a kernel's first-bad-position minimum starts at

// Whether index k lies in [0, v): one unsigned compare (a negative k wraps past v).
template <typename I>
bool inside(I k, int64_t v) {
  return static_cast<uint64_t>(static_cast<int64_t>(k)) < static_cast<uint64_t>(v);
}

// Backend's report from a kernel's minimum: the first bad position, or -1.
int64_t reported(int64_t first) { return first == kNoBadIndex ? -1 : first; }

// dst[i] = src[idx[i]] for i < n; Columns: dst[i] = src[idx[i] * n + i] (a row of torch.gather
// along a dimension before the last: column i of the block's row idx[i]). An index outside
// [0, v) (v >= 1) reads row 0 instead so that the loop stays branch-free; returns the first such
// i, or kNoBadIndex. A scalar loop: GCC 12 vectorises neither the first-position search nor, at
// its generic tuning, any gather.
template <bool Columns = false, typename R, typename I>
int64_t gather_row(const R* src, const I* idx, int64_t n, int64_t v, R* dst) {
  int64_t first = kNoBadIndex;
  for (int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<int64_t>(idx[i]);
    const bool ok = inside(k, v);
    dst[i] = Columns ? src[(ok ? k : 0) * n + i] : src[ok ? k : 0];
    first = std::min(first, ok ? kNoBadIndex : i);
  }
  return first;
}

// gather_row over the 1-d selection out[i] = table[idx[i]] (i < n), threads taking runs of i
// where more than 4 * kParallelFrom bytes move; the first bad i, or kNoBadIndex.
template <typename R, typename I>
int64_t gather_1d(const R* table, const I* idx, int64_t n, int64_t v, R* out) {
  constexpr int64_t kRun = 16384;
  const int64_t runs = (n + kRun - 1) / kRun;
  int64_t first = kNoBadIndex;
#pragma omp parallel for schedule(static) reduction(min : first) if (n * int64_t{sizeof(R)} > 4 * kParallelFrom)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t at = gather_row(table, idx + r * kRun, std::min(kRun, n - r * kRun), v, out + r * kRun);
    first = std::min(first, at == kNoBadIndex ? at : r * kRun + at);
  }
  return first;
}

// out[b, i, :] = table[b, idx[i], :] (table [blocks, v, d] with v >= 1, out [blocks, n, d]),
// elements moved as R (their bits), an index outside [0, v) skipped (its row of out unset) and
// the first one's position returned (-1: none). Threads take (b, i) pairs, a memcpy each; rows
// of one element (a selection along the last dimension) a gather_row per block instead.
template <typename R, typename I>
int64_t gather_typed(const R* table, const I* idx, const Shape& t, int64_t n, R* out) {
  const int64_t blocks = t[0], v = t[1], d = t[2];
  const auto row = static_cast<size_t>(d) * sizeof(R);
  const int64_t bytes = blocks * n * static_cast<int64_t>(row);
  if (d == 1 && blocks == 1) return reported(gather_1d(table, idx, n, v, out));
  int64_t first = kNoBadIndex;
  if (d == 1) {
#pragma omp parallel for schedule(static) reduction(min : first) if (bytes > 4 * kParallelFrom)
    for (int64_t b = 0; b < blocks; ++b) first = std::min(first, gather_row(table + b * v, idx, n, v, out + b * n));
    return reported(first);
  }
#pragma omp parallel for collapse(2) schedule(static) reduction(min : first) if (bytes > 4 * kParallelFrom && \
                                                                                  blocks * n > 1)
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<int64_t>(idx[i]);
      if (inside(k, v)) std::memcpy(out + (b * n + i) * d, table + (b * v + k) * d, row);
      else first = std::min(first, i);
    }
  return reported(first);
}

// out[b, i, c] = table[b, idx[b, i, c], c]: an index per element (torch.gather), idx and out
// [blocks, n, d], table [blocks, v, d] with v >= 1; bad indices as gather_typed's. Threads take
// (b, i) pairs; along the last dimension (d = 1) a gather_row per block.
template <typename R, typename I>
int64_t gather_elements_typed(const R* table, const I* idx, const Shape& t, int64_t n, R* out) {
  const int64_t blocks = t[0], v = t[1], d = t[2];
  if (d == 1 && blocks == 1) return reported(gather_1d(table, idx, n, v, out));
  int64_t first = kNoBadIndex;
  if (d == 1) {
#pragma omp parallel for schedule(static) reduction(min : first) if (blocks * n > kParallelFrom)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = gather_row(table + b * v, idx + b * n, n, v, out + b * n);
      first = std::min(first, at == kNoBadIndex ? at : b * n + at);
    }
    return reported(first);
  }
#pragma omp parallel for collapse(2) schedule(static) reduction(min : first) if (blocks * n * d > kParallelFrom && \
                                                                                  blocks * n > 1)
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = (b * n + i) * d;
      const int64_t at = gather_row<true>(table + b * v * d, idx + r, d, v, out + r);
      first = std::min(first, at == kNoBadIndex ? at : r + at);
    }
  return reported(first);
}

// acc[j] += x[j] for j < n, cloned per CPU (the baseline copy adds 4 floats at a time).
KILN_CPU_CLONES void add_to_row(const float* x, float* acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += x[j];
}

// grad[b, idx[b, i, c] or idx[i], c] += g[b, i, c] (grad [blocks, v, d], g [blocks, n, d]; idx
// one per element or one per row), an index outside [0, v) skipped and the first one's position
// returned (-1: none). Threads take (b, block of columns) pairs, each walking every i in order:
// the same sums whatever the thread count.
template <bool PerElement, typename I>
int64_t scatter_add_typed(const float* g, const I* idx, const Shape& t, int64_t n, float* grad) {
  const int64_t v = t[1], d = t[2];
  int64_t first = kNoBadIndex;
  if (PerElement && d == 1) {  // along the last dimension: one loop per block, in order
#pragma omp parallel for schedule(static) reduction(min : first) if (t[0] * n > kParallelFrom && t[0] > 1)
    for (int64_t b = 0; b < t[0]; ++b) {
      float* dst = grad + b * v;
      for (int64_t i = b * n; i < (b + 1) * n; ++i) {
        const auto k = static_cast<int64_t>(idx[i]);
        if (inside(k, v)) dst[k] += g[i];
        else first = std::min(first, i);
      }
    }
    return reported(first);
  }
  constexpr int64_t kBlock = 256;
  const int64_t column_blocks = (d + kBlock - 1) / kBlock, tasks = t[0] * column_blocks;
#pragma omp parallel for schedule(static) reduction(min : first) if (t[0] * n * d > kParallelFrom && tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / column_blocks, c0 = task % column_blocks * kBlock, w = std::min(kBlock, d - c0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = (b * n + i) * d + c0;
      const float* src = g + r;
      if constexpr (PerElement) {
        for (int64_t j = 0; j < w; ++j) {
          const auto k = static_cast<int64_t>(idx[r + j]);
          if (inside(k, v)) grad[(b * v + k) * d + c0 + j] += src[j];
          else first = std::min(first, r + j);
        }
      } else {
        const auto k = static_cast<int64_t>(idx[i]);
        if (!inside(k, v)) {
          first = std::min(first, i);
          continue;
        }
        float* dst = grad + (b * v + k) * d + c0;
        if (w >= 16) {
          add_to_row(src, dst, w);  // the clone's dispatch costs more than it saves on short rows
        } else {
          for (int64_t j = 0; j < w; ++j) dst[j] += src[j];
        }
      }
    }
  }
  return reported(first);
}

// fn(I*) with I the index type of idx, int64_t or int32_t.
template <typename Fn>
void with_indices(const Tensor& idx, Fn&& fn) {
  if (idx.dtype() == DType::i64) return fn(idx.data<int64_t>());
  fn(idx.data<int32_t>());
}
}  // namespace

int64_t CpuBackend::gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) {
  const int64_t n = out.dim(1);
  if (out.numel() == 0) return -1;  // core checks the indices of an empty result
  if (table.dim(1) == 0) return 0;  // every index is outside an empty dimension
  int64_t first = -1;
  common::with_element_bits(dtype_size(table.dtype()), [&](auto tag) {
    using R = decltype(tag);
    const auto* pt = static_cast<const R*>(table.raw_data());
    auto* po = static_cast<R*>(out.raw_data());
    with_indices(idx, [&](const auto* pi) {
      first = idx.rank() == 1 ? gather_typed(pt, pi, table.shape(), n, po)
                              : gather_elements_typed(pt, pi, table.shape(), n, po);
    });
  });
  return first;
}

int64_t CpuBackend::scatter_add_rows(const Tensor& g, const Tensor& idx, Tensor& grad) {
  const int64_t n = g.dim(1);
  if (g.numel() == 0) return -1;  // core checks the indices of an empty g
  if (grad.dim(1) == 0) return 0;
  int64_t first = -1;
  with_indices(idx, [&](const auto* pi) {
    first = idx.rank() == 1 ? scatter_add_typed<false>(g.data<float>(), pi, grad.shape(), n, grad.data<float>())
                            : scatter_add_typed<true>(g.data<float>(), pi, grad.shape(), n, grad.data<float>());
  });
  return first;
}

void CpuBackend::broadcast_to(const Tensor& x, Tensor& out) {
  if (out.numel() == 0) return;
  move_by_plan(common::broadcast_plan<1>(out, {&x}), x, out);
}

void CpuBackend::permute(const Tensor& x, const std::vector<int64_t>& dims, Tensor& y) {
  if (y.numel() == 0) return;
  move_by_plan(common::permute_plan(x.shape().dims(), dims), x, y);
}

}  // namespace kiln::cpu
