// Convolution as cuDNN operation graphs through the backend C API (cudnn_graph.h):
// descriptors are created, given attributes, finalized; an operation graph of one
// convolution (or convolution -> add bias -> ReLU) goes to the engine heuristics (mode A),
// then cuDNN's fallback list, then every other engine by global index; each engine config
// whose numerical notes the math allows is finalized into an execution plan, and the first
// that finalizes within the workspace limit is kept (with exhaustive search on, the fastest
// of the first kSearchPlans from all three sources, each run once to load its kernels and
// once timed: the heuristics alone offer strict fp32 NHWC convolutions one or two engines).
// Tensors keep cuDNN's logical order [N, C, H, W] with the strides of kiln's NHWC memory,
// filters [O, C, KH, KW] with OHWI strides, so nothing is transposed.
//
// Numerical notes, as PyTorch filters them: DOWN_CONVERT_INPUTS (fp32 operands rounded to
// fp16/bf16) and REDUCED_PRECISION_REDUCTION (accumulation below fp32) are never admitted;
// TENSOR_CORE only when the key allows tensor ops (TF32 asked for, or bf16 data);
// NONDETERMINISTIC not when the key asks for deterministic algorithms (KILN_DETERMINISTIC).
//
// Every descriptor a plan was built from lives as long as the plan (GraphPlan::keep).
// Plans are cached per (convolution key, fused, bias, cuDNN handle); a key whose graph
// gets no plan, or whose plan fails to execute, is cached as a fallback: one line on
// stderr, then the legacy API for that key for the rest of the process.
#include "kernels/cuda/cuda_conv_graph.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/conv_api.h"
#include "core/ops.h"  // window_out_size
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_graph.h"

namespace kiln::cuda {
namespace {

constexpr int kSearchPlans = 12;    // plans timed per key under exhaustive search (cudnn.benchmark's spirit)
// cuDNN's engine 0 serves any convolution, slowly: on the H200 (2026-12-04, strict fp32
// VGG16 at batch 64) it took 8.9 ms to 4.7 s where the plan chosen took 0.7 to 11 ms, and
// was never the fastest. The search takes it only when no other engine gives a plan.
constexpr int64_t kReferenceEngine = 0;
constexpr int64_t kAlignment = 16;  // byte alignment every plan assumes of every buffer (checked per call)

// Unique ids of the graph's tensors: the variant pack binds pointers to them.
enum Uid : int64_t { kX = 1, kW = 2, kY = 3, kBias = 4, kConvOut = 5, kBiasOut = 6 };

// A cuDNN call failed while a graph or plan was built: its status and what was being done.
struct GraphFailure {
  cudnnStatus_t status;
  std::string where;
};

// One backend descriptor, destroyed with this object; calls that fail throw GraphFailure.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type) : type_(type) {
    const cudnnStatus_t s = cudnnBackendCreateDescriptor(type, &d_);
    if (s != CUDNN_STATUS_SUCCESS) throw GraphFailure{s, "creating descriptor type " + std::to_string(type)};
  }
  ~Descriptor() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Descriptor(Descriptor&& o) noexcept : d_(std::exchange(o.d_, nullptr)), type_(o.type_) {}
  Descriptor& operator=(Descriptor&& o) noexcept {
    std::swap(d_, o.d_);
    std::swap(type_, o.type_);
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  // Sets attribute `name` to `count` elements of `type` read from `values`.
  Descriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                  const void* values) {
    const cudnnStatus_t s = cudnnBackendSetAttribute(d_, name, type, count, values);
    if (s != CUDNN_STATUS_SUCCESS)
      throw GraphFailure{s, "setting attribute " + std::to_string(name) + " of descriptor type " +
                                std::to_string(type_)};
    return *this;
  }
  // Sets a descriptor-valued attribute (one element).
  Descriptor& set(cudnnBackendAttributeName_t name, const Descriptor& value) {
    cudnnBackendDescriptor_t v = value.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
  }
  Descriptor& finalize() {
    const cudnnStatus_t s = cudnnBackendFinalize(d_);
    if (s != CUDNN_STATUS_SUCCESS) throw GraphFailure{s, "finalizing descriptor type " + std::to_string(type_)};
    return *this;
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  cudnnBackendDescriptorType_t type_;
};

// A tensor in cuDNN's dimension order [n, c, h, w] over NHWC memory (c fastest). Virtual
// tensors are intermediates of a fused graph: never in memory, always fp32.
Descriptor tensor(Uid uid, cudnnDataType_t type, int64_t n, int64_t c, int64_t h, int64_t w, bool is_virtual) {
  Descriptor t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t dims[4] = {n, c, h, w};
  const int64_t strides[4] = {h * w * c, 1, w * c, c};
  const int64_t id = uid;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id);
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &kAlignment);
  if (is_virtual) {
    const bool yes = true;  // CUDNN_TYPE_BOOLEAN is C++ bool
    t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes);
  }
  t.finalize();
  return t;
}

