// Convolution on the GPU through cuDNN's legacy convolution API, directly in kiln's
// layouts: activations NHWC, filters OHWI (cuDNN's KRSC, filter format NHWC), so no
// transposes. fp32 may use TF32 tensor cores unless KILN_TF32=none (compute_options().conv_tf32).
// Descriptors and the chosen algorithm are built once per (device, shape, direction,
// options, dtype) and cached. KILN_DETERMINISTIC=1 admits only the algorithms cuDNN's
// ranking marks CUDNN_DETERMINISTIC (the others use atomics and may differ run to run).
// bfloat16 (forward, backward-data, backward-filter): every tensor is CUDNN_DATA_BFLOAT16
// and the convolution computes in CUDNN_DATA_FLOAT (fp32 accumulation) with tensor-op math
// allowed, algorithm from the same search; the forward's bias is added afterwards in fp32
// and rounded to bf16 again, the filter gradient's bias part is dy's column sum.
// With KILN_CONV_API=graph (core/conv_api.h) every convolution first tries cuDNN's graph
// API (cuda_conv_graph.cpp) under the same key, and conv2d_forward_relu fuses conv + bias
// + ReLU there; a key that gets no graph plan runs here, on the legacy API, as before.
#include "kernels/cuda/cuda_conv.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/conv_api.h"
#include "core/ops.h"  // window_out_size
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_conv_graph.h"
#include "kernels/cuda/cuda_conv_key.h"

namespace kiln::cuda {
namespace {

const char* forward_algo_name(int a) {
  static const char* names[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                "FFT",           "FFT_TILING",            "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < CUDNN_CONVOLUTION_FWD_ALGO_COUNT ? names[a] : "?";
}

const char* backward_data_algo_name(int a) {
  static const char* names[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT ? names[a] : "?";
}

const char* backward_filter_algo_name(int a) {
  static const char* names[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  return a >= 0 && a < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT ? names[a] : "?";
}

const char* algo_name(Direction d, int a) {
  switch (d) {
    case Direction::forward: return forward_algo_name(a);
    case Direction::backward_data: return backward_data_algo_name(a);
    case Direction::backward_filter: return backward_filter_algo_name(a);
  }
  return "?";
}

const char* math_name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op-allow-conversion";
    case CUDNN_FMA_MATH: return "fma";
  }
  return "?";
}

// Strict fp32 admits FMA kernels only (the descriptor stays CUDNN_FMA_MATH; some versions
// report such kernels as DEFAULT). TF32, and bf16 data, admit tensor cores (tensor_ops)
// but never a down-conversion of the operands.
bool math_allowed(cudnnMathType_t m, bool tensor_ops) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  return tensor_ops || m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
}

int to_int(int64_t v, const char* what) {
  KILN_CHECK(v >= 0 && v <= INT_MAX, current_op(), ": ", what, " = ", v, " does not fit cuDNN's int dimensions");
  return static_cast<int>(v);
}

// cuDNN's 4-d descriptors index a whole tensor with int: over 2^31 - 1 elements it answers
// NOT_SUPPORTED with no reason (VGG16's conv1_2, 224 x 224 x 64, from batch 669). Said here,
// with the batch that fits.
void check_elements(const char* what, int64_t n, int64_t h, int64_t w, int64_t c) {
  const int64_t per_image = std::max<int64_t>(1, h * w * c);
  KILN_CHECK(n * per_image <= INT_MAX, current_op(), ": ", what, " [", n, ", ", h, ", ", w, ", ", c, "] has ",
             n * per_image, " elements, over the 2^31 - 1 cuDNN's descriptors index; split the batch (at most ",
             INT_MAX / per_image, " images of this shape per call)");
}

// ---- RAII descriptors (destroy statuses are ignored: nothing useful to do at teardown) ----

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { KILN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { KILN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { KILN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// ---- the per-shape plan ----

// x_shape: [N, H, W, C] (x or dx); w_shape: [O, KH, KW, C] (w or dw).
ConvKey make_key(int device, Direction dir, const Shape& x_shape, const Shape& w_shape, const Conv2dParams& p) {
  const ComputeOptions& opt = compute_options();
  check_compute_options(opt);
  ConvKey k{device,      dir,         x_shape[0], x_shape[1], x_shape[2], x_shape[3],
            w_shape[0],  w_shape[1],  w_shape[2], p.stride_h, p.stride_w, p.pad_h,
            p.pad_w,     opt.conv_tf32, opt.exhaustive_conv_search};
  k.deterministic = opt.deterministic;
  return k;
}

// The key of a convolution whose tensors hold `dtype` (float32 or bfloat16; TF32 does not
// apply to bf16 data, which admits tensor cores anyway).
ConvKey make_typed_key(DType dtype, int device, Direction dir, const Shape& x_shape, const Shape& w_shape,
                       const Conv2dParams& p) {
  ConvKey k = make_key(device, dir, x_shape, w_shape, p);
  if (dtype == DType::bf16) {
    k.tf32 = false;
    k.bf16 = true;
  }
  return k;
}

struct ConvPlan {
  TensorDesc x, y;  // x: [N, H, W, C], y: [N, OH, OW, O], both NHWC
  FilterDesc w;     // [O, KH, KW, C], KRSC
  ConvDesc conv;
  int algo = 0;     // the direction's cudnnConvolution*Algo_t
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace_bytes = 0;
};

// Descriptors for the key, checked against the output shape the caller allocated.
std::unique_ptr<ConvPlan> make_descriptors(const ConvKey& k, const Shape& y_shape) {
  auto plan = std::make_unique<ConvPlan>();
  // The data type of x, w and y; the convolution itself always computes in fp32.
  const cudnnDataType_t data = k.bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  check_elements("input x", k.n, k.h, k.w, k.c);
  KILN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x.d, CUDNN_TENSOR_NHWC, data, to_int(k.n, "N"),
                                              to_int(k.c, "C"), to_int(k.h, "H"), to_int(k.w, "W")));
  KILN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w.d, data, CUDNN_TENSOR_NHWC, to_int(k.o, "O"),
                                              to_int(k.c, "C"), to_int(k.kh, "KH"), to_int(k.kw, "KW")));
  KILN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv.d, to_int(k.ph, "pad_h"), to_int(k.pw, "pad_w"),
                                                   to_int(k.sh, "stride_h"), to_int(k.sw, "stride_w"), 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  plan->math = k.tensor_ops() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv.d, plan->math));
  int on = 0, oc = 0, oh = 0, ow = 0;
  KILN_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv.d, plan->x.d, plan->w.d, &on, &oc, &oh, &ow));
  KILN_CHECK(y_shape.rank() == 4 && y_shape[0] == on && y_shape[1] == oh && y_shape[2] == ow && y_shape[3] == oc,
             current_op(), ": cuDNN computes output [", on, ", ", oh, ", ", ow, ", ", oc, "] for ", k.str(),
             " but the output tensor is ", y_shape);
  check_elements("output y", on, oh, ow, oc);
  KILN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y.d, CUDNN_TENSOR_NHWC, data, on, oc, oh, ow));
  return plan;
}

