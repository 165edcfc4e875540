// The interface every backend implements, one virtual per primitive (flashlight's shape).
// core/ops.cpp checks arguments and records autograd; a backend only computes. Outputs are
// allocated by the caller, on the backend's device, contiguous, with the right shape.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "core/allocator.h"
#include "core/device.h"
#include "core/op_params.h"
#include "core/philox.h"
#include "core/tensor.h"

namespace kiln {

// One parameter for the multi-tensor SGD update. momentum_buf may be undefined when
// momentum is 0. Every ref given is updated: whether a parameter trains is the Module's
// `trainable` flag, and the optimizer leaves the others out (layers/module.h).
struct SgdParamRef {
  Tensor param;
  Tensor grad;
  Tensor momentum_buf;
};

// One parameter for the multi-tensor Adam update. exp_avg (m) and exp_avg_sq (v) have the
// param's shape. Every ref given is updated (see SgdParamRef).
struct AdamParamRef {
  Tensor param;
  Tensor grad;
  Tensor exp_avg;
  Tensor exp_avg_sq;
};

// Device memory in use and its high-water mark, in bytes (tensors and workspaces).
struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t reserved_bytes = 0;  // held by the backend's pool, in use or cached
};

// Compute options a backend may honour. Data stays fp32 unless a precision policy says
// otherwise (train/precision.h); these say how a GPU may compute on fp32 data.
struct ComputeOptions {
  // fp32 convolutions may use TF32 tensor cores (inputs rounded to a 10-bit mantissa, fp32
  // accumulation): on by default, as PyTorch's cudnn.allow_tf32, because convolutions are
  // where TF32 pays (VGG16's forward ran 7.3x faster on the one H200 run) and its error
  // (~1e-3 relative) is below what training notices. KILN_TF32=none: strict fp32 everywhere.
  bool conv_tf32 = true;
  // fp32 GEMMs (linear layers) may use TF32: off by default, as PyTorch's
  // cuda.matmul.allow_tf32 since 1.12; KILN_TF32=all turns it on.
  bool matmul_tf32 = false;
  // Choose conv algorithms by timing every candidate once per shape (cuDNN's Find)
  // rather than by heuristics. Initialised from KILN_CONV_SEARCH=exhaustive.
  bool exhaustive_conv_search = false;
  // Only algorithms that give the same bits on every run (cuDNN's deterministic ones), so a
  // resumed GPU run can equal the uninterrupted one bit for bit. Off by default, as
  // PyTorch's cudnn.deterministic: non-deterministic backward algorithms (atomics) can be
  // the fastest. Needs heuristic search (timing picks per process). KILN_DETERMINISTIC=1.
  bool deterministic = false;
};

// A recorded sequence of one device's work (a CUDA graph), replayed with one launch;
// destroying it frees what the backend holds for it.
class DeviceGraph {
 public:
  virtual ~DeviceGraph() = default;
};

// What ending a capture gave: a replayable graph, or (graph null) why there is none, in the
// backend's or the vendor library's words.
struct GraphCapture {
  std::unique_ptr<DeviceGraph> graph;
  std::string error;
};

