#include "core/backend.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>

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

ComputeOptions& compute_options() {
  static ComputeOptions options = [] {
    ComputeOptions o;
    KILN_CHECK(std::getenv("KILN_ALLOW_TF32") == nullptr,
               "KILN_ALLOW_TF32 was replaced by KILN_TF32=none|conv|all (default conv: convolutions may use "
               "TF32, GEMMs stay strict fp32); unset KILN_ALLOW_TF32 and set KILN_TF32=all for what it did");
    const char* tf32 = std::getenv("KILN_TF32");
    const std::string mode = tf32 != nullptr ? tf32 : "conv";
    KILN_CHECK(mode == "none" || mode == "conv" || mode == "all", "KILN_TF32='", mode,
               "' is not a TF32 mode: use none (strict fp32 everywhere), conv (the default: convolutions may "
               "use TF32) or all (convolutions and GEMMs)");
    o.conv_tf32 = mode != "none";
    o.matmul_tf32 = mode == "all";
    const char* search = std::getenv("KILN_CONV_SEARCH");
    o.exhaustive_conv_search = search != nullptr && std::string(search) == "exhaustive";
    return o;
  }();
  return options;
}

const char* tf32_mode() {
  const ComputeOptions& o = compute_options();
  if (o.matmul_tf32) return o.conv_tf32 ? "all" : "gemm";
  return o.conv_tf32 ? "conv" : "none";
}

int device_count(DeviceType type) { return has_backend(type) ? backend_for(Device{type, 0}).device_count() : 0; }
void synchronize(Device device) { backend_for(device).synchronize(device.index); }
MemoryStats memory_stats(Device device) { return backend_for(device).memory_stats(device.index); }
void reset_peak_memory(Device device) { backend_for(device).reset_peak_memory(device.index); }
std::string device_name(Device device) { return backend_for(device).device_name(device.index); }
double time_ms(Device device, const std::function<void()>& fn) { return backend_for(device).time_ms(device.index, fn); }

double Backend::time_ms(int /*index*/, const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace kiln