// One entry of cuDNN's ranking, whatever the direction.
struct Candidate {
  int algo;
  cudnnStatus_t status;
  float ms;
  size_t memory;
  cudnnMathType_t math;
  cudnnDeterminism_t determinism;
};

template <typename Perf>
std::vector<Candidate> to_candidates(const std::vector<Perf>& r, int count) {
  std::vector<Candidate> out;
  for (int i = 0; i < std::min<int>(count, static_cast<int>(r.size())); ++i)
    out.push_back(
        {static_cast<int>(r[i].algo), r[i].status, r[i].time, r[i].memory, r[i].mathType, r[i].determinism});
  return out;
}

// cuDNN's heuristic ranking (no GPU work).
std::vector<Candidate> heuristic_candidates(Direction d, cudnnHandle_t h, const ConvPlan& p) {
  int max = 0, got = 0;
  switch (d) {
    case Direction::forward: {
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> r(std::max<int>(max, CUDNN_CONVOLUTION_FWD_ALGO_COUNT));
      KILN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.d, p.w.d, p.conv.d, p.y.d,
                                                              static_cast<int>(r.size()), &got, r.data()));
      return to_candidates(r, got);
    }
    case Direction::backward_data: {
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> r(std::max<int>(max, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT));
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w.d, p.y.d, p.conv.d, p.x.d,
                                                                   static_cast<int>(r.size()), &got, r.data()));
      return to_candidates(r, got);
    }
    case Direction::backward_filter: {
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> r(
          std::max<int>(max, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT));
      KILN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x.d, p.y.d, p.conv.d, p.w.d,
                                                                     static_cast<int>(r.size()), &got, r.data()));
      return to_candidates(r, got);
    }
  }
  return {};
}

