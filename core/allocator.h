// Memory for tensors. Host memory is 64-byte aligned (a cache line, an AVX-512 vector);
// pinned host memory comes from a hook the CUDA backend fills, so core/ needs no CUDA.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln {

// Allocates and frees raw memory of one kind (host, pinned host, device).
class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory for `bytes` (non-null, even for 0 bytes) or throws kiln::Error.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  // True when the memory is page-locked and can be the source of an async device copy.
  virtual bool pinned() const { return false; }
};

// Keeps freed blocks of at least `min_bytes` for reuse by an allocation of the same size,
// up to `max_cached_bytes` in all. A training step asks for the same sizes every time; a
// fresh large block costs a system call and a page fault per page on first touch (and a
// pinned one a slow cudaHostAlloc), a cached one nothing. Thread-safe. Poisons its blocks
// under KILN_POISON=1 (poison_allocations).
class CachingAllocator final : public Allocator {
 public:
  CachingAllocator(Allocator& backing, size_t min_bytes, size_t max_cached_bytes);
  ~CachingAllocator() override;
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) override;
  bool pinned() const override { return backing_.pinned(); }
  // Returns every cached block to the backing allocator.
  void release_cached();
  struct Stats {
    int64_t hits = 0, misses = 0;  // allocations of cacheable size served from / not from the cache
    size_t cached_bytes = 0;       // held now, free for reuse
  };
  Stats stats() const;

 private:
  void* take(size_t bytes);  // a cached block of exactly `bytes`, else a new one
  struct Impl;
  Allocator& backing_;
  Impl* impl_;
};

// KILN_POISON=1 (read once): every block an allocator hands out is first filled with 0xFF
// bytes, a NaN in float32 and bfloat16 and -1 in integers, so a kernel that reads memory
// nobody wrote shows as NaN in its result instead of passing on stale finite values. Host
// blocks (CachingAllocator) and CUDA device blocks (a memset queued where they are allocated).
bool poison_allocations();

// Whether host blocks of 2 MiB and more are mapped apart on a 2 MiB boundary with transparent
// huge pages asked for (madvise): Linux's common "madvise" mode gives them only to those who
// ask, and with 4 KiB pages a memory-bound op on a cold tensor misses the TLB every 4 KiB
// (docs/performance.md, session 26). KILN_HUGE_PAGES=0 turns it off (read once); sanitizer
// builds keep malloc, so the sanitizer still sees every block's bounds.
bool host_huge_pages();

// 64-byte aligned host memory, large blocks cached for reuse (KILN_HOST_CACHE_MB, default
// 1024, caps the cache; 0 turns it off).
Allocator& host_allocator();

// The host allocator's cache, for statistics and to release memory.
CachingAllocator& host_cache();

// Registers the allocator used for pinned host tensors (the CUDA backend does this).
void set_pinned_host_allocator(Allocator* a);

// The pinned host allocator, or the plain host allocator when none is registered.
Allocator& pinned_host_allocator();

}  // namespace kiln
