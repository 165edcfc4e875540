// linear on the CPU through oneDNN: the forward through its matmul primitive from 8 rows
// up (built once per shape and cached), sgemm below that and for the backward products.
// bfloat16 always takes the matmul, forward and backward (dx = dy w and dw = dy^T x as
// matmuls over kiln's row-major buffers, db summed in double): bf16 in and out, fp32
// accumulation inside oneDNN.
#include <oneapi/dnnl/dnnl.h>

#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/onednn.h"

namespace kiln::cpu {

namespace {

// y = x w^T with w [out, in] row-major is sgemm's transposed-B case, which oneDNN 2.6's
// sgemm runs at half speed: 146 ms for [64, 25088] x [4096, 25088]^T on 2 AVX-512 cores,
// where its matmul primitive, reading the same w as a column-major [in, out] B, takes 71
// (and inner product with pre-reordered weights 66). From 8 rows down the matmul loses
// its edge (at 1 row it is slower: 17.9 vs 14.6 ms), so small batches keep sgemm.
constexpr int64_t kMatmulMinRows = 8;

// C[m, n] = A[m, k] B[k, n] (+ bias [n]) over row-major buffers; a_t / b_t: A or B is
// stored transposed (A as [k, m], B as [n, k], row-major).
struct MatmulKey {
  int64_t m, k, n;
  bool a_t, b_t, bias;
  bool bf16 = false;
  auto tie() const { return std::tie(m, k, n, a_t, b_t, bias, bf16); }
  bool operator<(const MatmulKey& o) const { return tie() < o.tie(); }
};

struct MatmulPlan {
  dnnl::memory::desc a, b, bias, c, scratch;
  std::unique_ptr<dnnl::matmul> prim;
};

MatmulPlan& matmul_plan(const MatmulKey& k) {
  using dnnl::memory;
  // Never destroyed: a thread still running at exit (a Python daemon thread in kiln.train) may
  // use a plan while static destructors run; the process's end reclaims it.
  static auto& cache = *new std::map<MatmulKey, std::unique_ptr<MatmulPlan>>;
  const auto lock = onednn_build_lock();
  std::unique_ptr<MatmulPlan>& slot = cache[k];
  if (!slot) {
    auto plan = std::make_unique<MatmulPlan>();
    const auto t = k.bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    using ft = memory::format_tag;
    plan->a = memory::desc({k.m, k.k}, t, k.a_t ? ft::ba : ft::ab);
    plan->b = memory::desc({k.k, k.n}, t, k.b_t ? ft::ba : ft::ab);
    plan->bias = k.bias ? memory::desc({1, k.n}, t, ft::ab) : memory::desc();
    plan->c = memory::desc({k.m, k.n}, t, ft::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(plan->a, plan->b, plan->bias, plan->c), user_scratchpad(),
                                          onednn_engine());
    plan->scratch = pd.scratchpad_desc();
    plan->prim = std::make_unique<dnnl::matmul>(pd);
    slot = std::move(plan);
  }
  return *slot;
}

// Runs the matmul of key k on the given buffers (bias may be null); errors name `op` and
// the operands' shapes.
void run_matmul(const char* op, const MatmulKey& k, const void* a, const void* b, const void* bias, void* c) {
  const auto shapes = [&] {
    std::ostringstream os;
    os << "A [" << k.m << ", " << k.k << "]" << (k.a_t ? " (stored transposed)" : "") << ", B [" << k.k << ", "
       << k.n << "]" << (k.b_t ? " (stored transposed)" : "") << (k.bf16 ? ", bfloat16" : "");
    return os.str();
  };
  onednn_guarded(op, shapes, [&] {
    MatmulPlan& p = matmul_plan(k);
    const dnnl::engine& e = onednn_engine();
    std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, dnnl::memory(p.a, e, const_cast<void*>(a))},
                                                  {DNNL_ARG_WEIGHTS, dnnl::memory(p.b, e, const_cast<void*>(b))},
                                                  {DNNL_ARG_DST, dnnl::memory(p.c, e, c)}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, e, const_cast<void*>(bias)));
    add_scratchpad(p.scratch, args);
    p.prim->execute(onednn_stream(), args);
    onednn_stream().wait();
  });
}