// cuDNN's measured ranking: runs every algorithm once on the real buffers (the output
// buffer is overwritten; callers recompute it afterwards).
std::vector<Candidate> find_candidates(Direction d, cudnnHandle_t h, const ConvPlan& p, const ConvData& data,
                                       void* ws, size_t ws_bytes) {
  int got = 0;
  switch (d) {
    case Direction::forward: {
      std::vector<cudnnConvolutionFwdAlgoPerf_t> r(CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
      KILN_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, p.x.d, data.x, p.w.d, data.w, p.conv.d, p.y.d,
                                                              data.y, static_cast<int>(r.size()), &got, r.data(), ws,
                                                              ws_bytes));
      return to_candidates(r, got);
    }
    case Direction::backward_data: {
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> r(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
      KILN_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, p.w.d, data.w, p.y.d, data.y, p.conv.d, p.x.d,
                                                                   data.x, static_cast<int>(r.size()), &got,
                                                                   r.data(), ws, ws_bytes));
      return to_candidates(r, got);
    }
    case Direction::backward_filter: {
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> r(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
      KILN_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p.x.d, data.x, p.y.d, data.y, p.conv.d,
                                                                     p.w.d, data.w, static_cast<int>(r.size()), &got,
                                                                     r.data(), ws, ws_bytes));
      return to_candidates(r, got);
    }
  }
  return {};
}

// Workspace an algorithm needs under the descriptor's current math type; a status, not a
// throw, because unsupported algorithms are expected while ranking.
cudnnStatus_t workspace_size(Direction d, cudnnHandle_t h, const ConvPlan& p, int algo, size_t* bytes) {
  *bytes = 0;
  switch (d) {
    case Direction::forward:
      return cudnnGetConvolutionForwardWorkspaceSize(h, p.x.d, p.w.d, p.conv.d, p.y.d,
                                                     static_cast<cudnnConvolutionFwdAlgo_t>(algo), bytes);
    case Direction::backward_data:
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w.d, p.y.d, p.conv.d, p.x.d,
                                                          static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), bytes);
    case Direction::backward_filter:
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x.d, p.y.d, p.conv.d, p.w.d,
                                                            static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), bytes);
  }
  return CUDNN_STATUS_BAD_PARAM;
}

int algo_count(Direction d) {
  switch (d) {
    case Direction::forward: return CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    case Direction::backward_data: return CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
    case Direction::backward_filter: return CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
  }
  return 0;
}

}  // namespace

size_t conv_workspace_share(const ConvKey& k) {
  const int64_t oh = window_out_size(k.h, k.kh, k.sh, k.ph), ow = window_out_size(k.w, k.kw, k.sw, k.pw);
  const int64_t largest = std::max({k.n * k.h * k.w * k.c, k.n * oh * ow * k.o, k.o * k.kh * k.kw * k.c});
  const double bytes = 2.5 * static_cast<double>(largest) * (k.bf16 ? 2.0 : 4.0);
  return std::clamp(static_cast<size_t>(std::min(bytes, 1e18)), size_t{1} << 30, kMaxConvWorkspaceBytes);
}

size_t conv_workspace_limit(const ConvKey& k) {
  // While recording a CUDA graph, no query the capture might refuse: a shape first met there
  // (heuristic search) gets its share, as a plan made eagerly on an idle GPU would.
  if (capturing()) return conv_workspace_share(k);
  size_t free_bytes = 0, total_bytes = 0;
  int current = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&current));
  if (current != k.device) KILN_CUDA_CHECK(cudaSetDevice(k.device));  // cudaMemGetInfo reads the current device
  const cudaError_t got = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (current != k.device) KILN_CUDA_CHECK(cudaSetDevice(current));
  KILN_CUDA_CHECK(got);
  // What kiln's pool holds unused is free to kiln too (the pool keeps freed blocks): counted
  // out, the budget would shrink as a run warms up, and shapes first met later would be
  // searched with less workspace than the first.
  uint64_t reserved = 0, used = 0;
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(context(k.device).pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(context(k.device).pool, cudaMemPoolAttrUsedMemCurrent, &used));
  const size_t idle = reserved > used ? static_cast<size_t>(reserved - used) : 0;
  return std::min(conv_workspace_share(k), (free_bytes + idle) / 2);
}

bool conv_log_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_CONV_LOG");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

