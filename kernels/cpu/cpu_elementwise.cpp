// CPU launchers for the elementwise, softmax, reduction and optimizer math in kernels/common.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include "kernels/common/adam.h"
#include "kernels/common/elementwise.h"
#include "kernels/common/normal.h"
#include "kernels/common/sgd.h"
#include "kernels/common/softmax.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_elements.h"

namespace kiln::cpu {
namespace {

// Reductions sum fixed-size blocks in double, then the blocks in order: the result does
// not depend on the thread count, so runs are bit-reproducible on any machine.
constexpr int64_t kReduceBlock = 8192;
// Within a block, element i goes to running sum i % kReduceLanes and the lanes are added
// pairwise at the end: a fixed order still, but independent adds that vectorise. One chain
// of double adds ran at ~5 GB/s on 2 threads (an add's latency per element).
constexpr int kReduceLanes = 16;

// The laned sum of p[0, n) (of squares when Squares), n <= kReduceBlock. Inlined into each
// clone below: called, it is one baseline copy.
template <bool Squares>
[[gnu::always_inline]] inline double laned_sum(const float* p, int64_t n) {
  double lane[kReduceLanes] = {};
  int64_t i = 0;
  for (; i + kReduceLanes <= n; i += kReduceLanes)
    for (int j = 0; j < kReduceLanes; ++j) {
      const double v = p[i + j];
      lane[j] += Squares ? v * v : v;
    }
  for (int j = 0; i < n; ++i, ++j) {
    const double v = p[i];
    lane[j] += Squares ? v * v : v;
  }
  for (int w = kReduceLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0];
}

// Cloned per ISA (cpu_elements.h): the same adds in the same order on each.
KILN_CPU_CLONES double block_sum(const float* p, int64_t n) { return laned_sum<false>(p, n); }
KILN_CPU_CLONES double block_sum_squares(const float* p, int64_t n) { return laned_sum<true>(p, n); }

// block(p + begin, length) summed over the blocks of p[0, n), in block order.
template <typename Block>
double blocked_sum(const float* p, int64_t n, Block block) {
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kReduceBlock;
    partial[static_cast<size_t>(b)] = block(p + begin, std::min(n - begin, kReduceBlock));
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

int64_t label_at(const Tensor& labels, int64_t r) {
  return labels.dtype() == DType::i64 ? labels.data<int64_t>()[r] : labels.data<int32_t>()[r];
}

void check_labels(const char* op, const Tensor& labels, int64_t classes) {
  for (int64_t r = 0; r < labels.numel(); ++r) {
    const int64_t l = label_at(labels, r);
    KILN_CHECK(l >= 0 && l < classes, op, ": label ", l, " at row ", r, " is out of range [0, ", classes, ")");
  }
}

}  // namespace

namespace {

// The op as a template argument (with_binary_op). T is float or BFloat16: bf16 operands
// compute in fp32 and round once on the store.
// `if (parallel : ...)`, not a bare `if`: that would apply to `simd` too and leave loops of
// 64K elements or fewer scalar (6-7x slower; tests/check_omp_pragmas.py).
template <BinaryOp Op, typename T>
KILN_CPU_CLONES
void binary_loop(const T* a, const T* b, T* o, int64_t n) {
  const auto* pa = raw(a);
  const auto* pb = raw(b);
  auto* po = raw(o);
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i)
    po[i] = from_f32<raw_t<T>>(common::binary_apply(Op, to_f32(pa[i]), to_f32(pb[i])));
}

template <BinaryOp Op, typename T>
KILN_CPU_CLONES
void binary_scalar_loop(const T* a, float s, T* o, int64_t n) {
  const auto* pa = raw(a);
  auto* po = raw(o);
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) po[i] = from_f32<raw_t<T>>(common::binary_scalar_apply(Op, to_f32(pa[i]), s));
}

// a ** E with E = kPowExactForms[I] fixed at compile time: pow_number's branches fold away into
// E's one form (x * x, sqrtf, ...) and the loop vectorises; binary_scalar_loop's, with E a runtime
// value, is scalar. The index, not the float, is the template argument: clang before 18 (the fuzz
// build's) takes no float template parameter.
template <size_t I, typename T>
KILN_CPU_CLONES
void pow_exponent_loop(const T* a, T* o, int64_t n) {
  constexpr float e = kPowExactForms[I];
  const auto* pa = raw(a);
  auto* po = raw(o);
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) po[i] = from_f32<raw_t<T>>(common::pow_number(to_f32(pa[i]), e));
}

