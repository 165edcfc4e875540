// CUDA launchers for fills, Philox draws and per-element math (kernels/common/elementwise.h),
// plus the dtype conversion, bias add and deterministic column sum the other CUDA files share.
// Every kernel is a grid-stride loop with 64-bit indices; results match the CPU backend.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/philox.h"
#include "kernels/common/broadcast.h"
#include "kernels/common/convert.h"
#include "kernels/common/elementwise.h"
#include "kernels/common/normal.h"
#include "kernels/common/pack.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/grid_stride.cuh"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// Calls fn(T{}) with T float or BFloat16, the dtypes the per-element math runs in: fp32
// arithmetic, a bf16 result rounded once (nearest even) on the store, as the CPU's loops.
template <typename Fn>
void for_float_or_bf16(DType t, Fn&& fn) {
  if (t == DType::bf16) fn(BFloat16{});
  else fn(float{});
}

// Calls fn(I{}) with I the index type of `t`, int64_t or int32_t (an embedding's indices).
template <typename Fn>
void for_index_type(DType t, Fn&& fn) {
  if (t == DType::i64) fn(int64_t{});
  else fn(int32_t{});
}

// Calls fn(T{}) with T the C++ type of `t` (the CPU backend's dispatch, on device types).
template <typename Fn>
void for_each_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: fn(float{}); return;
    case DType::bf16: fn(BFloat16{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i64: fn(int64_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
  }
  KILN_FAIL(current_op(), ": unknown dtype ", static_cast<int>(t));
}

// double -> T as the CPU backend converts (kernels/common/convert.h): fill, arange and copy agree bit for bit.
using common::from_double;

template <typename T>
__global__ void fill_kernel(T* p, T v, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) p[i] = v;
}

template <typename T>
__global__ void arange_kernel(T* p, double start, double step, int64_t n) {
  // __dmul_rn/__dadd_rn: never contracted into an FMA, so the double is the CPU's
  // start + step * i bit for bit and integer truncation lands on the same side.
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    p[i] = from_double<T>(__dadd_rn(start, __dmul_rn(step, static_cast<double>(i))));
}

__global__ void broadcast_scalar_kernel(const float* scalar, float scale, float* p, int64_t n) {
  const float v = scalar[0] * scale;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) p[i] = v;
}

__global__ void uniform_kernel(float* p, PhiloxState s, float lo, float span, int64_t n) {
  // Not contracted, as the CPU's lo + span * u (x86-64 without -march=native has no FMA).
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    p[i] = __fadd_rn(lo, __fmul_rn(span, philox_uniform(s, static_cast<uint64_t>(i))));
}

__global__ void normal_kernel(float* p, PhiloxState s, float mean, float std, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    p[i] = __fadd_rn(mean, __fmul_rn(std, common::philox_normal(s, static_cast<uint64_t>(i))));
}

// T is float or BFloat16 (fp32 math, one rounding on the store; for float both casts are no-ops).
template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = T(common::binary_apply(op, static_cast<float>(a[i]), static_cast<float>(b[i])));
}

// What reduce_extreme compares: float32 and bfloat16 as fp32 (NaN wins, binary_apply's), int32
// and int64 as themselves (exact past 2^24); the CPU's extreme_value and extreme_pick.
template <typename T> struct ExtremeValue { using type = float; };
template <> struct ExtremeValue<int32_t> { using type = int32_t; };
template <> struct ExtremeValue<int64_t> { using type = int64_t; };
__device__ float extreme_pick(BinaryOp op, float a, float b) { return common::binary_apply(op, a, b); }
template <typename I>
__device__ I extreme_pick(BinaryOp op, I a, I b) { return common::integer_apply(op, a, b); }

// reduce_extreme: a thread per output (r, i) walks k; neighbouring threads read neighbouring i,
// so the reads coalesce when inner is large (short last dimensions read strided; long ones take
// extreme_rows_kernel). Still slow where few outputs each span a long strided run (inner > 1,
// rows * inner small). The value picked is one of x's, so the bf16 store rounds nothing.
template <typename T>
__global__ void extreme_kernel(BinaryOp op, const T* x, int64_t n, int64_t inner, T* out, int64_t outs) {
  using V = typename ExtremeValue<T>::type;
  for (int64_t o = global_thread(); o < outs; o += grid_threads()) {
    const T* p = x + (o / inner) * n * inner + o % inner;
    V best = static_cast<V>(p[0]);
    for (int64_t k = 1; k < n; ++k) best = extreme_pick(op, best, static_cast<V>(p[k * inner]));
    out[o] = T(best);
  }
}