namespace {

// Scratch for Find: enough for the hungriest algorithm, within conv_workspace_limit.
size_t search_budget(const ConvKey& k, cudnnHandle_t h, const ConvPlan& p) {
  size_t want = 0;
  for (int a = 0; a < algo_count(k.dir); ++a) {
    size_t bytes = 0;
    if (workspace_size(k.dir, h, p, a, &bytes) == CUDNN_STATUS_SUCCESS) want = std::max(want, bytes);
  }
  return std::min(want, conv_workspace_limit(k));
}

// Picks the first admissible candidate (cuDNN ranks fastest first) and leaves its math
// type on the descriptor; throws, listing what cuDNN offered, when none qualifies.
void pick(const ConvKey& k, cudnnHandle_t h, const std::vector<Candidate>& cands, size_t ws_limit, ConvPlan& p) {
  const cudnnMathType_t base = p.math;
  for (const Candidate& c : cands) {
    if (c.status != CUDNN_STATUS_SUCCESS || !math_allowed(c.math, k.tensor_ops())) continue;
    if (k.deterministic && c.determinism != CUDNN_DETERMINISTIC) continue;
    // Under TF32 or bf16 the descriptor takes the candidate's math type (cuDNN needs
    // algorithm and math type together); strict fp32 keeps FMA whatever the candidate reports.
    const cudnnMathType_t math = k.tensor_ops() ? c.math : CUDNN_FMA_MATH;
    KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv.d, math));
    size_t bytes = 0;
    if (workspace_size(k.dir, h, p, c.algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    bytes = std::max(bytes, c.memory);
    if (bytes > ws_limit) continue;
    p.algo = c.algo;
    p.math = math;
    p.workspace_bytes = bytes;
    return;
  }
  KILN_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv.d, base));
  std::ostringstream os;
  for (const Candidate& c : cands)
    os << "\n  " << algo_name(k.dir, c.algo) << ": " << cudnnGetErrorString(c.status) << ", math "
       << math_name(c.math) << ", workspace " << c.memory << " bytes"
       << (c.status == CUDNN_STATUS_SUCCESS && c.determinism != CUDNN_DETERMINISTIC ? ", non-deterministic" : "");
  KILN_FAIL(current_op(), ": cuDNN offers no usable ", direction_name(k.dir), " algorithm for ", k.str(),
            " (workspace limit ", ws_limit, " bytes", (k.deterministic ? "; KILN_DETERMINISTIC=1 admits only "
            "deterministic ones: unset it to allow the others" : ""), "); candidates:",
            (cands.empty() ? " none" : os.str()));
}

std::mutex& cache_mutex() {
  static std::mutex mu;
  return mu;
}

std::map<ConvKey, std::unique_ptr<ConvPlan>>& cache() {
  // Never destroyed: a thread still running at exit (a Python daemon thread in kiln.train) may
  // use a plan while static destructors run; the process's end reclaims it.
  static auto& c = *new std::map<ConvKey, std::unique_ptr<ConvPlan>>;
  return c;
}

// KILN_CONV_LOG's line for a legacy plan: what was chosen among the candidates.
void log_plan(const ConvKey& k, const std::vector<Candidate>& cands, const ConvPlan& p) {
  std::ostringstream os;
  for (const Candidate& c : cands)
    if (c.status == CUDNN_STATUS_SUCCESS)
      os << " " << algo_name(k.dir, c.algo) << (k.exhaustive ? "=" + std::to_string(c.ms) + "ms" : std::string()) << "/"
         << (c.memory >> 20) << "MiB";
  std::fprintf(stderr, "kiln: conv plan: %s %s: legacy %s (math %s, workspace %zu MiB); %s:%s\n",
               direction_name(k.dir), k.str().c_str(), algo_name(k.dir, p.algo), math_name(p.math),
               p.workspace_bytes >> 20, k.exhaustive ? "cuDNN's Find timed" : "cuDNN's heuristics ranked",
               os.str().c_str());
}

// The cached plan for the key, chosen on first use (Find runs on `data`, outside the lock).
ConvPlan& plan_for(const ConvKey& k, const Shape& y_shape, cudnnHandle_t h, const ConvData& data) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    auto it = cache().find(k);
    if (it != cache().end()) return *it->second;
  }
  KILN_CHECK(!(k.exhaustive && capturing()), current_op(), ": no plan yet for ", k.str(), " while recording a CUDA "
             "graph (cudnnFind runs and times every algorithm): run the step eagerly once before recording");
  const detail::PlanTimer timed;
  std::unique_ptr<ConvPlan> plan = make_descriptors(k, y_shape);
  std::vector<Candidate> cands;
  if (k.exhaustive) {
    const size_t budget = search_budget(k, h, *plan);
    Workspace ws(k.device, budget);
    cands = find_candidates(k.dir, h, *plan, data, ws.data(), budget);
    pick(k, h, cands, budget, *plan);
  } else {
    cands = heuristic_candidates(k.dir, h, *plan);
    pick(k, h, cands, conv_workspace_limit(k), *plan);
  }
  if (conv_log_enabled()) log_plan(k, cands, *plan);
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto [it, inserted] = cache().emplace(k, std::move(plan));  // another thread may have won: use its plan
  (void)inserted;
  return *it->second;
}

