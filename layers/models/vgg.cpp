// VGG's one configuration table and everything derived from it: the layer plan, the
// builder (which builds from the plan) and the Keras and torchvision layer names.
#include "layers/models/vgg.h"

#include <algorithm>
#include <string>

namespace kiln {
namespace {

// The configuration table (the paper's A, B, D, E): 3x3 convs per block for each depth;
// each block ends in a 2x2/2 max-pool, then three fc layers.
std::vector<int> convs_per_block(int depth) {
  switch (depth) {
    case 11: return {1, 1, 2, 2, 2};
    case 13: return {2, 2, 2, 2, 2};
    case 16: return {2, 2, 3, 3, 3};
    case 19: return {2, 2, 4, 4, 4};
  }
  KILN_FAIL("VGG depth must be 11, 13, 16 or 19, got ", depth);
}
constexpr int64_t kBlockChannels[5] = {64, 128, 256, 512, 512};
constexpr int64_t kHidden = 4096;  // fc6 and fc7 outputs
// kiln's fc names and Keras's (keras.applications.VGG16): fc6 is Keras's "fc1".
constexpr const char* kFcNames[3][2] = {{"fc6", "fc1"}, {"fc7", "fc2"}, {"fc8", "predictions"}};

// True when s is 1..8 decimal digits (names may come from files: no stoi, no regex).
bool is_small_number(const std::string& s) {
  return !s.empty() && s.size() <= 8 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Splits "<prefix>A<sep>B" into A and B when both are small numbers.
bool split_two_numbers(const std::string& s, const std::string& prefix, const std::string& sep, std::string& a,
                       std::string& b) {
  if (s.size() <= prefix.size() || s.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t at = s.find(sep, prefix.size());
  if (at == std::string::npos) return false;
  a = s.substr(prefix.size(), at - prefix.size());
  b = s.substr(at + sep.size());
  return is_small_number(a) && is_small_number(b);
}

}  // namespace

std::vector<LayerPlan> vgg_plan(const VggOptions& opt) {
  KILN_CHECK(opt.num_classes >= 1, "VGG: num_classes must be >= 1, got ", opt.num_classes);
  KILN_CHECK(opt.image_size >= 32 && opt.image_size % 32 == 0, "VGG: image_size must be a multiple of 32, got ",
             opt.image_size);
  const std::vector<int> blocks = convs_per_block(opt.depth);
  std::vector<LayerPlan> plan;
  int64_t in = 3, side = opt.image_size, torch_index = 0;  // torchvision: conv, ReLU, ..., MaxPool
  for (size_t b = 0; b < blocks.size(); ++b) {
    const std::string block = std::to_string(b + 1);
    for (int i = 1; i <= blocks[b]; ++i) {
      LayerPlan l;
      l.kind = LayerPlan::Kind::conv;
      l.name = "conv" + block + "_" + std::to_string(i);
      l.in_channels = in;
      l.out_channels = kBlockChannels[b];
      l.kernel = 3, l.stride = 1, l.pad = 1;
      l.in_size = l.out_size = side;
      l.relu = true;
      l.keras = "block" + block + "_conv" + std::to_string(i);
      l.torchvision = "features." + std::to_string(torch_index);
      torch_index += 2;
      in = kBlockChannels[b];
      plan.push_back(std::move(l));
    }
    LayerPlan p;
    p.kind = LayerPlan::Kind::pool;
    p.name = "pool" + block;
    p.in_channels = p.out_channels = in;
    p.kernel = 2, p.stride = 2, p.pad = 0;
    p.in_size = side;
    p.out_size = side / 2;
    p.keras = "block" + block + "_pool";
    p.torchvision = "features." + std::to_string(torch_index++);
    side /= 2;
    plan.push_back(std::move(p));
  }
  const int64_t published_side = 7;  // pool5 at 224 px: what published fc6 weights expect
  const bool pool_to_published = opt.head == VggHead::fc && opt.adaptive_pool && side != published_side;
  if (opt.head == VggHead::avg || pool_to_published) {
    LayerPlan a;
    a.kind = LayerPlan::Kind::adaptive_avg_pool;
    a.name = opt.head == VggHead::avg ? "global_pool" : "pool5_7x7";
    a.in_channels = a.out_channels = in;
    a.in_size = side;
    a.out_size = side = opt.head == VggHead::avg ? 1 : published_side;
    a.keras = opt.head == VggHead::avg ? "global_average_pooling2d" : "";
    a.torchvision = opt.head == VggHead::avg ? "" : "avgpool";
    plan.push_back(std::move(a));
  }
  const int64_t fc_in[3] = {in * side * side, kHidden, kHidden};
  const int64_t fc_out[3] = {kHidden, kHidden, opt.num_classes};
  for (int i = opt.head == VggHead::avg ? 2 : 0; i < 3; ++i) {
    LayerPlan l;
    l.kind = LayerPlan::Kind::fc;
    l.name = kFcNames[i][0];
    l.keras = kFcNames[i][1];
    l.in_channels = opt.head == VggHead::avg ? in : fc_in[i];
    l.out_channels = fc_out[i];
    l.in_size = l.out_size = 1;
    l.relu = l.dropout = i < 2;
    l.torchvision = "classifier." + std::to_string(3 * i);  // Linear, ReLU, Dropout
    plan.push_back(std::move(l));
  }
  return plan;
}

std::vector<std::string> vgg_layer_names(int depth) {
  std::vector<std::string> names;
  for (const LayerPlan& l : vgg_plan(VggOptions{depth}))
    if (has_weights(l.kind)) names.push_back(l.name);
  return names;
}

std::shared_ptr<Sequential> make_vgg(const VggOptions& opt, Generator& init, Generator& dropout) {
  auto net = std::make_shared<Sequential>("vgg" + std::to_string(opt.depth));
  bool flattened = false;
  for (const LayerPlan& l : vgg_plan(opt)) {
    // "conv1_1" -> "1_1", "fc6" -> "6": the suffix of the ReLU and dropout that follow.
    const std::string id = l.name.substr(l.kind == LayerPlan::Kind::conv ? 4 : l.kind == LayerPlan::Kind::fc ? 2 : 0);
    switch (l.kind) {
      case LayerPlan::Kind::conv:
        net->add(std::make_shared<Conv2d>(l.name, l.in_channels, l.out_channels, l.kernel,
                                          Conv2dParams{l.stride, l.stride, l.pad, l.pad}, true, init,
                                          Init::kaiming_normal_fan_out));
        break;
      case LayerPlan::Kind::pool:
        net->add(std::make_shared<MaxPool2d>(l.name, Pool2dParams{l.kernel, l.kernel, l.stride, l.stride, l.pad, l.pad}));
        break;
      case LayerPlan::Kind::adaptive_avg_pool:
        net->add(std::make_shared<AdaptiveAvgPool2d>(l.name, l.out_size, l.out_size));
        break;
      case LayerPlan::Kind::fc:
        if (!flattened) net->add(std::make_shared<Flatten>("flatten"));
        flattened = true;
        net->add(std::make_shared<Linear>(l.name, l.in_channels, l.out_channels, true, init, Init::normal_0_01));
        break;
    }
    if (l.relu) net->add(std::make_shared<ReLU>("relu" + id));
    if (l.dropout) net->add(std::make_shared<Dropout>("drop" + id, opt.keep_prob, dropout));
  }
  return net;
}

std::string vgg_layer_from_keras(const std::string& keras) {
  std::string block, index;
  if (split_two_numbers(keras, "block", "_conv", block, index)) return "conv" + block + "_" + index;
  if (keras.size() > 10 && keras.compare(0, 5, "block") == 0 && keras.compare(keras.size() - 5, 5, "_pool") == 0 &&
      is_small_number(keras.substr(5, keras.size() - 10)))
    return "pool" + keras.substr(5, keras.size() - 10);
  for (const auto& fc : kFcNames)
    if (keras == fc[1]) return fc[0];
  return keras;
}

std::string vgg_layer_to_keras(const std::string& kiln) {
  std::string block, index;
  if (split_two_numbers(kiln, "conv", "_", block, index)) return "block" + block + "_conv" + index;
  if (kiln.size() > 4 && kiln.compare(0, 4, "pool") == 0 && is_small_number(kiln.substr(4)))
    return "block" + kiln.substr(4) + "_pool";
  for (const auto& fc : kFcNames)
    if (kiln == fc[0]) return fc[1];
  return kiln;
}

}  // namespace kiln
