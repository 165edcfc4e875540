#include "layers/models/vgg.h"

#include <string>

namespace kiln {
namespace {

// Convs per block for each depth; channels per block are 64, 128, 256, 512, 512.
std::vector<int> convs_per_block(int depth) {
  switch (depth) {
    case 11: return {1, 1, 2, 2, 2};
    case 13: return {2, 2, 2, 2, 2};
    case 16: return {2, 2, 3, 3, 3};
    case 19: return {2, 2, 4, 4, 4};
  }
  KILN_FAIL("VGG depth must be 11, 13, 16 or 19, got ", depth);
}

}  // namespace

std::vector<std::string> vgg_layer_names(int depth) {
  std::vector<std::string> names;
  const std::vector<int> blocks = convs_per_block(depth);
  for (size_t b = 0; b < blocks.size(); ++b)
    for (int i = 1; i <= blocks[b]; ++i) names.push_back("conv" + std::to_string(b + 1) + "_" + std::to_string(i));
  names.insert(names.end(), {"fc6", "fc7", "fc8"});
  return names;
}

std::shared_ptr<Sequential> make_vgg(const VggOptions& opt, Generator& init, Generator& dropout) {
  KILN_CHECK(opt.num_classes >= 1, "VGG: num_classes must be >= 1, got ", opt.num_classes);
  KILN_CHECK(opt.image_size >= 32 && opt.image_size % 32 == 0, "VGG: image_size must be a multiple of 32, got ",
             opt.image_size);
  const std::vector<int> blocks = convs_per_block(opt.depth);
  const int64_t channels[5] = {64, 128, 256, 512, 512};
  auto net = std::make_shared<Sequential>("vgg" + std::to_string(opt.depth));
  int64_t in = 3;
  const Conv2dParams same{1, 1, 1, 1};
  for (size_t b = 0; b < blocks.size(); ++b) {
    for (int i = 1; i <= blocks[b]; ++i) {
      const std::string id = std::to_string(b + 1) + "_" + std::to_string(i);
      net->add(std::make_shared<Conv2d>("conv" + id, in, channels[b], 3, same, true, init));
      net->add(std::make_shared<ReLU>("relu" + id));
      in = channels[b];
    }
    net->add(std::make_shared<MaxPool2d>("pool" + std::to_string(b + 1), Pool2dParams{2, 2, 2, 2, 0, 0}));
  }
  const int64_t side = opt.image_size / 32;
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc6", 512 * side * side, 4096, true, init));
  net->add(std::make_shared<ReLU>("relu6"));
  net->add(std::make_shared<Dropout>("drop6", opt.keep_prob, dropout));
  net->add(std::make_shared<Linear>("fc7", 4096, 4096, true, init));
  net->add(std::make_shared<ReLU>("relu7"));
  net->add(std::make_shared<Dropout>("drop7", opt.keep_prob, dropout));
  net->add(std::make_shared<Linear>("fc8", 4096, opt.num_classes, true, init));
  return net;
}

}  // namespace kiln
