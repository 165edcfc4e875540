// The CPU backend: oneDNN for convolution and GEMM, OpenMP loops over the shared math in
// kernels/common/ for everything else. Registered for DeviceType::cpu when kiln loads.
#pragma once

#include "core/backend.h"

namespace kiln::cpu {

// out = a (op) b where a or b broadcasts to out (kernels/cpu/cpu_broadcast.cpp).
void binary_broadcast(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
// out = a (op) b for int32 or int64 a and b (alike), any shapes that broadcast: a comparison into
// a float32 out, integer arithmetic (common::integer_apply) into an out of their dtype.
void integer_binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);

// Implements Backend on the host.
class CpuBackend : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  // AVX-512 BF16 (every CPU with AMX has it too; clang 14 knows no "amx-bf16" feature name).
  bool native_bf16(int /*index*/) override { return __builtin_cpu_supports("avx512bf16") != 0; }
  Allocator& allocator(int index) override;
  void copy(const Tensor& src, Tensor& dst, bool non_blocking = false) override;
  void fill(Tensor& t, double value) override;
  void arange(Tensor& t, double start, double step) override;
  void broadcast_scalar(const Tensor& scalar, float scale, Tensor& t) override;
  void fill_uniform(Tensor& t, PhiloxState s, float lo, float hi) override;
  void fill_normal(Tensor& t, PhiloxState s, float mean, float std) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void binary_scalar(BinaryOp op, const Tensor& a, float s, Tensor& out) override;
  void sum_to(const Tensor& x, Tensor& out) override;
  void broadcast_to(const Tensor& x, Tensor& out) override;
  void transpose(const Tensor& x, Tensor& y) override;
  bool has_layer_norm() const override { return true; }
  bool has_softmax_inner() const override { return true; }
  void softmax_inner(const Tensor& x, int64_t n, int64_t inner, bool log, Tensor& y) override;
  void softmax_inner_backward(const Tensor& y, const Tensor& dy, int64_t n, int64_t inner, bool log,
                              Tensor& dx) override;
  void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y, Tensor& mean,
                          Tensor& rstd) override;
  void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                           const Tensor& rstd, Tensor& dx, Tensor& dy_xhat) override;
  int64_t gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) override;
  int64_t scatter_add_rows(const Tensor& g, const Tensor& idx, Tensor& grad) override;
  void permute(const Tensor& x, const std::vector<int64_t>& dims, Tensor& y) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce_extreme(BinaryOp op, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) override;
  void copy_block(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                  int64_t width) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& y) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void relu(const Tensor& x, Tensor& y) override;
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void dropout(const Tensor& x, float keep, PhiloxState s, Tensor& y) override;
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) override;
  bool conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                           Tensor& y) override;
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) override;
  void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                              Tensor& db) override;
  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override;
  void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) override;
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override;
  void adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) override;
  void batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean,
                        Tensor& running_var) override;
  void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                          const Tensor& beta, float eps, Tensor& y) override;
  void batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                           const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                           Tensor& dbeta) override;
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                       Tensor& db) override;
  void softmax(const Tensor& x, bool log, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) override;
  void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) override;
  void softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                      Tensor& dlogits) override;
  void sum(const Tensor& x, Tensor& out) override;
  void sum_squares(const Tensor& x, Tensor& out) override;
  void argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) override;
  void cumsum(const Tensor& x, bool reverse, Tensor& y) override;
  void arg_extreme(BinaryOp op, const Tensor& x, Tensor& out) override;
  void sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) override;
  void lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) override;
  void crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) override;
  void adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) override;
};

// Row-major single-precision GEMM through oneDNN: C = alpha * op(A) op(B) + beta * C.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace kiln::cpu
