#include "train/api.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "io/hdf5.h"
#include "io/keras_archive.h"

namespace kiln {

namespace {

// The head's layer name within the model: "vgg16/fc8/" -> "fc8".
std::string head_layer(const ModelSpec& spec) {
  std::string s = spec.head_scope;
  if (s.starts_with(spec.name + "/")) s = s.substr(spec.name.size() + 1);
  if (s.ends_with('/')) s.pop_back();
  return s;
}

// Every dataset below `g` as root-relative paths, each group entered once (links can make
// a group its own descendant).
void list_datasets(const io::h5::Group& g, const std::string& prefix, std::vector<std::string>& out,
                   std::set<uint64_t>& seen, int depth) {
  if (depth > 16) return;
  for (const std::string& child : g.children()) {
    const std::string rel = prefix.empty() ? child : prefix + "/" + child;
    if (g.is_group(child)) {
      if (seen.insert(g.object_address(child)).second) list_datasets(g.group(child), rel, out, seen, depth + 1);
    } else if (g.is_dataset(child)) {
      out.push_back(rel);
    }
  }
}

// Keras 3 names layer groups by class: "dense", "dense_1", ...; the suffix orders them
// ("dense" is 0), so the last is the one with the largest suffix.
int64_t keras3_dense_index(const std::string& name) {
  if (name == "dense") return 0;
  if (!name.starts_with("dense_")) return -1;
  const std::string n = name.substr(6);
  if (n.empty() || !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  return std::atoll(n.c_str());
}

// The length of the 1-D dataset at `rel`, or 0 when it is not one.
int64_t bias_length(const io::h5::Group& root, const std::string& rel) {
  if (!root.is_dataset(rel)) return 0;
  const std::vector<int64_t> s = root.dataset(rel).shape();
  return s.size() == 1 ? s[0] : 0;
}

}  // namespace

int resize_for_crop(int64_t image_size) { return static_cast<int>(image_size * 256 / 224); }

void image_to_input(const io::Image& img, int64_t image_size, io::InputConvention convention, float* out) {
  KILN_CHECK(image_size > 0, "image_to_input: image size must be positive, got ", image_size);
  const io::Image resized = io::resize_shorter_side(img, resize_for_crop(image_size));
  const io::Crop crop = io::center_crop(resized.width, resized.height, static_cast<int>(image_size));
  io::crop_to_input(resized, crop, convention, out);
}

Tensor image_tensor(const io::Image& img, int64_t image_size, io::InputConvention convention) {
  KILN_CHECK(image_size >= 1 && image_size <= io::kMaxImageSize, "image size ", image_size, " is outside 1..",
             io::kMaxImageSize, " (the input crop, in pixels a side)");
  std::vector<float> buf(static_cast<size_t>(image_size * image_size * 3));
  image_to_input(img, image_size, convention, buf.data());
  return Tensor::from_vector(buf, Shape{1, image_size, image_size, 3});
}

Tensor load_image_tensor(const std::string& path, int64_t image_size, io::InputConvention convention) {
  return image_tensor(io::decode_image(path), image_size, convention);
}

std::vector<Prediction> top_classes(const float* probabilities, int64_t num_classes, int64_t k) {
  std::vector<Prediction> row;
  row.reserve(static_cast<size_t>(num_classes));
  for (int64_t c = 0; c < num_classes; ++c) row.push_back({c, probabilities[c]});
  std::stable_sort(row.begin(), row.end(), [](const Prediction& a, const Prediction& b) {
    return a.probability > b.probability;
  });
  row.resize(static_cast<size_t>(std::clamp<int64_t>(k, 0, num_classes)));
  return row;
}

Tensor Model::logits(const std::string& image_path) { return logits(io::decode_image(image_path)); }

Tensor Model::logits(const io::Image& image) { return logits(image_tensor(image, image_size_, convention_)); }

Tensor Model::logits(const Tensor& batch) {
  KILN_CHECK(batch.defined() && batch.rank() == 4 && batch.dim(1) == image_size_ && batch.dim(2) == image_size_ && batch.dim(3) == 3,
             "Model::logits: expected a batch [N, ", image_size_, ", ", image_size_, ", 3] (NHWC), got ",
             batch.defined() ? batch.shape().str() : std::string("an undefined tensor"));
  NoGradGuard no_grad;
  return (*net_)(batch.to(device_));
}

std::vector<Prediction> Model::predict(const std::string& image_path, int64_t top_k) {
  const std::vector<float> p = softmax(logits(image_path)).to_vector<float>();
  return top_classes(p.data(), num_classes_, top_k);
}

int64_t weights_num_classes(const ModelSpec& spec, const std::string& weights_path) {
  const io::h5::File file = io::open_weights_file(weights_path);  // HDF5 or a .keras archive
  const io::h5::Group root = file.root();
  const std::string head = head_layer(spec);
  int64_t n = 0;
  if (root.has_attribute("kiln_format_version")) {
    // kiln's layout: <model>/<layer>/bias, the model named by the file.
    const std::string model = root.has_attribute("model") ? root.string_attribute("model") : spec.name;
    n = bias_length(root, model + "/" + head + "/bias");
    // Another model's export: num_classes would only move the error to the import.
    KILN_CHECK(n > 0 || model == spec.name, "the weights file '", weights_path, "' holds a model named '", model,
               "' (its 'model' attribute), not ", spec.name, ", and has no ", spec.name, " head layer '", head,
               "': load it with the model it was exported from");
  } else if (root.is_group("layers")) {
    // Keras 3 (.weights.h5): layers/<dense_k>/vars/1 of the last dense layer.
    std::string last;
    int64_t best = -1;
    for (const std::string& g : root.group("layers").children())
      if (const int64_t i = keras3_dense_index(g); i > best) best = i, last = g;
    if (best >= 0) n = bias_length(root, "layers/" + last + "/vars/1");
  } else {
    // Keras (save_weights / save): a 1-D dataset under the head's Keras layer group.
    const std::string keras_head = spec.kiln_to_keras ? spec.kiln_to_keras(head) : head;
    std::vector<std::string> paths;
    std::set<uint64_t> seen{root.object_address(".")};
    list_datasets(root, "", paths, seen, 0);
    for (const std::string& p : paths) {
      if (("/" + p + "/").find("/" + keras_head + "/") == std::string::npos) continue;
      if (const int64_t len = bias_length(root, p); len > 0) {
        n = len;
        break;
      }
    }
  }
  KILN_CHECK(n > 0, "cannot tell how many classes the weights file '", weights_path, "' has: no bias of ", spec.name,
             "'s head layer '", head, "' found; if the file is ", spec.name, "'s without its head, set ",
             "LoadOptions::num_classes");
  return n;
}

Model load_model(const std::string& model_name, const std::string& weights_path, const LoadOptions& opt) {
  const ModelSpec& spec = find_model_spec(model_name);
  Model m;
  m.spec_ = &spec;
  m.num_classes_ = opt.num_classes > 0 ? opt.num_classes : weights_num_classes(spec, weights_path);
  m.image_size_ = opt.image_size > 0 ? opt.image_size : spec.default_image_size;
  m.device_ = opt.device;
  // The builder's draws are overwritten by the import; fixed seeds keep a load reproducible.
  m.init_ = std::make_unique<Generator>(0);
  m.dropout_ = std::make_unique<Generator>(1);
  m.net_ = spec.build(ModelOptions{m.num_classes_, m.image_size_, 0.5f}, *m.init_, *m.dropout_);
  m.report_ = io::import_weights(*m.net_, weights_path);
  m.net_->to(m.device_);
  m.net_->eval();
  if (opt.convention) m.convention_ = *opt.convention;
  else if (m.report_.convention != io::InputConvention::unknown) m.convention_ = m.report_.convention;
  else m.convention_ = spec.input_convention;
  return m;
}

}  // namespace kiln
