// Softmax, log-softmax and the fused softmax-cross-entropy on the GPU: one block per row,
// the row reductions (max, sum of exponentials in double) done in parallel with a fixed
// reduction tree, so results are reproducible and match kernels/common/softmax.h.
#include <cmath>
#include <cstdint>

#include "kernels/common/softmax.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_graph.h"

namespace kiln::cuda {
namespace {

// ---- fixed-order block reductions (the result is the same bits on every thread and run) ----

template <typename T, typename Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
  // A butterfly: both partners combine the same two values, and the ops used here are
  // commutative bit for bit, so every lane ends with the same bits (MaxOp may leave lanes
  // with +0 and -0, which no caller can tell apart: x - m and exp are the same for both).
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Every thread gets op over all threads' v. smem: kThreads / 32 elements.
template <int kThreads, typename T, typename Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T* smem) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size must be whole warps");
  v = warp_allreduce(v, op);
  if constexpr (kThreads == 32) {
    return v;
  } else {
    constexpr int kWarps = kThreads / 32;
    __syncthreads();  // a previous call may still be reading smem
    if (threadIdx.x % 32 == 0) smem[threadIdx.x / 32] = v;
    __syncthreads();
    T r = smem[0];
    for (int w = 1; w < kWarps; ++w) r = op(r, smem[w]);
    return r;
  }
}

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
// common::row_max's rule: a value replaces the maximum only if strictly greater, so a NaN
// in x[0] (every thread's starting value) stays, and later NaNs are ignored, as on the CPU.
struct MaxOp {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};
struct MinOp {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return b < a ? b : a; }
};

// ---- one row's reductions, as common::row_max and common::row_sum_exp compute them (the
// same terms; the sum's order is the block's, not the CPU's eight lanes) ----

template <int kThreads>
__device__ float block_row_max(const float* x, int64_t n, float* smem) {
  float m = x[0];
  for (int64_t i = threadIdx.x; i < n; i += kThreads) m = x[i] > m ? x[i] : m;
  return block_allreduce<kThreads>(m, MaxOp{}, smem);
}

template <int kThreads>
__device__ double block_row_sum_exp(const float* x, int64_t n, float m, double* smem) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += static_cast<double>(common::exp_nonpositive(x[i] - m));
  return block_allreduce<kThreads>(s, SumOp{}, smem);
}

// The per-element steps below are those of common::softmax_row, softmax_backward_row,
// cross_entropy_row and cross_entropy_backward_row, term for term; the common functions
// loop over a whole row in one thread, so they are spelled out here for a block per row.
// Keep the two in step. __dmul_rn marks a product the CPU rounds before adding (nvcc would
// otherwise fuse it into an FMA).

template <int kThreads>
__global__ void softmax_kernel(const float* x, int64_t rows, int64_t cols, bool log_out, float* y) {
  __shared__ float smax[kThreads / 32];
  __shared__ double ssum[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float m = block_row_max<kThreads>(xr, cols, smax);
    const double sum = block_row_sum_exp<kThreads>(xr, cols, m, ssum);
    const double lse = ::log(sum);
    const float inv = static_cast<float>(1.0 / sum);
    // y may alias x: every read of the row is done (the reductions synchronise) before a write.
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
      yr[i] = log_out ? static_cast<float>(static_cast<double>(xr[i] - m) - lse)
                      : __fmul_rn(common::exp_nonpositive(xr[i] - m), inv);
    }
  }
}

template <int kThreads>
__global__ void softmax_backward_kernel(const float* y, const float* dy, int64_t rows, int64_t cols, bool log_out,
                                        float* dx) {
  __shared__ double ssum[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < cols; i += kThreads)
      s += log_out ? static_cast<double>(dyr[i]) : __dmul_rn(dyr[i], yr[i]);
    s = block_allreduce<kThreads>(s, SumOp{}, ssum);
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
      dxr[i] = log_out ? static_cast<float>(dyr[i] - __dmul_rn(common::exp_nonpositive(yr[i]), s))
                       : static_cast<float>(yr[i] * (dyr[i] - s));
    }
  }
}

// losses[r] = -log softmax(x_r)[label_r]; 0 for a row whose label is out of range (the
// check kernel reports it, and nothing is read outside the row).
template <int kThreads, typename L>
__global__ void cross_entropy_rows_kernel(const float* x, const L* labels, int64_t rows, int64_t cols,
                                          double* losses) {
  __shared__ float smax[kThreads / 32];
  __shared__ double ssum[kThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t label = static_cast<int64_t>(labels[r]);
    if (label < 0 || label >= cols) {  // uniform across the block: no thread skips a barrier
      if (threadIdx.x == 0) losses[r] = 0.0;
      continue;
    }
    const float* xr = x + r * cols;
    const float m = block_row_max<kThreads>(xr, cols, smax);
    const double lse = ::log(block_row_sum_exp<kThreads>(xr, cols, m, ssum));
    if (threadIdx.x == 0) losses[r] = lse - static_cast<double>(xr[label] - m);
  }
}

