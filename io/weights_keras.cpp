// Keras's HDF5 weight layouts: the classic one (tf-keras save_weights/save and the files
// keras.applications ships: layer_names, per-layer weight_names) read and written, and
// Keras 3's `.weights.h5` (layers/<class name>/vars/<i>) read.
#include <algorithm>
#include <optional>

#include "io/weights_sources.h"
#include "layers/models/vgg.h"

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

std::string role(size_t index) {
  if (index == 0) return "weight";
  if (index == 1) return "bias";
  return "var" + std::to_string(index);
}

Layout layout_for_rank(size_t rank) {
  if (rank == 4) return Layout::conv_hwio;
  if (rank == 2) return Layout::dense_io;
  return Layout::same;
}

// The model's weighted layers in order, split by kind (rank-4 weight: conv; rank 2: dense).
void model_layers(Module& model, std::vector<std::string>& convs, std::vector<std::string>& denses) {
  const std::string prefix = model.name() + "/";
  for (const ParameterRef& p : model.parameters()) {
    if (p.name.size() < 7 || p.name.compare(p.name.size() - 7, 7, "/weight") != 0) continue;
    std::string layer = p.name.substr(0, p.name.size() - 7);
    if (layer.compare(0, prefix.size(), prefix) == 0) layer = layer.substr(prefix.size());
    if (p.tensor->rank() == 4) convs.push_back(layer);
    else if (p.tensor->rank() == 2) denses.push_back(layer);
  }
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

// The VGG layer names live with the VGG table (layers/models/vgg): io restates no model.
std::string keras_to_kiln_layer(const std::string& keras) { return vgg_layer_from_keras(keras); }

std::string kiln_to_keras_layer(const std::string& kiln) { return vgg_layer_to_keras(kiln); }

bool is_keras(const h5::Group& root) {
  std::string base;
  return keras_base(root, base);
}

bool is_keras3(const h5::Group& root) { return root.exists("layers") && root.is_group("layers"); }

SourceList list_keras(const h5::Group& root, Module& model) {
  SourceList s;
  s.format = WeightsFormat::keras;
  s.model = model.name();
  s.convention = InputConvention::caffe_bgr;  // Keras's VGG16 ("caffe" preprocessing)
  std::string base_path;
  keras_base(root, base_path);
  std::optional<h5::Group> model_weights;
  if (!base_path.empty()) model_weights.emplace(root.group(base_path));
  const h5::Group& base = model_weights ? *model_weights : root;
  const std::string origin_base = base_path.empty() ? "/" : "/" + base_path + "/";
  for (const std::string& layer : read_chunked(base, "layer_names")) {
    KILN_CHECK(base.exists(layer) && base.is_group(layer), "Keras weights file '", root.file(), "': layer '", layer,
               "' is listed in layer_names but ", base.where(layer), " is not a group");
    const h5::Group g = base.group(layer);
    const std::vector<std::string> names = read_chunked(g, "weight_names");
    for (size_t i = 0; i < names.size(); ++i) {
      KILN_CHECK(g.exists(names[i]) && g.is_dataset(names[i]), "Keras weights file '", root.file(), "': layer '",
                 layer, "' lists weight '", names[i], "' but ", g.where(names[i]), " is not a dataset");
      const size_t rank = g.dataset(names[i]).shape().size();
      s.entries.push_back({model.name() + "/" + keras_to_kiln_layer(layer) + "/" + role(i),
                           origin_base + layer + "/" + names[i], i == 0 ? layout_for_rank(rank) : Layout::same});
    }
  }
  return s;
}

SourceList list_keras3(const h5::Group& root, Module& model) {
  SourceList s;
  s.format = WeightsFormat::keras3;
  s.model = model.name();
  s.convention = InputConvention::caffe_bgr;
  std::vector<std::string> convs, denses;
  model_layers(model, convs, denses);
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
    // Keras 3 names groups by class: the k-th conv2d is the model's k-th conv layer.
    std::string kiln_layer = keras_to_kiln_layer(layer);
    const int ci = class_index(layer, "conv2d"), di = class_index(layer, "dense");
    if (ci >= 0) {
      KILN_CHECK(ci < static_cast<int>(convs.size()), "Keras 3 weights file '", root.file(), "' has layer '", layer,
                 "' (conv layer ", ci + 1, ") but model '", model.name(), "' has ", convs.size(),
                 " conv layers -- is this a weights file for another model?");
      kiln_layer = convs[static_cast<size_t>(ci)];
    } else if (di >= 0) {
      KILN_CHECK(di < static_cast<int>(denses.size()), "Keras 3 weights file '", root.file(), "' has layer '", layer,
                 "' (dense layer ", di + 1, ") but model '", model.name(), "' has ", denses.size(),
                 " dense layers -- is this a weights file for another model?");
      kiln_layer = denses[static_cast<size_t>(di)];
    }
    for (int i : idx) {
      const std::string v = std::to_string(i);
      const size_t rank = vars.dataset(v).shape().size();
      s.entries.push_back({model.name() + "/" + kiln_layer + "/" + role(static_cast<size_t>(i)),
                           "/layers/" + layer + "/vars/" + v, i == 0 ? layout_for_rank(rank) : Layout::same});
    }
  }
  return s;
}

void write_keras(h5::Group& root, Module& model) {
  const std::string prefix = model.name() + "/";
  std::vector<std::string> layer_names;
  std::vector<std::vector<std::pair<std::string, const Tensor*>>> layer_weights;
  for (const ParameterRef& p : model.parameters()) {
    std::string rel = p.name.compare(0, prefix.size(), prefix) == 0 ? p.name.substr(prefix.size()) : p.name;
    const size_t slash = rel.rfind('/');
    KILN_CHECK(slash != std::string::npos, "export to Keras layout: parameter '", p.name,
               "' is not named <model>/<layer>/<weight|bias>");
    const std::string layer = kiln_to_keras_layer(rel.substr(0, slash));
    const std::string what = rel.substr(slash + 1);
    if (layer_names.empty() || layer_names.back() != layer) {
      layer_names.push_back(layer);
      layer_weights.emplace_back();
    }
    const std::string keras_what = what == "weight" ? "kernel" : what;
    layer_weights.back().emplace_back(layer + "/" + keras_what + ":0", p.tensor);
  }
  root.set_string_list_attribute("layer_names", layer_names);
  root.set_string_attribute("backend", "tensorflow");
  root.set_string_attribute("keras_version", "2.11.0");
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
