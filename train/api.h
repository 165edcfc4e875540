// The short path for research code: a model from a weights file and its logits for an
// image file in a few lines. load_model builds the model through its spec, owns the
// generators the builder needs, imports the weights, sets eval mode and remembers the
// weights' input convention and image size; Model::logits decodes, resizes the shorter
// side, centre-crops, applies the convention and runs without autograd.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "io/image.h"
#include "io/transforms.h"
#include "io/weights.h"
#include "train/model_spec.h"

namespace kiln {

// What load_model may be told; every field has a default that reads the weights file.
struct LoadOptions {
  int64_t num_classes = 0;  // the head's outputs; 0: read from the file's head
  int64_t image_size = 0;   // input side; 0: the spec's default (224 for VGG)
  // How images become inputs; unset: what the file records, else the spec's default.
  std::optional<io::InputConvention> convention = std::nullopt;
  Device device = Device::cpu();  // where the model and its inputs live
};

// One class of a prediction: its index in the head and its softmax probability.
struct Prediction {
  int64_t index = 0;
  float probability = 0.0f;
};

// The side an image is resized to before the centre crop: 256 for a 224 crop, the
// ImageNet evaluation recipe, scaled for other sizes.
int resize_for_crop(int64_t image_size);
// An image as network input: shorter side to resize_for_crop(image_size), centre crop of
// image_size, convention applied. out: [image_size, image_size, 3] float32.
void image_to_input(const io::Image& img, int64_t image_size, io::InputConvention convention, float* out);
// The same as a batch of one: [1, image_size, image_size, 3] on the CPU.
Tensor image_tensor(const io::Image& img, int64_t image_size, io::InputConvention convention);
// decode_image then image_tensor: the input tensor of an image file.
Tensor load_image_tensor(const std::string& path, int64_t image_size, io::InputConvention convention);
// The k most probable classes of one row of probabilities, most probable first (ties keep
// the lower index first).
std::vector<Prediction> top_classes(const float* probabilities, int64_t num_classes, int64_t k);

// A model with its weights loaded, in eval mode, ready for inference.
class Model {
 public:
  // Logits of one image file or decoded image: [1, num_classes], on the model's device.
  Tensor logits(const std::string& image_path);
  Tensor logits(const io::Image& image);
  // Logits of a prepared batch [N, image_size, image_size, 3] (moved to the model's device).
  Tensor logits(const Tensor& batch);
  // The top_k classes of an image file by softmax probability, most probable first.
  std::vector<Prediction> predict(const std::string& image_path, int64_t top_k = 5);

  // The network itself (parameters, forward, train()/eval()).
  Sequential& net() { return *net_; }
  const std::shared_ptr<Sequential>& net_ptr() const { return net_; }
  // The model's spec: scopes, weight-name maps, layer plan.
  const ModelSpec& spec() const { return *spec_; }
  // What the import loaded, skipped and verified, and the convention the file records.
  const io::ImportReport& import_report() const { return report_; }
  // The convention inputs are prepared with, the input side and the head's size.
  io::InputConvention convention() const { return convention_; }
  int64_t image_size() const { return image_size_; }
  int64_t num_classes() const { return num_classes_; }
  Device device() const { return device_; }

 private:
  friend Model load_model(const std::string&, const std::string&, const LoadOptions&);
  Model() = default;
  std::unique_ptr<Generator> init_, dropout_;  // the builder's generators: outlive net_
  std::shared_ptr<Sequential> net_;
  const ModelSpec* spec_ = nullptr;
  io::ImportReport report_;
  io::InputConvention convention_ = io::InputConvention::torchvision_rgb;
  int64_t image_size_ = 0;
  int64_t num_classes_ = 0;
  Device device_ = Device::cpu();
};

// The head's size in a weights file (kiln, Keras or Keras 3) for `spec`'s model; a file
// whose head cannot be found is an error asking for LoadOptions::num_classes.
int64_t weights_num_classes(const ModelSpec& spec, const std::string& weights_path);

// Builds `model_name` ("vgg16", see model_specs()) and loads `weights_path` into it (every
// parameter must be in the file), in eval mode on opt.device.
Model load_model(const std::string& model_name, const std::string& weights_path, const LoadOptions& opt = {});

}  // namespace kiln
