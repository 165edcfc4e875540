// Keras's HDF5 weight layouts: the classic one (tf-keras save_weights/save and the files
// keras.applications ships: layer_names, per-layer weight_names) read and written, and
// Keras 3's `.weights.h5` (layers/<class name>/vars/<i>) read.
#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "io/weights_sources.h"
#include "layers/models/keras_names.h"

namespace kiln::io::weights_detail {

using kiln::detail::concat;

namespace {

// Keras splits long attributes into name0, name1, ... (HDF5's 64 KiB attribute limit).
bool has_chunked(const h5::Group& g, const std::string& name) {
  return g.has_attribute(name) || g.has_attribute(name + "0");
}

std::vector<std::string> read_chunked(const h5::Group& g, const std::string& name) {
  if (g.has_attribute(name)) return g.string_list_attribute(name);
  std::vector<std::string> out;
  for (int i = 0; g.has_attribute(name + std::to_string(i)); ++i) {
    std::vector<std::string> part = g.string_list_attribute(name + std::to_string(i));
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// The group holding layer_names: the root (save_weights) or model_weights (model.save).
bool keras_base(const h5::Group& root, std::string& base) {
  if (has_chunked(root, "layer_names")) {
    base = "";
    return true;
  }
  if (root.exists("model_weights") && root.is_group("model_weights") &&
      has_chunked(root.group("model_weights"), "layer_names")) {
    base = "model_weights";
    return true;
  }
  return false;
}

// The kiln role of the index-th weight of a Keras layer, when its name does not say:
// kernel (or gamma), bias (or beta), then a batch norm's moving mean and variance.
std::string role(size_t index, bool batch_norm) {
  if (index == 0) return "weight";
  if (index == 1) return "bias";
  if (batch_norm && index == 2) return "running_mean";
  if (batch_norm && index == 3) return "running_var";
  return "var" + std::to_string(index);
}

// The kiln role a Keras weight's name gives ("conv1_bn/gamma:0", "moving_mean", Keras 3's
// legacy "conv1_conv/kernel"): "" when the name is none of Keras's (e.g.
// "block1_conv1_W_1:0"), and the weight's position decides.
std::string role_by_name(const std::string& weight_name) {
  std::string base = weight_name.substr(weight_name.rfind('/') + 1);  // npos + 1 == 0: the whole name
  const size_t colon = base.rfind(':');
  if (colon != std::string::npos) base.resize(colon);
  static const std::pair<const char*, const char*> kRoles[] = {
      {"kernel", "weight"}, {"gamma", "weight"}, {"bias", "bias"}, {"beta", "bias"},
      {"moving_mean", "running_mean"}, {"moving_variance", "running_var"}};
  for (const auto& [keras, kiln] : kRoles)
    if (base == keras) return kiln;
  return "";
}

// kiln's role -> the Keras weight name (batch norm's gamma, beta, moving_mean,
// moving_variance; a conv's or dense's kernel and bias); unknown roles keep their name.
std::string keras_weight_name(const std::string& role, bool batch_norm) {
  if (role == "weight") return batch_norm ? "gamma" : "kernel";
  if (role == "bias") return batch_norm ? "beta" : "bias";
  if (role == "running_mean") return "moving_mean";
  if (role == "running_var") return "moving_variance";
  return role;
}

// The model's batch norms (layers below its root scope that keep running statistics).
std::set<std::string> batch_norm_layers(Module& model) {
  const std::string prefix = model.name() + "/", suffix = "/running_mean";
  std::set<std::string> out;
  for (const BufferRef& b : model.buffers())
    if (b.name.size() > prefix.size() + suffix.size() && b.name.compare(0, prefix.size(), prefix) == 0 &&
        b.name.compare(b.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.insert(b.name.substr(prefix.size(), b.name.size() - prefix.size() - suffix.size()));
  return out;
}

Layout layout_for_rank(size_t rank) {
  if (rank == 4) return Layout::conv_hwio;
  if (rank == 2) return Layout::dense_io;
  return Layout::same;
}

// The model's weighted layers of one Keras 3 class, in the order Keras numbers that class.
struct ClassLayers {
  const char* keras_class;  // "conv2d": groups conv2d, conv2d_1, ...
  const char* what;         // for errors: "conv"
  std::vector<std::string> layers;
};

// The model's weighted layers (below its root scope) split by Keras 3 class: conv2d (a
// rank-4 weight), dense (rank 2), batch_normalization (running statistics); in Keras's
// model.layers order where the model's Keras names give one, else in parameter order.
std::vector<ClassLayers> model_layers(Module& model) {
  std::vector<ClassLayers> classes = {{"conv2d", "conv", {}}, {"dense", "dense", {}},
                                      {"batch_normalization", "batch-norm", {}}};
  const std::string prefix = model.name() + "/";
  std::vector<std::string> order;
  std::map<std::string, size_t> kind;
  const std::set<std::string> bns = batch_norm_layers(model);
  for (const ParameterRef& p : model.parameters()) {
    if (p.name.size() < 7 || p.name.compare(p.name.size() - 7, 7, "/weight") != 0) continue;
    std::string layer = p.name.substr(0, p.name.size() - 7);
    if (layer.compare(0, prefix.size(), prefix) == 0) layer = layer.substr(prefix.size());
    const size_t k = bns.count(layer) ? 2 : p.tensor->rank() == 4 ? 0 : p.tensor->rank() == 2 ? 1 : 3;
    if (k < 3) {
      order.push_back(layer);
      kind[layer] = k;
    }
  }
  const KerasLayerNames names = keras_layer_names(model.name());
  if (names.keras_order) order = names.keras_order();
  for (const std::string& layer : order) {
    const auto it = kind.find(layer);
    if (it != kind.end()) classes[it->second].layers.push_back(layer);
  }
  return classes;
}

// The value of `s`, all decimal digits, or -1 when it is not that or exceeds 10^8 (names
// come from the file: std::stoi would throw on "99999999999", std::regex recurses per
// character).
int small_number(const std::string& s) {
  if (s.empty() || s.size() > 8 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoi(s);
}

// "conv2d" -> 0, "conv2d_7" -> 7 for class-named Keras 3 layers; -1 otherwise.
int class_index(const std::string& name, const std::string& cls) {
  if (name == cls) return 0;
  if (name.size() < cls.size() + 2 || name.compare(0, cls.size(), cls) != 0 || name[cls.size()] != '_') return -1;
  return small_number(name.substr(cls.size() + 1));
}

}  // namespace

bool is_keras(const h5::Group& root) {
  std::string base;
  return keras_base(root, base);
}

bool is_keras3(const h5::Group& root) { return root.exists("layers") && root.is_group("layers"); }

namespace {

// The model of a Keras file whose layer_names are `layers`: the kiln_model attribute kiln
// writes, else the model keras.applications' names identify, else "".
std::string file_model(const h5::Group& root, const std::vector<std::string>& layers) {
  if (root.has_attribute(kKerasModelAttribute)) return root.string_attribute(kKerasModelAttribute);
  const std::set<std::string> names(layers.begin(), layers.end());
  const auto has = [&](const char* n) { return names.count(n) > 0; };
  // ResNet50V2 (pre-activation) and the deeper ResNets share ResNet50's first names, and
  // kiln builds neither.
  if (has("conv1_conv") && has("conv5_block3_3_conv") && !has("conv2_block1_preact_bn") &&
      !has("conv4_block7_1_conv"))
    return "resnet50_v1";
  if (has("block5_conv4")) return "vgg19";
  if (has("block5_conv3")) return "vgg16";
  return "";
}

}  // namespace

std::string keras_file_model(const h5::Group& root) {
  std::string base_path;
  keras_base(root, base_path);
  return file_model(root, base_path.empty() ? read_chunked(root, "layer_names")
                                            : read_chunked(root.group(base_path), "layer_names"));
}

SourceList list_keras(const h5::Group& root, Module& model) {
  SourceList s;
  s.format = WeightsFormat::keras;
  // Keras's VGG16 and ResNet50 take "caffe" preprocessing; a file kiln exported says what
  // its model was trained on (write_keras).
  s.convention = root.has_attribute(kKerasConventionAttribute)
                     ? parse_convention(root.string_attribute(kKerasConventionAttribute))
                     : InputConvention::caffe_bgr;
  std::string base_path;
  keras_base(root, base_path);
  std::optional<h5::Group> model_weights;
  if (!base_path.empty()) model_weights.emplace(root.group(base_path));
  const h5::Group& base = model_weights ? *model_weights : root;
  const std::string origin_base = base_path.empty() ? "/" : "/" + base_path + "/";
  const std::vector<std::string> layers = read_chunked(base, "layer_names");
  const std::string named = file_model(root, layers);
  s.model = named.empty() ? model.name() : named;
  // Layer names live with each model's table (layers/models/): io restates no model. The
  // entries are named as the file's model's (the import maps them onto the target's).
  const KerasLayerNames layer_names = keras_layer_names(s.model);
  const std::set<std::string> bns = batch_norm_layers(model);
  for (const std::string& layer : layers) {
    KILN_CHECK(base.exists(layer) && base.is_group(layer), "Keras weights file '", root.file(), "': layer '", layer,
               "' is listed in layer_names but ", base.where(layer), " is not a group");
    const h5::Group g = base.group(layer);
    const std::vector<std::string> names = read_chunked(g, "weight_names");
    const std::string kiln_layer = layer_names.from_keras(layer);
    const bool batch_norm = bns.count(kiln_layer) > 0;
    for (size_t i = 0; i < names.size(); ++i) {
      KILN_CHECK(g.exists(names[i]) && g.is_dataset(names[i]), "Keras weights file '", root.file(), "': layer '",
                 layer, "' lists weight '", names[i], "' but ", g.where(names[i]), " is not a dataset");
      const size_t rank = g.dataset(names[i]).shape().size();
      std::string r = role_by_name(names[i]);
      if (r.empty()) r = role(i, batch_norm);
      s.entries.push_back({s.model + "/" + kiln_layer + "/" + r, origin_base + layer + "/" + names[i],
                           r == "weight" ? layout_for_rank(rank) : Layout::same});
    }
  }
  return s;
}

SourceList list_keras3(const h5::Group& root, Module& model) {
  SourceList s;
  s.format = WeightsFormat::keras3;
  s.model = model.name();
  s.convention = InputConvention::caffe_bgr;
  const std::vector<ClassLayers> classes = model_layers(model);
  const KerasLayerNames layer_names = keras_layer_names(model.name());
  const std::set<std::string> bns = batch_norm_layers(model);
  const h5::Group layers = root.group("layers");
  for (const std::string& layer : layers.children()) {
    if (!layers.exists(layer + "/vars") || !layers.is_group(layer + "/vars")) continue;
    const h5::Group vars = layers.group(layer + "/vars");
    // vars/0, vars/1, ...: in numeric order, which is not HDF5's name order past 9.
    std::vector<int> idx;
    for (const std::string& v : vars.children())
      if (small_number(v) >= 0 && std::to_string(small_number(v)) == v) idx.push_back(small_number(v));
    std::sort(idx.begin(), idx.end());
    if (idx.empty()) continue;
    // Keras 3 names groups by class: the k-th conv2d is the model's k-th conv layer in
    // Keras's order (likewise dense, batch_normalization).
    std::string kiln_layer = layer_names.from_keras(layer);
    for (const ClassLayers& c : classes) {
      const int k = class_index(layer, c.keras_class);
      if (k < 0) continue;
      KILN_CHECK(k < static_cast<int>(c.layers.size()), "Keras 3 weights file '", root.file(), "' has layer '", layer,
                 "' (", c.what, " layer ", k + 1, ") but model '", model.name(), "' has ", c.layers.size(), " ",
                 c.what, " layers -- is this a weights file for another model?");
      kiln_layer = c.layers[static_cast<size_t>(k)];
    }
    const bool batch_norm = bns.count(kiln_layer) > 0;
    for (int i : idx) {
      const std::string v = std::to_string(i);
      const size_t rank = vars.dataset(v).shape().size();
      s.entries.push_back({model.name() + "/" + kiln_layer + "/" + role(static_cast<size_t>(i), batch_norm),
                           "/layers/" + layer + "/vars/" + v, i == 0 ? layout_for_rank(rank) : Layout::same});
    }
  }
  return s;
}

void write_keras(h5::Group& root, Module& model, InputConvention convention) {
  const std::string prefix = model.name() + "/";
  const KerasLayerNames keras = keras_layer_names(model.name());
  const std::set<std::string> bns = batch_norm_layers(model);
  // Parameters, then buffers (a batch norm's running statistics join its gamma and beta).
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  for (const ParameterRef& p : model.parameters()) tensors.emplace_back(p.name, p.tensor);
  for (const BufferRef& b : model.buffers()) tensors.emplace_back(b.name, b.tensor);
  std::vector<std::string> layer_names;
  std::map<std::string, size_t> layer_index;
  std::vector<std::vector<std::pair<std::string, const Tensor*>>> layer_weights;
  for (const auto& [name, tensor] : tensors) {
    std::string rel = name.compare(0, prefix.size(), prefix) == 0 ? name.substr(prefix.size()) : name;
    const size_t slash = rel.rfind('/');
    KILN_CHECK(slash != std::string::npos, "export to Keras layout: parameter '", name,
               "' is not named <model>/<layer>/<weight|bias>");
    const std::string kiln_layer = rel.substr(0, slash);
    const std::string layer = keras.to_keras(kiln_layer);
    const auto [it, added] = layer_index.emplace(layer, layer_names.size());
    if (added) {
      layer_names.push_back(layer);
      layer_weights.emplace_back();
    }
    const std::string keras_what = keras_weight_name(rel.substr(slash + 1), bns.count(kiln_layer) > 0);
    layer_weights[it->second].emplace_back(layer + "/" + keras_what + ":0", tensor);
  }
  root.set_string_list_attribute("layer_names", layer_names);
  root.set_string_attribute("backend", "tensorflow");
  root.set_string_attribute("keras_version", "2.11.0");
  root.set_string_attribute(kKerasConventionAttribute, convention_name(convention));
  root.set_string_attribute(kKerasModelAttribute, model.name());
  for (size_t l = 0; l < layer_names.size(); ++l) {
    h5::Group g = root.create_group(layer_names[l]);
    std::vector<std::string> names;
    for (const auto& w : layer_weights[l]) {
      names.push_back(w.first);
      const Tensor host = w.second->cpu().to(DType::f32);
      const std::vector<int64_t>& d = host.shape().dims();
      if (d.size() == 4 || d.size() == 2) {
        // OHWI [o, kh, kw, i] -> (kh, kw, i, o); [out, in] -> (in, out).
        const int64_t out = d[0], rest = host.numel() / std::max<int64_t>(out, 1);
        std::vector<float> t(static_cast<size_t>(host.numel()));
        transpose(host.data<float>(), t.data(), out, rest);
        std::vector<int64_t> shape(d.begin() + 1, d.end());
        shape.push_back(out);
        g.write_f32(w.first, shape, t.data());
      } else {
        g.write_f32(w.first, d, host.data<float>());
      }
    }
    g.set_string_list_attribute("weight_names", names);
  }
}

}  // namespace kiln::io::weights_detail
