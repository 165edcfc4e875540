// Where a tensor's memory lives. Two devices from the first line: code outside a backend
// never dereferences memory of a non-CPU device.
#pragma once

// Every kiln header includes this one (through core/tensor.h): a pre-C++20 compiler stops here,
// with the fix, instead of at the first defaulted operator== below.
#if __cplusplus < 202002L
#error "kiln's headers need C++20: compile with -std=c++20 (find_package(kiln)'s kiln::kiln requests it)"
#endif

#include <cstdint>
#include <string>

namespace kiln {

// The kind of device; one backend serves each.
enum class DeviceType : uint8_t { cpu = 0, cuda = 1 };

// A device: type plus index (GPU ordinal; always 0 for the CPU).
struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static constexpr Device cpu() { return Device{DeviceType::cpu, 0}; }
  static constexpr Device cuda(int i = 0) { return Device{DeviceType::cuda, i}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  // "cpu" or "cuda:0".
  std::string str() const { return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index); }
};

}  // namespace kiln