// Cross-correlation with k's stride and padding (the same before and after), no dilation,
// accumulating in fp32.
Descriptor convolution(const ConvKey& k) {
  Descriptor c(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t spatial = 2, dilation[2] = {1, 1}, stride[2] = {k.sh, k.sw}, pad[2] = {k.ph, k.pw};
  c.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute);
  c.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  c.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial);
  c.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation);
  c.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride);
  c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
  c.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad);
  c.finalize();
  return c;
}

// The convolution operation of k.dir: x and w in, y out (forward); dy and w in, dx out
// (backward-data: x's descriptor is dx's, y's is dy's); x and dy in, dw out (backward-filter).
// alpha 1, beta 0: the output is overwritten, as the legacy path does.
Descriptor convolution_op(Direction dir, const Descriptor& conv, const Descriptor& x, const Descriptor& w,
                          const Descriptor& y) {
  const float alpha = 1.0f, beta = 0.0f;  // CUDNN_TYPE_FLOAT: cuDNN's rule for every non-double compute type
  switch (dir) {
    case Direction::forward: {
      Descriptor op(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
      op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
          .finalize();
      return op;
    }
    case Direction::backward_data: {
      Descriptor op(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
      op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
          .finalize();
      return op;
    }
    case Direction::backward_filter: {
      Descriptor op(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
      op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha)
          .set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta)
          .finalize();
      return op;
    }
  }
  throw GraphFailure{CUDNN_STATUS_BAD_PARAM, "an unknown convolution direction"};
}

// A pointwise operation computing in fp32: y = mode(x) or y = mode(x, b).
std::pair<Descriptor, Descriptor> pointwise_op(cudnnPointwiseMode_t mode, const Descriptor& x, const Descriptor* b,
                                               const Descriptor& y) {
  Descriptor pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  const cudnnDataType_t math = CUDNN_DATA_FLOAT;
  pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode)
      .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math)
      .finalize();
  Descriptor op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw).set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
  if (b) op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b);
  op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y).finalize();
  return {std::move(pw), std::move(op)};
}

// What identifies one graph plan. The handle is part of it: plans are finalized against a
// handle, and kiln's handles are per thread.
struct GraphKey {
  ConvKey conv;
  bool fused;  // conv -> (add bias) -> ReLU, forward only
  bool bias;   // the fused graph adds a bias
  uint64_t thread;       // this thread's serial: a dead thread's handle address may come back
  cudnnHandle_t handle;
  bool operator<(const GraphKey& o) const {
    return std::tie(conv, fused, bias, thread) < std::tie(o.conv, o.fused, o.bias, o.thread);
  }
  // "backward-data convolution of x [...], w [...], ...", for messages.
  std::string str() const {
    return (fused ? std::string(bias ? "fused conv + bias + ReLU" : "fused conv + ReLU")
                  : std::string(direction_name(conv.dir)) + " convolution") +
           " of " + conv.str();
  }
};

// One finalized plan and what it needs; `plan` empty: this key runs on the legacy API.
struct GraphPlan {
  std::vector<Descriptor> keep;  // tensors, convolution, operations, graph, engine config
  std::optional<Descriptor> plan;
  int64_t workspace = 0;
  std::atomic<bool> failed{false};  // set when the plan failed to execute: legacy from then on
  bool usable() const { return plan.has_value() && !failed.load(); }
};