// a ** s through pow_exponent_loop where s is one of pow_number's exact forms; false otherwise.
template <typename T, size_t... I>
bool pow_by_exact_form(const T* a, float s, T* o, int64_t n, std::index_sequence<I...>) {
  return ((s == kPowExactForms[I] && (pow_exponent_loop<I>(a, o, n), true)) || ...);
}

// A raw element's bits as an unsigned integer of its size (pow_vector_loop's selects by mask).
inline uint32_t raw_bits(float v) { return common::bits_of(v); }
inline uint16_t raw_bits(uint16_t v) { return v; }

// Which operands a pow loop raises: a ** s (s a number), a ** b (b a tensor), s ** a (rpow).
enum class PowOperands { tensor_number, tensor_tensor, number_tensor };

// Element i's base and exponent under K (inlined: plain loads, no closure to reload per element).
// A tensor exponent steps by SB: 0 where a broadcast repeats one element along the row.
template <PowOperands K, typename R>
[[gnu::always_inline]] inline float pow_base(const R* a, float s, int64_t i) {
  if constexpr (K == PowOperands::number_tensor) return s;
  else return to_f32(a[i]);
}
template <PowOperands K, int SB, typename R>
[[gnu::always_inline]] inline float pow_power(const R* a, const R* b, float s, int64_t i) {
  if constexpr (K == PowOperands::tensor_number) return s;
  else if constexpr (K == PowOperands::tensor_tensor) return to_f32(b[i * SB]);
  else return to_f32(a[i]);
}

// x ** p over elements [b0, b1) (at most kPowBlock): pow_positive's vector loop, then the C
// library's answer (pow_number, powf) for the elements it does not take (x not in (0, inf), p not
// finite: their signs and ends are powf's), so a tensor without them never leaves the vector loop.
// The vector loop stores those elements' own operand where o may be that operand (in place,
// keep_power: the exponent), so the fix-up reads it. Inlined into each ISA's copy of its callers.
template <PowOperands K, int SB, typename R>
[[gnu::always_inline]] inline void pow_block(const R* pa, const R* pb, float s, R* po, int64_t b0, int64_t b1,
                                             uint32_t keep_power) {
  uint32_t odd[kPowBlock];  // uint32_t, not uint8_t: bytes made GCC take 64 lanes a step and spill (16 -> 9.4 ms)
  uint32_t others = 0;
#pragma omp simd reduction(| : others)
  for (int64_t i = b0; i < b1; ++i) {
    const float x = pow_base<K>(pa, s, i), p = pow_power<K, SB>(pa, pb, s, i);
    const uint32_t base_odd = common::bits_of(x) - 1u >= 0x7f7fffffu;               // x not in (0, inf)
    const uint32_t power_odd = (common::bits_of(p) & 0x7f800000u) == 0x7f800000u;  // p infinite or NaN
    const uint32_t mask = 0u - (base_odd | power_odd);
    odd[i - b0] = mask;
    others |= mask;
    using U = decltype(raw_bits(po[i]));  // uint32_t for float, uint16_t for bf16
    const U fast = raw_bits(from_f32<R>(common::pow_positive(x, p))), keep = static_cast<U>(mask);
    const float kept_f = common::float_of((common::bits_of(p) & keep_power) | (common::bits_of(x) & ~keep_power));
    const U kept = raw_bits(from_f32<R>(kept_f));  // the operand o may be: exact
    po[i] = common::bits_as<R>(static_cast<U>((fast & static_cast<U>(~keep)) | (kept & keep)));
  }
  for (int64_t i = b0; i < b1 && others != 0; ++i) {
    if (odd[i - b0] == 0) continue;
    const float x = pow_base<K>(pa, s, i), p = pow_power<K, SB>(pa, pb, s, i);
    po[i] = from_f32<R>(K == PowOperands::tensor_number ? common::pow_number(x, p) : powf(x, p));
  }
}

// What pow_block stores for a skipped element: the exponent where o may be the exponent operand
// (rpow's tensor, or b in place), else the base (a fresh o would be one more stream to read).
template <PowOperands K, typename R>
uint32_t pow_keep_power(const R* b, const R* o) {
  return 0u - static_cast<uint32_t>(K == PowOperands::number_tensor || (K == PowOperands::tensor_tensor && b == o));
}

// x ** p for a whole same-shape tensor: pow_block over blocks, in parallel.
template <PowOperands K, typename T>
KILN_CPU_CLONES
void pow_vector_loop(const T* a, const T* b, float s, T* o, int64_t n) {
  const auto* pa = raw(a);
  const auto* pb = raw(b);
  auto* po = raw(o);
  const uint32_t keep_power = pow_keep_power<K>(pb, po);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b0 = 0; b0 < n; b0 += kPowBlock)
    pow_block<K, 1>(pa, pb, s, po, b0, std::min(n, b0 + kPowBlock), keep_power);
}

}  // namespace

