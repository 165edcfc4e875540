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
// want tens of gigabytes); conv_workspace_limit says what one convolution may have.
constexpr size_t kMaxConvWorkspaceBytes = size_t{16} << 30;

// KILN_CONV_LOG=1: one line on stderr per plan chosen (shape, path, algorithm or engine,
// workspace, and the candidates ranked or timed), to see which engines serve which shapes.
bool conv_log_enabled();

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

// The scratch one convolution may have: 1 GiB, or 2.5 times its largest tensor if more, up
// to kMaxConvWorkspaceBytes. cuDNN's strict fp32 NHWC engines transpose x and y into their
// workspace (1.53 GiB for VGG16's conv1_2 at batch 64 on the H200); under a flat 1 GiB cap
// only the slowest engine was left, and that backward-data took 492 ms against PyTorch's
// 4.6. Not more than 2.5x: algorithms wanting several times the activations (FFT, some
// tensor-core variants) would make a step's peak memory theirs.
size_t conv_workspace_share(const ConvKey& k);

// conv_workspace_share, and never more than half of what the GPU has free plus what kiln's
// pool holds unused (needs the GPU).
size_t conv_workspace_limit(const ConvKey& k);

// The device buffers of one call; which one is written depends on the direction
// (forward: y, backward-data: x (= dx), backward-filter: w (= dw)).
struct ConvData {
  void* x;
  void* w;
  void* y;
};

}  // namespace kiln::cuda
