#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include <sys/mman.h>

#include "core/backend.h"
#include "core/error.h"

// Sanitizer builds: GCC says so by macro, clang by __has_feature.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define KILN_SANITIZED_BUILD 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KILN_SANITIZED_BUILD 1
#endif

namespace kiln {

bool host_huge_pages() {
#ifdef KILN_SANITIZED_BUILD
  return false;
#else
  static const bool on = env_switch("KILN_HUGE_PAGES", true, "host blocks of 2 MiB and more on huge pages, the default",
                                    "4 KiB pages only");
  return on;
#endif
}

namespace {

class AlignedHostAllocator final : public Allocator {
 public:
  static constexpr size_t kHuge = size_t{2} << 20;  // blocks this large go to map_huge (host_huge_pages)

  void* allocate(size_t bytes) override {
    if (bytes >= kHuge && host_huge_pages()) return map_huge(bytes);
    constexpr size_t kAlign = 64;
    const size_t rounded = ((bytes + kAlign - 1) / kAlign) * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
    KILN_CHECK(p != nullptr, "host allocation of ", bytes, " bytes failed (out of memory)");
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    if (bytes >= kHuge && host_huge_pages()) ::munmap(p, page_round(bytes));
    else std::free(p);
  }

 private:
  static size_t page_round(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
  // Maps kHuge more than asked, keeps the 2 MiB-aligned part. The advice is a wish: a kernel
  // without THP, or out of huge pages, gives 4 KiB pages and the block works the same.
  static void* map_huge(size_t bytes) {
    const size_t len = page_round(bytes), span = len + kHuge;
    void* base = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    KILN_CHECK(base != MAP_FAILED, "host allocation of ", bytes, " bytes failed (out of memory)");
    const uintptr_t b = reinterpret_cast<uintptr_t>(base), at = (b + kHuge - 1) / kHuge * kHuge;
    if (at > b) ::munmap(base, at - b);
    if (b + span > at + len) ::munmap(reinterpret_cast<void*>(at + len), b + span - (at + len));
    void* p = reinterpret_cast<void*>(at);
    ::madvise(p, len, MADV_HUGEPAGE);
    return p;
  }
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