// a ** b over contiguous arrays that o does not overlap (a broadcast's gathered operands,
// cpu_broadcast.cpp): pow_block over blocks, on this thread.
template <typename R>
KILN_CPU_CLONES void pow_contiguous(const R* a, const R* b, R* o, int64_t n) {
  for (int64_t b0 = 0; b0 < n; b0 += kPowBlock)
    pow_block<PowOperands::tensor_tensor, 1>(a, b, 0.0f, o, b0, std::min(n, b0 + kPowBlock), 0u);
}
template void pow_contiguous<float>(const float*, const float*, float*, int64_t);
template void pow_contiguous<uint16_t>(const uint16_t*, const uint16_t*, uint16_t*, int64_t);

namespace {

template <typename T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  const int64_t n = out.numel();
  if (op == BinaryOp::pow) return pow_vector_loop<PowOperands::tensor_tensor>(pa, pb, 0.0f, po, n);
  with_binary_op(op, [&](auto o) { binary_loop<decltype(o)::value>(pa, pb, po, n); });
}

template <typename T>
void binary_scalar_typed(BinaryOp op, const Tensor& a, float s, Tensor& out) {
  const T* pa = a.data<T>();
  T* po = out.data<T>();
  const int64_t n = out.numel();
  constexpr auto forms = std::make_index_sequence<std::size(kPowExactForms)>{};
  if (op == BinaryOp::pow && pow_by_exact_form(pa, s, po, n, forms)) return;
  if (op == BinaryOp::pow && std::isfinite(s)) return pow_vector_loop<PowOperands::tensor_number>(pa, pa, s, po, n);
  if (op == BinaryOp::rpow && s > 0.0f && s < INFINITY)
    return pow_vector_loop<PowOperands::number_tensor>(pa, pa, s, po, n);
  with_binary_op(op, [&](auto o) { binary_scalar_loop<decltype(o)::value>(pa, s, po, n); });
}

}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (!is_floating(a.dtype())) return integer_binary(op, a, b, out);
  if (a.shape() != out.shape() || b.shape() != out.shape()) return binary_broadcast(op, a, b, out);
  if (out.dtype() == DType::bf16) return binary_typed<BFloat16>(op, a, b, out);
  binary_typed<float>(op, a, b, out);
}

void CpuBackend::binary_scalar(BinaryOp op, const Tensor& a, float s, Tensor& out) {
  if (out.dtype() == DType::bf16) return binary_scalar_typed<BFloat16>(op, a, s, out);
  binary_scalar_typed<float>(op, a, s, out);
}

namespace {

// The unary ops cost tens of flops an element (kernels/common/exp.h's polynomials), more than
// a streaming op's one, so their loops are threaded from fewer elements.
template <UnaryOp Op, typename T>
KILN_CPU_CLONES
void unary_loop(const T* x, T* y, int64_t n) {
  const auto* px = raw(x);
  auto* py = raw(y);
#pragma omp parallel for simd schedule(static) if (parallel : n > 16384)
  for (int64_t i = 0; i < n; ++i) py[i] = from_f32<raw_t<T>>(common::unary_apply(Op, to_f32(px[i])));
}

// x or y may be null where the op's gradient does not read it (unary_backward_reads_input).
template <UnaryOp Op, typename T>
KILN_CPU_CLONES
void unary_backward_loop(const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  const auto* px = raw(x);
  const auto* py = raw(y);
  const auto* pdy = raw(dy);
  auto* pdx = raw(dx);
  constexpr bool reads_x = unary_backward_reads_input(Op);
#pragma omp parallel for simd schedule(static) if (parallel : n > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float xi = reads_x ? to_f32(px[i]) : 0.0f, yi = reads_x ? 0.0f : to_f32(py[i]);
    pdx[i] = from_f32<raw_t<T>>(common::unary_backward(Op, xi, yi, to_f32(pdy[i])));
  }
}

template <typename T>
void unary_typed(UnaryOp op, const Tensor& x, Tensor& y) {
  with_unary_op(op, [&](auto o) { unary_loop<decltype(o)::value>(x.data<T>(), y.data<T>(), y.numel()); });
}