// The operation graph of the key, its descriptors appended to g.keep; returns the graph.
cudnnBackendDescriptor_t build_graph(const GraphKey& gk, const Shape& y_shape, GraphPlan& g) {
  const ConvKey& k = gk.conv;
  const cudnnDataType_t data = k.bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  const int64_t oh = y_shape[1], ow = y_shape[2];
  std::vector<Descriptor>& keep = g.keep;
  keep.reserve(16);  // references below stay valid: no reallocation
  const Descriptor& x = keep.emplace_back(tensor(kX, data, k.n, k.c, k.h, k.w, false));
  const Descriptor& w = keep.emplace_back(tensor(kW, data, k.o, k.c, k.kh, k.kw, false));
  const Descriptor& y = keep.emplace_back(tensor(kY, data, k.n, k.o, oh, ow, false));
  const Descriptor& conv = keep.emplace_back(convolution(k));
  std::vector<cudnnBackendDescriptor_t> ops;
  if (!gk.fused) {
    ops.push_back(keep.emplace_back(convolution_op(k.dir, conv, x, w, y)).get());
  } else {
    const Descriptor& conv_out = keep.emplace_back(tensor(kConvOut, CUDNN_DATA_FLOAT, k.n, k.o, oh, ow, true));
    ops.push_back(keep.emplace_back(convolution_op(Direction::forward, conv, x, w, conv_out)).get());
    const Descriptor* relu_in = &conv_out;
    if (gk.bias) {
      const Descriptor& b = keep.emplace_back(tensor(kBias, data, 1, k.o, 1, 1, false));
      const Descriptor& sum = keep.emplace_back(tensor(kBiasOut, CUDNN_DATA_FLOAT, k.n, k.o, oh, ow, true));
      auto [pw, op] = pointwise_op(CUDNN_POINTWISE_ADD, conv_out, &b, sum);
      keep.push_back(std::move(pw));
      ops.push_back(keep.emplace_back(std::move(op)).get());
      relu_in = &sum;
    }
    auto [pw, op] = pointwise_op(CUDNN_POINTWISE_RELU_FWD, *relu_in, nullptr, y);
    keep.push_back(std::move(pw));
    ops.push_back(keep.emplace_back(std::move(op)).get());
  }
  Descriptor& graph = keep.emplace_back(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()), ops.data());
  // No handle: check_graph_descriptors, on a machine without a GPU (cuDNN 9.8+ allows it).
  if (cudnnHandle_t h = gk.handle) graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
  graph.finalize();
  return graph.get();
}

// The engine configs cuDNN's heuristics (`mode`) rank for the graph, best first.
// deviceprop (census_without_device): rank for the GPU it describes instead of this one.
std::vector<Descriptor> engine_configs(cudnnBackendDescriptor_t graph, cudnnBackendHeurMode_t mode,
                                       cudnnBackendDescriptor_t deviceprop = nullptr) {
  Descriptor heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph)
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  if (deviceprop) heur.set(CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &deviceprop);
  heur.finalize();
  int64_t count = 0;
  cudnnStatus_t s = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr);  // the count only
  if (s != CUDNN_STATUS_SUCCESS) throw GraphFailure{s, "counting the heuristics' engine configs"};
  std::vector<Descriptor> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) raw.push_back(cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR).get());
  int64_t got = 0;
  if (count > 0) {
    s = cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                 raw.data());
    if (s != CUDNN_STATUS_SUCCESS) throw GraphFailure{s, "reading the heuristics' engine configs"};
  }
  cfgs.erase(cfgs.begin() + std::clamp<int64_t>(got, 0, count), cfgs.end());
  return cfgs;
}

// Whether the engine of a config may run under k's math (see the file comment); a config
// whose notes cannot be read is not admitted.
bool admissible(cudnnBackendDescriptor_t cfg, const ConvKey& k) {
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e) !=
          CUDNN_STATUS_SUCCESS ||
      n != 1)
    return false;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  int64_t count = 0;
  if (cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &count, notes) != CUDNN_STATUS_SUCCESS)
    return false;
  for (int64_t i = 0; i < std::min<int64_t>(count, CUDNN_NUMERICAL_NOTE_TYPE_COUNT); ++i) {
    if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
    if (notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) return false;
    if (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE && !k.tensor_ops()) return false;
    if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC && k.deterministic) return false;
  }
  return true;
}

