// A block of memory on one device, shared by a tensor and its views.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

#include "core/allocator.h"
#include "core/device.h"

namespace kiln {

// Owns `bytes` of memory from `allocator` on `device`; frees it when the last view goes.
// Or borrows memory another library owns (a NumPy array or PyTorch tensor shared through
// DLPack): `release` runs when the last view goes, so the owner's memory lives exactly as
// long as kiln uses it.
class Storage {
 public:
  Storage(size_t bytes, Device device, Allocator& allocator)
      : data_(allocator.allocate(bytes)), bytes_(bytes), device_(device), allocator_(&allocator) {}
  Storage(void* data, size_t bytes, Device device, std::function<void()> release)
      : data_(data), bytes_(bytes), device_(device), allocator_(nullptr), release_(std::move(release)) {}
  ~Storage() {
    if (allocator_) allocator_->deallocate(data_, bytes_);
    else if (release_) release_();
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool pinned() const { return allocator_ && allocator_->pinned(); }
  // How many times kiln wrote into this memory in place (Tensor::mark_modified): autograd
  // compares it with the count a saved tensor had when the forward saved it. Atomic: the
  // loader's threads fill batches while the caller runs backward on others.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }
  // Whether code outside kiln may write this memory without a version bump: it is borrowed
  // from another library, or was handed to one (DLPack, NumPy). What trusts version() alone
  // to know the values unchanged (a checkpoint's shared frozen copy) does not trust it here.
  bool shared_outside() const { return allocator_ == nullptr || shared_out_.load(std::memory_order_relaxed); }
  void mark_shared_outside() { shared_out_.store(true, std::memory_order_relaxed); }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  Allocator* allocator_;           // null for borrowed memory
  std::function<void()> release_;  // borrowed memory: hands it back to its owner
  std::atomic<uint64_t> version_{0};
  std::atomic<bool> shared_out_{false};
};

}  // namespace kiln
