#include "core/backend.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>

#include "core/conv_api.h"

namespace kiln {
namespace {
std::array<std::atomic<Backend*>, 2> g_backends{};
}

Backend* register_backend(DeviceType type, Backend* backend) {
  return g_backends[static_cast<size_t>(type)].exchange(backend);
}

bool has_backend(DeviceType type) { return g_backends[static_cast<size_t>(type)].load() != nullptr; }

Backend& backend_for(Device device) {
  Backend* b = g_backends[static_cast<size_t>(device.type)].load();
  if (b == nullptr) {
    if (device.is_cuda())
      KILN_FAIL("device ", device.str(), " requested, but this kiln has no CUDA backend (built without CUDA, "
                "or no GPU was found at start)");
    KILN_FAIL("no backend registered for device ", device.str());
  }
  return *b;
}

namespace {

// The switches' parsers, shared by the environment (at first use) and set_gpu_math; `name`
// is how the caller spelled the switch (KILN_TF32, or tf32 from Python).
void parse_tf32(ComputeOptions& o, const std::string& mode, const std::string& name) {
  KILN_CHECK(mode == "none" || mode == "conv" || mode == "all", name, "='", mode,
             "' is not a TF32 mode: use none (strict fp32 everywhere), conv (the default: convolutions may "
             "use TF32) or all (convolutions and GEMMs)");
  o.conv_tf32 = mode != "none";
  o.matmul_tf32 = mode == "all";
}

void parse_conv_search(ComputeOptions& o, const std::string& search, const std::string& name) {
  KILN_CHECK(search == "heuristic" || search == "exhaustive", name, "='", search,
             "' is not a search: use heuristic (the default: cuDNN's ranking, no timing) or exhaustive (time "
             "every algorithm once per shape)");
  o.exhaustive_conv_search = search == "exhaustive";
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

}  // namespace

bool env_switch(const char* name, bool fallback, const char* what_1, const char* what_0) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  const std::string s = v;
  KILN_CHECK(s == "0" || s == "1", name, "='", s, "': use 1 (", what_1, ") or 0 (", what_0, ")");
  return s == "1";
}

ComputeOptions& compute_options() {
  static ComputeOptions options = [] {
    ComputeOptions o;
    KILN_CHECK(std::getenv("KILN_ALLOW_TF32") == nullptr,
               "KILN_ALLOW_TF32 was replaced by KILN_TF32=none|conv|all (default conv: convolutions may use "
               "TF32, GEMMs stay strict fp32); unset KILN_ALLOW_TF32 and set KILN_TF32=all for what it did");
    parse_tf32(o, env_or("KILN_TF32", "conv"), "KILN_TF32");
    parse_conv_search(o, env_or("KILN_CONV_SEARCH", "heuristic"), "KILN_CONV_SEARCH");
    o.deterministic = env_switch("KILN_DETERMINISTIC", false, "only algorithms that give the same bits every run",
                                 "the default");
    check_compute_options(o);
    return o;
  }();
  return options;
}

void check_compute_options(const ComputeOptions& o) {
  KILN_CHECK(!(o.deterministic && o.exhaustive_conv_search),
             "deterministic algorithms (KILN_DETERMINISTIC=1) and exhaustive search (KILN_CONV_SEARCH=exhaustive) "
             "do not go together: timing picks the algorithm anew in each process, so two runs can differ in the "
             "last bits; turn one of them off");
}

void set_gpu_math(const GpuMathSettings& s) {
  ComputeOptions o = compute_options();
  if (s.tf32) parse_tf32(o, *s.tf32, "tf32");
  if (s.conv_search) parse_conv_search(o, *s.conv_search, "conv_search");
  if (s.deterministic) o.deterministic = *s.deterministic;
  check_compute_options(o);
  const ConvApi api = s.conv_api ? parse_conv_api(*s.conv_api, "conv_api") : conv_api();
  compute_options() = o;  // nothing changes unless every setting was valid
  set_conv_api(api);
  if (s.conv_fuse) set_conv_fuse(*s.conv_fuse);
}

const char* tf32_mode() {
  const ComputeOptions& o = compute_options();
  if (o.matmul_tf32) return o.conv_tf32 ? "all" : "gemm";
  return o.conv_tf32 ? "conv" : "none";
}

std::string gpu_math_summary() {
  const ComputeOptions& o = compute_options();
  const std::string tf32 = tf32_mode();
  std::string s = tf32 == "none"   ? "strict fp32 everywhere (KILN_TF32=none)"
                  : tf32 == "conv" ? "TF32 in convolutions, strict fp32 GEMMs (KILN_TF32=conv, the default)"
                  : tf32 == "all"  ? "TF32 in convolutions and GEMMs (KILN_TF32=all)"
                                   : "TF32 in GEMMs only";
  s += o.exhaustive_conv_search ? "; conv algorithms timed per shape (KILN_CONV_SEARCH=exhaustive)"
                                : "; conv algorithms by cuDNN's heuristics (KILN_CONV_SEARCH=heuristic)";
  s += o.deterministic ? "; deterministic algorithms only (KILN_DETERMINISTIC=1)"
                       : "; non-deterministic algorithms allowed (KILN_DETERMINISTIC=0)";
  s += std::string("; cuDNN ") + conv_api_name(conv_api()) + " API (KILN_CONV_API)";
  if (conv_api() == ConvApi::graph && !conv_fuse()) s += ", conv + bias + ReLU unfused (KILN_CONV_FUSE=0)";
  else if (conv_api() == ConvApi::graph && o.exhaustive_conv_search)
    s += ", conv + bias + ReLU fused where that timed faster (KILN_CONV_FUSE)";
  return s;
}

int device_count(DeviceType type) { return has_backend(type) ? backend_for(Device{type, 0}).device_count() : 0; }
void synchronize(Device device) { backend_for(device).synchronize(device.index); }
void stream_waits_for_kiln(Device device, std::uintptr_t stream) {
  backend_for(device).stream_waits_for_kiln(device.index, stream);
}
void kiln_waits_for_stream(Device device, std::uintptr_t stream) {
  backend_for(device).kiln_waits_for_stream(device.index, stream);
}
std::uintptr_t stream_handle(Device device) { return backend_for(device).stream_handle(device.index); }
MemoryStats memory_stats(Device device) { return backend_for(device).memory_stats(device.index); }
void reset_peak_memory(Device device) { backend_for(device).reset_peak_memory(device.index); }
std::string device_name(Device device) {
  // A GPU index past the count: said so, not the driver's status for a missing device.
  const int n = device_count(device.type);
  KILN_CHECK(device.is_cpu() || (device.index >= 0 && device.index < n), "no device ", device.str(), ": kiln sees ", n,
             " CUDA GPU(s) here");
  return backend_for(device).device_name(device.index);
}
double time_ms(Device device, const std::function<void()>& fn) { return backend_for(device).time_ms(device.index, fn); }

// Core calls these only where has_layer_norm() says the backend has them.
void Backend::layer_norm_forward(const Tensor&, const Tensor&, const Tensor&, float, Tensor&, Tensor&, Tensor&) {
  KILN_FAIL("layer_norm_forward: the ", name(), " backend has no fused layer_norm (has_layer_norm() is false)");
}

void Backend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                                  Tensor&) {
  KILN_FAIL("layer_norm_backward: the ", name(), " backend has no fused layer_norm (has_layer_norm() is false)");
}

// Core calls these only where has_softmax_inner() says the backend has them.
void Backend::softmax_inner(const Tensor&, int64_t, int64_t, bool, Tensor&) {
  KILN_FAIL("softmax_inner: the ", name(), " backend has no softmax along an inner dimension");
}

void Backend::softmax_inner_backward(const Tensor&, const Tensor&, int64_t, int64_t, bool, Tensor&) {
  KILN_FAIL("softmax_inner_backward: the ", name(), " backend has no softmax along an inner dimension");
}

double Backend::time_ms(int /*index*/, const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace kiln