// cuDNN's global index of a config's engine; -1 when it cannot be read.
int64_t engine_index(cudnnBackendDescriptor_t cfg) {
  Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0, index = -1;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e) !=
          CUDNN_STATUS_SUCCESS ||
      n != 1 ||
      cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index) !=
          CUDNN_STATUS_SUCCESS)
    return -1;
  return index;
}

// Configs (default knobs) of the graph's engines by global index, skipping those in `skip`
// and those that do not support the graph: what cuDNN has beyond its heuristics' lists.
// The heuristics rank strict fp32 NHWC convolutions poorly (VGG16's conv4_1 forward on the
// H200: mode A admits one engine, the fallback list four, and 81 engines exist), so the
// exhaustive search also times these. The engine descriptors go to `keep`.
std::vector<Descriptor> global_engine_configs(cudnnBackendDescriptor_t graph, const std::vector<int64_t>& skip,
                                              std::vector<Descriptor>& keep,
                                              cudnnBackendDescriptor_t deviceprop = nullptr) {
  int64_t count = 0, n = 0;
  if (cudnnBackendGetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1, &n,
                               &count) != CUDNN_STATUS_SUCCESS)
    return {};
  std::vector<Descriptor> cfgs;
  for (int64_t i = 0; i < count; ++i) {
    if (std::find(skip.begin(), skip.end(), i) != skip.end()) continue;
    try {
      Descriptor engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      engine.set(CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph)
          .set(CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &i);
      if (deviceprop) engine.set(CUDNN_ATTR_ENGINE_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &deviceprop);
      engine.finalize();  // fails for engines that do not support this graph
      Descriptor cfg(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      cfg.set(CUDNN_ATTR_ENGINECFG_ENGINE, engine).finalize();
      keep.push_back(std::move(engine));
      cfgs.push_back(std::move(cfg));
    } catch (const GraphFailure&) {
      continue;
    }
  }
  return cfgs;
}

// The plan search's sources, in the order it asks them (search(), census_without_device).
enum Source : int { kHeuristics, kFallbackList, kEngineList };
constexpr Source kSources[] = {kHeuristics, kFallbackList, kEngineList};

const char* source_name(Source source) {
  return source == kHeuristics ? "heuristics (mode A)" : source == kFallbackList ? "fallback list" : "engine list";
}

// One source's engine configs for the graph: cuDNN's heuristics (mode A) or fallback list,
// or every engine by global index the first two did not offer (`seen`, their engines);
// deviceprop: for the GPU it describes instead of this one.
std::vector<Descriptor> source_configs(Source source, cudnnBackendDescriptor_t graph, const std::vector<int64_t>& seen,
                                       std::vector<Descriptor>& keep, cudnnBackendDescriptor_t deviceprop = nullptr) {
  if (source == kEngineList) return global_engine_configs(graph, seen, keep, deviceprop);
  return engine_configs(graph, source == kHeuristics ? CUDNN_HEUR_MODE_A : CUDNN_HEUR_MODE_FALLBACK, deviceprop);
}

// An execution plan finalized from an engine config, and the workspace it needs.
struct Candidate {
  Descriptor cfg;
  Descriptor plan;
  int64_t workspace;
  int64_t engine = -1;         // cuDNN's global engine index
  const char* source = "";     // source_name of where it came from
  double ms = -1;              // timed under exhaustive search
};

// The plan of one config, or the status that refused it (unsupported configs are expected).
// deviceprop instead of a handle: built for the GPU it describes, never to run here.
std::optional<Candidate> finalize_plan(cudnnHandle_t h, Descriptor&& cfg, cudnnStatus_t& status,
                                       cudnnBackendDescriptor_t deviceprop = nullptr) {
  try {
    Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    cudnnBackendDescriptor_t c = cfg.get();
    if (deviceprop)
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &deviceprop);
    else
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    plan.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c).finalize();
    int64_t ws = 0, n = 0;
    status = cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                      &ws);
    if (status != CUDNN_STATUS_SUCCESS) return std::nullopt;
    if (n != 1 || ws < 0 || static_cast<uint64_t>(ws) > kMaxConvWorkspaceBytes) {
      status = CUDNN_STATUS_NOT_SUPPORTED;  // wants more scratch than any convolution may have
      return std::nullopt;
    }
    return Candidate{std::move(cfg), std::move(plan), ws};
  } catch (const GraphFailure& f) {
    status = f.status;
    return std::nullopt;
  }
}

