// linear on the CPU: GEMMs through oneDNN's sgemm (row-major), bias handled around them.
#include <oneapi/dnnl/dnnl.h>

#include "kernels/cpu/cpu_backend.h"

namespace kiln::cpu {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb,
                                      beta, c, ldc);
  KILN_CHECK(st == dnnl_success, "sgemm: oneDNN dnnl_sgemm failed with status ", static_cast<int>(st), " for m=", m,
             " n=", n, " k=", k);
}

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
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