// dx = (softmax(x) - onehot(label)) * dloss[0] / rows. Never indexes by the label, so an
// out-of-range label only yields a row without its -1 (and an error from the check).
template <int kThreads, typename L>
__global__ void cross_entropy_backward_kernel(const float* x, const L* labels, const float* dloss, int64_t rows,
                                              int64_t cols, float* dx) {
  __shared__ float smax[kThreads / 32];
  __shared__ double ssum[kThreads / 32];
  // The CPU's scale: a float division of dloss[0] by the row count.
  const float scale = dloss[0] / static_cast<float>(rows);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t label = static_cast<int64_t>(labels[r]);
    const float* xr = x + r * cols;
    float* dxr = dx + r * cols;
    const float m = block_row_max<kThreads>(xr, cols, smax);
    const float inv = static_cast<float>(1.0 / block_row_sum_exp<kThreads>(xr, cols, m, ssum));
    for (int64_t i = threadIdx.x; i < cols; i += kThreads) {
      const float p = __fmul_rn(common::exp_nonpositive(xr[i] - m), inv);
      dxr[i] = __fmul_rn(p - (i == label ? 1.0f : 0.0f), scale);
    }
  }
}

constexpr int kFinishThreads = 256;

// One block: flag[0] = first row whose label is outside [0, cols) or -1, flag[1] = that
// label; with losses, loss[0] = sum of losses (fixed tree, double) / rows.
template <typename L>
__global__ void cross_entropy_finish_kernel(const L* labels, const double* losses, int64_t rows, int64_t cols,
                                            float* loss, int64_t* flag) {
  __shared__ double ssum[kFinishThreads / 32];
  __shared__ int64_t smin[kFinishThreads / 32];
  double s = 0.0;
  int64_t bad = INT64_MAX;
  for (int64_t r = threadIdx.x; r < rows; r += kFinishThreads) {
    const int64_t label = static_cast<int64_t>(labels[r]);
    if ((label < 0 || label >= cols) && r < bad) bad = r;
    if (losses) s += losses[r];
  }
  s = block_allreduce<kFinishThreads>(s, SumOp{}, ssum);
  bad = block_allreduce<kFinishThreads>(bad, MinOp{}, smin);
  if (threadIdx.x == 0) {
    if (losses) loss[0] = static_cast<float>(s / static_cast<double>(rows));
    flag[0] = bad == INT64_MAX ? -1 : bad;
    flag[1] = bad == INT64_MAX ? 0 : static_cast<int64_t>(labels[bad]);
  }
}

// Launches kernel<kThreads> with a block size suited to the row length: short rows would
// leave most of a wide block idle, long rows want many threads on each reduction.
template <template <int> class Launch, typename... Args>
void launch_rows(int64_t rows, int64_t cols, cudaStream_t stream, Args&&... args) {
  const unsigned grid = static_cast<unsigned>(rows < (int64_t{1} << 20) ? rows : (int64_t{1} << 20));
  if (cols <= 256) Launch<32>::run(grid, stream, args...);
  else if (cols <= 2048) Launch<128>::run(grid, stream, args...);
  else Launch<512>::run(grid, stream, args...);
  KILN_CUDA_CHECK_LAUNCH();
}

template <int kThreads>
struct SoftmaxLaunch {
  static void run(unsigned grid, cudaStream_t stream, const float* x, int64_t rows, int64_t cols, bool log_out,
                  float* y) {
    softmax_kernel<kThreads><<<grid, kThreads, 0, stream>>>(x, rows, cols, log_out, y);
  }
};

template <int kThreads>
struct SoftmaxBackwardLaunch {
  static void run(unsigned grid, cudaStream_t stream, const float* y, const float* dy, int64_t rows, int64_t cols,
                  bool log_out, float* dx) {
    softmax_backward_kernel<kThreads><<<grid, kThreads, 0, stream>>>(y, dy, rows, cols, log_out, dx);
  }
};

template <int kThreads>
struct CrossEntropyRowsLaunch {
  template <typename L>
  static void run(unsigned grid, cudaStream_t stream, const float* x, const L* labels, int64_t rows, int64_t cols,
                  double* losses) {
    cross_entropy_rows_kernel<kThreads, L><<<grid, kThreads, 0, stream>>>(x, labels, rows, cols, losses);
  }
};

