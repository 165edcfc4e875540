// ResNet-50's stage table and the builder that reads it.
#include "layers/models/resnet.h"

#include <string>
#include <vector>

namespace kiln {
namespace {

// The stage table: bottlenecks per stage and their widths (outputs are 4x the width).
struct Stage {
  int blocks;
  int64_t width;
};
constexpr Stage kStages[4] = {{3, 64}, {4, 128}, {6, 256}, {3, 512}};
constexpr int64_t kExpansion = 4;
constexpr int64_t kStemChannels = 64;

// One convolution of the network (padding kernel / 2 throughout), named as its module.
struct BlockConv {
  const char* name;
  int64_t in, out, kernel, stride;
};
// The stem: 7x7/2 from RGB.
constexpr BlockConv kStem = {"conv1", 3, kStemChannels, 7, 2};

// Keras's BatchNormalization default (1.001e-5) for v1; PyTorch's for v1.5.
float bn_eps(ResNetVariant v) { return v == ResNetVariant::v1 ? 1.001e-5f : 1e-5f; }

std::shared_ptr<Conv2d> conv(const std::string& name, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                             ResNetVariant v, Generator& init) {
  const int64_t pad = kernel / 2;
  return std::make_shared<Conv2d>(name, in, out, kernel, Conv2dParams{stride, stride, pad, pad},
                                  v == ResNetVariant::v1, init, Init::kaiming_normal_fan_out);
}

std::shared_ptr<BatchNorm2d> bn(const std::string& name, int64_t channels, ResNetVariant v) {
  return std::make_shared<BatchNorm2d>(name, channels, 0.1f, bn_eps(v));
}

// "12" -> 12; -1 unless `s` is a number as std::to_string writes it, at most 3 digits
// (names come from files).
int small_int(const std::string& s) {
  if (s.empty() || s.size() > 3 || (s.size() > 1 && s[0] == '0')) return -1;
  for (const char c : s)
    if (c < '0' || c > '9') return -1;
  return std::stoi(s);
}

// True when stage `s` (0-based) has block `b` (0-based) with layer pair `k` (1..3, or 0:
// the shortcut, which only a stage's first block has: it changes stride or channels).
bool in_table(int s, int b, int k) {
  return s >= 0 && s < 4 && b >= 0 && b < kStages[s].blocks && k >= 0 && k <= 3 && (k > 0 || b == 0);
}

// kiln's name of a block's conv (or batch norm) `k`, 0 being the shortcut.
std::string block_layer(int s, int b, int k, bool is_conv) {
  const std::string block = "layer" + std::to_string(s + 1) + "/" + std::to_string(b) + "/";
  if (k == 0) return block + (is_conv ? "downsample/0" : "downsample/1");
  return block + (is_conv ? "conv" : "bn") + std::to_string(k);
}

// The weight layers in kiln's parameter order (the shortcut last in its block) or in
// Keras's model.layers order (the shortcut between the block's second and third pair).
std::vector<std::string> weight_layers(bool keras_order) {
  std::vector<std::string> layers = {"conv1", "bn1"};
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < kStages[s].blocks; ++b)
      for (const int k : keras_order ? std::vector<int>{1, 2, 0, 3} : std::vector<int>{1, 2, 3, 0})
        if (in_table(s, b, k))
          for (const bool is_conv : {true, false}) layers.push_back(block_layer(s, b, k, is_conv));
  layers.push_back("fc");
  return layers;
}

// A bottleneck's convolutions, conv1..conv3 then the shortcut's ("0" in "downsample") when
// it has one: the one statement of where each strides, for the builder and resnet50_convs.
std::vector<BlockConv> block_convs(int64_t in, int64_t width, int64_t stride, ResNetVariant variant) {
  const int64_t out = width * kExpansion;
  const bool v1 = variant == ResNetVariant::v1;
  std::vector<BlockConv> c = {{"conv1", in, width, 1, v1 ? stride : 1},
                              {"conv2", width, width, 3, v1 ? 1 : stride},
                              {"conv3", width, out, 1, 1}};
  if (stride != 1 || in != out) c.push_back({"0", in, out, 1, stride});
  return c;
}

// Calls fn(stage, block, in, width, stride) for every bottleneck, in order.
template <typename Fn>
void for_each_block(Fn&& fn) {
  int64_t in = kStemChannels;
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < kStages[s].blocks; ++b) {
      fn(s, b, in, kStages[s].width, s > 0 && b == 0 ? int64_t{2} : int64_t{1});
      in = kStages[s].width * kExpansion;
    }
}

}  // namespace

