// ResNet-50's stage table and the builder that reads it.
#include "layers/models/resnet.h"

#include <string>

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

}  // namespace

Bottleneck::Bottleneck(std::string name, int64_t in, int64_t width, int64_t stride, ResNetVariant variant,
                       Generator& init)
    : Module(std::move(name)) {
  const int64_t out = width * kExpansion;
  const bool v1 = variant == ResNetVariant::v1;
  conv1_ = register_module(conv("conv1", in, width, 1, v1 ? stride : 1, variant, init));
  bn1_ = register_module(bn("bn1", width, variant));
  conv2_ = register_module(conv("conv2", width, width, 3, v1 ? 1 : stride, variant, init));
  bn2_ = register_module(bn("bn2", width, variant));
  conv3_ = register_module(conv("conv3", width, out, 1, 1, variant, init));
  bn3_ = register_module(bn("bn3", out, variant));
  if (stride != 1 || in != out) {
    downsample_ = register_module(std::make_shared<Sequential>("downsample"));
    downsample_->add(conv("0", in, out, 1, stride, variant, init));
    downsample_->add(bn("1", out, variant));
  }
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor y = relu(bn1_->forward(conv1_->forward(x)));
  y = relu(bn2_->forward(conv2_->forward(y)));
  y = bn3_->forward(conv3_->forward(y));
  return relu(add(y, downsample_ ? downsample_->forward(x) : x));
}

std::shared_ptr<Sequential> make_resnet50(const ResNetOptions& opt, Generator& init) {
  KILN_CHECK(opt.num_classes >= 1, "ResNet-50: num_classes must be >= 1, got ", opt.num_classes);
  KILN_CHECK(opt.image_size >= 32 && opt.image_size % 32 == 0, "ResNet-50: image_size must be a multiple of 32, got ",
             opt.image_size);
  auto net = std::make_shared<Sequential>(opt.variant == ResNetVariant::v1 ? "resnet50_v1" : "resnet50");
  net->add(conv("conv1", 3, kStemChannels, 7, 2, opt.variant, init));
  net->add(bn("bn1", kStemChannels, opt.variant));
  net->add(std::make_shared<ReLU>("relu"));
  net->add(std::make_shared<MaxPool2d>("maxpool", Pool2dParams{3, 3, 2, 2, 1, 1}));
  int64_t in = kStemChannels;
  for (int s = 0; s < 4; ++s) {
    auto stage = net->add(std::make_shared<Sequential>("layer" + std::to_string(s + 1)));
    for (int b = 0; b < kStages[s].blocks; ++b) {
      const int64_t stride = s > 0 && b == 0 ? 2 : 1;
      stage->add(std::make_shared<Bottleneck>(std::to_string(b), in, kStages[s].width, stride, opt.variant, init));
      in = kStages[s].width * kExpansion;
    }
  }
  net->add(std::make_shared<AdaptiveAvgPool2d>("avgpool", 1, 1));
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc", in, opt.num_classes, true, init, Init::normal_0_01));
  return net;
}

std::vector<std::string> resnet50_weight_layers() {
  std::vector<std::string> layers = {"conv1", "bn1"};
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < kStages[s].blocks; ++b) {
      const std::string block = "layer" + std::to_string(s + 1) + "/" + std::to_string(b) + "/";
      for (const char* l : {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}) layers.push_back(block + l);
      if (b == 0) layers.insert(layers.end(), {block + "downsample/0", block + "downsample/1"});
    }
  layers.push_back("fc");
  return layers;
}

}  // namespace kiln