// Runs the convolution of k on d: through a graph plan when KILN_CONV_API=graph gives one
// (cuda_conv_graph.cpp), else through the legacy plan. y_shape: the [N, OH, OW, O] side.
void convolve(const ConvKey& k, const Shape& y_shape, const ConvData& d) {
  if (graph_convolution(k, y_shape, d)) return;
  cudnnHandle_t h = cudnn_handle(k.device);
  ConvPlan& plan = plan_for(k, y_shape, h, d);
  Workspace ws(k.device, plan.workspace_bytes);
  const float one = 1.0f, zero_f = 0.0f;  // float scaling factors: cuDNN's rule for every non-double type
  switch (k.dir) {
    case Direction::forward:
      KILN_CUDNN_CHECK(cudnnConvolutionForward(h, &one, plan.x.d, d.x, plan.w.d, d.w, plan.conv.d,
                                               static_cast<cudnnConvolutionFwdAlgo_t>(plan.algo), ws.data(),
                                               plan.workspace_bytes, &zero_f, plan.y.d, d.y));
      return;
    case Direction::backward_data:
      KILN_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, plan.w.d, d.w, plan.y.d, d.y, plan.conv.d,
                                                    static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.algo), ws.data(),
                                                    plan.workspace_bytes, &zero_f, plan.x.d, d.x));
      return;
    case Direction::backward_filter:
      KILN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, plan.x.d, d.x, plan.y.d, d.y, plan.conv.d,
                                                      static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.algo),
                                                      ws.data(), plan.workspace_bytes, &zero_f, plan.w.d, d.w));
      return;
  }
}

void zero(void* p, size_t bytes, cudaStream_t s) {
  if (bytes) KILN_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s));
}

// cuDNN's bf16 tensor-core kernels take channels in multiples of 8. With fewer, as in a
// network's first layer (an image's 3), the H200 (2026-12-04) ran VGG16's conv1_1 at batch
// 256 in 2.29 ms, more than conv1_2 (1.96 ms), which does 21x its FLOPs. Such a forward
// runs on copies of x and w padded with zero channels to 8: every added term is 0 x 0, so
// the sum is the same up to the order cuDNN adds in, as with any other engine.
// KILN_CONV_PAD_CHANNELS=0 turns this off.
constexpr int64_t kPadChannelsTo = 8;

bool pad_channels_enabled() {
  static const bool on = env_switch("KILN_CONV_PAD_CHANNELS", true,
                                    "pad a bf16 convolution's channels to 8 for tensor cores, the default",
                                    "no padding");
  return on;
}

// The padded copies of one convolution's x and w, alive while it runs.
struct ChannelPad {
  std::optional<Workspace> x, w;
};

// When k is a bf16 forward with fewer than kPadChannelsTo channels: copies x and w into
// `pad` with zero channels up to it and points k and d at the copies.
void pad_channels_for_tensor_cores(ConvKey& k, ConvData& d, ChannelPad& pad, cudaStream_t stream) {
  if (!k.bf16 || k.dir != Direction::forward || k.c >= kPadChannelsTo || !pad_channels_enabled()) return;
  const int64_t x_rows = k.n * k.h * k.w, w_rows = k.o * k.kh * k.kw;
  pad.x.emplace(k.device, static_cast<size_t>(x_rows * kPadChannelsTo) * sizeof(BFloat16));
  pad.w.emplace(k.device, static_cast<size_t>(w_rows * kPadChannelsTo) * sizeof(BFloat16));
  launch_pad_columns(static_cast<const BFloat16*>(d.x), x_rows, k.c, kPadChannelsTo,
                     static_cast<BFloat16*>(pad.x->data()), stream);
  launch_pad_columns(static_cast<const BFloat16*>(d.w), w_rows, k.c, kPadChannelsTo,
                     static_cast<BFloat16*>(pad.w->data()), stream);
  k.c = kPadChannelsTo;
  d.x = pad.x->data();
  d.w = pad.w->data();
}

// y += b per channel (y is [.., O] in b's dtype), then ReLU when asked: one pass over y.
void add_bias(const Tensor& b, Tensor& y, cudaStream_t stream, bool relu) {
  const int64_t rows = y.numel() / y.dim(3);
  if (y.dtype() == DType::bf16) launch_add_bias(y.data<BFloat16>(), b.data<BFloat16>(), rows, y.dim(3), stream, relu);
  else launch_add_bias(y.data<float>(), b.data<float>(), rows, y.dim(3), stream, relu);
}