Bottleneck::Bottleneck(std::string name, int64_t in, int64_t width, int64_t stride, ResNetVariant variant,
                       Generator& init)
    : Module(std::move(name)) {
  const std::vector<BlockConv> c = block_convs(in, width, stride, variant);
  auto make = [&](const BlockConv& k) { return conv(k.name, k.in, k.out, k.kernel, k.stride, variant, init); };
  conv1_ = register_module(make(c[0]));
  bn1_ = register_module(bn("bn1", c[0].out, variant));
  conv2_ = register_module(make(c[1]));
  bn2_ = register_module(bn("bn2", c[1].out, variant));
  conv3_ = register_module(make(c[2]));
  bn3_ = register_module(bn("bn3", c[2].out, variant));
  if (c.size() == 4) {
    downsample_ = register_module(std::make_shared<Sequential>("downsample"));
    downsample_->add(make(c[3]));
    downsample_->add(bn("1", c[3].out, variant));
  }
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor y = relu(bn1_->forward(conv1_->forward(x)));
  y = relu(bn2_->forward(conv2_->forward(y)));
  y = bn3_->forward(conv3_->forward(y));
  Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
  // Where a precision boundary (bf16-frozen) cuts through this block or between it and its
  // shortcut, one side is bf16 and the other fp32: the sum is taken in fp32.
  if (y.dtype() != shortcut.dtype()) {
    y = y.to(DType::f32);
    shortcut = shortcut.to(DType::f32);
  }
  return relu(add(y, shortcut));
}

ResNetStemPool resnet50_stem_pool(int64_t image_size) {
  const int64_t side = window_out_size(image_size, kStem.kernel, kStem.stride, kStem.kernel / 2);
  return ResNetStemPool{side, kStem.out, Pool2dParams{3, 3, 2, 2, 1, 1}};
}

std::shared_ptr<Sequential> make_resnet50(const ResNetOptions& opt, Generator& init) {
  KILN_CHECK(opt.num_classes >= 1, "ResNet-50: num_classes must be >= 1, got ", opt.num_classes);
  KILN_CHECK(opt.image_size >= 32 && opt.image_size % 32 == 0, "ResNet-50: image_size must be a multiple of 32, got ",
             opt.image_size);
  auto net = std::make_shared<Sequential>(opt.variant == ResNetVariant::v1 ? "resnet50_v1" : "resnet50");
  net->add(conv(kStem.name, kStem.in, kStem.out, kStem.kernel, kStem.stride, opt.variant, init));
  net->add(bn("bn1", kStemChannels, opt.variant));
  net->add(std::make_shared<ReLU>("relu"));
  net->add(std::make_shared<MaxPool2d>("maxpool", resnet50_stem_pool(opt.image_size).p));
  std::shared_ptr<Sequential> stage;
  for_each_block([&](int s, int b, int64_t in, int64_t width, int64_t stride) {
    if (b == 0) stage = net->add(std::make_shared<Sequential>("layer" + std::to_string(s + 1)));
    stage->add(std::make_shared<Bottleneck>(std::to_string(b), in, width, stride, opt.variant, init));
  });
  net->add(std::make_shared<AdaptiveAvgPool2d>("avgpool", 1, 1));
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc", kStages[3].width * kExpansion, opt.num_classes, true, init,
                                    Init::normal_0_01));
  return net;
}