template <typename T>
void unary_backward_typed(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  const T* px = x.defined() ? x.data<T>() : nullptr;
  const T* py = y.defined() ? y.data<T>() : nullptr;
  with_unary_op(op, [&](auto o) {
    unary_backward_loop<decltype(o)::value>(px, py, dy.data<T>(), dx.data<T>(), dx.numel());
  });
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& y) {
  if (y.dtype() == DType::bf16) return unary_typed<BFloat16>(op, x, y);
  unary_typed<float>(op, x, y);
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (dx.dtype() == DType::bf16) return unary_backward_typed<BFloat16>(op, x, y, dy, dx);
  unary_backward_typed<float>(op, x, y, dy, dx);
}

namespace {

template <typename T>
KILN_CPU_CLONES
void relu_loop(const Tensor& x, Tensor& y) {
  const auto* px = raw(x.data<T>());
  auto* py = raw(y.data<T>());
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) py[i] = from_f32<raw_t<T>>(common::relu(to_f32(px[i])));
}

template <typename T>
KILN_CPU_CLONES
void relu_backward_loop(const Tensor& y, const Tensor& dy, Tensor& dx) {
  const auto* py = raw(y.data<T>());
  const auto* pdy = raw(dy.data<T>());
  auto* pdx = raw(dx.data<T>());
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) pdx[i] = from_f32<raw_t<T>>(common::relu_backward(to_f32(py[i]), to_f32(pdy[i])));
}

// The stored bits of a or b, chosen per element by cond (in their dtype: a blend, vectorised).
template <typename T>
KILN_CPU_CLONES
void where_loop(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  const auto* pc = raw(cond.data<T>());
  const auto* pa = raw(a.data<T>());
  const auto* pb = raw(b.data<T>());
  auto* po = raw(out.data<T>());
  const int64_t n = out.numel();
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) po[i] = common::where_chooses_a(to_f32(pc[i])) ? pa[i] : pb[i];
}

template <typename T>
KILN_CPU_CLONES
void dropout_loop(const Tensor& x, float keep, PhiloxState s, Tensor& y) {
  const auto* px = raw(x.data<T>());
  auto* py = raw(y.data<T>());
  const int64_t n = x.numel(), blocks = (n + 3) / 4;
  // A Philox block gives the mask of four elements (one per element took four times the work).
  // Its own loop, not a helper's: in a helper the OpenMP region left this ISA-cloned function
  // and dropout/conv1_2 ran 113 ms instead of 40 (2026-12-05).
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t k = 0; k < blocks; ++k) {
    float u[4];
    philox_uniform4(s, static_cast<uint64_t>(k), u);
    const int64_t m = std::min<int64_t>(4, n - 4 * k);
    for (int64_t j = 0; j < m; ++j)
      py[4 * k + j] = from_f32<raw_t<T>>(common::dropout_given(to_f32(px[4 * k + j]), u[j], keep));
  }
}

// fill_uniform and fill_normal, 64 Philox blocks (256 numbers) at a time: the blocks' words in
// one loop, the numbers from them in a second, both vectorised (the OpenMP region inside the
// ISA-cloned function, as dropout_loop's). Block by block, with libm's log, cos and sin per
// Box-Muller pair, fill_normal took 9.3 ns a number on one core; this, 1.6 (2026-12-06).
template <bool Normal>
KILN_CPU_CLONES
void fill_loop(float* p, int64_t n, PhiloxState s, float a, float b) {
  constexpr int64_t kBlocks = 64;
  const int64_t blocks = (n + 3) / 4, chunks = (blocks + kBlocks - 1) / kBlocks;
#pragma omp parallel for schedule(static) if (n > 16384)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kBlocks, m = std::min(kBlocks, blocks - first);
    uint32_t w[4][kBlocks];
    for (int64_t j = 0; j < m; ++j) {
      const Philox4 q = philox_block(s.seed, s.offset + static_cast<uint64_t>(first + j));
      for (int k = 0; k < 4; ++k) w[k][j] = q.v[k];
    }
    float v[4 * kBlocks];
    for (int64_t j = 0; j < m; ++j) {
      if constexpr (Normal) {
        common::box_muller(w[0][j], w[1][j], v[4 * j], v[4 * j + 1]);
        common::box_muller(w[2][j], w[3][j], v[4 * j + 2], v[4 * j + 3]);
      } else {
        for (int k = 0; k < 4; ++k) v[4 * j + k] = bits_to_unit_float(w[k][j]);
      }
    }
    const int64_t count = std::min(4 * kBlocks, n - 4 * first);
    float* out = p + 4 * first;
    for (int64_t i = 0; i < count; ++i) out[i] = a + b * v[i];
  }
}