// reduce_extreme over a long last dimension (inner 1), where a thread per output would walk a
// whole row alone: a block per row, its threads striding the row, then a warp-shuffle and a
// shared-memory tree. Every thread starts from the row's first element (max takes it twice
// harmlessly); the tree changes only which zero or NaN comes out, never the value.
template <typename T>
__global__ void extreme_rows_kernel(BinaryOp op, const T* x, int64_t rows, int64_t n, T* out) {
  using V = typename ExtremeValue<T>::type;
  __shared__ V part[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * n;
    V best = static_cast<V>(row[0]);
    for (int64_t k = threadIdx.x; k < n; k += kThreads) best = extreme_pick(op, best, static_cast<V>(row[k]));
    for (int offset = 16; offset > 0; offset /= 2)
      best = extreme_pick(op, best, __shfl_xor_sync(0xffffffffu, best, offset));
    __syncthreads();  // the previous row's thread 0 may still read part
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < kThreads / 32; ++w) best = extreme_pick(op, best, part[w]);
      out[r] = T(best);
    }
  }
}

// The first bad index's flattened position: atomicMin into *first (all ones until one is found).
__device__ void note_bad_index(unsigned long long* first, int64_t at) {
  atomicMin(first, static_cast<unsigned long long>(at));
}

// gather_rows: a thread per output element of out [blocks, n, d] from table [blocks, v, d], by
// idx [n] (a row each) or, PerElement, idx [blocks, n, d] (torch.gather). R: the elements' bits
// (any dtype), I int32 or int64. An index outside [0, v) is skipped, its position noted.
template <bool PerElement, typename R, typename I>
__global__ void gather_rows_kernel(const R* table, const I* idx, int64_t total, int64_t n, int64_t v, int64_t d,
                                   R* out, unsigned long long* first_bad) {
  for (int64_t e = global_thread(); e < total; e += grid_threads()) {
    const int64_t row = e / d, b = row / n, c = e - row * d;
    const int64_t at = PerElement ? e : row - b * n;
    const auto k = static_cast<int64_t>(idx[at]);
    if (static_cast<uint64_t>(k) >= static_cast<uint64_t>(v)) {
      note_bad_index(first_bad, at);
      out[e] = R{};  // no stale memory in the unused result
      continue;
    }
    out[e] = table[(b * v + k) * d + c];
  }
}

// scatter_add_rows: a thread per (block, column) walking every i in order, the CPU's order, so
// repeated indices sum to the same bits on both (no atomics). Slow where d is small and n large.
// Bad indices as gather_rows_kernel's.
template <bool PerElement, typename I>
__global__ void scatter_add_rows_kernel(const float* g, const I* idx, int64_t blocks, int64_t n, int64_t v,
                                        int64_t d, float* grad, unsigned long long* first_bad) {
  for (int64_t t = global_thread(); t < blocks * d; t += grid_threads()) {
    const int64_t b = t / d, c = t - b * d;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t e = (b * n + i) * d + c, at = PerElement ? e : i;
      const auto k = static_cast<int64_t>(idx[at]);
      if (static_cast<uint64_t>(k) >= static_cast<uint64_t>(v)) {
        note_bad_index(first_bad, at);
        continue;
      }
      grad[(b * v + k) * d + c] += g[e];
    }
  }
}

// Device memory for a kernel's first bad index position, all ones (none) until it runs. Reading
// it back waits for the kernel, which a CUDA graph capture cannot do: the op then fails the
// capture (the step runs uncaptured) rather than replay unchecked indices.
struct BadIndexFlag {
  BadIndexFlag(int index, cudaStream_t stream) : ws(index, capture_checked()), stream(stream) {
    KILN_CUDA_CHECK(cudaMemsetAsync(ws.data(), 0xFF, sizeof(unsigned long long), stream));
  }
  static size_t capture_checked() {
    KILN_CHECK(!capturing(), current_op(), ": its index check waits for the GPU, which a CUDA graph capture cannot ",
               "do; index_select, gather, embedding, index_add, scatter_add, sort and topk run in steps that are not "
               "captured");
    return sizeof(unsigned long long);
  }
  unsigned long long* data() const { return static_cast<unsigned long long*>(ws.data()); }
  // The position the kernels noted, or -1, after a wait for them (the price of a bad index as an
  // error, not a silent zero).
  int64_t first() const {
    unsigned long long at = 0;
    KILN_CUDA_CHECK(cudaMemcpyAsync(&at, data(), sizeof at, cudaMemcpyDeviceToHost, stream));
    KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
    return at == ~0ULL ? -1 : static_cast<int64_t>(at);
  }
  Workspace ws;
  cudaStream_t stream;
};

// out = fn(a, b) with a or b broadcast (kernels/common/broadcast.h): one output element per
// thread, its operands' offsets from the plan. fn: ArithmeticOf (floats) or ComparisonOf
// (integers into a float32 mask).
template <typename In, typename Out, typename Fn>
__global__ void broadcast_kernel(common::BroadcastPlan<2> p, const In* a, const In* b, Out* out, int64_t n, Fn fn) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    int64_t off[2];
    common::broadcast_offsets(p, i, off);
    out[i] = fn(a[off[0]], b[off[1]]);
  }
}

// An arithmetic op of float32 or bfloat16 elements, computed in float32 (as the CPU's).
struct ArithmeticOf {
  BinaryOp op;
  template <typename T>
  __device__ T operator()(T x, T y) const {
    return T(common::binary_apply(op, static_cast<float>(x), static_cast<float>(y)));
  }
};

