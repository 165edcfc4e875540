// The input convention of a set of weights: how pixels become network inputs (channel
// order, scale, per-channel mean and std). One enum for weights import/export, the
// transforms, the loader and checkpoints (docs/architecture.md, "Preprocessing follows the
// weights").
// Files store the convention by name ("caffe_bgr", ...); convert at that edge only.
#pragma once

#include <array>
#include <string>

namespace kiln::io {

// How input images must be prepared for a set of weights. `unknown` is what a weights
// file that records none has; the transforms refuse it.
enum class InputConvention {
  unknown,
  caffe_bgr,        // Keras/Caffe VGG16: BGR, subtract [103.939, 116.779, 123.68], no scaling
  tf_rgb,           // TF-slim: RGB, subtract [123.68, 116.78, 103.94]
  torchvision_rgb,  // RGB, /255, then (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
};

// The numbers a convention implies: input[c] = (x / divisor - mean[c]) / std[c] for the
// pixel x in [0, 255] of channel c, channels in BGR order when bgr is set. A divisor (not a
// scale) because torchvision computes x / 255, and the loader's tables match it bit for bit.
struct Preprocessing {
  InputConvention convention = InputConvention::unknown;
  bool bgr = false;
  float divisor = 1.0f;
  std::array<float, 3> mean{0, 0, 0};
  std::array<float, 3> std{1, 1, 1};
};

// The name written in files: "caffe_bgr", "tf_rgb", "torchvision_rgb" or "unknown".
const char* convention_name(InputConvention c);
// The inverse of convention_name (all four names); any other string is a kiln::Error.
InputConvention parse_convention(const std::string& name);
// The numbers of a real convention; `unknown` is a kiln::Error naming `what` needs one.
Preprocessing preprocessing_for(InputConvention c, const char* what = "preprocessing_for");

}  // namespace kiln::io
