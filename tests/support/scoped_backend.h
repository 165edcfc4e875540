// A backend installed for a device type for one scope, the previous one put back after: how a
// test runs core's path for a backend without some kernel (the CPU backend with one switched off)
// or a device this machine lacks.
#pragma once

#include "core/backend.h"

namespace kiln::test {

// Installs `backend` for `type` until destroyed; every tensor made on it must be gone first.
class ScopedBackend {
 public:
  ScopedBackend(DeviceType type, Backend* backend) : type_(type), previous_(register_backend(type, backend)) {}
  ~ScopedBackend() { register_backend(type_, previous_); }
  ScopedBackend(const ScopedBackend&) = delete;
  ScopedBackend& operator=(const ScopedBackend&) = delete;

 private:
  DeviceType type_;
  Backend* previous_;
};

}  // namespace kiln::test
