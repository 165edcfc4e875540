// linear on the CPU through oneDNN: the forward through its matmul primitive from 8 rows
// up (built once per shape and cached), sgemm below that and for the backward products.
// bfloat16 (forward only) always takes the matmul: x, w, bias and y bf16, fp32 accumulation.
#include <oneapi/dnnl/dnnl.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
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

struct MatmulKey {
  int64_t rows, in, out;
  bool bias;
  bool bf16 = false;
  auto tie() const { return std::tie(rows, in, out, bias, bf16); }
  bool operator<(const MatmulKey& k) const { return tie() < k.tie(); }
};

struct MatmulPlan {
  dnnl::memory::desc x, w, b, y;
  std::unique_ptr<dnnl::matmul> prim;
};

MatmulPlan& matmul_plan(const MatmulKey& k) {
  using dnnl::memory;
  static std::mutex mu;
  static std::map<MatmulKey, std::unique_ptr<MatmulPlan>> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<MatmulPlan>& slot = cache[k];
  if (!slot) {
    auto plan = std::make_unique<MatmulPlan>();
    const auto t = k.bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    plan->x = memory::desc({k.rows, k.in}, t, memory::format_tag::ab);
    plan->w = memory::desc({k.in, k.out}, t, memory::format_tag::ba);  // w [out, in]
    plan->b = k.bias ? memory::desc({1, k.out}, t, memory::format_tag::ab) : memory::desc();
    plan->y = memory::desc({k.rows, k.out}, t, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(plan->x, plan->w, plan->b, plan->y), onednn_engine());
    plan->prim = std::make_unique<dnnl::matmul>(pd);
    slot = std::move(plan);
  }
  return *slot;
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
    const auto shapes = [&] {
      std::ostringstream os;
      os << "x [" << rows << ", " << in << "], w [" << out << ", " << in << "]" << (bf16 ? ", bfloat16" : "");
      return os.str();
    };
    onednn_guarded("linear", shapes, [&] {
      MatmulPlan& p = matmul_plan(MatmulKey{rows, in, out, b.defined(), bf16});
      const dnnl::engine& e = onednn_engine();
      std::unordered_map<int, dnnl::memory> args = {
          {DNNL_ARG_SRC, dnnl::memory(p.x, e, x.raw_data())},
          {DNNL_ARG_WEIGHTS, dnnl::memory(p.w, e, w.raw_data())},
          {DNNL_ARG_DST, dnnl::memory(p.y, e, y.raw_data())}};
      if (b.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.b, e, b.raw_data()));
      p.prim->execute(onednn_stream(), args);
      onednn_stream().wait();
    });
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
  if (db.defined()) {
    float* pdb = db.data<float>();
    // Column sums in double, rows in order: deterministic for any thread count.
#pragma omp parallel for schedule(static) if (out > 64)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t r = 0; r < rows; ++r) s += pdy[r * out + o];
      pdb[o] = static_cast<float>(s);
    }
  }
}

}  // namespace kiln::cpu