// conv2d_forward in bfloat16: x, w, b and y bf16 (core checked that they match), cuDNN
// accumulating in fp32 and rounding y once; a bias then costs a second rounding (y + b in
// fp32, rounded to bf16), which the CPU's fused oneDNN bias does not: at most one more
// bf16 half-ulp of |y + b|. relu: the ReLU joins the bias pass (b defined).
void conv2d_forward_bf16(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y,
                         bool relu) {
  const int dev = x.device().index;
  OpScope scope(relu ? "conv2d+relu (bfloat16)" : "conv2d (bfloat16)", dev);
  KILN_CHECK(w.dtype() == DType::bf16 && y.dtype() == DType::bf16 && (!b.defined() || b.dtype() == DType::bf16),
             current_op(), ": x is bfloat16, so w, b and y must be too; got w ", w.description(), ", y ",
             y.description(), (b.defined() ? ", b " + b.description() : std::string()));
  if (y.numel() == 0) {
    scope.done();
    return;
  }
  if (x.numel() == 0 || w.numel() == 0) {
    zero(y.raw_data(), y.nbytes(), scope.stream());  // C = 0: an empty sum (all-zero bits are bf16 +0)
  } else {
    ConvKey k = make_typed_key(DType::bf16, dev, Direction::forward, x.shape(), w.shape(), p);
    ConvData d{x.raw_data(), w.raw_data(), y.raw_data()};
    ChannelPad pad;
    pad_channels_for_tensor_cores(k, d, pad, scope.stream());
    convolve(k, y.shape(), d);
  }
  if (b.defined()) add_bias(b, y, scope.stream(), relu);
  scope.done();
}

// conv2d_forward, and with relu (b defined) conv2d_forward_relu's unfused path: cuDNN's
// convolution, then bias and ReLU in one pass over y.
// x: [N, H, W, C], w: [O, KH, KW, C], b: [O] or undefined, y: [N, OH, OW, O]
void conv2d_forward_f32(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p, Tensor& y,
                        bool relu) {
  const int dev = x.device().index;
  OpScope scope(relu ? "conv2d+relu" : "conv2d", dev);
  float* py = y.data<float>();
  if (y.numel() == 0) {
    scope.done();
    return;
  }
  if (x.numel() == 0 || w.numel() == 0) {
    zero(py, y.nbytes(), scope.stream());  // C = 0: an empty sum
  } else {
    convolve(make_key(dev, Direction::forward, x.shape(), w.shape(), p), y.shape(),
             ConvData{x.raw_data(), w.raw_data(), y.raw_data()});
  }
  if (b.defined()) add_bias(b, y, scope.stream(), relu);
  scope.done();
}

// conv + bias + ReLU of k on d, fused (one graph; false when the key has no fused plan) or
// apart (the plain plan, then kiln's bias + ReLU pass over y).
bool conv_bias_relu(const ConvKey& k, const ConvData& d, const Tensor& b, Tensor& y, cudaStream_t stream,
                    bool fused) {
  if (fused) return graph_convolution_bias_relu(k, y.shape(), d, b.raw_data());
  convolve(k, y.shape(), d);
  add_bias(b, y, stream, true);
  return true;
}

// The faster of two runs of fn, in ms on the GPU's clock.
double best_of_two(int dev, const std::function<void()>& fn) {
  return std::min(time_ms(Device::cuda(dev), fn), time_ms(Device::cuda(dev), fn));
}

// Under exhaustive search, whether each key's conv + bias + ReLU runs fused, timed once
// per key (shared by threads; a thread's plans are its own, their timing is not).
std::mutex& fuse_choice_mutex() {
  static std::mutex mu;
  return mu;
}
std::map<ConvKey, bool>& fuse_choices() {
  static auto* m = new std::map<ConvKey, bool>;  // never destroyed, as the plan caches
  return *m;
}

// Whether k's conv + bias + ReLU should run as the fused graph. A fused graph may take only
// engines with a pointwise epilogue: on the H200 (run 3) conv1_2's fused bf16 forward ran
// at 12% of peak. So under exhaustive search, which times every plan anyway, the fused run
// is timed once per key against the plain plan plus kiln's pass, both warmed first, and the
// faster serves the key from then on (KILN_CONV_LOG prints both times). Under heuristic
// search the fused graph serves wherever it has a plan: a timed choice may differ between
// processes, and the two round differently (bf16: fused once, apart twice), so a resumed
// run would no longer equal the uninterrupted one. Leaves y computed by one of the two.
bool fused_is_faster(const ConvKey& k, const ConvData& d, const Tensor& b, Tensor& y, cudaStream_t stream) {
  if (!k.exhaustive) return true;
  if (!graph_buffers_aligned(d, b.raw_data())) return false;  // this call runs apart; the shape is not judged by it
  {
    std::lock_guard<std::mutex> lock(fuse_choice_mutex());
    const auto it = fuse_choices().find(k);
    if (it != fuse_choices().end()) return it->second;
  }
  // Recording a CUDA graph cannot wait for timings; an exhaustive search has refused to
  // record before an eager step, which made this choice.
  if (capturing()) return true;
  bool fused = conv_bias_relu(k, d, b, y, stream, true);  // searches the fused plan; false: it has none
  double fused_ms = 0, apart_ms = 0;
  if (fused) {
    conv_bias_relu(k, d, b, y, stream, false);  // searches the plain plan
    const detail::PlanTimer timed;  // choosing between the two plans is plan time too
    fused_ms = best_of_two(k.device, [&] { fused = conv_bias_relu(k, d, b, y, stream, true) && fused; });
    apart_ms = best_of_two(k.device, [&] { conv_bias_relu(k, d, b, y, stream, false); });
    fused = fused && fused_ms <= apart_ms;  // a fused plan that failed to run has fallen back: apart
    detail::count_conv_api(detail::ConvApiEvent::fuse_timed);
    if (!fused) detail::count_conv_api(detail::ConvApiEvent::fuse_declined);
    if (conv_log_enabled())
      std::fprintf(stderr, "kiln: conv fuse: forward %s: fused graph %.4f ms, convolution then bias + ReLU %.4f ms: "
                   "%s\n", k.str().c_str(), fused_ms, apart_ms, fused ? "fused" : "apart");
  }
  std::lock_guard<std::mutex> lock(fuse_choice_mutex());
  return fuse_choices().emplace(k, fused).first->second;  // another thread may have chosen first: its choice
}

}  // namespace

void CudaBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                 Tensor& y) {
  if (x.dtype() == DType::bf16) return conv2d_forward_bf16(x, w, b, p, y, false);
  conv2d_forward_f32(x, w, b, p, y, false);
}

// Under the graph API, conv + bias + ReLU as one cuDNN graph where a fused plan exists,
// conv_fuse() allows it (KILN_CONV_FUSE) and, under exhaustive search, it timed faster
// (fused_is_faster). Otherwise (legacy, no fused plan, fusion off or slower) with a bias: the
// convolution, then bias and ReLU in one pass over y (PyTorch's eager path makes two).
// Without a bias, or for an empty convolution, false: the caller runs conv2d_forward and
// relu. Core has checked dtypes (x, w, b and y alike) and shapes.
bool CudaBackend::conv2d_forward_relu(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p,
                                      Tensor& y) {
  if (y.numel() == 0 || x.numel() == 0 || w.numel() == 0) return false;
  const bool bf16 = x.dtype() == DType::bf16;
  if (conv_api() != ConvApi::graph) {
    if (!b.defined()) return false;
    if (bf16) conv2d_forward_bf16(x, w, b, p, y, true);
    else conv2d_forward_f32(x, w, b, p, y, true);
    return true;
  }
  if (!b.defined() && !conv_fuse()) return false;  // before padding: the caller's conv2d_forward pads
  const int dev = x.device().index;
  OpScope scope(bf16 ? "conv2d+relu (bfloat16)" : "conv2d+relu", dev);
  ConvKey k = make_typed_key(x.dtype(), dev, Direction::forward, x.shape(), w.shape(), p);
  ConvData d{x.raw_data(), w.raw_data(), y.raw_data()};
  ChannelPad pad;
  pad_channels_for_tensor_cores(k, d, pad, scope.stream());
  bool done = false;
  if (!b.defined()) done = graph_convolution_bias_relu(k, y.shape(), d, nullptr);
  else  // on the copies already padded, fused where that is allowed and pays, else apart
    done = conv_bias_relu(k, d, b, y, scope.stream(), conv_fuse() && fused_is_faster(k, d, b, y, scope.stream())) ||
           conv_bias_relu(k, d, b, y, scope.stream(), false);
  scope.done();
  return done;
}

void CudaBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, const Conv2dParams& p, Tensor& dx) {
  // dy: [N, OH, OW, O], w: [O, KH, KW, C], dx: [N, H, W, C]; all float32 or all bfloat16
  // (fp32 accumulation, one rounding to bf16 on the store, as the CPU's oneDNN).
  const int dev = dy.device().index;
  const DType dt = dy.dtype();
  OpScope scope(dt == DType::bf16 ? "conv2d backward-data (bfloat16)" : "conv2d backward-data", dev);
  KILN_CHECK(w.dtype() == dt && dx.dtype() == dt, current_op(), ": dy is ", dtype_name(dt),
             " so w and dx must be too; got ", w.description(), " and ", dx.description());
  if (dx.numel() == 0) {
    scope.done();
    return;
  }
  if (dy.numel() == 0 || w.numel() == 0) {
    zero(dx.raw_data(), dx.nbytes(), scope.stream());  // all-zero bits: +0 in either dtype
    scope.done();
    return;
  }
  convolve(make_typed_key(dt, dev, Direction::backward_data, dx.shape(), w.shape(), p), dy.shape(),
           ConvData{dx.raw_data(), w.raw_data(), dy.raw_data()});
  scope.done();
}

