// Memory for tensors. Host memory is 64-byte aligned (a cache line, an AVX-512 vector);
// pinned host memory comes from a hook the CUDA backend fills, so core/ needs no CUDA.
#pragma once

#include <cstddef>

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

// 64-byte aligned host memory.
Allocator& host_allocator();

// Registers the allocator used for pinned host tensors (the CUDA backend does this).
void set_pinned_host_allocator(Allocator* a);

// The pinned host allocator, or the plain host allocator when none is registered.
Allocator& pinned_host_allocator();

}  // namespace kiln