// The bf16 backward: matmuls (an empty sum, K = 0, is a zero fill: oneDNN rejects it).
void linear_backward_bf16(CpuBackend& be, const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx,
                          Tensor& dw, Tensor& db) {
  const int64_t rows = dy.dim(0), out = dy.dim(1);
  if (dx.defined() && dx.numel() > 0) {
    // dx[rows, in] = dy[rows, out] w[out, in]
    if (out == 0) be.fill(dx, 0.0);
    else run_matmul("linear backward (dx)", MatmulKey{rows, out, dx.dim(1), false, false, false, true},
                    dy.raw_data(), w.raw_data(), nullptr, dx.raw_data());
  }
  if (dw.defined() && dw.numel() > 0) {
    // dw[out, in] = dy^T[out, rows] x[rows, in]; dy read as its transpose
    if (rows == 0) be.fill(dw, 0.0);
    else run_matmul("linear backward (dw)", MatmulKey{out, rows, dw.dim(1), true, false, false, true},
                    dy.raw_data(), x.raw_data(), nullptr, dw.raw_data());
  }
  if (db.defined()) be.sum_to(dy, db);  // the bias gradient: the chunked column order, as on a GPU
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: c = beta * c (dnnl_sgemm rejects the zero leading dimensions)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  const SignalsHeld held;
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                      beta, c, ldc);
  KILN_CHECK(st == dnnl_success, "sgemm: oneDNN dnnl_sgemm failed with status ", static_cast<int>(st), " for m=", m,
             " n=", n, " k=", k);
}

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  const bool bf16 = x.dtype() == DType::bf16;
  if (bf16 && (rows == 0 || out == 0)) return;
  if (bf16 && in == 0) {  // an empty sum: y = b, or 0 (oneDNN rejects a zero-sized K)
    if (!b.defined()) return fill(y, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(y.raw_data()) + r * out * 2, b.raw_data(), static_cast<size_t>(out) * 2);
    return;
  }
  if ((bf16 || rows >= kMatmulMinRows) && in > 0 && out > 0) {
    // y[rows, out] = x[rows, in] w^T, w [out, in] read as a column-major [in, out]
    run_matmul("linear", MatmulKey{rows, in, out, false, true, b.defined(), bf16}, x.raw_data(), w.raw_data(),
               b.defined() ? b.raw_data() : nullptr, y.raw_data());
    return;
  }
  float* py = y.data<float>();
  float beta = 0.0f;
  if (b.defined()) {
    const float* pb = b.data<float>();
#pragma omp parallel for schedule(static) if (rows * out > 65536)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) py[r * out + o] = pb[o];
    beta = 1.0f;
  }
  // y[rows, out] = x[rows, in] * w[out, in]^T (+ y)
  sgemm(false, true, rows, out, in, 1.0f, x.data<float>(), in, w.data<float>(), in, beta, py, out);
}

void CpuBackend::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                                 Tensor& db) {
  if (dy.dtype() == DType::bf16) return linear_backward_bf16(*this, dy, x, w, dx, dw, db);
  const int64_t rows = dy.dim(0), out = dy.dim(1);
  const float* pdy = dy.data<float>();
  if (dx.defined()) {
    const int64_t in = dx.dim(1);
    // dx[rows, in] = dy[rows, out] * w[out, in]
    sgemm(false, false, rows, in, out, 1.0f, pdy, out, w.data<float>(), in, 0.0f, dx.data<float>(), in);
  }
  if (dw.defined()) {
    const int64_t in = dw.dim(1);
    // dw[out, in] = dy[rows, out]^T * x[rows, in]
    sgemm(true, false, out, in, rows, 1.0f, pdy, out, x.data<float>(), in, 0.0f, dw.data<float>(), in);
  }
  // The bias gradient: sum_to's chunked column order (kernels/common/broadcast.h), the order
  // of CUDA's bias-gradient kernel too, so both backends give the same bits.
  if (db.defined()) sum_to(dy, db);
}

}  // namespace kiln::cpu
