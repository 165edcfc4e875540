// Which model's Keras layer names apply to a model: the one dispatch that io/ (reading and
// writing Keras files) and train/ (the model specs' name maps) share, so a model's Keras
// names are chosen in one place and written once, next to its table (vgg.cpp, resnet.cpp).
#pragma once

#include <string>
#include <vector>

#include "layers/models/resnet.h"
#include "layers/models/vgg.h"

namespace kiln {

// A model family's Keras layer names, both directions, and the order Keras lists its layers.
struct KerasLayerNames {
  std::string (*from_keras)(const std::string& keras);  // Keras layer name -> kiln's
  std::string (*to_keras)(const std::string& kiln);     // kiln layer name -> Keras's
  // kiln weight layers in Keras's model.layers order, which numbers Keras 3's class-named
  // groups (conv2d_N, batch_normalization_N, dense_N); null where kiln's parameter order is
  // Keras's (VGG).
  std::vector<std::string> (*keras_order)();
};

// Keeps a name: for models without Keras names of their own.
inline std::string same_layer_name(const std::string& name) { return name; }

// The names for a model by its name (Module::name(), the spec's name): "vgg*" VGG's,
// "resnet50*" ResNet-50's (both variants: Keras has v1 only, the names fit both); any
// other model keeps its names.
inline KerasLayerNames keras_layer_names(const std::string& model) {
  if (model.compare(0, 3, "vgg") == 0) return {vgg_layer_from_keras, vgg_layer_to_keras, nullptr};
  if (model.compare(0, 8, "resnet50") == 0)
    return {resnet50_layer_from_keras, resnet50_layer_to_keras, resnet50_keras_layer_order};
  return {same_layer_name, same_layer_name, nullptr};
}

}  // namespace kiln