// relu on bfloat16 bits, without leaving 16 bits: x > 0 exactly when the bits are 1..0x7f80
// (positive, not NaN), and then relu(x) is x; everything else (zeros, negatives, NaN) gives
// +0, as the fp32 relu does. Twice fp32's rate: half the bytes, no conversions.
KILN_CPU_CLONES
void relu_bf16_bits(const Tensor& x, Tensor& y) {
  const auto* px = raw(x.data<BFloat16>());
  auto* py = raw(y.data<BFloat16>());
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) py[i] = static_cast<uint16_t>(px[i] - 1u) < 0x7f80u ? px[i] : uint16_t{0};
}

}  // namespace

// bf16: relu and its backward are exact (a bf16 value or zero); dropout scales in fp32 and
// rounds once, with the fp32 op's Philox mask.
void CpuBackend::relu(const Tensor& x, Tensor& y) {
  if (x.dtype() == DType::bf16) return relu_bf16_bits(x, y);
  relu_loop<float>(x, y);
}

void CpuBackend::fill_uniform(Tensor& t, PhiloxState s, float lo, float hi) {
  fill_loop<false>(t.data<float>(), t.numel(), s, lo, hi - lo);
}

void CpuBackend::fill_normal(Tensor& t, PhiloxState s, float mean, float std) {
  fill_loop<true>(t.data<float>(), t.numel(), s, mean, std);
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  if (out.dtype() == DType::bf16) return where_loop<BFloat16>(cond, a, b, out);
  where_loop<float>(cond, a, b, out);
}

void CpuBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  if (dy.dtype() == DType::bf16) return relu_backward_loop<BFloat16>(y, dy, dx);
  relu_backward_loop<float>(y, dy, dx);
}

void CpuBackend::dropout(const Tensor& x, float keep, PhiloxState s, Tensor& y) {
  if (x.dtype() == DType::bf16) return dropout_loop<BFloat16>(x, keep, s, y);
  dropout_loop<float>(x, keep, s, y);
}

namespace {

// The row loops, one clone per ISA (kernels/cpu/cpu_elements.h): the row math
// (kernels/common/softmax.h) inlines into each, its exponentials vectorised.
KILN_CPU_CLONES
void softmax_rows(const float* x, int64_t rows, int64_t cols, bool log, float* y) {
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r) common::softmax_row(x + r * cols, cols, log, y + r * cols);
}

KILN_CPU_CLONES
void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, bool log, float* dx) {
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r) common::softmax_backward_row(y + r * cols, dy + r * cols, cols, log, dx + r * cols);
}

// Rows in parallel (each is a max, a sum of exps and a log), then their losses summed
// serially in row order: the loss stays bit-reproducible for any thread count.
// Small inputs (the fine-tuning recipe's 8 classes) stay serial: no buffer, no fork.
KILN_CPU_CLONES
double cross_entropy_total(const float* x, const Tensor& labels, int64_t rows, int64_t cols) {
  double total = 0;
  if (rows * cols <= 16384) {
    for (int64_t r = 0; r < rows; ++r) total += common::cross_entropy_row(x + r * cols, cols, label_at(labels, r));
    return total;
  }
  std::vector<double> per_row(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    per_row[static_cast<size_t>(r)] = common::cross_entropy_row(x + r * cols, cols, label_at(labels, r));
  for (const double l : per_row) total += l;
  return total;
}

KILN_CPU_CLONES
void cross_entropy_backward_rows(const float* x, const Tensor& labels, int64_t rows, int64_t cols, float scale,
                                 float* dx) {
#pragma omp parallel for schedule(static) if (rows > 64)
  for (int64_t r = 0; r < rows; ++r)
    common::cross_entropy_backward_row(x + r * cols, cols, label_at(labels, r), scale, dx + r * cols);
}

}  // namespace