// A device's implementation of the primitives. All tensors are contiguous.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Memory for tensors on device `index` of this backend.
  virtual Allocator& allocator(int index) = 0;
  // Number of devices of this type that can be used (the CPU counts as 1).
  virtual int device_count() { return 1; }
  // Waits until all queued work on device `index` has finished.
  virtual void synchronize(int /*index*/) {}
  virtual MemoryStats memory_stats(int /*index*/) { return {}; }
  virtual void reset_peak_memory(int /*index*/) {}
  // The device's model for reports ("NVIDIA H200"); by default the backend's name.
  virtual std::string device_name(int /*index*/) { return name(); }
  // Whether device `index` computes bf16 in hardware (AVX-512 BF16, tensor cores), so a
  // bf16 segment is faster there rather than emulated; a hint, never a requirement.
  virtual bool native_bf16(int /*index*/) { return false; }
  // Runs fn and returns how long the work it queued on device `index` took, in ms: by
  // default a steady clock around fn (the work is done when fn returns); a GPU backend
  // records events on its compute stream around fn and waits for the second.
  virtual double time_ms(int index, const std::function<void()>& fn);
  // dst <- src, same numel; either side may be on this backend's device or the host, and
  // the dtypes may differ (converted element by element). Blocking unless non_blocking:
  // then a copy from pinned host memory (or to it) may still be running on return; later
  // ops on the device are ordered after it, and the host must synchronize() before it
  // reads a destination on the host.
  virtual void copy(const Tensor& src, Tensor& dst, bool non_blocking = false) = 0;
  virtual void fill(Tensor& t, double value) = 0;
  virtual void arange(Tensor& t, double start, double step) = 0;
  // t[i] = scalar[0] * scale for every i (scalar: a one-element float32 tensor on this device).
  virtual void broadcast_scalar(const Tensor& scalar, float scale, Tensor& t) = 0;
  virtual void fill_uniform(Tensor& t, PhiloxState s, float lo, float hi) = 0;
  virtual void fill_normal(Tensor& t, PhiloxState s, float mean, float std) = 0;

  // out = a (op) b; a and b have out's shape or broadcast to it (NumPy's rules, checked by
  // core: kernels/common/broadcast.h); float32 or bfloat16, all three alike. int32 or int64
  // operands (a and b alike) take a comparison into a float32 out and integer arithmetic
  // (is_integer_arithmetic, exact, wrapping) into an out of their dtype. out may be a (in place).
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = a (op) s; out may be a itself.
  virtual void binary_scalar(BinaryOp op, const Tensor& a, float s, Tensor& out) = 0;
  // out = a where cond is nonzero, else b (torch.where), moved as bits; all four of one shape and
  // dtype, float32 or bfloat16 (core broadcasts and converts cond first). A NaN cond counts as true.
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = x summed over the dimensions along which out broadcasts to x (out's shape, padded
  // on the left with 1s, has 1 or x's extent in each): a broadcast operand's gradient. In
  // double, in kernels/common/broadcast.h's order (sum_to_element), so every backend gives
  // the same bits whatever its thread count.
  virtual void sum_to(const Tensor& x, Tensor& out) = 0;
  // out = x repeated along the dimensions along which it broadcasts to out's shape.
  virtual void broadcast_to(const Tensor& x, Tensor& out) = 0;
  // y = x with its dimensions permuted: y's dimension i is x's dims[i] (dims a permutation of
  // 0 .. rank-1, checked by core; y shaped so). Any dtype, moved as bits.
  virtual void permute(const Tensor& x, const std::vector<int64_t>& dims, Tensor& y) = 0;
  // y[.., j, i] = x[.., i, j]: x's last two dimensions swapped (rank >= 2, y shaped so);
  // float32 or bfloat16, moved as bits. Tensors are contiguous, so a transpose is a copy.
  virtual void transpose(const Tensor& x, Tensor& y) = 0;
  // out[b, i, :] = table[b, idx[i], :] for idx [n] (index_select along a dimension, with the
  // dimensions before it as B and after it as D), or out[b, i, c] = table[b, idx[b, i, c], c] for
  // idx [B, n, D] (torch.gather). idx int32 or int64; table [B, V, D] of any dtype, out [B, n, D]
  // alike (moved as bits). The range check is the kernel's, in the pass that reads the indices
  // (a pass of its own cost as much as a gather): an index outside [0, V) is never read through
  // (its entries of out unspecified), and the call returns the flattened position in idx of the
  // first one, or -1 when all are inside (core throws). Core calls it with out not empty.
  [[nodiscard]] virtual int64_t gather_rows(const Tensor& table, const Tensor& idx, Tensor& out) = 0;
  // The gather's gradient: grad[b, idx[i] (or idx[b, i, c]), c] += g[b, i, c] for i = 0, 1, ...
  // in that order (grad [B, V, D] float32, zeroed by the caller; g [B, n, D]; idx as gather_rows'),
  // so a repeated index sums its terms in a fixed order. Indices outside [0, V) as gather_rows':
  // skipped, the first one's position returned (-1: none). Core calls it with g not empty.
  [[nodiscard]] virtual int64_t scatter_add_rows(const Tensor& g, const Tensor& idx, Tensor& grad) = 0;
  // Whether this backend has a fused layer normalisation (layer_norm_forward/backward); where
  // not, core composes the op of its others (CUDA, until its kernel has run on a GPU).
  virtual bool has_layer_norm() const { return false; }
  // Layer normalisation of x [rows, c] over c: y = (x - mean) * rstd * gamma + beta (gamma and
  // beta [c] float32, or undefined), float32; mean and rstd [rows] float32 kept for backward.
  virtual void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, Tensor& y,
                                  Tensor& mean, Tensor& rstd);
  // Its backward: dx (skipped when undefined), and dy * xhat per element into dy_xhat when it is
  // defined (gamma's gradient is its sum over rows, core's sum_to).
  virtual void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                   const Tensor& rstd, Tensor& dx, Tensor& dy_xhat);
  // Whether this backend runs softmax along a dimension other than the last in place
  // (softmax_inner/backward); where not, core moves the dimension last and back (CUDA, until
  // its kernel has run on a GPU).
  virtual bool has_softmax_inner() const { return false; }
  // Softmax (or log-softmax) of x [outer, n, inner] over n (inner > 1), float32, y alike.
  virtual void softmax_inner(const Tensor& x, int64_t n, int64_t inner, bool log, Tensor& y);
  // Its backward given its output y.
  virtual void softmax_inner_backward(const Tensor& y, const Tensor& dy, int64_t n, int64_t inner, bool log,
                                      Tensor& dx);
  // out[r, i] = the largest (op maximum) or smallest (op minimum) of x[r, k, i] over k < n, x
  // viewed as [rows, n, inner] (n >= 1) and out as [rows, inner]; NaN wins, as binary_apply's
  // maximum. Float32 or bfloat16, x and out alike. Exact: any order gives the same value, though
  // which of -0 and +0, or which of two NaNs, comes out may depend on it.
  virtual void reduce_extreme(BinaryOp op, const Tensor& x, int64_t rows, int64_t n, int64_t inner, Tensor& out) = 0;
  // dst[r, dst_col + j] = src[r, src_col + j] for r < rows and j < width, src viewed as
  // [rows, src.numel() / rows] and dst as [rows, dst.numel() / rows]; one dtype, one device,
  // moved as bytes. A slice along any dimension is such a block: concat and narrow, each the
  // other's gradient.
  virtual void copy_block(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                          int64_t width) = 0;
  // y = op(x) elementwise (kernels/common/elementwise.h); float32 or bfloat16, x and y alike.
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& y) = 0;
  // dx = dy * op'(x), from x or y = op(x): the one unary_backward_reads_input (core/op_params.h)
  // names is defined, the other not.
  virtual void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx) = 0;
  // y = max(x, 0).
  virtual void relu(const Tensor& x, Tensor& y) = 0;
  // dx = dy where y > 0, else 0.
  virtual void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) = 0;
  // y = x * mask / keep with mask_i = (uniform_i < keep) from the Philox stream at s.
  // The same call maps dy to dx in backward.
  virtual void dropout(const Tensor& x, float keep, PhiloxState s, Tensor& y) = 0;

  // y = conv(x, w) + b (b may be undefined).
  virtual void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                              Tensor& y) = 0;
  // y = max(conv(x, w) + b, 0) in one pass (core records the backward from y, x and w);
  // false when this backend has no fused form (the caller then runs the two ops).
  virtual bool conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                   Tensor& y) {
    (void)x, (void)w, (void)b, (void)p, (void)y;
    return false;
  }
  // Whether a forward that records for backward should take conv2d_forward_relu too. The
  // CUDA backend's fused pass saves the activations' bias and ReLU passes; on the CPU the
  // VGG16 step at batch 8 was 4-10% slower with oneDNN's post-op in training (3.88-4.15 s
  // against 3.74-3.78 s, 2026-12-04), so the CPU keeps conv2d then relu there.
  virtual bool conv2d_forward_relu_trains() const { return false; }
  // dx from dy and w.
  virtual void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) = 0;
  // dw (and db when defined) from x and dy.
  virtual void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                      Tensor& db) = 0;
  // y = max over each window; argmax (int32, same shape as y, may be undefined) receives
  // the flat index h * W + w of the first maximum in the window, for backward.
  virtual void max_pool2d_forward(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) = 0;
  // dx receives dy at the recorded argmax positions (zero elsewhere); p is the forward's
  // geometry, so overlapping windows can gather rather than race.
  virtual void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx) = 0;
  // Adaptive average pooling, NHWC; y's shape gives the output grid (kernels/common/pool.h).
  virtual void adaptive_avg_pool2d_forward(const Tensor& x, Tensor& y) = 0;
  // dx (every element written) from dy; dx's shape gives the input grid.
  virtual void adaptive_avg_pool2d_backward(const Tensor& dy, Tensor& dx) = 0;
  // Batch-norm statistics of x [N, H, W, C] per channel over its N*H*W rows (two or more):
  // mean and biased variance ([C]), reduced in double, two-pass (kernels/common/batch_norm.h).
  // Defined running_mean/running_var are updated in place (PyTorch's momentum rule).
  virtual void batch_norm_stats(const Tensor& x, float momentum, Tensor& mean, Tensor& var, Tensor& running_mean,
                                Tensor& running_var) = 0;
  // y = gamma * (x - mean) / sqrt(var + eps) + beta per channel; gamma/beta undefined: 1/0.
  virtual void batch_norm_forward(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& gamma,
                                  const Tensor& beta, float eps, Tensor& y) = 0;
  // dgamma = row sums of dy * x_hat, dbeta = row sums of dy, dx through the batch statistics
  // (training) or with mean/var constant; each skipped when undefined. x may be undefined
  // when neither dgamma nor a training-form dx is asked for.
  virtual void batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& var,
                                   const Tensor& gamma, float eps, bool training, Tensor& dx, Tensor& dgamma,
                                   Tensor& dbeta) = 0;
  // y = x w^T + b. x: [N, in], w: [out, in], b: [out] or undefined, y: [N, out].
  virtual void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) = 0;
  // dx = dy w, dw = dy^T x, db = column sums of dy; each skipped when undefined.
  virtual void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor& dx, Tensor& dw,
                               Tensor& db) = 0;
  // Row-wise softmax (or log-softmax) over the last dimension of a [rows, cols] view.
  virtual void softmax(const Tensor& x, bool log, Tensor& y) = 0;
  // Backward of softmax (or log-softmax) given its output y.
  virtual void softmax_backward(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) = 0;
  // loss[0] = mean over rows of -log softmax(logits)[label]. labels: int32 or int64 [rows].
  // Out-of-range labels throw kiln::Error.
  virtual void softmax_cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& loss) = 0;
  // dlogits = (softmax(logits) - onehot(labels)) * dloss[0] / rows. dloss stays on the
  // device so backward never waits for the host.
  virtual void softmax_cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                              Tensor& dlogits) = 0;
  // out[0] = sum of x: float32 accumulated in double, in an order independent of thread count;
  // int32 or int64 into an int64 out, exact, wrapping as two's complement (torch's).
  virtual void sum(const Tensor& x, Tensor& out) = 0;
  // out[0] = sum of x^2.
  virtual void sum_squares(const Tensor& x, Tensor& out) = 0;
  // out[r] = the position in row r of x [rows, cols] (float32, 0 < cols < 2^32) of its first
  // maximum (op maximum) or minimum (op minimum), a NaN beating every number
  // (kernels/common/sort_key.h's extreme_key; torch.argmax and argmin); out [rows] int64.
  virtual void arg_extreme(BinaryOp op, const Tensor& x, Tensor& out) = 0;
  // idx[r, :] = the positions of row r's first k entries in sorted order, ascending or
  // descending (x [rows, n] float32 with n < 2^32, idx [rows, k] int64, k <= n, not empty): the
  // order of kernels/common/sort_key.h (NaN largest, -0 equal to 0, equal entries by position),
  // so every backend gives the same indices. sort, argsort and topk.
  virtual void argsort_rows(const Tensor& x, int64_t k, bool descending, Tensor& idx) = 0;
  // y[o, k, i] = the sum of x[o, j, i] over j <= k (j >= k when reverse: cumsum's gradient), x
  // and y [outer, n, inner] of one dtype, float32 or bfloat16, summed as kernels/common/scan.h
  // says so that every backend gives the same bits.
  virtual void cumsum(const Tensor& x, bool reverse, Tensor& y) = 0;
  // One update over every parameter in `params`.
  virtual void sgd_update(std::span<SgdParamRef> params, const SgdOptions& opt) = 0;
  // out[i] = lut[i % C][u8[i]] with C = lut.dim(0): uint8 pixels to network inputs through
  // a per-channel table (the input convention), so a loader can ship bytes to the device.
  virtual void lut_u8(const Tensor& u8, const Tensor& lut, Tensor& out) = 0;
  // out[i, y, x, c] = lut[c][atlas[off_i + ((y0_i + y) * w_i + x0_i + (flip_i ? S-1-x : x)) * 3 + c]]
  // with S = out.dim(1) and row i of desc (int64 [n, 6] on this device: off, h, w, y0, x0,
  // flip). The caller has checked every window against its image and the atlas.
  virtual void crop_flip_lut_u8(const Tensor& atlas, const Tensor& desc, const Tensor& lut, Tensor& out) = 0;
  // One Adam update over every parameter in `params`; `step` counts from 1 (bias correction).
  virtual void adam_update(std::span<AdamParamRef> params, const AdamOptions& opt, int64_t step) = 0;

  // ---- Graph capture (train/step_graph.h): record a step once, replay it per batch ----
  // Starts recording, instead of running, the work this thread queues on device `index`;
  // other threads' work on it waits until the capture ends. rng: the dropout stream's
  // position now (null: no dropout may run while recording); a recorded dropout reads its
  // position from device memory that replay_graph writes, so every replay draws fresh
  // masks. Ops must not wait for the host while recording (a label check is skipped then).
  // Returns "" once recording, else why not; by default this backend cannot record.
  virtual std::string begin_graph_capture(int index, const PhiloxState* rng) {
    (void)index, (void)rng;
    return std::string("the ") + name() + " backend cannot record graphs (CUDA graphs need a CUDA device)";
  }
  // Ends this thread's recording: the graph, or why there is none (an error during the
  // capture, an illegal host sync, memory made inside that outlives it). Either way the
  // device is usable again and its error state is clear.
  virtual GraphCapture end_graph_capture(int index) {
    (void)index;
    return GraphCapture{nullptr, std::string("the ") + name() + " backend has no capture under way"};
  }
  // Queues one replay of `graph` on its device; recorded dropout continues the stream at `rng`
  // (the caller advances its generator by what the capture drew). Returns "" when queued, or
  // why the launch was refused while nothing ran and the device stays usable (out of memory
  // for the graph's own allocations), so the caller may do the work eagerly; other failures throw.
  virtual std::string replay_graph(DeviceGraph& graph, PhiloxState rng) {
    (void)graph, (void)rng;
    KILN_FAIL("the ", name(), " backend cannot replay graphs");
  }

  // ---- Hand-offs with other libraries' streams (DLPack). `stream` is a handle as DLPack
  // passes it: on CUDA 1 is the legacy default stream, 2 the per-thread default, else a
  // cudaStream_t. Both only order work on the device; the host does not wait. ----
  // Work queued on `stream` from now on waits for the work kiln has queued on device `index`.
  virtual void stream_waits_for_kiln(int index, std::uintptr_t stream) { (void)index, (void)stream; }
  // Work kiln queues on device `index` from now on (frees included) waits for the work
  // queued so far on `stream`.
  virtual void kiln_waits_for_stream(int index, std::uintptr_t stream) { (void)index, (void)stream; }
  // The handle of kiln's compute stream on device `index` (0 where there are no streams),
  // for a producer that orders its work before kiln's (DLPack's __dlpack__(stream=...)).
  virtual std::uintptr_t stream_handle(int index) { return (void)index, 0; }
};