void CudaBackend::conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Conv2dParams& p, Tensor& dw,
                                         Tensor& db) {
  // x: [N, H, W, C], dy: [N, OH, OW, O], dw: [O, KH, KW, C] (cuDNN's KRSC), db: [O] or
  // undefined; all float32 or all bfloat16 (db then the column sum rounded once to bf16).
  const int dev = x.device().index;
  const DType dt = dy.dtype();
  OpScope scope(dt == DType::bf16 ? "conv2d backward-filter (bfloat16)" : "conv2d backward-filter", dev);
  KILN_CHECK(x.dtype() == dt && dw.dtype() == dt && (!db.defined() || db.dtype() == dt), current_op(), ": dy is ",
             dtype_name(dt), " so x, dw and db must be too; got ", x.description(), ", ", dw.description(),
             db.defined() ? ", " + db.description() : std::string());
  if (dw.numel() > 0) {
    if (x.numel() == 0 || dy.numel() == 0) {
      zero(dw.raw_data(), dw.nbytes(), scope.stream());  // an empty batch contributes nothing
    } else {
      convolve(make_typed_key(dt, dev, Direction::backward_filter, x.shape(), dw.shape(), p), dy.shape(),
               ConvData{x.raw_data(), dw.raw_data(), dy.raw_data()});
    }
  }
  if (db.defined() && db.numel() > 0) {
    const int64_t cols = dy.dim(3), rows = cols > 0 ? dy.numel() / cols : 0;
    if (rows == 0)
      zero(db.raw_data(), db.nbytes(), scope.stream());
    else if (dt == DType::bf16)
      launch_column_sum(dy.data<BFloat16>(), rows, cols, db.data<BFloat16>(), scope.stream());
    else
      launch_column_sum(dy.data<float>(), rows, cols, db.data<float>(), scope.stream());
  }
  scope.done();
}

std::vector<ConvAlgoInfo> conv_forward_candidates(const Tensor& x, const Tensor& w, const Conv2dParams& p) {
  // x: [N, H, W, C], w: [O, KH, KW, C]
  const int dev = x.device().index;
  OpScope scope("conv2d candidates", dev);
  KILN_CHECK(x.rank() == 4 && w.rank() == 4 && x.dim(3) == w.dim(3), current_op(), ": expected x [N, H, W, C] and ",
             "w [O, KH, KW, C], got x ", x.shape(), " and w ", w.shape());
  KILN_CHECK(p.stride_h > 0 && p.stride_w > 0, current_op(), ": strides must be positive");
  KILN_CHECK(x.dtype() == w.dtype() && (x.dtype() == DType::f32 || x.dtype() == DType::bf16), current_op(),
             ": x and w must both be float32 or both bfloat16, got x ", x.description(), " and w ", w.description());
  const int64_t oh = (x.dim(1) + 2 * p.pad_h - w.dim(1)) / p.stride_h + 1;
  const int64_t ow = (x.dim(2) + 2 * p.pad_w - w.dim(2)) / p.stride_w + 1;
  const Shape y_shape{x.dim(0), oh, ow, w.dim(0)};
  KILN_CHECK(y_shape.numel() > 0 && x.numel() > 0 && w.numel() > 0, current_op(), ": empty convolution, x ",
             x.shape(), ", w ", w.shape(), ", output ", y_shape);
  Workspace y(dev, static_cast<size_t>(y_shape.numel()) * dtype_size(x.dtype()));  // scratch output
  const ConvData data{x.raw_data(), w.raw_data(), y.data()};
  cudnnHandle_t h = cudnn_handle(dev);

  const ConvKey k = make_typed_key(x.dtype(), dev, Direction::forward, x.shape(), w.shape(), p);
  const int kiln_algo = plan_for(k, y_shape, h, data).algo;

  // Fresh descriptors so the cached plan's math type is left alone.
  std::unique_ptr<ConvPlan> fresh = make_descriptors(k, y_shape);
  const size_t budget = search_budget(k, h, *fresh);
  Workspace ws(dev, budget);
  const std::vector<Candidate> cands = find_candidates(Direction::forward, h, *fresh, data, ws.data(), budget);

  std::vector<ConvAlgoInfo> out;
  bool marked = false;
  for (const Candidate& c : cands) {
    if (c.status != CUDNN_STATUS_SUCCESS || !math_allowed(c.math, k.tensor_ops())) continue;
    ConvAlgoInfo info;
    info.algo = c.algo;
    info.name = forward_algo_name(c.algo);
    info.ms = c.ms;
    info.workspace = c.memory;
    info.tensor_ops = k.tensor_ops() && c.math != CUDNN_FMA_MATH;
    info.chosen = !marked && c.algo == kiln_algo;
    marked = marked || info.chosen;
    out.push_back(info);
  }
  scope.done();
  return out;
}

}  // namespace kiln::cuda