namespace {

// Softmax along the middle dimension of [outer, n, inner]: blocks of kWidth columns, each taken
// through softmax_row's math (kernels/common/softmax.h: the maximum, exponentials after it,
// their sum in double, one division or log) with the columns as the vector lanes, and its n
// rows kept in cache between the passes. The permutations around the last-dimension kernel
// moved the tensor four more times (softmax over dim 1 of conv3_3's activation at batch 8: 8.6 ms, torch 8.3).
constexpr int64_t kInnerWidth = 64;

KILN_CPU_CLONES
void softmax_inner_blocks(const float* x, int64_t outer, int64_t n, int64_t inner, bool log, float* y) {
  const int64_t blocks = (inner + kInnerWidth - 1) / kInnerWidth;
#pragma omp parallel for schedule(static) if (outer * blocks > 1 && outer * n * inner > 65536)
  for (int64_t t = 0; t < outer * blocks; ++t) {
    const int64_t j0 = (t % blocks) * kInnerWidth, w = std::min(kInnerWidth, inner - j0);
    const float* xb = x + (t / blocks) * n * inner + j0;
    float* yb = y + (t / blocks) * n * inner + j0;
    float m[kInnerWidth];
    double s[kInnerWidth];
    for (int64_t j = 0; j < w; ++j) m[j] = xb[j], s[j] = 0.0;
    for (int64_t k = 1; k < n; ++k)  // a NaN first stays; a later one is not greater: softmax_row's rule
      for (int64_t j = 0; j < w; ++j) m[j] = xb[k * inner + j] > m[j] ? xb[k * inner + j] : m[j];
    for (int64_t k = 0; k < n; ++k) {  // the exponentials in a loop of their own (it vectorises), then summed
      const float* xr = xb + k * inner;
      float* yr = yb + k * inner;
      for (int64_t j = 0; j < w; ++j) yr[j] = common::exp_nonpositive(xr[j] - m[j]);
      for (int64_t j = 0; j < w; ++j) s[j] += static_cast<double>(yr[j]);
    }
    if (log) {
      for (int64_t j = 0; j < w; ++j) s[j] = std::log(s[j]);
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < w; ++j)
          yb[k * inner + j] = static_cast<float>(static_cast<double>(xb[k * inner + j] - m[j]) - s[j]);
    } else {
      float inv[kInnerWidth];
      for (int64_t j = 0; j < w; ++j) inv[j] = static_cast<float>(1.0 / s[j]);
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < w; ++j) yb[k * inner + j] *= inv[j];
    }
  }
}

// Its backward, softmax_backward_row's formulas a block of columns at a time: softmax
// dx = y (dy - sum(dy y)), log_softmax dx = dy - exp(y) sum(dy), the sums in double.
KILN_CPU_CLONES
void softmax_inner_backward_blocks(const float* y, const float* dy, int64_t outer, int64_t n, int64_t inner, bool log,
                                   float* dx) {
  const int64_t blocks = (inner + kInnerWidth - 1) / kInnerWidth;
#pragma omp parallel for schedule(static) if (outer * blocks > 1 && outer * n * inner > 65536)
  for (int64_t t = 0; t < outer * blocks; ++t) {
    const int64_t j0 = (t % blocks) * kInnerWidth, w = std::min(kInnerWidth, inner - j0);
    const int64_t base = (t / blocks) * n * inner + j0;
    const float *yb = y + base, *gb = dy + base;
    float* db = dx + base;
    double s[kInnerWidth];
    for (int64_t j = 0; j < w; ++j) s[j] = 0.0;
    for (int64_t k = 0; k < n; ++k) {  // a branch per loop, not per element: each loop vectorises
      const float *yr = yb + k * inner, *gr = gb + k * inner;
      if (log) {
        for (int64_t j = 0; j < w; ++j) s[j] += static_cast<double>(gr[j]);
      } else {
        for (int64_t j = 0; j < w; ++j) s[j] += static_cast<double>(gr[j]) * yr[j];
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      const float *yr = yb + k * inner, *gr = gb + k * inner;
      float* dr = db + k * inner;
      if (log) {
        for (int64_t j = 0; j < w; ++j)
          dr[j] = static_cast<float>(gr[j] - static_cast<double>(common::exp_nonpositive(yr[j])) * s[j]);
      } else {
        for (int64_t j = 0; j < w; ++j) dr[j] = static_cast<float>(yr[j] * (gr[j] - s[j]));
      }
    }
  }
}

}  // namespace

void CpuBackend::softmax_inner(const Tensor& x, int64_t n, int64_t inner, bool log, Tensor& y) {
  if (x.numel() == 0) return;
  softmax_inner_blocks(x.data<float>(), x.numel() / (n * inner), n, inner, log, y.data<float>());
}

void CpuBackend::softmax_inner_backward(const Tensor& y, const Tensor& dy, int64_t n, int64_t inner, bool log,
                                        Tensor& dx) {
  if (y.numel() == 0) return;
  softmax_inner_backward_blocks(y.data<float>(), dy.data<float>(), y.numel() / (n * inner), n, inner, log,
                                dx.data<float>());
}