// A comparison of integer elements, exact, as 0 or 1.
struct ComparisonOf {
  BinaryOp op;
  template <typename I>
  __device__ float operator()(I x, I y) const {
    return common::compare_apply(op, x, y);
  }
};

// Integer arithmetic, exact and wrapping (common::integer_apply), in the operands' dtype.
struct IntegerArithmeticOf {
  BinaryOp op;
  template <typename I>
  __device__ I operator()(I x, I y) const {
    return common::integer_apply(op, x, y);
  }
};

// y = x with its last two dimensions swapped, a 32 x 32 tile per block through shared memory
// (padded to 33 columns: no bank conflicts), so that both the global reads and writes are
// coalesced. Blocks cover the tiles of every matrix in x.y order; Bits is the element's bits.
template <typename Bits>
__global__ void transpose_kernel(const Bits* x, Bits* y, int64_t rows, int64_t cols, int64_t tiles_per_matrix,
                                 int64_t tile_cols, int64_t tiles) {
  __shared__ Bits tile[32][33];
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t b = t / tiles_per_matrix, in_b = t % tiles_per_matrix;
    const int64_t i0 = (in_b / tile_cols) * 32, j0 = (in_b % tile_cols) * 32;
    const Bits* xb = x + b * rows * cols;
    Bits* yb = y + b * rows * cols;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
      const int64_t i = i0 + k, j = j0 + threadIdx.x;
      if (i < rows && j < cols) tile[k][threadIdx.x] = xb[i * cols + j];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
      const int64_t j = j0 + k, i = i0 + threadIdx.x;  // y's row j, column i
      if (i < rows && j < cols) yb[j * rows + i] = tile[threadIdx.x][k];
    }
    __syncthreads();  // the tile is refilled for the next t
  }
}

// out[i] = x[offset(i)] by a one-operand plan (broadcast_to's repeat, a permutation): one output
// element per thread. R: the elements' bits (common::with_element_bits).
template <typename R>
__global__ void move_by_plan_kernel(common::BroadcastPlan<1> p, const R* x, R* out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    int64_t off[1];
    common::broadcast_offsets(p, i, off);
    out[i] = x[off[0]];
  }
}

// The dimensions a sum_to plan keeps, passed by value to its kernel.
struct KeptDims {
  int d[kMaxBroadcastRank];
  int n;
};

// out[j] = sum_to_element(j): one output element per thread, in the CPU backend's order, so
// both give the same bits. Where out keeps x's innermost dimension, neighbouring threads
// read neighbouring elements.
template <typename T>
__global__ void sum_to_kernel(common::BroadcastPlan<2> p, KeptDims kept, const T* x, T* out, int64_t n) {
  for (int64_t j = global_thread(); j < n; j += grid_threads()) {
    const double s = common::sum_to_element(p, kept.d, kept.n, j,
                                            [x](int64_t o) { return static_cast<double>(static_cast<float>(x[o])); });
    out[j] = from_double<T>(s);
  }
}

template <typename T>
__global__ void binary_scalar_kernel(BinaryOp op, const T* a, float s, T* out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = T(common::binary_scalar_apply(op, static_cast<float>(a[i]), s));
}

// T is float or BFloat16 (computed in fp32, rounded once on the store).
template <typename T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    y[i] = T(common::unary_apply(op, static_cast<float>(x[i])));
}

// x or y is null where the op's gradient does not read it (unary_backward_reads_input).
template <typename T>
__global__ void unary_backward_kernel(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  const bool reads_x = unary_backward_reads_input(op);
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float xi = reads_x ? static_cast<float>(x[i]) : 0.0f, yi = reads_x ? 0.0f : static_cast<float>(y[i]);
    dx[i] = T(common::unary_backward(op, xi, yi, static_cast<float>(dy[i])));
  }
}

// T is float or BFloat16 (exact: the output is an input value or zero, converted back losslessly).
template <typename T>
__global__ void relu_kernel(const T* x, T* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) y[i] = T(common::relu(static_cast<float>(x[i])));
}

// relu_kernel by 16-byte packs (kernels/common/pack.h), where the tensors allow it: the
// same math per element, with wide accesses and one index per pack.
template <typename T>
__global__ void relu_pack_kernel(const T* x, T* y, int64_t packs) {
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    common::Pack16<T> p = common::load_pack(x, i);
    for (int64_t l = 0; l < common::Pack16<T>::n; ++l) p.v[l] = T(common::relu(static_cast<float>(p.v[l])));
    common::store_pack(y, i, p);
  }
}

// out[i] = lut[i % c][u8[i]]: the table is copied from the host, so the values equal the
// CPU's bit for bit.
__global__ void lut_u8_kernel(const uint8_t* u8, const float* lut, int64_t c, float* out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = lut[(i % c) * 256 + u8[i]];
}

