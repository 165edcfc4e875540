#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "core/error.h"

namespace kiln {
namespace {

class AlignedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    constexpr size_t kAlign = 64;
    const size_t rounded = ((bytes + kAlign - 1) / kAlign) * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
    KILN_CHECK(p != nullptr, "host allocation of ", bytes, " bytes failed (out of memory)");
    return p;
  }
  void deallocate(void* p, size_t) override { std::free(p); }
};

std::atomic<Allocator*> g_pinned{nullptr};

}  // namespace

Allocator& host_allocator() {
  static AlignedHostAllocator a;
  return a;
}

void set_pinned_host_allocator(Allocator* a) { g_pinned.store(a); }

Allocator& pinned_host_allocator() {
  Allocator* a = g_pinned.load();
  return a ? *a : host_allocator();
}

}  // namespace kiln
