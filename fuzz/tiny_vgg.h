// A VGG-named model small enough to import into once per fuzz run (a real VGG16 allocates
// ~500 MB): the parameter names, ranks and layer kinds the importers map onto, at toy
// sizes. Shared by the weights and checkpoint fuzzers and their seed maker.
#pragma once

#include <memory>

#include "layers/layers.h"

namespace kiln::fuzz {

inline constexpr int64_t kTinyClasses = 3;

// "vgg16" with conv1_1 (3->4), conv1_2 (4->4), fc6 (16->8), fc7 (8->8), fc8 (8->3), biases on.
inline std::shared_ptr<Sequential> make_tiny_vgg(Generator& gen, int64_t classes = kTinyClasses) {
  auto net = std::make_shared<Sequential>("vgg16");
  const Conv2dParams same{1, 1, 1, 1};
  net->add(std::make_shared<Conv2d>("conv1_1", 3, 4, 3, same, true, gen));
  net->add(std::make_shared<Conv2d>("conv1_2", 4, 4, 3, same, true, gen));
  net->add(std::make_shared<Linear>("fc6", 16, 8, true, gen));
  net->add(std::make_shared<Linear>("fc7", 8, 8, true, gen));
  net->add(std::make_shared<Linear>("fc8", 8, classes, true, gen));
  return net;
}

}  // namespace kiln::fuzz
