// What identifies one GPU convolution for the plan caches of both cuDNN paths (the legacy
// API in cuda_conv.cpp, the graph API in cuda_conv_graph.cpp): direction, shape, options
// and dtype. Keys are made in one place (cuda_conv.cpp's make_key), so both paths read
// the compute options the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>

namespace kiln::cuda {

// No convolution algorithm or plan may ask for more scratch than this (some FFT variants
// want gigabytes).
constexpr size_t kMaxConvWorkspaceBytes = size_t{1} << 30;

// Which of the three convolutions: y from x and w, dx from dy and w, dw from x and dy.
enum class Direction : uint8_t { forward, backward_data, backward_filter };

// "forward", "backward-data", "backward-filter".
inline const char* direction_name(Direction d) {
  switch (d) {
    case Direction::forward: return "forward";
    case Direction::backward_data: return "backward-data";
    case Direction::backward_filter: return "backward-filter";
  }
  return "?";
}

// One convolution: x [n, h, w, c], w [o, kh, kw, c], stride, padding, and how it may compute.
struct ConvKey {
  int device;
  Direction dir;
  int64_t n, h, w, c, o, kh, kw, sh, sw, ph, pw;
  bool tf32, exhaustive;
  bool bf16 = false;  // bf16 tensors, fp32 compute, tensor ops allowed (tf32 is then false: it does not apply)
  bool deterministic = false;  // only algorithms / engines cuDNN marks deterministic (KILN_DETERMINISTIC)
  // The fields in order, for the caches' ordering.
  auto tie() const {
    return std::tie(device, dir, n, h, w, c, o, kh, kw, sh, sw, ph, pw, tf32, exhaustive, bf16, deterministic);
  }
  // Tensor-core kernels are admissible: TF32 asked for, or bf16 data (no conversion either way).
  bool tensor_ops() const { return tf32 || bf16; }
  bool operator<(const ConvKey& k) const { return tie() < k.tie(); }
  // The shapes, stride, padding and math, for messages.
  std::string str() const {
    std::ostringstream os;
    os << "x [" << n << ", " << h << ", " << w << ", " << c << "], w [" << o << ", " << kh << ", " << kw << ", " << c
       << "], stride " << sh << "x" << sw << ", padding " << ph << "x" << pw
       << (bf16 ? ", bfloat16 with fp32 accumulation" : tf32 ? ", tf32" : ", strict fp32")
       << (deterministic ? ", deterministic" : "");
    return os.str();
  }
};

// The device buffers of one call; which one is written depends on the direction
// (forward: y, backward-data: x (= dx), backward-filter: w (= dw)).
struct ConvData {
  void* x;
  void* w;
  void* y;
};

}  // namespace kiln::cuda