template <int kThreads>
struct CrossEntropyBackwardLaunch {
  template <typename L>
  static void run(unsigned grid, cudaStream_t stream, const float* x, const L* labels, const float* dloss,
                  int64_t rows, int64_t cols, float* dx) {
    cross_entropy_backward_kernel<kThreads, L><<<grid, kThreads, 0, stream>>>(x, labels, dloss, rows, cols, dx);
  }
};

// Calls fn(L{}) with L the label type (int32 or int64).
template <typename Fn>
void with_label_type(const Tensor& labels, Fn&& fn) {
  if (labels.dtype() == DType::i64) fn(int64_t{});
  else if (labels.dtype() == DType::i32) fn(int32_t{});
  else KILN_FAIL(current_op(), ": labels must be int32 or int64, got ", dtype_name(labels.dtype()));
}

// Waits for the label check's flag and throws the CPU backend's message when a label was
// out of range. The sync is the price of reporting bad labels as errors, not as NaNs.
// While a graph is recorded no host sync is allowed: the check is skipped there, and whoever
// replays the graph checks its labels (train/step_graph.h: on the host, before each replay).
void throw_if_bad_label(const char* op, const int64_t* device_flag, int64_t classes, cudaStream_t stream) {
  if (capturing()) return;
  int64_t flag[2] = {-1, 0};
  KILN_CUDA_CHECK(cudaMemcpyAsync(flag, device_flag, sizeof flag, cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  KILN_CHECK(flag[0] < 0, op, ": label ", flag[1], " at row ", flag[0], " is out of range [0, ", classes, ")");
}

}  // namespace

void CudaBackend::softmax(const Tensor& x, bool log, Tensor& y) {
  OpScope scope(log ? "log_softmax" : "softmax", y.device().index);
  const int64_t cols = x.dim(-1);
  const int64_t rows = cols > 0 ? x.numel() / cols : 0;
  if (rows > 0) launch_rows<SoftmaxLaunch>(rows, cols, scope.stream(), x.data<float>(), rows, cols, log, y.data<float>());
  scope.done();
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  OpScope scope(log ? "log_softmax backward" : "softmax backward", dx.device().index);
  const int64_t cols = y.dim(-1);
  const int64_t rows = cols > 0 ? y.numel() / cols : 0;
  if (rows > 0)
    launch_rows<SoftmaxBackwardLaunch>(rows, cols, scope.stream(), y.data<float>(), dy.data<float>(), rows, cols, log,
                                       dx.data<float>());
  scope.done();
}

void CudaBackend::softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) {
  const char* op = "softmax_cross_entropy";
  const int index = loss.device().index;
  OpScope scope(op, index);
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  KILN_CHECK(rows >= 1 && cols >= 1, op, ": empty logits ", logits.shape());
  // [rows] per-row losses in double, then the two-word label flag.
  Workspace ws(index, static_cast<size_t>(rows) * sizeof(double) + 2 * sizeof(int64_t));
  double* losses = static_cast<double*>(ws.data());
  int64_t* flag = reinterpret_cast<int64_t*>(losses + rows);
  with_label_type(labels, [&](auto tag) {
    using L = decltype(tag);
    const L* pl = labels.data<L>();
    launch_rows<CrossEntropyRowsLaunch>(rows, cols, scope.stream(), logits.data<float>(), pl, rows, cols, losses);
    cross_entropy_finish_kernel<L><<<1, kFinishThreads, 0, scope.stream()>>>(pl, losses, rows, cols,
                                                                            loss.data<float>(), flag);
    KILN_CUDA_CHECK_LAUNCH();
  });
  throw_if_bad_label(op, flag, cols, scope.stream());
  scope.done();
}

void CudaBackend::softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                                 Tensor& dlogits) {
  const char* op = "softmax_cross_entropy backward";
  const int index = dlogits.device().index;
  OpScope scope(op, index);
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  KILN_CHECK(rows >= 1 && cols >= 1, op, ": empty logits ", logits.shape());
  Workspace ws(index, 2 * sizeof(int64_t));
  int64_t* flag = static_cast<int64_t*>(ws.data());
  with_label_type(labels, [&](auto tag) {
    using L = decltype(tag);
    const L* pl = labels.data<L>();
    cross_entropy_finish_kernel<L><<<1, kFinishThreads, 0, scope.stream()>>>(pl, nullptr, rows, cols, nullptr, flag);
    KILN_CUDA_CHECK_LAUNCH();
    launch_rows<CrossEntropyBackwardLaunch>(rows, cols, scope.stream(), logits.data<float>(), pl, dloss.data<float>(),
                                            rows, cols, dlogits.data<float>());
  });
  throw_if_bad_label(op, flag, cols, scope.stream());
  scope.done();
}

}  // namespace kiln::cuda
