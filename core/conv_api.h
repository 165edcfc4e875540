// Which cuDNN interface the CUDA backend's convolutions go through, and counts of what
// ran, so tests and kiln_bench can say which path a shape took. The switch lives here, in
// core, because benchmarks and tests see only the public API; it has no effect on the CPU.
// KILN_CONV_API=graph (the default since the third H200 run, 2026-12-04: as fast or faster on
// every row timed, docs/gpu.md) | legacy, read once, on first use.
#pragma once

#include <cstdint>
#include <string>

namespace kiln {

// legacy: cudnnConvolutionForward & co. (kernels/cuda/cuda_conv.cpp); graph: cuDNN's
// operation graphs (kernels/cuda/cuda_conv_graph.cpp), which fall back to legacy per shape
// when no graph plan can be built, and fuse conv + bias + ReLU for inference.
enum class ConvApi : uint8_t { legacy, graph };

// The API in force: KILN_CONV_API read on the first call (an unknown value is an error
// naming the two choices), or what set_conv_api set last.
ConvApi conv_api();
// Overrides the environment for the whole process (tests, benchmarks). Plans are cached
// per API, so switching back and forth costs nothing after the first call of each.
void set_conv_api(ConvApi api);
// "legacy" or "graph".
const char* conv_api_name(ConvApi api);
// The API called `value` ("legacy" or "graph"); anything else is an error naming the two
// choices and `name`, how the caller spelled the switch (KILN_CONV_API, conv_api).
ConvApi parse_conv_api(const std::string& value, const std::string& name);

// Sets the API for its lifetime and restores the previous one (a test's scope).
class ScopedConvApi {
 public:
  explicit ScopedConvApi(ConvApi api) : previous_(conv_api()) { set_conv_api(api); }
  ~ScopedConvApi() { set_conv_api(previous_); }
  ScopedConvApi(const ScopedConvApi&) = delete;
  ScopedConvApi& operator=(const ScopedConvApi&) = delete;

 private:
  ConvApi previous_;
};

// Whether conv + bias + ReLU may go to the graph API as one fused graph (true) or always runs
// as the best plain convolution plan then kiln's bias + ReLU pass (false). Fused graphs take
// only engines with a pointwise epilogue, which may be the slower (docs/gpu.md): under
// exhaustive search the two are timed once per shape and the faster kept. KILN_CONV_FUSE=1|0
// read on the first call (anything else is an error), or what set_conv_fuse set last.
bool conv_fuse();
// Overrides the environment for the whole process (tests, benchmarks).
void set_conv_fuse(bool fuse);

// Sets conv_fuse for its lifetime and restores the previous value (a test's scope).
class ScopedConvFuse {
 public:
  explicit ScopedConvFuse(bool fuse) : previous_(conv_fuse()) { set_conv_fuse(fuse); }
  ~ScopedConvFuse() { set_conv_fuse(previous_); }
  ScopedConvFuse(const ScopedConvFuse&) = delete;
  ScopedConvFuse& operator=(const ScopedConvFuse&) = delete;

 private:
  bool previous_;
};

// What the graph API has done since the process started; all zero under legacy, on the
// CPU, and in a build without CUDA (plan_seconds: both APIs). Differences of two snapshots
// say what one call did.
struct ConvApiCounts {
  int64_t graph_plans = 0;  // execution plans built (one per shape, direction, dtype and options)
  int64_t fused_plans = 0;  // of which conv + bias + ReLU as one graph
  int64_t fallbacks = 0;    // graphs that got no plan: that shape runs on the legacy API from then on
  int64_t graph_runs = 0;   // convolutions executed through a graph plan
  int64_t fused_runs = 0;   // of which fused conv + bias + ReLU
  // Under exhaustive search: keys whose fused conv + bias + ReLU was timed against the plain
  // convolution then kiln's bias + ReLU pass, and of those, keys where the latter won and
  // serves from then on.
  int64_t fuse_timed = 0;
  int64_t fuse_declined = 0;
  // Host seconds spent choosing convolution plans on either API: cuDNN's heuristics or its
  // timed search, finalizing, runtime compilation. A run's first steps pay it, once per shape.
  double plan_seconds = 0;
};

// A snapshot of the counts.
ConvApiCounts conv_api_counts();

namespace detail {
// The events the CUDA backend reports; each adds one to its count.
enum class ConvApiEvent : uint8_t { graph_plan, fused_plan, fallback, graph_run, fused_run, fuse_timed, fuse_declined };
// Thread-safe; called by the CUDA backend's convolutions only (kernels/cuda/cuda_conv*.cpp).
void count_conv_api(ConvApiEvent event);
// Adds the time from its construction to its destruction to plan_seconds, however the
// search it spans ends; thread-safe; the CUDA backend's plan searches hold one.
class PlanTimer {
 public:
  PlanTimer();
  ~PlanTimer();
  PlanTimer(const PlanTimer&) = delete;
  PlanTimer& operator=(const PlanTimer&) = delete;

 private:
  int64_t start_ns_;
};
}  // namespace detail

}  // namespace kiln
