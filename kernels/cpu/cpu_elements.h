// Element access for the CPU loops over float and bfloat16 arrays. A bfloat16 goes through
// its raw bits: a BFloat16 struct copied per element kept GCC from vectorising (the bf16 relu
// ran 25x slower than fp32's, branching on every element).
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/op_params.h"
#include "core/hd.h"  // KILN_CPU_CLONES: these loops compiled once per ISA

namespace kiln::cpu {

// The storage type a loop reads and writes: float, bfloat16's 16 bits, or an integer itself.
template <typename T> struct Raw { using type = float; };
template <> struct Raw<BFloat16> { using type = uint16_t; };
template <> struct Raw<int32_t> { using type = int32_t; };
template <> struct Raw<int64_t> { using type = int64_t; };
template <typename T> using raw_t = typename Raw<T>::type;

// The array as its storage type.
template <typename T> const raw_t<T>* raw(const T* p) { return reinterpret_cast<const raw_t<T>*>(p); }
template <typename T> raw_t<T>* raw(T* p) { return reinterpret_cast<raw_t<T>*>(p); }

// A stored value in fp32 (exact), and fp32 rounded to the storage type (once).
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t b) { return BFloat16::to_float(b); }
template <typename R> R from_f32(float v);
template <> inline float from_f32<float>(float v) { return v; }
template <> inline uint16_t from_f32<uint16_t>(float v) { return BFloat16::from_float(v); }

// fn(std::integral_constant<BinaryOp, op>{}): the op as a template argument for the loops
// (binary_apply's switch then folds away and they vectorise; read per element, add ran at a
// third of relu_backward's rate). One switch for every elementwise launcher.
template <typename Fn>
void with_binary_op(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::add: return fn(std::integral_constant<BinaryOp, BinaryOp::add>{});
    case BinaryOp::sub: return fn(std::integral_constant<BinaryOp, BinaryOp::sub>{});
    case BinaryOp::mul: return fn(std::integral_constant<BinaryOp, BinaryOp::mul>{});
    case BinaryOp::div: return fn(std::integral_constant<BinaryOp, BinaryOp::div>{});
    case BinaryOp::rsub: return fn(std::integral_constant<BinaryOp, BinaryOp::rsub>{});
    case BinaryOp::rdiv: return fn(std::integral_constant<BinaryOp, BinaryOp::rdiv>{});
    case BinaryOp::pow: return fn(std::integral_constant<BinaryOp, BinaryOp::pow>{});
    case BinaryOp::rpow: return fn(std::integral_constant<BinaryOp, BinaryOp::rpow>{});
    case BinaryOp::maximum: return fn(std::integral_constant<BinaryOp, BinaryOp::maximum>{});
    case BinaryOp::minimum: return fn(std::integral_constant<BinaryOp, BinaryOp::minimum>{});
    case BinaryOp::gt: return fn(std::integral_constant<BinaryOp, BinaryOp::gt>{});
    case BinaryOp::ge: return fn(std::integral_constant<BinaryOp, BinaryOp::ge>{});
    case BinaryOp::lt: return fn(std::integral_constant<BinaryOp, BinaryOp::lt>{});
    case BinaryOp::le: return fn(std::integral_constant<BinaryOp, BinaryOp::le>{});
    case BinaryOp::eq: return fn(std::integral_constant<BinaryOp, BinaryOp::eq>{});
    case BinaryOp::ne: return fn(std::integral_constant<BinaryOp, BinaryOp::ne>{});
  }
}

// with_binary_op's counterpart for the unary math ops.
template <typename Fn>
void with_unary_op(UnaryOp op, Fn&& fn) {
  switch (op) {
    case UnaryOp::exp: return fn(std::integral_constant<UnaryOp, UnaryOp::exp>{});
    case UnaryOp::log: return fn(std::integral_constant<UnaryOp, UnaryOp::log>{});
    case UnaryOp::sqrt: return fn(std::integral_constant<UnaryOp, UnaryOp::sqrt>{});
    case UnaryOp::tanh: return fn(std::integral_constant<UnaryOp, UnaryOp::tanh>{});
    case UnaryOp::sigmoid: return fn(std::integral_constant<UnaryOp, UnaryOp::sigmoid>{});
    case UnaryOp::gelu: return fn(std::integral_constant<UnaryOp, UnaryOp::gelu>{});
    case UnaryOp::silu: return fn(std::integral_constant<UnaryOp, UnaryOp::silu>{});
    case UnaryOp::abs: return fn(std::integral_constant<UnaryOp, UnaryOp::abs>{});
    case UnaryOp::softplus: return fn(std::integral_constant<UnaryOp, UnaryOp::softplus>{});
  }
}

// The elements pow's vector loop takes at a time (their masks sit on the stack).
constexpr int64_t kPowBlock = 4096;

// a ** b over n contiguous elements (pow's vector loop, cpu_elementwise.cpp; instantiated for
// float and bfloat16's bits), on the calling thread; o may not overlap a or b.
template <typename R>
void pow_contiguous(const R* a, const R* b, R* o, int64_t n);

// n doubles of scratch for a reduction's partial sums, not zeroed. Up to 8 MiB are kept by the
// calling thread for its next call at the same Site (a tag type: one buffer per call site, so
// that two sites never share one); larger requests live in `once`, freed by the caller. Fresh
// pages cost their faults and zeroing: a third of a 512-channel column sum, a quarter of
// batch norm's statistics at [8, 7, 7, 2048] (docs/performance.md).
template <typename Site>
double* reduction_scratch(size_t n, std::vector<double>& once) {
  thread_local std::vector<double> kept;
  std::vector<double>& buf = n <= (size_t{1} << 20) ? kept : once;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace kiln::cpu
