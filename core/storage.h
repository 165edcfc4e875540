// A block of memory on one device, shared by a tensor and its views.
#pragma once

#include <cstddef>

#include "core/allocator.h"
#include "core/device.h"

namespace kiln {

// Owns `bytes` of memory from `allocator` on `device`; frees it when the last view goes.
class Storage {
 public:
  Storage(size_t bytes, Device device, Allocator& allocator)
      : data_(allocator.allocate(bytes)), bytes_(bytes), device_(device), allocator_(&allocator) {}
  ~Storage() { allocator_->deallocate(data_, bytes_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool pinned() const { return allocator_->pinned(); }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  Allocator* allocator_;
};

}  // namespace kiln