std::vector<ResNetConv> resnet50_convs(const ResNetOptions& opt) {
  const ResNetStemPool stem = resnet50_stem_pool(opt.image_size);
  std::vector<ResNetConv> out = {
      {kStem.name, opt.image_size, kStem.in, kStem.out, kStem.kernel, kStem.stride, kStem.kernel / 2}};
  int64_t side = window_out_size(stem.side, stem.p.kernel_h, stem.p.stride_h, stem.p.pad_h);
  for_each_block([&](int s, int b, int64_t in, int64_t width, int64_t stride) {
    const std::vector<BlockConv> convs = block_convs(in, width, stride, opt.variant);
    int64_t at = side;  // conv1..conv3 run in a chain; the shortcut (k 0) reads the block's input
    for (int k = 0; k < static_cast<int>(convs.size()); ++k) {
      const BlockConv& c = convs[static_cast<size_t>(k)];
      const int pair = k < 3 ? k + 1 : 0;  // block_layer's numbering
      const int64_t from = pair == 0 ? side : at;
      out.push_back({block_layer(s, b, pair, true), from, c.in, c.out, c.kernel, c.stride, c.kernel / 2});
      if (pair != 0) at = window_out_size(from, c.kernel, c.stride, c.kernel / 2);
    }
    side = at;
  });
  return out;
}

std::vector<std::string> resnet50_weight_layers() { return weight_layers(false); }

std::vector<std::string> resnet50_keras_layer_order() { return weight_layers(true); }

std::string resnet50_layer_from_keras(const std::string& keras) {
  if (keras == "conv1_conv") return "conv1";
  if (keras == "conv1_bn") return "bn1";
  if (keras == "predictions") return "fc";
  // "conv{S}_block{B}_{K}_conv|bn": four '_'-separated parts.
  std::vector<std::string> part;
  for (size_t at = 0, next; part.size() < 5; at = next + 1) {
    next = keras.find('_', at);
    part.push_back(keras.substr(at, next == std::string::npos ? std::string::npos : next - at));
    if (next == std::string::npos) break;
  }
  if (part.size() != 4 || part[0].compare(0, 4, "conv") != 0 || part[1].compare(0, 5, "block") != 0 ||
      (part[3] != "conv" && part[3] != "bn"))
    return keras;
  const int stage = small_int(part[0].substr(4)) - 2, block = small_int(part[1].substr(5)) - 1;
  const int k = small_int(part[2]);
  if (!in_table(stage, block, k)) return keras;
  return block_layer(stage, block, k, part[3] == "conv");
}

std::string resnet50_layer_to_keras(const std::string& kiln) {
  if (kiln == "conv1") return "conv1_conv";
  if (kiln == "bn1") return "conv1_bn";
  if (kiln == "fc") return "predictions";
  // "layer{L}/{b}/conv{K}|bn{K}" or "layer{L}/{b}/downsample/0|1".
  const size_t a = kiln.find('/'), b = a == std::string::npos ? a : kiln.find('/', a + 1);
  if (b == std::string::npos || kiln.compare(0, 5, "layer") != 0) return kiln;
  const int stage = small_int(kiln.substr(5, a - 5)) - 1, block = small_int(kiln.substr(a + 1, b - a - 1));
  const std::string rest = kiln.substr(b + 1);
  int k = -1;
  bool is_conv = false;
  if (rest == "downsample/0" || rest == "downsample/1") {
    k = 0;
    is_conv = rest.back() == '0';
  } else if (rest.size() == 5 && rest.compare(0, 4, "conv") == 0) {
    k = small_int(rest.substr(4));
    is_conv = true;
  } else if (rest.size() == 3 && rest.compare(0, 2, "bn") == 0) {
    k = small_int(rest.substr(2));
  }
  if (k == 0 && rest.compare(0, 10, "downsample") != 0) return kiln;  // "conv0" is no layer
  if (!in_table(stage, block, k)) return kiln;
  return "conv" + std::to_string(stage + 2) + "_block" + std::to_string(block + 1) + "_" + std::to_string(k) + "_" +
         (is_conv ? "conv" : "bn");
}

}  // namespace kiln
