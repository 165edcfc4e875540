// The model spec registry: VGG11/13/16/19 described from layers/models/vgg's one table,
// ResNet-50 v1.5 and v1 from layers/models/resnet's.
#include "train/model_spec.h"

#include <algorithm>
#include <optional>
#include <sstream>

#include "layers/init.h"
#include "layers/models/keras_names.h"
#include "layers/models/resnet.h"
#include "layers/models/vgg.h"

namespace kiln {
namespace {

// Refuses a head the model does not offer (empty: the first, the published one).
void require_head(const std::string& model, const std::vector<HeadChoice>& heads, const std::string& head) {
  bool offered = head.empty();
  std::string names;
  for (const HeadChoice& h : heads) {
    offered = offered || h.name == head;
    names += (names.empty() ? "" : ", ") + h.name;
  }
  KILN_CHECK(offered, model, " has no head '", head, "' (its heads: ", names, ")");
}

// The input side a model is built for: the spec's default for 0.
int64_t image_size_or_default(const std::string& model, const ModelOptions& o, int64_t default_size) {
  KILN_CHECK(o.image_size >= 0, model, ": image size ", o.image_size, " is negative (0 takes the default, ",
             default_size, ")");
  return o.image_size > 0 ? o.image_size : default_size;
}

ModelSpec vgg_spec(int depth) {
  ModelSpec s;
  s.name = "vgg" + std::to_string(depth);
  s.description = "VGG" + std::to_string(depth) + " (Simonyan & Zisserman), NHWC input, fc8 head";
  s.default_image_size = 224;
  s.default_num_classes = 1000;
  s.input_convention = io::InputConvention::torchvision_rgb;
  const int64_t default_size = s.default_image_size;
  s.heads = {{"fc", "fc6, fc7 (4096 each) and fc8: the published VGG's classifier"},
             {"avg", "global average pooling of pool5, then fc8 (512 -> classes): Keras's pooling='avg'"}};
  const auto vgg_options = [depth, default_size, name = s.name, heads = s.heads](const ModelOptions& o) {
    require_head(name, heads, o.head);
    return VggOptions{depth,        o.num_classes, o.keep_prob, image_size_or_default(name, o, default_size),
                      o.head == "avg" ? VggHead::avg : VggHead::fc, o.adaptive_pool};
  };
  s.build = [vgg_options](const ModelOptions& o, Generator& init, Generator& dropout) {
    return make_vgg(vgg_options(o), init, dropout);
  };
  s.plan = [vgg_options](const ModelOptions& o) { return vgg_plan(vgg_options(o)); };
  s.keras_to_kiln = vgg_layer_from_keras;
  s.kiln_to_keras = vgg_layer_to_keras;
  std::vector<const LayerPlan*> weighted;
  const std::vector<LayerPlan> plan = s.plan(ModelOptions{s.default_num_classes});
  for (const LayerPlan& l : plan)
    if (has_weights(l.kind)) weighted.push_back(&l);
  // The last weight layer is the head; every one before it is backbone.
  for (const LayerPlan* l : weighted) {
    const std::string scope = s.name + "/" + l->name + "/";
    if (l == weighted.back()) s.head_scope = scope;
    else s.backbone_scopes.push_back(scope);
    s.torchvision_layers.emplace_back(l->name, l->torchvision);
  }
  return s;
}

// ResNet-50 has no LayerPlan (a residual block is no chain of layers): its plan is empty,
// so plan-driven tools (kiln_bench --print-plan) list no layers.
// Module paths map to torchvision's by '/' -> '.'; Keras names as keras.applications.ResNet50's.
ModelSpec resnet50_spec(ResNetVariant variant) {
  const bool v1 = variant == ResNetVariant::v1;
  ModelSpec s;
  s.name = v1 ? "resnet50_v1" : "resnet50";
  s.description = v1 ? "ResNet-50 v1 (Keras's: stride in the first 1x1 conv, conv biases), NHWC input, fc head"
                     : "ResNet-50 v1.5 (torchvision's: stride in the 3x3 conv), NHWC input, fc head";
  s.default_image_size = 224;
  s.default_num_classes = 1000;
  s.input_convention = v1 ? io::InputConvention::caffe_bgr : io::InputConvention::torchvision_rgb;
  const int64_t default_size = s.default_image_size;
  s.heads = {{"fc", "global average pooling, then fc (2048 -> classes): the published classifier"}};
  const auto options = [variant, default_size, name = s.name, heads = s.heads](const ModelOptions& o) {
    require_head(name, heads, o.head);
    return ResNetOptions{variant, o.num_classes, image_size_or_default(name, o, default_size)};
  };
  s.build = [options](const ModelOptions& o, Generator& init, Generator&) { return make_resnet50(options(o), init); };
  s.plan = [](const ModelOptions&) { return std::vector<LayerPlan>{}; };
  // The same names io reads Keras files with (layers/models/keras_names.h).
  const KerasLayerNames keras = keras_layer_names(s.name);
  s.keras_to_kiln = keras.from_keras;
  s.kiln_to_keras = keras.to_keras;
  s.backbone_scopes = {s.name + "/conv1/", s.name + "/bn1/"};
  for (int i = 1; i <= 4; ++i) s.backbone_scopes.push_back(s.name + "/layer" + std::to_string(i) + "/");
  s.head_scope = s.name + "/fc/";
  for (const std::string& layer : resnet50_weight_layers()) {
    std::string path = layer;
    std::replace(path.begin(), path.end(), '/', '.');
    s.torchvision_layers.emplace_back(layer, path);
  }
  return s;
}

std::string json_string(const std::string& v) {
  std::string out = "\"";
  for (const char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + json_string(v[i]);
  return out + "]";
}

}  // namespace

const std::vector<ModelSpec>& model_specs() {
  static const std::vector<ModelSpec> specs = {vgg_spec(11),
                                                 vgg_spec(13),
                                                 vgg_spec(16),
                                                 vgg_spec(19),
                                                 resnet50_spec(ResNetVariant::v1_5),
                                                 resnet50_spec(ResNetVariant::v1)};
  return specs;
}

void check_head(const ModelSpec& spec, const std::string& head) { require_head(spec.name, spec.heads, head); }

std::string layer_of(const ModelSpec& spec, const std::string& scope) {
  return scope.substr(spec.name.size() + 1, scope.size() - spec.name.size() - 2);
}

const ModelSpec& find_model_spec(const std::string& name) {
  std::string known;
  for (const ModelSpec& s : model_specs()) {
    if (s.name == name) return s;
    known += (known.empty() ? "" : ", ") + s.name;
  }
  KILN_FAIL("unknown model '", name, "' (known models: ", known, ")");
}

std::string torchvision_to_kiln(const ModelSpec& spec, const std::string& key) {
  const size_t dot = key.rfind('.');
  if (dot == std::string::npos) return "";
  const std::string module = key.substr(0, dot), what = key.substr(dot + 1);
  if (what != "weight" && what != "bias" && what != "running_mean" && what != "running_var") return "";
  for (const auto& [layer, path] : spec.torchvision_layers)
    if (path == module) return spec.name + "/" + layer + "/" + what;
  return "";
}

std::string plan_json(const ModelSpec& spec, int64_t image_size, int64_t num_classes) {
  const int64_t size = image_size > 0 ? image_size : spec.default_image_size;
  const std::vector<LayerPlan> plan = spec.plan(ModelOptions{num_classes, size});
  std::ostringstream js;
  js << "{\n  \"model\": " << json_string(spec.name) << ",\n  \"image_size\": " << size
     << ",\n  \"num_classes\": " << num_classes << ",\n  \"input_layout\": \"NHWC\",\n  \"input_convention\": "
     << json_string(io::convention_name(spec.input_convention)) << ",\n  \"backbone_scopes\": "
     << json_strings(spec.backbone_scopes) << ",\n  \"head_scope\": " << json_string(spec.head_scope)
     << ",\n  \"layers\": [\n";
  for (size_t i = 0; i < plan.size(); ++i) {
    const LayerPlan& l = plan[i];
    js << "    {\"name\": " << json_string(l.name) << ", \"kind\": \"" << layer_kind_name(l.kind)
       << "\", \"in_channels\": " << l.in_channels << ", \"out_channels\": " << l.out_channels
       << ", \"kernel\": " << l.kernel << ", \"stride\": " << l.stride << ", \"pad\": " << l.pad
       << ", \"in_size\": " << l.in_size << ", \"out_size\": " << l.out_size
       << ", \"relu\": " << (l.relu ? "true" : "false") << ", \"dropout\": " << (l.dropout ? "true" : "false")
       << ", \"keras\": " << json_string(l.keras) << ", \"torchvision\": " << json_string(l.torchvision) << "}"
       << (i + 1 < plan.size() ? ",\n" : "\n");
  }
  js << "  ]\n}\n";
  return js.str();
}

namespace {

// The import that starts a model from a weights file: the published layers the model lacks
// skipped (the avg head has no fc6, fc7; a scope may be a group, ResNet's "layer1/"), what the
// file lacks kept, the head skipped unless asked for. `probe`: anything shaped otherwise is
// skipped too, to see what fits.
io::ImportOptions start_import(const ModelSpec& spec, Sequential& model, bool head, bool probe) {
  io::ImportOptions opt;
  if (!head) opt.skip.push_back(spec.head_scope);
  const std::vector<std::string> scopes = model.parameter_scopes();
  for (const std::string& s : spec.backbone_scopes)
    if (std::none_of(scopes.begin(), scopes.end(), [&](const std::string& sc) { return sc.rfind(s, 0) == 0; }))
      opt.skip.push_back(s);
  opt.allow_missing = true;
  opt.skip_mismatched = probe;
  return opt;
}

bool in_scope(const std::vector<std::string>& names, const std::string& scope) {
  return std::all_of(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(scope, 0) == 0; });
}

}  // namespace

PretrainedModel build_from_weights(const ModelSpec& spec, ModelOptions options, const std::string& path,
                                   Generator& init, Generator& dropout, bool keep_head) {
  PretrainedModel p;
  p.options = std::move(options);
  const PhiloxState init_start = init.state();
  std::optional<init::DeferredDraws> deferred;
  const auto build = [&] {
    deferred.reset();  // a rebuild's draws replace the first build's
    init.set_state(init_start);
    deferred.emplace();
    std::shared_ptr<Sequential> m = spec.build(p.options, init, dropout);
    deferred->stop();
    return m;
  };
  p.model = build();
  // A VGG at another size has another fc6, which the published one fits once pool5 is pooled
  // to its grid: a probe import (skipping what is shaped otherwise) says whether it fits.
  const int64_t size = p.options.image_size > 0 ? p.options.image_size : spec.default_image_size;
  const bool may_adapt = (p.options.head.empty() || p.options.head == "fc") && size != spec.default_image_size &&
                         !p.options.adaptive_pool;
  const auto probe = [&] { return io::import_weights(*p.model, path, start_import(spec, *p.model, keep_head, true)); };
  // How many of `names` are below the head (not in its scope).
  const auto below_head = [&](const std::vector<std::string>& names) {
    return std::count_if(names.begin(), names.end(),
                         [&](const std::string& n) { return n.rfind(spec.head_scope, 0) != 0; });
  };
  std::optional<io::ImportReport> fit;
  if (may_adapt || keep_head) fit = probe();
  if (may_adapt && !in_scope(fit->mismatched, spec.head_scope)) {
    // Kept only where pooling fits more of the file: a file made at a third size fits neither
    // way, and its error then names the shapes of the model asked for, not those of pool5
    // pooled to the published 7x7 (fc6 expecting 25088 inputs in a 32 px model).
    const auto plain = below_head(fit->mismatched);
    p.options.adaptive_pool = true;
    p.model = build();
    fit = probe();
    if (below_head(fit->mismatched) >= plain) {
      p.options.adaptive_pool = false;
      p.model = build();
      fit.reset();
    }
  }
  // The probe's import is the start (a head of other classes skipped) unless a layer below
  // the head is shaped otherwise; then, as without keep_head, the import with the head
  // skipped and nothing else, which names each such layer in its error.
  if (fit && in_scope(fit->mismatched, spec.head_scope)) p.report = std::move(*fit);
  else p.report = io::import_weights(*p.model, path, start_import(spec, *p.model, false, false));
  KILN_CHECK(below_head(p.report.loaded) > 0, "weights file '", path, "' holds none of ", spec.name,
             "'s layers below the head, so there is nothing to start from: check the file, or start from the "
             "seeded initialisation without it");
  deferred->draw_untouched();  // on the host, before any move: the bits the eager build has
  return p;
}

}  // namespace kiln