// The variant pack's bindings: unique ids and device pointers, in the same order.
struct Bindings {
  int64_t uids[4];
  void* ptrs[4];
  int64_t count;
};

Bindings bindings(const ConvData& d, const void* bias) {
  Bindings b{{kX, kW, kY, kBias}, {d.x, d.w, d.y, const_cast<void*>(bias)}, bias ? 4 : 3};
  return b;
}

// Runs a plan on the handle's stream; a status, not a throw (a failure means fallback).
cudnnStatus_t execute(cudnnHandle_t h, cudnnBackendDescriptor_t plan, const Bindings& b, void* workspace) {
  try {
    Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, b.count, b.uids)
        .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, b.count, b.ptrs)
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace)
        .finalize();
    return cudnnBackendExecute(h, plan, pack.get());
  } catch (const GraphFailure& f) {
    return f.status;
  }
}

// The candidate's time in ms: one run to load its kernels, one timed with events on the
// compute stream; infinity when it fails to run. Overwrites the output buffer. A first run
// over 10x `best_ms` (the fastest so far) plus 100 ms is its time: a second changes no
// choice, and on the H200 (2026-12-04) strict fp32 candidates ran up to 4.7 s against a best
// of 11 ms. The 100 ms: a first run can include loading its kernels (CUDA loads modules
// lazily), which would otherwise rule out a fast engine for a convolution of ~0.1 ms.
double time_candidate(const GraphKey& gk, const Candidate& c, const Bindings& b, double best_ms) {
  const int dev = gk.conv.device;
  try {
    // A workspace the pool cannot give (up to kMaxConvWorkspaceBytes, not capped by free
    // memory as the legacy search's budget is) rules the candidate out; kiln's error must
    // not escape the search, where only GraphFailure is caught, and fail the convolution.
    Workspace ws(dev, static_cast<size_t>(c.workspace));
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    const auto run = [&] { s = execute(gk.handle, c.plan.get(), b, ws.data()); };
    const double first = time_ms(Device::cuda(dev), run);
    if (s != CUDNN_STATUS_SUCCESS) return std::numeric_limits<double>::infinity();
    if (first > 10 * best_ms + 100.0) return first;
    const double ms = time_ms(Device::cuda(dev), run);
    return s == CUDNN_STATUS_SUCCESS ? ms : std::numeric_limits<double>::infinity();
  } catch (const Error&) {
    return std::numeric_limits<double>::infinity();
  }
}

// KILN_CONV_LOG's line for a graph plan: the chosen engine and what else was timed.
void log_plan(const GraphKey& gk, const std::vector<Candidate>& found, size_t best) {
  std::string timed;
  for (const Candidate& c : found)
    timed += " " + std::to_string(c.engine) + (c.ms >= 0 ? "=" + std::to_string(c.ms) + "ms" : std::string()) + "/" +
             std::to_string(c.workspace >> 20) + "MiB";
  const Candidate& b = found[best];
  std::fprintf(stderr, "kiln: conv plan: %s: graph engine %lld from the %s (workspace %lld MiB); %zu candidate%s "
               "(engine=ms/workspace):%s\n", gk.str().c_str(), static_cast<long long>(b.engine), b.source,
               static_cast<long long>(b.workspace >> 20), found.size(), found.size() == 1 ? "" : "s", timed.c_str());
}

