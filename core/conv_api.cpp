#include "core/conv_api.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>

#include "core/backend.h"
#include "core/error.h"

namespace kiln {
namespace {

ConvApi from_environment() {
  const char* v = std::getenv("KILN_CONV_API");
  return parse_conv_api(v != nullptr ? v : "graph", "KILN_CONV_API");
}

std::atomic<ConvApi>& current() {
  static std::atomic<ConvApi> api{from_environment()};
  return api;
}

std::atomic<bool>& fuse_flag() {
  static std::atomic<bool> fuse{env_switch("KILN_CONV_FUSE", true,
                                           "conv + bias + ReLU as one cuDNN graph under KILN_CONV_API=graph, the "
                                           "default",
                                           "the convolution, then kiln's bias + ReLU pass")};
  return fuse;
}

// One count per ConvApiEvent, in its order.
std::atomic<int64_t> g_counts[7];
static_assert(static_cast<int>(detail::ConvApiEvent::fuse_declined) == 6, "one count per event");
std::atomic<int64_t> g_plan_ns{0};  // plan_seconds, in nanoseconds

}  // namespace

ConvApi conv_api() { return current().load(std::memory_order_relaxed); }

void set_conv_api(ConvApi api) { current().store(api, std::memory_order_relaxed); }

const char* conv_api_name(ConvApi api) { return api == ConvApi::graph ? "graph" : "legacy"; }

ConvApi parse_conv_api(const std::string& value, const std::string& name) {
  KILN_CHECK(value == "legacy" || value == "graph", name, "='", value,
             "' is not a convolution API: use graph (cuDNN's operation graphs, falling back to legacy per shape; the "
             "default) or legacy (cuDNN's cudnnConvolutionForward & co.)");
  return value == "graph" ? ConvApi::graph : ConvApi::legacy;
}

bool conv_fuse() { return fuse_flag().load(std::memory_order_relaxed); }

void set_conv_fuse(bool fuse) { fuse_flag().store(fuse, std::memory_order_relaxed); }

ConvApiCounts conv_api_counts() {
  ConvApiCounts c;
  c.graph_plans = g_counts[0].load();
  c.fused_plans = g_counts[1].load();
  c.fallbacks = g_counts[2].load();
  c.graph_runs = g_counts[3].load();
  c.fused_runs = g_counts[4].load();
  c.fuse_timed = g_counts[5].load();
  c.fuse_declined = g_counts[6].load();
  c.plan_seconds = static_cast<double>(g_plan_ns.load()) * 1e-9;
  return c;
}

namespace detail {
void count_conv_api(ConvApiEvent event) { g_counts[static_cast<int>(event)].fetch_add(1); }
namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace
PlanTimer::PlanTimer() : start_ns_(now_ns()) {}
PlanTimer::~PlanTimer() { g_plan_ns.fetch_add(now_ns() - start_ns_); }
}  // namespace detail

}  // namespace kiln