// One thread per output element (consecutive threads write consecutive floats); the bytes
// it reads come from common::crop_flip_source, the CPU backend's arithmetic.
// per = s * s * 3 < 2^31 (the op checks s), so only the image number needs 64 bits.
__global__ void crop_flip_lut_u8_kernel(const uint8_t* atlas, const int64_t* desc, const float* lut, int s,
                                        float* out, int64_t n) {
  const int per = s * s * 3;
  for (int64_t e = global_thread(); e < n; e += grid_threads()) {
    const int64_t i = e / per;
    const int rem = static_cast<int>(e - i * per);
    const int c = rem % 3, pix = rem / 3;
    const int y = pix / s, x = pix - y * s;
    out[e] = lut[c * 256 + atlas[common::crop_flip_source(desc + i * 6, s, y, x) + c]];
  }
}

// T is float or BFloat16: a's or b's element as stored.
template <typename T>
__global__ void where_kernel(const T* cond, const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = common::where_chooses_a(static_cast<float>(cond[i])) ? a[i] : b[i];
}

// T is float or BFloat16 (exact: dy or zero, stored back losslessly).
template <typename T>
__global__ void relu_backward_kernel(const T* y, const T* dy, T* dx, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    dx[i] = T(common::relu_backward(static_cast<float>(y[i]), static_cast<float>(dy[i])));
}

// relu_backward_kernel by 16-byte packs, where the tensors allow it.
template <typename T>
__global__ void relu_backward_pack_kernel(const T* y, const T* dy, T* dx, int64_t packs) {
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const common::Pack16<T> a = common::load_pack(y, i);
    common::Pack16<T> g = common::load_pack(dy, i);
    for (int64_t l = 0; l < common::Pack16<T>::n; ++l)
      g.v[l] = T(common::relu_backward(static_cast<float>(a.v[l]), static_cast<float>(g.v[l])));
    common::store_pack(dx, i, g);
  }
}

// T is float or BFloat16: bf16 scales in fp32 with fp32's Philox mask and rounds once, as
// the CPU's dropout_loop.
template <typename T>
__global__ void dropout_kernel(const T* x, float keep, PhiloxState s, T* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    y[i] = T(common::dropout(static_cast<float>(x[i]), s, static_cast<uint64_t>(i), keep));
}

// The recorded form of dropout_kernel: the Philox position is read from device memory
// written before each replay ({seed, offset} + delta), so a replayed graph draws the masks
// the eager step would have drawn at that position; the mask math is the same function.
template <typename T>
__global__ void dropout_graph_kernel(const T* x, float keep, const uint64_t* base, uint64_t delta, T* y, int64_t n) {
  const PhiloxState s{base[0], base[1] + delta};
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    y[i] = T(common::dropout(static_cast<float>(x[i]), s, static_cast<uint64_t>(i), keep));
}

__global__ void set_philox_kernel(uint64_t* dst, uint64_t seed, uint64_t offset) {
  dst[0] = seed;
  dst[1] = offset;
}

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = common::convert<S, D>(src[i]);
}

// T is float or BFloat16; a bf16 sum is formed in fp32 and rounded once. Relu: max(y + b, 0)
// before that rounding, bit for bit relu(round(y + b)) (rounding keeps the sign; NaN -> 0 both ways).
template <typename T, bool Relu>
__global__ void add_bias_kernel(T* y, const T* b, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const int64_t step = grid_threads();
  const int64_t step_cols = step % cols;
  // The column advances by step % cols per iteration: one 64-bit modulo per thread, not per element.
  int64_t i = global_thread();
  int64_t c = i % cols;
  for (; i < n; i += step) {
    const float v = static_cast<float>(y[i]) + static_cast<float>(b[c]);
    y[i] = T(Relu ? common::relu(v) : v);
    c += step_cols;
    if (c >= cols) c -= cols;
  }
}

// Column sums in two passes, in kernels/common/broadcast.h's column order (the CPU's
// sum_to keeps it too): pass 1 sums each chunk of rows per column in double (a 32-column
// tile per block, kColumnRowLanes row lanes, lanes combined in lane order); pass 2 adds the
// chunk partials per column in chunk order. T is float or BFloat16: each element is read
// exactly into double, the total rounded to float and then (bf16) once more.
using common::kColumnRowLanes;
constexpr int kColumnTile = 32;

template <typename T>
__global__ void column_partial_kernel(const T* x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                      double* partial) {
  __shared__ double lanes[kColumnRowLanes][kColumnTile];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  double acc = 0.0;
  if (c < cols)
    for (int64_t r = begin + threadIdx.y; r < end; r += kColumnRowLanes)
      acc += static_cast<double>(static_cast<float>(x[r * cols + c]));
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double s = lanes[0][threadIdx.x];
    for (int l = 1; l < kColumnRowLanes; ++l) s += lanes[l][threadIdx.x];
    partial[chunk * cols + c] = s;
  }
}

template <typename T>
__global__ void column_finish_kernel(const double* partial, int64_t chunks, int64_t cols, T* out) {
  for (int64_t c = global_thread(); c < cols; c += grid_threads()) {
    double s = 0.0;
#pragma unroll 8
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    out[c] = T(static_cast<float>(s));
  }
}

