// ResNet-50 (He et al.) in two variants, named as torchvision names its modules, so a
// torchvision state_dict key maps to kiln's by replacing '.' with '/' (num_batches_tracked
// aside): "resnet50/conv1/weight", "resnet50/bn1/running_mean",
// "resnet50/layer1/0/conv2/weight", "resnet50/layer2/0/downsample/0/weight",
// "resnet50/layer2/0/downsample/1/bias", "resnet50/fc/weight" (v1's root scope is
// "resnet50_v1", its registry name). Input [N, H, W, 3] NHWC.
// No LayerPlan: a plan is a chain of layers and a residual block is not one; the stage
// table in resnet.cpp is the one home of the layer list.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"

namespace kiln {

// Where a downsampling block strides, and the conventions that come with it.
enum class ResNetVariant {
  v1,    // Keras's ResNet50: stride in the first 1x1 conv, convs with bias, BN eps 1.001e-5
  v1_5,  // torchvision's resnet50: stride in the 3x3 conv, convs without bias, BN eps 1e-5
};

// What make_resnet50 and resnet50_convs build (only make_resnet50 checks the values).
struct ResNetOptions {
  ResNetVariant variant = ResNetVariant::v1_5;
  int64_t num_classes = 1000;  // fc's size
  int64_t image_size = 224;    // input side: a multiple of 32 (the feature map is side/32)
};

// The bottleneck residual block: 1x1 (width) -> 3x3 (width) -> 1x1 (4 x width) convs, each
// followed by batch norm, ReLU after the first two; the input is added back -- through a
// 1x1 conv + batch norm ("downsample/0", "downsample/1") when stride or channels change --
// and a ReLU follows the sum.
class Bottleneck final : public Module {
 public:
  // stride != 1 or in != 4 x width adds the downsample shortcut; `variant` sets where it strides, conv biases, BN eps.
  Bottleneck(std::string name, int64_t in, int64_t width, int64_t stride, ResNetVariant variant, Generator& init);
  // Sums in fp32 when the block and its shortcut differ in dtype (a bf16-frozen boundary between them).
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> downsample_;  // nullptr: identity shortcut
};

// Builds ResNet-50: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), stages of [3, 4, 6, 3]
// bottlenecks of widths 64/128/256/512, global average pooling, fc. Initialised as
// torchvision does: convs Kaiming-normal fan-out, BN weight 1 and bias 0, conv biases (v1)
// zero; fc weight N(0, 0.01) with bias zero (torchvision keeps nn.Linear's uniform default;
// a head is retrained anyway).
std::shared_ptr<Sequential> make_resnet50(const ResNetOptions& opt, Generator& init);

// The stem's max-pool ("maxpool") at an image size: its input [side, side, channels] (the
// 7x7/2 stem conv's output) and its windows, 3x3/2 with padding 1, which overlap. For
// benchmarks and tests that time or check that layer alone.
struct ResNetStemPool {
  int64_t side, channels;
  Pool2dParams p;
};
// image_size is not checked here: make_resnet50 refuses sizes that are not multiples of 32.
ResNetStemPool resnet50_stem_pool(int64_t image_size = 224);

// One convolution make_resnet50 builds: its path under the root scope ("layer2/0/conv2"),
// the side of its (square) input, channels, kernel, stride and padding.
struct ResNetConv {
  std::string name;
  int64_t in_size, in_channels, out_channels, kernel, stride, pad;
};
// Every convolution of ResNet-50 at opt's variant and image size, in the builder's order,
// read from the same stage table and block rule: for benchmarks and plan checks.
std::vector<ResNetConv> resnet50_convs(const ResNetOptions& opt);

// The modules with parameters, in order, below the root scope ("conv1", "bn1",
// "layer1/0/conv1", ..., "layer1/0/downsample/1", ..., "fc"): the same in both variants.
std::vector<std::string> resnet50_weight_layers();

// Keras (keras.applications.ResNet50) layer name -> kiln's: "conv1_conv" -> "conv1",
// "conv1_bn" -> "bn1", "conv{S}_block{B}_{K}_conv|bn" -> "layer{S-1}/{B-1}/conv{K}|bn{K}"
// (K = 0, the shortcut: "downsample/0|1"), "predictions" -> "fc". Any other name (also a
// block the stage table lacks) is returned unchanged. Safe on names read from files.
std::string resnet50_layer_from_keras(const std::string& keras);
// kiln layer name -> Keras's (the inverse); any other name is returned unchanged.
std::string resnet50_layer_to_keras(const std::string& kiln);
// resnet50_weight_layers() in the order of Keras's model.layers, which numbers Keras 3's
// class-named groups (conv2d, conv2d_1, ..., batch_normalization_N, dense): a downsampling
// block's shortcut comes after its conv2/bn2 and before conv3/bn3 (checked against Keras
// 3.15.1's .weights.h5: tests/reference/make_real_keras_resnet.py).
std::vector<std::string> resnet50_keras_layer_order();

}  // namespace kiln