void CpuBackend::softmax(const Tensor& x, bool log, Tensor& y) {
  const int64_t cols = x.dim(-1), rows = x.numel() / cols;
  softmax_rows(x.data<float>(), rows, cols, log, y.data<float>());
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  const int64_t cols = y.dim(-1), rows = y.numel() / cols;
  softmax_backward_rows(y.data<float>(), dy.data<float>(), rows, cols, log, dx.data<float>());
}

void CpuBackend::softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) {
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  check_labels("softmax_cross_entropy", labels, cols);
  const double total = cross_entropy_total(logits.data<float>(), labels, rows, cols);
  *loss.data<float>() = static_cast<float>(total / static_cast<double>(rows));
}

void CpuBackend::softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                                Tensor& dlogits) {
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  check_labels("softmax_cross_entropy backward", labels, cols);
  const float scale = *dloss.data<float>() / static_cast<float>(rows);
  cross_entropy_backward_rows(logits.data<float>(), labels, rows, cols, scale, dlogits.data<float>());
}

namespace {

// An integer sum, taken unsigned: wrapping addition is associative, so threads change no bit.
template <typename I>
int64_t integer_sum(const I* x, int64_t n) {
  uint64_t s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) s += static_cast<uint64_t>(static_cast<int64_t>(x[i]));
  return static_cast<int64_t>(s);
}

}  // namespace

void CpuBackend::sum(const Tensor& x, Tensor& out) {
  if (x.dtype() == DType::i64) *out.data<int64_t>() = integer_sum(x.data<int64_t>(), x.numel());
  else if (x.dtype() == DType::i32) *out.data<int64_t>() = integer_sum(x.data<int32_t>(), x.numel());
  else *out.data<float>() = static_cast<float>(blocked_sum(x.data<float>(), x.numel(), block_sum));
}

void CpuBackend::sum_squares(const Tensor& x, Tensor& out) {
  *out.data<float>() = static_cast<float>(blocked_sum(x.data<float>(), x.numel(), block_sum_squares));
}

namespace {

// What an extreme compares: float32 and bfloat16's bits as fp32 (NaN wins, binary_apply's), an
// int32 or int64 as itself (exact past 2^24, where fp32 is not). extreme_store puts the pick back.
inline float extreme_value(float v) { return v; }
inline float extreme_value(uint16_t b) { return to_f32(b); }
inline int32_t extreme_value(int32_t v) { return v; }
inline int64_t extreme_value(int64_t v) { return v; }
template <BinaryOp Op> float extreme_pick(float a, float b) { return common::binary_apply(Op, a, b); }
template <BinaryOp Op, typename I> requires std::is_signed_v<I> && std::is_integral_v<I>
I extreme_pick(I a, I b) { return common::integer_apply(Op, a, b); }
template <typename R, typename V> R extreme_store(V v) {
  if constexpr (std::is_same_v<R, V>) return v;
  else return from_f32<R>(v);  // one of x's values: the bf16 store rounds nothing
}

// reduce_extreme over a last dimension (inner 1): each row through 16 lanes, combined at its end
// (max is exact, so the order changes no bit). The lane loop is a plain array under omp simd:
// written with a lambda over R it stayed scalar, 13x slower (6 ms against 0.45 for [25088, 256]
// on 2 threads).
template <BinaryOp Op, typename R>
KILN_CPU_CLONES void extreme_last(const R* x, int64_t rows, int64_t n, R* out) {
  using V = decltype(extreme_value(R{}));
  constexpr int kLanes = 16;
#pragma omp parallel for schedule(static) if (rows * n > 65536 && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const R* xr = x + r * n;
    V best = extreme_value(xr[0]);
    int64_t k = 1;
    if (n >= 2 * kLanes) {
      V lane[kLanes];
      for (int l = 0; l < kLanes; ++l) lane[l] = extreme_value(xr[l]);
      for (k = kLanes; k + kLanes <= n; k += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) lane[l] = extreme_pick<Op>(lane[l], extreme_value(xr[k + l]));
      }
      best = lane[0];
      for (int l = 1; l < kLanes; ++l) best = extreme_pick<Op>(best, lane[l]);
    }
    for (; k < n; ++k) best = extreme_pick<Op>(best, extreme_value(xr[k]));
    out[r] = extreme_store<R>(best);
  }
}

// reduce_extreme with inner > 1: out's row starts as x's first slab and takes every later one, a
// row of selects at a time.
template <BinaryOp Op, typename R>
KILN_CPU_CLONES void extreme_slabs(const R* x, int64_t rows, int64_t n, int64_t inner, R* out) {
#pragma omp parallel for schedule(static) if (rows * n * inner > 65536 && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const R* xr = x + r * n * inner;
    R* o = out + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = xr[i];
    for (int64_t k = 1; k < n; ++k)
      for (int64_t i = 0; i < inner; ++i)
        o[i] = extreme_store<R>(extreme_pick<Op>(extreme_value(o[i]), extreme_value(xr[k * inner + i])));
  }
}

