// The CUDA backend: cuDNN for convolution, cuBLASLt for GEMM, custom kernels (the math
// in kernels/common/) for everything else, all on one compute stream per GPU, memory
// from a stream-ordered pool. Registered for DeviceType::cuda when kiln loads; it touches
// the GPU only when a CUDA tensor is first made.
#pragma once

#include <cuda_runtime.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/tensor.h"

namespace kiln::cuda {

// bf16 on the GPU: every op core admits in bf16 (conv2d, linear, relu, dropout, max_pool2d,
// adaptive_avg_pool2d, add/sub/mul, the casts) runs in bf16 here, forward and backward,
// with fp32 math and one rounding per stored value; core refuses bf16 for the rest.

// Implements Backend on NVIDIA GPUs. Methods live in the .cpp/.cu file of their concept.
class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  int device_count() override;
  void synchronize(int index) override;
  MemoryStats memory_stats(int index) override;
  void reset_peak_memory(int index) override;
  std::string device_name(int index) override;                           // cuda_context.cpp
  bool native_bf16(int index) override;                                  // cuda_context.cpp
  double time_ms(int index, const std::function<void()>& fn) override;  // cuda_context.cpp
  Allocator& allocator(int index) override;
  void copy(const Tensor& src, Tensor& dst, bool non_blocking = false) override;  // cuda_memory.cpp
  void stream_waits_for_kiln(int index, std::uintptr_t stream) override;           // cuda_memory.cpp
  void kiln_waits_for_stream(int index, std::uintptr_t stream) override;           // cuda_memory.cpp
  std::uintptr_t stream_handle(int index) override;                                // cuda_memory.cpp
  // cuda_elementwise.cu
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
  // cuda_conv.cpp (cuDNN)
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y) override;
  // Fused only under KILN_CONV_API=graph (cuda_conv_graph.cpp); false otherwise.
  bool conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                           Tensor& y) override;
  bool conv2d_forward_relu_trains() const override { return true; }
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) override;
  void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                              Tensor& db) override;
  // cuda_pool.cu
  void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override;
  void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) override;
  void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) override;
  void adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) override;
  // cuda_batch_norm.cu
  void batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean,
                        Tensor& running_var) override;
  void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                          const Tensor& beta, float eps, Tensor& y) override;
  void batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                           const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                           Tensor& dbeta) override;
  // cuda_gemm.cpp (cuBLASLt)
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                       Tensor& db) override;
  // cuda_softmax.cu
  void softmax(const Tensor& x, bool log, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) override;
  void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) override;
  void softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                      Tensor& dlogits) override;
  // cuda_reduce.cu
  void sum(const Tensor& x, Tensor& out) override;
  void sum_squares(const Tensor& x, Tensor& out) override;
  void argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) override;
  void cumsum(const Tensor& x, bool reverse, Tensor& y) override;
  void arg_extreme(BinaryOp op, const Tensor& x, Tensor& out) override;
  // cuda_sgd.cu
  void sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) override;
  // cuda_elementwise.cu
  void lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) override;
  void crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) override;
  // cuda_adam.cu
  void adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) override;
  // cuda_graph.cpp
  std::string begin_graph_capture(int index, const PhiloxState* rng) override;
  GraphCapture end_graph_capture(int index) override;
  std::string replay_graph(DeviceGraph& graph, PhiloxState rng) override;
};

// ---- launchers shared between the files above (all enqueue on `stream`) ----

// dst[i] = convert(src[i]) between any two dtypes, device to device.
void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);

// out[c] = sum over rows r of x[r * cols + c], accumulated in a fixed order (deterministic).
// Used for bias gradients of conv (rows = N*OH*OW) and linear (rows = N).
void launch_column_sum(const float* x, int64_t rows, int64_t cols, float* out, cudaStream_t stream);
// The same in bfloat16: summed in double as above, rounded to float and then to bf16, as
// the CPU backend's column sums (bias gradients of a bf16 segment).
void launch_column_sum(const BFloat16* x, int64_t rows, int64_t cols, BFloat16* out, cudaStream_t stream);

// y[r * cols + c] += b[c]: the bias of conv (NHWC, cols = channels) and linear; with relu,
// y = relu(y + b) in the same pass (a frozen conv's bias and ReLU: one pass over y, not two;
// the same bits as add then relu, since rounding keeps the sign).
void launch_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream, bool relu = false);
// The same in bfloat16: each sum is formed in fp32 and rounded once to bf16 (nearest even).
void launch_add_bias(BFloat16* y, const BFloat16* b, int64_t rows, int64_t cols, cudaStream_t stream,
                     bool relu = false);

// dst [rows, to] = src [rows, from], columns from..to-1 zero (to > from): a bf16
// convolution's channels padded for cuDNN's tensor-core kernels (cuda_conv.cpp).
void launch_pad_columns(const BFloat16* src, int64_t rows, int64_t from, int64_t to, BFloat16* dst,
                        cudaStream_t stream);

}  // namespace kiln::cuda
