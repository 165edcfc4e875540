#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "core/backend.h"
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

size_t host_cache_cap() {
  const char* v = std::getenv("KILN_HOST_CACHE_MB");
  const long long mb = v ? std::atoll(v) : 1024;
  return mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
}

}  // namespace

struct CachingAllocator::Impl {
  size_t min_bytes, max_cached;
  mutable std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // requested size -> block
  Stats stats;
};

CachingAllocator::CachingAllocator(Allocator& backing, size_t min_bytes, size_t max_cached_bytes)
    : backing_(backing), impl_(new Impl{min_bytes, max_cached_bytes, {}, {}, {}}) {}

CachingAllocator::~CachingAllocator() {
  release_cached();
  delete impl_;
}

bool poison_allocations() {
  static const bool on = env_switch("KILN_POISON", false, "fill every new block with NaN bytes",
                                    "hand blocks out as they are, the default");
  return on;
}

void* CachingAllocator::allocate(size_t bytes) {
  void* p = take(bytes);
  if (poison_allocations() && bytes > 0) std::memset(p, 0xFF, bytes);
  return p;
}

void* CachingAllocator::take(size_t bytes) {
  if (bytes >= impl_->min_bytes && impl_->max_cached > 0) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->free_blocks.find(bytes);
    if (it != impl_->free_blocks.end()) {
      void* p = it->second;
      impl_->free_blocks.erase(it);
      impl_->stats.cached_bytes -= bytes;
      ++impl_->stats.hits;
      return p;
    }
    ++impl_->stats.misses;
  }
  return backing_.allocate(bytes);
}

void CachingAllocator::deallocate(void* p, size_t bytes) {
  if (bytes >= impl_->min_bytes) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stats.cached_bytes + bytes <= impl_->max_cached) {
      impl_->free_blocks.emplace(bytes, p);
      impl_->stats.cached_bytes += bytes;
      return;
    }
  }
  backing_.deallocate(p, bytes);
}

void CachingAllocator::release_cached() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    blocks.swap(impl_->free_blocks);
    impl_->stats.cached_bytes = 0;
  }
  for (auto& [bytes, p] : blocks) backing_.deallocate(p, bytes);
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

CachingAllocator& host_cache() {
  // Never destroyed: tensors in static storage may be freed after main returns, and the
  // operating system takes the cached blocks back at exit.
  static AlignedHostAllocator* aligned = new AlignedHostAllocator();
  static CachingAllocator* cache = new CachingAllocator(*aligned, size_t{256} << 10, host_cache_cap());
  return *cache;
}

Allocator& host_allocator() { return host_cache(); }

void set_pinned_host_allocator(Allocator* a) { g_pinned.store(a); }

Allocator& pinned_host_allocator() {
  Allocator* a = g_pinned.load();
  return a ? *a : host_allocator();
}

}  // namespace kiln