// Finds the key's plan from three sources in turn: heuristics mode A, cuDNN's fallback list,
// then (exhaustive search, or when both gave nothing usable) every other engine by global
// index. Configs are filtered by numerical notes and by the workspace this convolution may
// have (conv_workspace_limit); the first that finalizes serves, or under exhaustive search
// the fastest of the first kSearchPlans; engine 0 only when no other engine gives a plan
// (kReferenceEngine). Throws GraphFailure, with counts of what was offered, when none.
void search(const GraphKey& gk, const Shape& y_shape, const Bindings& b, GraphPlan& g) {
  const cudnnBackendDescriptor_t graph = build_graph(gk, y_shape, g);
  const size_t want = gk.conv.exhaustive ? kSearchPlans : 1;
  const auto ws_limit = static_cast<int64_t>(conv_workspace_limit(gk.conv));
  std::vector<Candidate> found;
  std::vector<int64_t> seen;  // engines the heuristics offered: not offered again by index
  std::optional<Candidate> reference;  // engine 0's first plan: the last resort
  GraphFailure last{CUDNN_STATUS_NOT_SUPPORTED, "no engine config offered"};
  int offered = 0, refused_by_notes = 0, not_finalized = 0, over_workspace = 0;
  for (const Source source : kSources) {
    if (found.size() >= want) break;
    std::vector<Descriptor> cfgs;
    try {
      cfgs = source_configs(source, graph, seen, g.keep);
    } catch (const GraphFailure& f) {
      last = f;
      continue;
    }
    for (Descriptor& cfg : cfgs) {
      if (found.size() >= want) break;
      ++offered;
      const int64_t engine = engine_index(cfg.get());
      if (source != kEngineList) seen.push_back(engine);
      if (!admissible(cfg.get(), gk.conv)) {
        ++refused_by_notes;
        if (not_finalized == 0)  // nothing more telling yet
          last = GraphFailure{CUDNN_STATUS_NOT_SUPPORTED,
                              "every engine config offered was refused by its numerical notes (strict fp32 "
                              "refuses tensor cores, KILN_DETERMINISTIC non-deterministic engines)"};
        continue;
      }
      cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
      std::optional<Candidate> c = finalize_plan(gk.handle, std::move(cfg), status);
      if (!c) {
        ++not_finalized;
        last = GraphFailure{status, "finalizing an execution plan"};
      } else if (c->workspace > ws_limit) {
        ++over_workspace;
        last = GraphFailure{CUDNN_STATUS_NOT_SUPPORTED, "every plan wanted more workspace than the " +
                                                            std::to_string(ws_limit >> 20) + " MiB allowed"};
      } else {
        c->engine = engine;
        c->source = source_name(source);
        if (engine == kReferenceEngine && !reference) reference = std::move(*c);
        else if (engine != kReferenceEngine) found.push_back(std::move(*c));
      }
    }
  }
  if (found.empty() && reference) found.push_back(std::move(*reference));
  if (found.empty())
    throw GraphFailure{last.status, last.where + "; " + std::to_string(offered) + " engine configs offered, " +
                                        std::to_string(refused_by_notes) + " refused by their numerical notes, " +
                                        std::to_string(not_finalized) + " did not finalize, " +
                                        std::to_string(over_workspace) + " over the workspace limit"};
  size_t best = 0;
  if (found.size() > 1) {
    double best_ms = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < found.size(); ++i) {
      found[i].ms = time_candidate(gk, found[i], b, best_ms);
      if (found[i].ms < best_ms) best_ms = found[i].ms, best = i;
    }
  }
  if (conv_log_enabled()) log_plan(gk, found, best);
  g.keep.push_back(std::move(found[best].cfg));
  g.workspace = found[best].workspace;
  g.plan.emplace(std::move(found[best].plan));
}

std::mutex& cache_mutex() {
  static std::mutex mu;
  return mu;
}

// Never destroyed: an execution plan must not be destroyed after the handle it was
// finalized against (kiln's handles die with their thread, before static destructors run),
// nor after the driver has gone at exit; the process's end reclaims it.
std::map<GraphKey, std::unique_ptr<GraphPlan>>& cache() {
  static auto* c = new std::map<GraphKey, std::unique_ptr<GraphPlan>>;
  return *c;
}

// One line on stderr when a key leaves the graph API.
void say_fallback(const GraphKey& gk, cudnnStatus_t status, const std::string& where) {
  char why[512] = {0};
  cudnnGetLastErrorString(why, sizeof why);
  std::fprintf(stderr, "kiln: conv graph fallback: cuDNN's graph API has no usable plan for the %s (%s: %s%s%s); %s\n",
               gk.str().c_str(), where.c_str(), cudnnGetErrorString(status), why[0] ? "; cuDNN says: " : "", why,
               gk.fused ? "conv2d_relu runs the convolution and the ReLU apart for this shape from now on"
                        : "this shape uses the legacy API from now on");
  detail::count_conv_api(detail::ConvApiEvent::fallback);
}

