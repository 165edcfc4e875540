#include "core/backend.h"

#include <array>
#include <atomic>

namespace kiln {
namespace {
std::array<std::atomic<Backend*>, 2> g_backends{};
}

void register_backend(DeviceType type, Backend* backend) { g_backends[static_cast<size_t>(type)].store(backend); }

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

}  // namespace kiln