// The device whose compute stream `stream` is: the shared launchers get no tensor, and
// their workspaces must be ordered on the stream they run on.
int device_of_stream(cudaStream_t stream) {
  int index = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&index));
  KILN_CHECK(stream == context(index).compute, current_op(),
             ": launcher called with a stream other than the compute stream of cuda:", index);
  return index;
}

}  // namespace

// ---------------------------------------------------------------- fills

void CudaBackend::fill(Tensor& t, double value) {
  OpScope scope("fill", t.device().index);
  const int64_t n = t.numel();
  if (n > 0) {
    for_each_dtype(t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T v = from_double<T>(value);
      // All-zero bits (0, 0.0f, but not -0.0f): a memset is the fastest fill.
      const unsigned char* bytes = reinterpret_cast<const unsigned char*>(&v);
      bool zero = true;
      for (size_t k = 0; k < sizeof(T); ++k) zero = zero && bytes[k] == 0;
      if (zero || sizeof(T) == 1) {
        KILN_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), bytes[0], t.nbytes(), scope.stream()));
      } else {
        fill_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
            static_cast<T*>(t.raw_data()), v, n);
        KILN_CUDA_CHECK_LAUNCH();
      }
    });
  }
  scope.done();
}

void CudaBackend::arange(Tensor& t, double start, double step) {
  OpScope scope("arange", t.device().index);
  const int64_t n = t.numel();
  if (n > 0) {
    for_each_dtype(t.dtype(), [&](auto tag) {
      using T = decltype(tag);
      arange_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
          static_cast<T*>(t.raw_data()), start, step, n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::broadcast_scalar(const Tensor& scalar, float scale, Tensor& t) {
  OpScope scope("broadcast_scalar", t.device().index);
  const int64_t n = t.numel();
  if (n > 0) {
    // scalar[0] is read on the device: the host never waits for the value.
    broadcast_scalar_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
        scalar.data<float>(), scale, t.data<float>(), n);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

void CudaBackend::fill_uniform(Tensor& t, PhiloxState s, float lo, float hi) {
  OpScope scope("fill_uniform", t.device().index);
  KILN_CHECK(!capturing(), current_op(), ": drawn while recording a CUDA graph: every replay would repeat the same "
             "numbers (only dropout reads its Philox position per replay)");
  const int64_t n = t.numel();
  if (n > 0) {
    uniform_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(t.data<float>(), s, lo,
                                                                                     hi - lo, n);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

void CudaBackend::fill_normal(Tensor& t, PhiloxState s, float mean, float std) {
  OpScope scope("fill_normal", t.device().index);
  KILN_CHECK(!capturing(), current_op(), ": drawn while recording a CUDA graph: every replay would repeat the same "
             "numbers (only dropout reads its Philox position per replay)");
  const int64_t n = t.numel();
  if (n > 0) {
    normal_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(t.data<float>(), s, mean, std,
                                                                                    n);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

// ---------------------------------------------------------------- per-element math

namespace {

// out = fn(a, b) by the plan of their shapes, In the operands' element type and Out out's.
template <typename In, typename Out, typename Fn>
void broadcast_binary(const Tensor& a, const Tensor& b, Tensor& out, Fn fn, cudaStream_t stream) {
  const common::BroadcastPlan<2> p = common::broadcast_plan<2>(out, {&a, &b});
  const int64_t n = out.numel();
  broadcast_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(p, a.data<In>(), b.data<In>(),
                                                                            out.data<Out>(), n, fn);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

// float32 or bfloat16 (core checked that a, b and out share the dtype), or a comparison of int32
// or int64 operands into float32 (compared as integers, by the plan).
void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  OpScope scope("binary", out.device().index);
  const int64_t n = out.numel();
  if (n > 0 && !is_floating(a.dtype())) {
    const auto launch = [&](auto tag) {
      using I = decltype(tag);
      if (is_comparison(op)) broadcast_binary<I, float>(a, b, out, ComparisonOf{op}, scope.stream());
      else broadcast_binary<I, I>(a, b, out, IntegerArithmeticOf{op}, scope.stream());
    };
    if (a.dtype() == DType::i64) launch(int64_t{});
    else launch(int32_t{});
  } else if (n > 0 && (a.shape() != out.shape() || b.shape() != out.shape())) {
    for_float_or_bf16(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      broadcast_binary<T, T>(a, b, out, ArithmeticOf{op}, scope.stream());
    });
  } else if (n > 0) {
    for_float_or_bf16(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(op, a.data<T>(), b.data<T>(),
                                                                                       out.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::sum_to(const Tensor& x, Tensor& out) {
  OpScope scope("sum_to", out.device().index);
  const int64_t n = out.numel();
  if (x.numel() == 0) {
    fill(out, 0.0);
  } else if (n > 0) {
    const common::BroadcastPlan<2> p = common::broadcast_plan<2>(x, {&x, &out});
    int64_t rows = 0, cols = 0;
    const bool columns = common::column_sum_shape(p, rows, cols);  // many threads per column
    KeptDims kept{};
    kept.n = common::kept_dims(p, kept.d);
    for_float_or_bf16(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (columns) {
        launch_column_sum(x.data<T>(), rows, cols, out.data<T>(), scope.stream());
        return;
      }
      sum_to_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(p, kept, x.data<T>(),
                                                                                       out.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

namespace {

// Launches move_by_plan_kernel on the scope's stream.
void move_by_plan(const common::BroadcastPlan<1>& p, const Tensor& x, Tensor& out, OpScope& scope) {
  const int64_t n = out.numel();
  if (n == 0) return;
  common::with_element_bits(dtype_size(x.dtype()), [&](auto tag) {
    using R = decltype(tag);
    move_by_plan_kernel<R><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
        p, static_cast<const R*>(x.raw_data()), static_cast<R*>(out.raw_data()), n);
    KILN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void CudaBackend::broadcast_to(const Tensor& x, Tensor& out) {
  OpScope scope("broadcast_to", out.device().index);
  if (out.numel() > 0) move_by_plan(common::broadcast_plan<1>(out, {&x}), x, out, scope);
  scope.done();
}

void CudaBackend::permute(const Tensor& x, const std::vector<int64_t>& dims, Tensor& y) {
  OpScope scope("permute", y.device().index);
  if (y.numel() > 0) move_by_plan(common::permute_plan(x.shape().dims(), dims), x, y, scope);
  scope.done();
}

void CudaBackend::reduce_extreme(BinaryOp op, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) {
  OpScope scope("reduce_extreme", out.device().index);
  const int64_t outs = rows * inner;
  if (outs > 0) {
    const auto launch = [&](auto tag) {
      using T = decltype(tag);
      if (inner == 1 && n >= 1024) {  // long rows: a block each
        const auto blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{1} << 20));
        extreme_rows_kernel<T><<<blocks, kThreads, 0, scope.stream()>>>(op, x.data<T>(), rows, n, out.data<T>());
      } else {
        extreme_kernel<T><<<elementwise_blocks(outs, kThreads), kThreads, 0, scope.stream()>>>(
            op, x.data<T>(), n, inner, out.data<T>(), outs);
      }
      KILN_CUDA_CHECK_LAUNCH();
    };
    if (x.dtype() == DType::i32) launch(int32_t{});
    else if (x.dtype() == DType::i64) launch(int64_t{});
    else for_float_or_bf16(x.dtype(), launch);
  }
  scope.done();
}

int64_t CudaBackend::gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) {
  OpScope scope("gather_rows", out.device().index);
  const Shape& t = table.shape();  // [blocks, v, d]
  const int64_t n = out.dim(1), total = out.numel();
  if (total == 0) return -1;  // core checks the indices of an empty result
  const BadIndexFlag bad(out.device().index, scope.stream());
  common::with_element_bits(dtype_size(table.dtype()), [&](auto tag) {
    using R = decltype(tag);
    for_index_type(idx.dtype(), [&](auto index_tag) {
      using I = decltype(index_tag);
      const auto* pt = static_cast<const R*>(table.raw_data());
      auto* po = static_cast<R*>(out.raw_data());
      const unsigned blocks = elementwise_blocks(total, kThreads);
      const I* pi = idx.data<I>();
      if (idx.rank() == 1)
        gather_rows_kernel<false><<<blocks, kThreads, 0, scope.stream()>>>(pt, pi, total, n, t[1], t[2], po,
                                                                           bad.data());
      else
        gather_rows_kernel<true><<<blocks, kThreads, 0, scope.stream()>>>(pt, pi, total, n, t[1], t[2], po,
                                                                          bad.data());
    });
    KILN_CUDA_CHECK_LAUNCH();
  });
  const int64_t first = bad.first();
  scope.done();
  return first;
}

int64_t CudaBackend::scatter_add_rows(const Tensor& g, const Tensor& idx, Tensor& grad) {
  OpScope scope("scatter_add_rows", grad.device().index);
  const Shape& t = grad.shape();  // [blocks, v, d]
  const int64_t n = g.dim(1);
  if (n * t[0] * t[2] == 0) return -1;  // core checks the indices of an empty g
  const BadIndexFlag bad(grad.device().index, scope.stream());
  for_index_type(idx.dtype(), [&](auto index_tag) {
    using I = decltype(index_tag);
    const unsigned blocks = elementwise_blocks(t[0] * t[2], kThreads);
    if (idx.rank() == 1)
      scatter_add_rows_kernel<false><<<blocks, kThreads, 0, scope.stream()>>>(g.data<float>(), idx.data<I>(), t[0],
                                                                              n, t[1], t[2], grad.data<float>(),
                                                                              bad.data());
    else
      scatter_add_rows_kernel<true><<<blocks, kThreads, 0, scope.stream()>>>(g.data<float>(), idx.data<I>(), t[0],
                                                                             n, t[1], t[2], grad.data<float>(),
                                                                             bad.data());
  });
  KILN_CUDA_CHECK_LAUNCH();
  const int64_t first = bad.first();
  scope.done();
  return first;
}

void CudaBackend::transpose(const Tensor& x, Tensor& y) {
  OpScope scope("transpose", y.device().index);
  if (x.numel() > 0) {
    const int64_t rows = x.dim(-2), cols = x.dim(-1), batch = x.numel() / (rows * cols);
    const int64_t tile_cols = (cols + 31) / 32, per_matrix = ((rows + 31) / 32) * tile_cols;
    const int64_t tiles = batch * per_matrix;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, int64_t{1} << 20));
    const dim3 threads(32, 8);
    if (x.dtype() == DType::bf16) {
      transpose_kernel<uint16_t><<<blocks, threads, 0, scope.stream()>>>(
          static_cast<const uint16_t*>(x.raw_data()), static_cast<uint16_t*>(y.raw_data()), rows, cols, per_matrix,
          tile_cols, tiles);
    } else {
      transpose_kernel<uint32_t><<<blocks, threads, 0, scope.stream()>>>(
          static_cast<const uint32_t*>(x.raw_data()), static_cast<uint32_t*>(y.raw_data()), rows, cols, per_matrix,
          tile_cols, tiles);
    }
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

void CudaBackend::binary_scalar(BinaryOp op, const Tensor& a, float s, Tensor& out) {
  OpScope scope("binary_scalar", out.device().index);
  const int64_t n = out.numel();
  if (n > 0) {
    for_float_or_bf16(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_scalar_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(op, a.data<T>(), s,
                                                                                              out.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& y) {
  OpScope scope("unary", y.device().index);
  const int64_t n = y.numel();
  if (n > 0) {
    for_float_or_bf16(y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      unary_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(op, x.data<T>(),
                                                                                      y.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  OpScope scope("unary backward", dx.device().index);
  const int64_t n = dx.numel();
  if (n > 0) {
    for_float_or_bf16(dx.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T* px = x.defined() ? x.data<T>() : nullptr;
      const T* py = y.defined() ? y.data<T>() : nullptr;
      unary_backward_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
          op, px, py, dy.data<T>(), dx.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

// relu and its backward move 16-byte packs when every tensor holds whole aligned packs (an
// activation's NHWC channels do); on the H200 (2026-12-04) the element-per-thread kernels
// took 2.3 ms of the bf16 VGG16 step at batch 64.
void CudaBackend::relu(const Tensor& x, Tensor& y) {
  OpScope scope("relu", y.device().index);
  const int64_t n = y.numel();
  if (n > 0) {
    for_float_or_bf16(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (common::whole_packs<T>(n, x.raw_data()) && common::whole_packs<T>(n, y.raw_data())) {
        const int64_t packs = n / common::Pack16<T>::n;
        relu_pack_kernel<T><<<elementwise_blocks(packs, kThreads), kThreads, 0, scope.stream()>>>(
            x.data<T>(), y.data<T>(), packs);
      } else {
        relu_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(x.data<T>(), y.data<T>(), n);
      }
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  OpScope scope("where", out.device().index);
  const int64_t n = out.numel();
  if (n > 0) {
    for_float_or_bf16(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      where_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
          cond.data<T>(), a.data<T>(), b.data<T>(), out.data<T>(), n);
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void CudaBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  OpScope scope("relu backward", dx.device().index);
  const int64_t n = dx.numel();
  if (n > 0) {
    for_float_or_bf16(dy.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (common::whole_packs<T>(n, y.raw_data()) && common::whole_packs<T>(n, dy.raw_data()) &&
          common::whole_packs<T>(n, dx.raw_data())) {
        const int64_t packs = n / common::Pack16<T>::n;
        relu_backward_pack_kernel<T><<<elementwise_blocks(packs, kThreads), kThreads, 0, scope.stream()>>>(
            y.data<T>(), dy.data<T>(), dx.data<T>(), packs);
      } else {
        relu_backward_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
            y.data<T>(), dy.data<T>(), dx.data<T>(), n);
      }
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

// Training-form dropout (eval dropout returns x before any backend), float32 or bfloat16;
// the backward is this op on dy with the same state.
void CudaBackend::dropout(const Tensor& x, float keep, PhiloxState s, Tensor& y) {
  OpScope scope(x.dtype() == DType::bf16 ? "dropout (bfloat16)" : "dropout", y.device().index);
  KILN_CHECK(y.dtype() == x.dtype(), current_op(), ": x is ", x.description(), " but y is ", y.description());
  const int64_t n = y.numel();
  if (n > 0) {
    for_float_or_bf16(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (capturing()) {
        const CapturedRng r = captured_rng(s);
        dropout_graph_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
            x.data<T>(), keep, r.base, r.delta, y.data<T>(), n);
      } else {
        dropout_kernel<T><<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(x.data<T>(), keep, s,
                                                                                            y.data<T>(), n);
      }
      KILN_CUDA_CHECK_LAUNCH();
    });
  }
  scope.done();
}

void launch_set_philox(uint64_t* dst, PhiloxState s, cudaStream_t stream) {
  set_philox_kernel<<<1, 1, 0, stream>>>(dst, s.seed, s.offset);
  KILN_CUDA_CHECK_LAUNCH();
}

void preload_graph_kernels() {
  cudaFuncAttributes a{};
  KILN_CUDA_CHECK(cudaFuncGetAttributes(&a, dropout_graph_kernel<float>));
  KILN_CUDA_CHECK(cudaFuncGetAttributes(&a, dropout_graph_kernel<BFloat16>));
  KILN_CUDA_CHECK(cudaFuncGetAttributes(&a, set_philox_kernel));
}

// ---------------------------------------------------------------- shared launchers

void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    if (src != dst)
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype),
                                      cudaMemcpyDeviceToDevice, stream));
    return;
  }
  for_each_dtype(src_dtype, [&](auto s_tag) {
    using S = decltype(s_tag);
    for_each_dtype(dst_dtype, [&](auto d_tag) {
      using D = decltype(d_tag);
      if constexpr (!std::is_same_v<S, D>) {
        convert_kernel<S, D><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(static_cast<const S*>(src),
                                                                                       static_cast<D*>(dst), n);
        KILN_CUDA_CHECK_LAUNCH();
      }
    });
  });
}

namespace {
template <typename T>
void add_bias(T* y, const T* b, int64_t rows, int64_t cols, cudaStream_t stream, bool relu) {
  const int64_t n = rows * cols;
  if (n <= 0) return;
  if (relu)
    add_bias_kernel<T, true><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(y, b, rows, cols);
  else
    add_bias_kernel<T, false><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(y, b, rows, cols);
  KILN_CUDA_CHECK_LAUNCH();
}
}  // namespace

void launch_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream, bool relu) {
  add_bias(y, b, rows, cols, stream, relu);
}

void launch_add_bias(BFloat16* y, const BFloat16* b, int64_t rows, int64_t cols, cudaStream_t stream, bool relu) {
  add_bias(y, b, rows, cols, stream, relu);
}

namespace {

// One thread per element of dst: a copy of src's column, or zero past its last.
__global__ void pad_columns_kernel(const BFloat16* src, int64_t from, int64_t to, int64_t total, BFloat16* dst) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t r = i / to, c = i % to;
    dst[i] = c < from ? src[r * from + c] : BFloat16(0.0f);
  }
}

}  // namespace

void launch_pad_columns(const BFloat16* src, int64_t rows, int64_t from, int64_t to, BFloat16* dst,
                        cudaStream_t stream) {
  const int64_t total = rows * to;
  if (total <= 0) return;
  pad_columns_kernel<<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(src, from, to, total, dst);
  KILN_CUDA_CHECK_LAUNCH();
}

namespace {

template <typename T>
void column_sum(const T* x, int64_t rows, int64_t cols, T* out, cudaStream_t stream) {
  if (cols <= 0) return;
  if (rows <= 0) {  // all-zero bits are +0 in float and in bfloat16
    KILN_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(cols) * sizeof(T), stream));
    return;
  }
  const int index = device_of_stream(stream);
  const int64_t chunks = common::column_chunks(rows, cols);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  Workspace partial(index, static_cast<size_t>(chunks * cols) * sizeof(double));
  double* pp = static_cast<double*>(partial.data());
  const dim3 grid(static_cast<unsigned>((cols + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(chunks));
  const dim3 block(kColumnTile, kColumnRowLanes);
  column_partial_kernel<T><<<grid, block, 0, stream>>>(x, rows, cols, rows_per_chunk, pp);
  KILN_CUDA_CHECK_LAUNCH();
  column_finish_kernel<T><<<elementwise_blocks(cols, kThreads), kThreads, 0, stream>>>(pp, chunks, cols, out);
  KILN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_column_sum(const float* x, int64_t rows, int64_t cols, float* out, cudaStream_t stream) {
  column_sum(x, rows, cols, out, stream);
}

void launch_column_sum(const BFloat16* x, int64_t rows, int64_t cols, BFloat16* out, cudaStream_t stream) {
  column_sum(x, rows, cols, out, stream);
}

void CudaBackend::lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) {
  OpScope scope("lut_u8", out.device().index);
  const int64_t n = out.numel();
  if (n > 0) {
    lut_u8_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
        u8.data<uint8_t>(), lut.data<float>(), lut.dim(0), out.data<float>(), n);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

void CudaBackend::crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) {
  OpScope scope("crop_flip_lut_u8", out.device().index);
  const int64_t n = out.numel();
  if (n > 0) {
    crop_flip_lut_u8_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, scope.stream()>>>(
        atlas.data<uint8_t>(), desc.data<int64_t>(), lut.data<float>(), static_cast<int>(out.dim(1)),
        out.data<float>(), n);
    KILN_CUDA_CHECK_LAUNCH();
  }
  scope.done();
}

}  // namespace kiln::cuda
