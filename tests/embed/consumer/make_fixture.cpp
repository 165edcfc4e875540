// make_fixture DIR: writes what the README example (top_class.cpp) is run on -- a VGG11
// weights file (3 classes, 32x32 inputs, seeded random weights, kiln's layout, caffe_bgr)
// and a 45x38 PNG -- and prints the class that the hand-written chain of kiln calls (build,
// import, eval, decode, resize, crop, convention, no-grad forward) gives: "class N".
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "io/image.h"
#include "io/transforms.h"
#include "io/weights.h"
#include "train/model_spec.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fixture DIR\n");
    return 2;
  }
  try {
    using namespace kiln;
    const std::string dir = argv[1], weights = dir + "/vgg11.h5", image = dir + "/image.png";
    const int64_t size = 32, classes = 3;
    Generator g1(7), g2(8);
    auto net = find_model_spec("vgg11").build(ModelOptions{classes, size, 0.5f}, g1, g2);
    io::ExportOptions eo;
    eo.convention = io::InputConvention::caffe_bgr;  // the consumer's programs read it from the file
    io::export_weights(*net, weights, eo);
    io::Image img;
    img.width = 45;
    img.height = 38;
    img.pixels.resize(static_cast<size_t>(img.width * img.height * 3));
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>((i * 37 + i / 135 * 11) % 256);
    io::write_png(image, img);

    auto loaded = find_model_spec("vgg11").build(ModelOptions{classes, size, 0.5f}, g1, g2);
    io::import_weights(*loaded, weights);
    loaded->eval();
    const io::Image resized = io::resize_shorter_side(io::decode_image(image), static_cast<int>(size * 256 / 224));
    const io::Crop crop = io::center_crop(resized.width, resized.height, static_cast<int>(size));
    std::vector<float> x(static_cast<size_t>(size * size * 3));
    io::crop_to_input(resized, crop, io::InputConvention::caffe_bgr, x.data());
    NoGradGuard no_grad;
    const std::vector<float> logits = (*loaded)(Tensor::from_vector(x, Shape{1, size, size, 3})).to_vector<float>();
    size_t best = 0;
    for (size_t c = 1; c < logits.size(); ++c)
      if (logits[c] > logits[best]) best = c;
    std::printf("class %zu\n", best);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_fixture: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