// The process-wide compute options (read by backends at each op).
ComputeOptions& compute_options();
// The 0|1 environment switch `name` (`fallback` when unset); any other value is an error
// naming the switch and what 1 and 0 do (what_1, what_0: "the default" goes in one of them).
bool env_switch(const char* name, bool fallback, const char* what_1, const char* what_0);
// The current TF32 mode by its KILN_TF32 name ("none", "conv", "all"; "gemm" when a program
// set GEMMs alone), for reports and for a peer that must match it.
const char* tf32_mode();
// The GPU math settings in words, each with the variable that changes it (TF32, conv
// algorithm search, determinism, cuDNN API), for the first lines of a GPU run.
std::string gpu_math_summary();

// The GPU math switches by their variables' values (KILN_TF32, KILN_CONV_SEARCH,
// KILN_DETERMINISTIC, KILN_CONV_API, KILN_CONV_FUSE), for programs that set them at run time; an empty
// field leaves its switch as it is.
struct GpuMathSettings {
  std::optional<std::string> tf32;         // "none", "conv", "all"
  std::optional<std::string> conv_search;  // "heuristic", "exhaustive"
  std::optional<bool> deterministic;
  std::optional<std::string> conv_api;     // "legacy", "graph"
  std::optional<bool> conv_fuse;           // conv + bias + ReLU as one graph (conv_fuse())
};
// Refuses options that contradict each other (deterministic algorithms with exhaustive
// search), naming both switches; backends call it before honouring options a program set.
void check_compute_options(const ComputeOptions& o);
// Applies them all or none: an unknown value, or deterministic with exhaustive search, is an
// error in the environment's words and changes nothing. Takes effect from the next op.
void set_gpu_math(const GpuMathSettings& s);

