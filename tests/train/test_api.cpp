// train/api.h: load_model and Model::logits give what the hand-written chain of the
// existing calls gives (spec build, import, eval, decode, resize, crop, convention,
// no-grad forward), bit for bit; the head's size comes from kiln and Keras files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "io/hdf5.h"
#include "io/image.h"
#include "io/loader.h"
#include "io/transforms.h"
#include "io/weights.h"
#include "tests/support/reference.h"
#include "train/api.h"
#include "train/model_spec.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSize = 32;  // VGG11 at 32x32: fc6 takes 1x1x512, small enough for a test
constexpr int64_t kClasses = 3;

// A VGG11 with 3 classes and seeded random weights, exported to `path` in `format`.
void write_weights(const std::string& path, io::WeightsFormat format) {
  Generator g1(7), g2(8);
  auto net = find_model_spec("vgg11").build(ModelOptions{kClasses, kSize, 0.5f}, g1, g2);
  io::ExportOptions eo;
  eo.format = format;
  io::export_weights(*net, path, eo);
}

// A 45x38 image with a gradient, so resize and crop matter.
io::Image test_image() {
  io::Image img;
  img.width = 45;
  img.height = 38;
  img.pixels.resize(static_cast<size_t>(img.width * img.height * 3));
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c) img.row(y)[x * 3 + c] = static_cast<uint8_t>((x * 5 + y * 3 + c * 70) % 256);
  return img;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to(Device::cpu()).to_vector<float>() == b.to(Device::cpu()).to_vector<float>();
}

}  // namespace

TEST_CASE("api: load_model + logits(path) equal the hand-written chain bit for bit", "[api]") {
  const fs::path dir = test::make_temp_dir("kiln_api");
  const std::string weights = (dir / "vgg11.h5").string(), image = (dir / "img.png").string();
  write_weights(weights, io::WeightsFormat::kiln);
  io::write_png(image, test_image());

  Model m = load_model("vgg11", weights, LoadOptions{.image_size = kSize});
  CHECK(m.num_classes() == kClasses);  // read from fc8's bias
  CHECK(m.image_size() == kSize);
  CHECK(m.spec().name == "vgg11");
  CHECK(m.import_report().missing.empty());
  // Recorded by io::export_weights' default, the loader's default: a model trained with
  // defaults and exported with defaults predicts on the inputs it trained on.
  CHECK(m.convention() == io::LoaderOptions{}.convention);
  CHECK(m.convention() == io::InputConvention::torchvision_rgb);
  const Tensor got = m.logits(image);

  // The chain a newcomer writes today.
  Generator g1(123), g2(456);
  const ModelSpec& spec = find_model_spec("vgg11");
  auto net = spec.build(ModelOptions{kClasses, kSize, 0.5f}, g1, g2);
  io::import_weights(*net, weights);
  net->eval();
  const io::Image img = io::resize_shorter_side(io::decode_image(image), static_cast<int>(kSize * 256 / 224));
  const io::Crop crop = io::center_crop(img.width, img.height, static_cast<int>(kSize));
  std::vector<float> buf(static_cast<size_t>(kSize * kSize * 3));
  io::crop_to_input(img, crop, io::InputConvention::torchvision_rgb, buf.data());
  Tensor want;
  {
    NoGradGuard no_grad;
    want = (*net)(Tensor::from_vector(buf, Shape{1, kSize, kSize, 3}));
  }
  CHECK((got.shape() == Shape{1, kClasses}));
  CHECK(same_bits(got, want));
  CHECK_FALSE(got.requires_grad());

  // The other entry points give the same.
  const Tensor input = load_image_tensor(image, kSize, io::InputConvention::torchvision_rgb);
  CHECK(input.to_vector<float>() == buf);
  CHECK(same_bits(m.logits(io::decode_image(image)), want));
  CHECK(same_bits(m.logits(input), want));

  // predict: softmax of the logits, most probable first.
  const std::vector<Prediction> top = m.predict(image, 5);
  REQUIRE(top.size() == static_cast<size_t>(kClasses));
  const std::vector<float> p = softmax(want).to_vector<float>();
  CHECK(top[0].probability >= top[1].probability);
  CHECK(top[1].probability >= top[2].probability);
  for (const Prediction& c : top) CHECK(c.probability == p[static_cast<size_t>(c.index)]);
  CHECK(m.predict(image, 1).size() == 1);

  // Options win over the file.
  Model bgr = load_model("vgg11", weights,
                         LoadOptions{.num_classes = kClasses, .image_size = kSize,
                                     .convention = io::InputConvention::caffe_bgr});
  CHECK(bgr.convention() == io::InputConvention::caffe_bgr);
  fs::remove_all(dir);
}

TEST_CASE("api: load_model reads the head's size from Keras files too, and says what it needs", "[api]") {
  const fs::path dir = test::make_temp_dir("kiln_api_keras");
  const std::string keras = (dir / "vgg11_keras.h5").string();
  write_weights(keras, io::WeightsFormat::keras);
  Model m = load_model("vgg11", keras, LoadOptions{.image_size = kSize});
  CHECK(m.num_classes() == kClasses);
  CHECK(m.import_report().format == io::WeightsFormat::keras);
  // The convention the import reports for the file (Keras VGG weights: caffe_bgr).
  CHECK(std::string(convention_name(m.convention())) == convention_name(m.import_report().convention));

  // A wrong batch shape names what is expected.
  REQUIRE_THROWS_WITH((m.logits(Tensor::zeros(Shape{1, 16, 16, 3}))), Catch::Contains("[N, 32, 32, 3]"));
  // A wrong class count is the import's readable error.
  REQUIRE_THROWS_WITH((load_model("vgg11", keras, LoadOptions{.num_classes = 5, .image_size = kSize})),
                      Catch::Contains("fc8"));
  // An HDF5 file without the head: ask for num_classes.
  const std::string other = (dir / "no_head.h5").string();
  {
    io::h5::File f = io::h5::File::create(other);
    const std::vector<float> v{1, 2};
    f.root().write_f32("something/else", {2}, v.data());
    f.close();
  }
  REQUIRE_THROWS_WITH(load_model("vgg11", other), Catch::Contains("LoadOptions::num_classes"));
  // Another model's kiln export: named as such, not "set num_classes", which would only move
  // the error to the import.
  const std::string mlp = (dir / "mlp.h5").string();
  {
    Sequential net("mlp");
    net.add(std::make_shared<Linear>("fc", 4, 2));
    io::export_weights(net, mlp);
  }
  REQUIRE_THROWS_WITH(load_model("vgg11", mlp), Catch::Contains("holds a model named 'mlp'") &&
                                                    Catch::Contains("not vgg11") &&
                                                    !Catch::Contains("num_classes"));
  fs::remove_all(dir);
}

TEST_CASE("api: top_classes orders by probability, ties by index, and clamps k", "[api]") {
  const std::vector<float> p{0.1f, 0.4f, 0.1f, 0.4f};
  const std::vector<Prediction> t = top_classes(p.data(), 4, 3);
  REQUIRE(t.size() == 3);
  CHECK(t[0].index == 1);
  CHECK(t[1].index == 3);
  CHECK(t[2].index == 0);
  CHECK(top_classes(p.data(), 4, 10).size() == 4);
  CHECK(resize_for_crop(224) == 256);
}