template <BinaryOp Op, typename R>
void extreme_rows(const R* x, int64_t rows, int64_t n, int64_t inner, R* out) {
  if (inner == 1) extreme_last<Op>(x, rows, n, out);
  else extreme_slabs<Op>(x, rows, n, inner, out);
}

template <typename T>
void extreme_typed(BinaryOp op, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) {
  const auto* px = raw(x.data<T>());
  auto* po = raw(out.data<T>());
  if (op == BinaryOp::maximum) extreme_rows<BinaryOp::maximum>(px, rows, n, inner, po);
  else extreme_rows<BinaryOp::minimum>(px, rows, n, inner, po);
}

}  // namespace

void CpuBackend::reduce_extreme(BinaryOp op, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) {
  if (rows == 0 || inner == 0) return;
  if (x.dtype() == DType::bf16) return extreme_typed<BFloat16>(op, x, rows, n, inner, out);
  if (x.dtype() == DType::i32) return extreme_typed<int32_t>(op, x, rows, n, inner, out);
  if (x.dtype() == DType::i64) return extreme_typed<int64_t>(op, x, rows, n, inner, out);
  extreme_typed<float>(op, x, rows, n, inner, out);
}

namespace {

// One parameter's update; v (momentum) is null when opt.momentum is 0. The options are copied
// in: read through a reference, each store to w could change them as far as the compiler
// knows. With that, the momentum choice outside the loop and -fno-math-errno for Adam's sqrtf
// (CMakeLists.txt), these loops vectorise (they ran at 1.0 and 3.4 ns an element in cache;
// docs/performance.md). simd changes no bits: -ffp-contract=off, and no element reads another.
template <bool kMomentum>
KILN_CPU_CLONES
void sgd_loop(float* w, const float* g, float* v, int64_t n, const SgdOptions& options) {
  const SgdOptions opt = options;
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) common::sgd_update_element<kMomentum>(w[i], g[i], kMomentum ? v + i : nullptr, opt);
}

KILN_CPU_CLONES
void adam_loop(float* w, const float* g, float* m, float* v, int64_t n, const AdamOptions& options,
               const common::AdamStepScalars& scalars) {
  const AdamOptions opt = options;
  const common::AdamStepScalars sc = scalars;
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) common::adam_update_element(w[i], g[i], m[i], v[i], opt, sc);
}

}  // namespace

void CpuBackend::sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) {
  for (SgdParamRef& r : params) {
    if (opt.momentum != 0.0f)
      sgd_loop<true>(r.param.data<float>(), r.grad.data<float>(), r.momentum_buf.data<float>(), r.param.numel(), opt);
    else
      sgd_loop<false>(r.param.data<float>(), r.grad.data<float>(), nullptr, r.param.numel(), opt);
  }
}

void CpuBackend::adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) {
  const common::AdamStepScalars sc = common::adam_step_scalars(opt, step);
  for (AdamParamRef& r : params)
    adam_loop(r.param.data<float>(), r.grad.data<float>(), r.exp_avg.data<float>(), r.exp_avg_sq.data<float>(),
              r.param.numel(), opt, sc);
}

void CpuBackend::lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) {
  const uint8_t* in = u8.data<uint8_t>();
  const float* table = lut.data<float>();
  float* o = out.data<float>();
  const int64_t c = lut.dim(0), n = u8.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) o[i] = table[(i % c) * 256 + in[i]];
}

void CpuBackend::crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) {
  const uint8_t* pixels = atlas.data<uint8_t>();
  const int64_t* d = desc.data<int64_t>();
  const float* table = lut.data<float>();
  float* o = out.data<float>();
  const int64_t s = out.dim(1), rows = out.dim(0) * s;
  // One output row of one image per iteration.
#pragma omp parallel for schedule(static) if (rows * s > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* di = d + (r / s) * 6;
    const int64_t y = r % s;
    float* dst = o + r * s * 3;
    for (int64_t x = 0; x < s; ++x) {
      const uint8_t* p = pixels + common::crop_flip_source(di, s, y, x);
      dst[x * 3 + 0] = table[0 * 256 + p[0]];
      dst[x * 3 + 1] = table[1 * 256 + p[1]];
      dst[x * 3 + 2] = table[2 * 256 + p[2]];
    }
  }
}

}  // namespace kiln::cpu
