// The training floor's model specs: one record per model with everything the layers above
// (trainer, app, benchmarks, peer scripts) need to know about it -- builder, scopes,
// weight-name maps, input convention, layer plan -- so none of them names a model's
// layers itself. The layer list stays with the model's builder (layers/models/).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/convention.h"
#include "io/weights.h"
#include "layers/layers.h"
#include "layers/models/layer_plan.h"

namespace kiln {

// What a caller may choose when building a model from its spec.
struct ModelOptions {
  // A constructor rather than an aggregate: ModelOptions{classes, size} leaves the rest at
  // their defaults without -Wmissing-field-initializers noise at every call site.
  ModelOptions(int64_t classes = 1000, int64_t size = 0, float keep = 0.5f, std::string head_name = "",
               bool adaptive = false)
      : num_classes(classes), image_size(size), keep_prob(keep), head(std::move(head_name)),
        adaptive_pool(adaptive) {}
  int64_t num_classes;  // the head's outputs
  int64_t image_size;   // input side; 0: the spec's default_image_size
  float keep_prob;      // dropout keep probability, where the model has dropout
  std::string head;     // one of the spec's heads; empty: the first (the published one)
  // Pool the last feature map adaptively to the grid the published head expects, so its
  // pretrained weights fit any image size (a no-op at the default image size).
  bool adaptive_pool;
};

// A classifier a model can be built with, for --help and errors.
struct HeadChoice {
  std::string name;         // "fc", "avg"
  std::string description;  // one line for people
};

// One model: how to build it and how its parameters are named, scoped and imported.
struct ModelSpec {
  std::string name;         // the registry key and the root scope of its parameters: "vgg16"
  std::string description;  // one line for people
  int64_t default_image_size = 224;
  int64_t default_num_classes = 1000;  // the head's size in the published weights
  // The preprocessing assumed when no weights file says which (the app's default).
  io::InputConvention input_convention = io::InputConvention::torchvision_rgb;
  // Builds the model: weights drawn from `init`, dropout masks from `dropout` (which must
  // outlive the model).
  std::function<std::shared_ptr<Sequential>(const ModelOptions&, Generator& init, Generator& dropout)> build;
  // The layers `build` makes with these options, in order.
  std::function<std::vector<LayerPlan>(const ModelOptions&)> plan;
  // The heads `build` offers; the first is the published model's.
  std::vector<HeadChoice> heads;
  // Scopes of every weight layer before the head in the published model ("vgg16/conv1_1/",
  // ..., "vgg16/fc7/"): what a head-only phase freezes.
  std::vector<std::string> backbone_scopes;
  // The head's scope ("vgg16/fc8/"): the layer replaced and trained for new classes.
  std::string head_scope;
  // Keras layer name <-> kiln layer name ("block1_conv1" <-> "conv1_1", "fc1" <-> "fc6").
  std::function<std::string(const std::string&)> keras_to_kiln;
  std::function<std::string(const std::string&)> kiln_to_keras;
  // kiln layer -> torchvision module path, weight layers in order ("conv1_1" ->
  // "features.0", "fc6" -> "classifier.0"); state_dict keys add ".weight" / ".bias".
  std::vector<std::pair<std::string, std::string>> torchvision_layers;
};

// A model started from a weights file, as fine-tuning starts one (build_from_weights).
struct PretrainedModel {
  std::shared_ptr<Sequential> model;
  ModelOptions options;     // as built: adaptive_pool may have been turned on
  io::ImportReport report;  // what loaded, what was skipped (the head) and what the file lacks
};
// `spec`'s model started from the weights file `path`, as vgg_finetune train --weights and
// kiln.build_model(weights=) start it: every layer the file has below the head loads; the
// layers it lacks (a no-top file's fc6 and fc7) and the head keep the draws of the model
// built without the file, drawn only for them (init::DeferredDraws: the same bits). The
// head loads too when `keep_head` and the file's has its shape (the same classes); else it
// is the new layer sized for options.num_classes. A VGG at another image size whose file's
// fc6 expects the published pool5 is built with adaptive_pool. Refused: a file holding none
// of the layers below the head, or (keep_head) one whose layers below it are shaped otherwise.
PretrainedModel build_from_weights(const ModelSpec& spec, ModelOptions options, const std::string& path,
                                   Generator& init, Generator& dropout, bool keep_head = false);

// The layer a scope of `spec`'s model names, without the root: "vgg16/fc6/" -> "fc6",
// "resnet50/layer4/0/conv1/" -> "layer4/0/conv1".
std::string layer_of(const ModelSpec& spec, const std::string& scope);

// Every registered model (vgg11, vgg13, vgg16, vgg19, resnet50, resnet50_v1), in that order.
const std::vector<ModelSpec>& model_specs();
// The spec named `name`; an unknown name is an error listing the known ones.
const ModelSpec& find_model_spec(const std::string& name);
// Refuses a head `spec` does not offer ("" is the published one), naming the ones it does:
// what its builder checks, for callers that refuse a flag before building anything.
void check_head(const ModelSpec& spec, const std::string& head);

// A torchvision state_dict key ("features.0.weight") -> kiln's parameter name
// ("vgg16/conv1_1/weight"; batch norm's running_mean/var too); empty when the key names
// no weight layer of the model.
std::string torchvision_to_kiln(const ModelSpec& spec, const std::string& key);

// The spec and its plan as JSON (what `kiln_bench --print-plan` prints and the PyTorch
// peer scripts read): name, image size, classes, input convention, scopes and one object
// per layer with its kind, channels, kernel, stride, pad, sizes and Keras/torchvision names.
std::string plan_json(const ModelSpec& spec, int64_t image_size, int64_t num_classes);

}  // namespace kiln