// Usable devices of a type: 0 when no backend is built or no device is present.
int device_count(DeviceType type);
// Waits for all queued work on `device`.
void synchronize(Device device);
// Orders another library's stream after kiln's queued work, and kiln's after its, on the
// device (Backend::stream_waits_for_kiln, kiln_waits_for_stream); no-ops on the CPU.
void stream_waits_for_kiln(Device device, std::uintptr_t stream);
void kiln_waits_for_stream(Device device, std::uintptr_t stream);
// kiln's compute stream on `device` as a DLPack stream handle (0 on the CPU).
std::uintptr_t stream_handle(Device device);
// Memory in use on `device` and its peak since the last reset.
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);
// The model of `device` for reports (Backend::device_name).
std::string device_name(Device device);
// How long the work fn queues on `device` takes, in ms (Backend::time_ms): benchmarks
// time GPU work without reaching into the backend.
double time_ms(Device device, const std::function<void()>& fn);

// Installs the backend for a device type (each backend does this for itself at load);
// returns the one it replaces, if any.
Backend* register_backend(DeviceType type, Backend* backend);
// True when a backend for `type` is registered.
bool has_backend(DeviceType type);
// The backend serving `device`; throws kiln::Error naming the device when there is none.
Backend& backend_for(Device device);

}  // namespace kiln
