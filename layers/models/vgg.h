// VGG11/13/16/19 (Simonyan & Zisserman) from one configuration table, with kiln's stable
// names: "vgg16/conv1_1/weight" ... "vgg16/conv5_3/bias", "vgg16/fc6/weight" ...
// "vgg16/fc8/bias". Input [N, 224, 224, 3] NHWC; fc6 takes the NHWC flatten of pool5
// (Keras's order), 25088 -> 4096; dropout after fc6 and fc7 in training mode.
// This file is the one home of the VGG layer list: the builder, the layer plan that
// benchmarks and peer scripts read, and the Keras and torchvision layer names all come
// from the table in vgg.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"
#include "layers/models/layer_plan.h"

namespace kiln {

// The classifier on top of pool5.
enum class VggHead {
  fc,   // fc6, fc7 (4096 each, ReLU, dropout), fc8: the published model
  avg,  // global average pooling of pool5, then fc8 (512 -> classes): Keras's pooling='avg'
};

// What make_vgg and vgg_plan build; they refuse other depths, num_classes < 1 and sizes not a multiple of 32.
struct VggOptions {
  int depth = 16;               // 11, 13, 16 or 19
  int64_t num_classes = 1000;   // fc8's size
  float keep_prob = 0.5f;       // dropout keep probability after fc6 and fc7
  int64_t image_size = 224;     // fc6's input is 512 * (image_size / 32)^2 ...
  VggHead head = VggHead::fc;
  // ... unless set: pool5 is then average-pooled adaptively to 7x7 ("pool5_7x7", as
  // torchvision's VGG does), so fc6 takes 25088 inputs and pretrained fc6 weights fit any
  // image size. No layer is added where pool5 is 7x7 already (224 px).
  bool adaptive_pool = false;
};

// Builds the model, weights drawn from `init` as torchvision's VGG initialises them (convs
// Kaiming-normal fan-out, linear layers N(0, 0.01), biases zero: a ReLU stack without batch
// norm that still passes signal, so training from scratch learns), dropout masks from
// `dropout` (which must outlive the model).
std::shared_ptr<Sequential> make_vgg(const VggOptions& opt, Generator& init, Generator& dropout);

// The layers make_vgg builds, in order (convs, pools, fcs), at opt's image size and
// class count (keep_prob is not part of a plan).
std::vector<LayerPlan> vgg_plan(const VggOptions& opt);

// Names of the weight layers in order ("conv1_1", ..., "fc8") for a depth.
std::vector<std::string> vgg_layer_names(int depth);

// Keras layer name -> kiln's ("block1_conv1" -> "conv1_1", "fc1" -> "fc6", "predictions"
// -> "fc8"); any other name is returned unchanged. Safe on names read from files.
std::string vgg_layer_from_keras(const std::string& keras);
// kiln layer name -> Keras's (the inverse); any other name is returned unchanged.
std::string vgg_layer_to_keras(const std::string& kiln);

}  // namespace kiln
