// top_class MODEL WEIGHTS IMAGE [IMAGE_SIZE]: the most probable class of an image.
#include <cstdio>
#include <cstdlib>

#include "train/api.h"

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  kiln::LoadOptions opt;  // defaults: classes and input convention from the file, 224x224, CPU
  if (argc > 4) opt.image_size = std::atoi(argv[4]);
  kiln::Model model = kiln::load_model(argv[1], argv[2], opt);  // e.g. "vgg16", "vgg16_weights.h5"
  kiln::Prediction top = model.predict(argv[3], 1).at(0);  // model.logits(argv[3]): the raw scores
  std::printf("%s: class %lld, p = %.3f\n", argv[3], static_cast<long long>(top.index), top.probability);
}