// The cached plan of the key, searched on first use (outside the lock; under exhaustive
// search the searching call overwrites its output, which the caller then recomputes).
GraphPlan& plan_for(const GraphKey& gk, const Shape& y_shape, const Bindings& b) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    auto it = cache().find(gk);
    if (it != cache().end()) return *it->second;
  }
  KILN_CHECK(!(gk.conv.exhaustive && capturing()), current_op(), ": no plan yet for the ", gk.str(),
             " while recording a CUDA graph (timing candidates needs the host to wait): run the step eagerly once "
             "before recording");
  auto g = std::make_unique<GraphPlan>();
  const detail::PlanTimer timed;
  try {
    search(gk, y_shape, b, *g);
    detail::count_conv_api(detail::ConvApiEvent::graph_plan);
    if (gk.fused) detail::count_conv_api(detail::ConvApiEvent::fused_plan);
  } catch (const GraphFailure& f) {
    g = std::make_unique<GraphPlan>();  // no plan: the legacy API serves this key
    say_fallback(gk, f.status, f.where);
  }
  std::lock_guard<std::mutex> lock(cache_mutex());
  auto [it, inserted] = cache().emplace(gk, std::move(g));  // another thread may have won: use its plan
  (void)inserted;
  return *it->second;
}

// A number no other thread of the process has had (plans are per thread, with its handle).
uint64_t thread_serial() {
  static std::atomic<uint64_t> next{1};
  thread_local const uint64_t me = next.fetch_add(1, std::memory_order_relaxed);
  return me;
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlignment == 0; }

// Runs the key's plan; false when the legacy API must do it instead.
bool run(const ConvKey& k, bool fused, const Shape& y_shape, const ConvData& d, const void* bias) {
  if (conv_api() != ConvApi::graph) return false;
  if (!graph_buffers_aligned(d, bias)) return false;
  KILN_CHECK(y_shape.rank() == 4 && y_shape[0] == k.n && y_shape[3] == k.o &&
                 y_shape[1] == window_out_size(k.h, k.kh, k.sh, k.ph) &&
                 y_shape[2] == window_out_size(k.w, k.kw, k.sw, k.pw),
             current_op(), ": the output side ", y_shape, " does not fit the ", direction_name(k.dir),
             " convolution of ", k.str());
  const GraphKey gk{k, fused, bias != nullptr, thread_serial(), cudnn_handle(k.device)};
  const Bindings b = bindings(d, bias);
  GraphPlan& g = plan_for(gk, y_shape, b);
  if (!g.usable()) return false;
  Workspace ws(k.device, static_cast<size_t>(g.workspace));
  const cudnnStatus_t s = execute(gk.handle, g.plan->get(), b, ws.data());
  if (s != CUDNN_STATUS_SUCCESS) {
    // While recording, a failure is the capture's (invalidated by an earlier call), not the
    // plan's: fail the capture and keep the plan for eager steps.
    KILN_CHECK(!capturing(), current_op(), ": cudnnBackendExecute failed while recording a CUDA graph: ",
               cudnnGetErrorString(s));
    if (!g.failed.exchange(true)) say_fallback(gk, s, "cudnnBackendExecute");
    return false;
  }
  detail::count_conv_api(detail::ConvApiEvent::graph_run);
  if (fused) detail::count_conv_api(detail::ConvApiEvent::fused_run);
  return true;
}

// "where: STATUS; cuDNN says: ..." for a failure of the backend API.
std::string failure_text(const GraphFailure& f) {
  char why[512] = {0};
  cudnnGetLastErrorString(why, sizeof why);
  return f.where + ": " + cudnnGetErrorString(f.status) + (why[0] ? std::string("; cuDNN says: ") + why : "");
}

// Graphs without a handle and device-properties descriptors came with cuDNN 9.8.
void require_deviceless_cudnn(const char* what) {
  KILN_CHECK(cudnnGetVersion() >= 90800, what, " needs cuDNN 9.8 or newer; this one is ", cudnnGetVersion());
}

// A device-properties descriptor loaded from cuDNN's JSON description of a GPU.
Descriptor device_properties(const std::string& json) {
  require_deviceless_cudnn("a cuDNN device description");
  Descriptor p(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  p.set(CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, static_cast<int64_t>(json.size()), json.data())
      .finalize();
  return p;
}

}  // namespace

std::string check_graph_descriptors(const ConvKey& k, const Shape& y_shape, bool fused, bool bias) {
  require_deviceless_cudnn("building a cuDNN operation graph without a GPU");
  GraphPlan g;
  try {
    build_graph(GraphKey{k, fused, bias, 0, nullptr}, y_shape, g);
    return "";
  } catch (const GraphFailure& f) {
    return failure_text(f);
  }
}

std::string device_properties_json(int device) {
  require_deviceless_cudnn("a cuDNN device description");
  try {
    Descriptor p(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
    cudnnHandle_t h = cudnn_handle(device);
    p.set(CUDNN_ATTR_DEVICEPROP_HANDLE, CUDNN_TYPE_HANDLE, 1, &h).finalize();
    int64_t size = 0;
    cudnnStatus_t st =
        cudnnBackendGetAttribute(p.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0, &size, nullptr);
    if (st != CUDNN_STATUS_SUCCESS) throw GraphFailure{st, "asking the size of the device properties' JSON"};
    std::string json(static_cast<size_t>(size), '\0');
    st = cudnnBackendGetAttribute(p.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, size, &size,
                                  json.data());
    if (st != CUDNN_STATUS_SUCCESS) throw GraphFailure{st, "reading the device properties' JSON"};
    json.resize(static_cast<size_t>(size));
    while (!json.empty() && json.back() == '\0') json.pop_back();
    return json;
  } catch (const GraphFailure& f) {
    KILN_FAIL("cuDNN device properties of cuda:", device, ": ", failure_text(f));
  }
}

std::string check_device_properties(const std::string& json) {
  try {
    device_properties(json);
    return "";
  } catch (const GraphFailure& f) {
    return failure_text(f);
  }
}

PlanCensus census_without_device(const ConvKey& k, const Shape& y_shape, bool fused, bool bias,
                                 const std::string& device_json, bool all_sources) {
  PlanCensus c;
  try {
    const Descriptor device = device_properties(device_json);
    GraphPlan g;
    const cudnnBackendDescriptor_t graph = build_graph(GraphKey{k, fused, bias, 0, nullptr}, y_shape, g);
    std::vector<int64_t> seen;
    for (const Source source : kSources) {  // as search()
      if (source == kEngineList && c.plans > 0 && !all_sources) break;  // as a search that is not exhaustive
      std::vector<Descriptor> cfgs;
      try {
        cfgs = source_configs(source, graph, seen, g.keep, device.get());
      } catch (const GraphFailure&) {
        continue;  // a source that offers nothing leaves the others
      }
      for (Descriptor& cfg : cfgs) {
        ++c.offered;
        const int64_t engine = engine_index(cfg.get());
        if (source != kEngineList) seen.push_back(engine);
        if (!admissible(cfg.get(), k)) continue;
        ++c.admitted;
        cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
        if (const std::optional<Candidate> p = finalize_plan(nullptr, std::move(cfg), status, device.get())) {
          ++c.plans;
          c.workspaces.push_back(p->workspace);
          c.engines.push_back(engine);
        }
      }
    }
  } catch (const GraphFailure& f) {
    KILN_FAIL("cuDNN refused the ", GraphKey{k, fused, bias, 0, nullptr}.str(), " without a device: ", failure_text(f));
  }
  return c;
}

bool graph_buffers_aligned(const ConvData& d, const void* bias) {
  return aligned(d.x) && aligned(d.w) && aligned(d.y) && (bias == nullptr || aligned(bias));
}

bool graph_convolution(const ConvKey& k, const Shape& y_shape, const ConvData& d) {
  return run(k, false, y_shape, d, nullptr);
}

bool graph_convolution_bias_relu(const ConvKey& k, const Shape& y_shape, const ConvData& d, const void* bias) {
  KILN_CHECK(k.dir == Direction::forward, current_op(), ": a fused conv + bias + ReLU is a forward convolution");
  return run(k, true, y_shape, d, bias);
}

}  // namespace kiln::cuda
