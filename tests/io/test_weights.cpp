// Weight import/export: torchvision VGG16 weights in kiln's, Keras's and Keras 3's layouts
// give PyTorch's logits; export round-trips bit-exactly; the frozen-fc8 recipe trains fc8
// alone; bad files give readable errors, never a crash; every tensor of a kiln file carries
// a CRC32C that the import verifies.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sys/resource.h>
#include <unistd.h>

#include "core/kiln.h"
#include "io/hdf5.h"
#include "io/weights.h"
#include "layers/models/vgg.h"
#include "tests/support/require_close.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"
#include "tests/support/files.h"

using namespace kiln;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// The reference script's files, made once per process and removed at exit (~2 GB).
// KILN_VGG_WEIGHTS_DIR names a directory the script already filled: used and kept.
struct ReferenceFiles {
  std::string dir;
  bool owned = true;
  ReferenceFiles() {
    if (const char* d = std::getenv("KILN_VGG_WEIGHTS_DIR")) {
      dir = d;
      owned = false;
      return;
    }
    dir = test::make_temp_dir("vgg_weights");
    test::run_reference_script("make_vgg_weights.py",
                               "--out " + dir + " --formats kiln:1000,keras:8,keras_nested:8,keras3:8 --batch 2");
  }
  ~ReferenceFiles() {
    std::error_code ec;
    if (owned) fs::remove_all(dir, ec);
  }
};

// A temp dir removed at scope exit.
struct TempDir {
  std::string dir = test::make_temp_dir("weights_io");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& name) const { return dir + "/" + name; }
};

std::shared_ptr<Sequential> vgg(int depth, int64_t classes, int64_t image, uint64_t seed) {
  static Generator drop(99);
  Generator init(seed);
  return make_vgg(VggOptions{depth, classes, 0.5f, image}, init, drop);
}

std::vector<double> as_double(const Tensor& t) { return t.to_vector<double>(); }

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// A small Keras-classic file: layer -> [(weight name, shape)], values 0.01 * index.
void write_keras_file(const std::string& path,
                      const std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::vector<int64_t>>>>>& layers) {
  io::h5::File f = io::h5::File::create(path);
  {
    io::h5::Group root = f.root();
    std::vector<std::string> names;
    for (const auto& l : layers) names.push_back(l.first);
    root.set_string_list_attribute("layer_names", names);
    for (const auto& l : layers) {
      io::h5::Group g = root.create_group(l.first);
      std::vector<std::string> wn;
      for (const auto& w : l.second) {
        int64_t n = 1;
        for (int64_t d : w.second) n *= d;
        std::vector<float> v(static_cast<size_t>(n));
        for (size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i % 100);
        g.write_f32(w.first, w.second, v.data());
        wn.push_back(w.first);
      }
      g.set_string_list_attribute("weight_names", wn);
    }
  }
  f.close();
}

// A kiln-layout file holding the given parameters of `model` (by name) with its values.
io::h5::File start_kiln_file(const std::string& path, const std::string& model_name) {
  io::h5::File f = io::h5::File::create(path);
  io::h5::Group root = f.root();
  root.set_int_attribute("kiln_format_version", 1);
  root.set_string_attribute("model", model_name);
  root.set_string_attribute("input_convention", "caffe_bgr");
  return f;
}

}  // namespace

TEST_CASE("VGG16 weights from torchvision in kiln, Keras and Keras 3 layouts give PyTorch's logits",
          "[weights][io][slow]") {
  static ReferenceFiles ref;
  std::vector<int64_t> xs;
  const std::vector<double> xv = test::read_npy(ref.dir + "/input.npy", &xs);
  const Tensor x = Tensor::from_vector(std::vector<float>(xv.begin(), xv.end()), Shape(xs));

  struct Case {
    std::string file;
    int64_t classes;
    io::WeightsFormat format;
    io::InputConvention convention;
  };
  const std::vector<Case> cases = {
      {"vgg16_1000_kiln.h5", 1000, io::WeightsFormat::kiln, io::InputConvention::torchvision_rgb},
      {"vgg16_8_keras.h5", 8, io::WeightsFormat::keras, io::InputConvention::caffe_bgr},
      {"vgg16_8_keras_nested.h5", 8, io::WeightsFormat::keras, io::InputConvention::caffe_bgr},
      {"vgg16_8_keras3.weights.h5", 8, io::WeightsFormat::keras3, io::InputConvention::caffe_bgr},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    const std::string path = ref.dir + "/" + c.file;
    auto model = vgg(16, c.classes, 224, 7);
    model->eval();
    const io::ImportReport rep = io::import_weights(*model, path);
    INFO(rep.to_string());
    CHECK(rep.loaded.size() == 32);
    CHECK(rep.missing.empty());
    CHECK(rep.skipped.empty());
    CHECK(rep.format == c.format);
    CHECK(rep.convention == c.convention);
    if (c.format == io::WeightsFormat::keras) {
      // keras.applications' layer names say which network the file is for: not VGG19.
      CHECK(io::weights_source_model(io::h5::File::open_read(path).root()) == "vgg16");
      CHECK_THROWS_WITH(io::import_weights(*vgg(19, c.classes, 32, 1), path),
                        Contains("is for model 'vgg16', not 'vgg19'"));
    }
    // The converted torchvision file is kiln format 1, written by a script: no checksums.
    CHECK_THAT(rep.checksums, Contains(c.format == io::WeightsFormat::kiln ? "kiln format version 1" : "none in file"));
    const std::vector<double> want = test::read_npy(ref.dir + "/logits_" + std::to_string(c.classes) + ".npy");
    const std::vector<double> got = as_double(model->forward(x));
    // Sums of up to 25088 products through 16 layers in another order than PyTorch's.
    KILN_REQUIRE_CLOSE(got, want, 1e-4 * check::mean_abs(want), 1e-4);
    if (device_count(DeviceType::cuda) > 0) {
      INFO("on the GPU");
      model->to(Device::cuda(0));
      KILN_REQUIRE_CLOSE(as_double(model->forward(x.to(Device::cuda(0)))), want, 1e-4 * check::mean_abs(want), 1e-4);
    } else if (c.format == io::WeightsFormat::kiln) {
      WARN("no GPU found: the CUDA half of the logits check is skipped");
    }
    if (ref.owned) fs::remove(path);
  }
}

TEST_CASE("export then import round-trips bit-exactly in kiln and Keras layouts", "[weights][io]") {
  TempDir tmp;
  auto src = vgg(11, 10, 32, 1);
  for (io::WeightsFormat fmt : {io::WeightsFormat::kiln, io::WeightsFormat::keras}) {
    INFO(io::format_name(fmt));
    const std::string path = tmp / "w.h5";
    io::ExportOptions eo;
    eo.format = fmt;
    eo.convention = io::InputConvention::tf_rgb;
    io::export_weights(*src, path, eo);
    CHECK(fs::exists(path));
    CHECK_FALSE(fs::exists(path + ".tmp" + std::to_string(::getpid())));
    auto dst = vgg(11, 10, 32, 2);
    const io::ImportReport rep = io::import_weights(*dst, path);
    CHECK(rep.loaded.size() == src->parameters().size());
    CHECK(rep.convention == io::InputConvention::tf_rgb);  // Keras's layout too: an attribute Keras ignores
    CHECK_THAT(rep.checksums, Contains(fmt == io::WeightsFormat::kiln ? "verified" : "Keras files carry no checksums"));
    CHECK_THAT(rep.to_string(), Contains("checksums: "));
    const auto ps = src->parameters(), pd = dst->parameters();
    for (size_t i = 0; i < ps.size(); ++i) {
      INFO(ps[i].name);
      REQUIRE(ps[i].name == pd[i].name);
      CHECK(same_bits(*ps[i].tensor, *pd[i].tensor));
    }
    fs::remove(path);
  }
}

TEST_CASE("frozen-fc8 recipe: load all but fc8, train fc8 alone", "[weights][io]") {
  TempDir tmp;
  const std::string path = tmp / "vgg16_1000.h5";
  auto pretrained = vgg(16, 1000, 32, 1);
  io::export_weights(*pretrained, path);

  auto model = vgg(16, 8, 32, 2);
  const io::ImportReport rep = io::import_weights(*model, path, io::ImportOptions{{{"vgg16/", "vgg16/"}}, {"vgg16/fc8/"}, false});
  INFO(rep.to_string());
  CHECK(rep.loaded.size() == 30);
  CHECK(rep.skipped.size() == 2);
  CHECK(rep.mismatched.size() == 2);  // fc8: 1000 classes in the file, 8 in the model
  CHECK(rep.missing.empty());
  CHECK_THAT(rep.to_string(), Contains("30 loaded") && Contains("vgg16/fc8/weight"));
  for (const ParameterRef& p : model->parameters())
    if (p.name.rfind("vgg16/fc8/", 0) != 0) {
      INFO(p.name);
      CHECK(same_bits(*p.tensor, *pretrained->find(p.name).tensor));
    }
  pretrained.reset();

  model->freeze("vgg16/");
  model->unfreeze("vgg16/fc8/");
  std::vector<Tensor> before;
  for (const ParameterRef& p : model->parameters()) before.push_back(p.tensor->clone());
  std::vector<Tensor> momentum;
  for (const ParameterRef& p : model->parameters()) momentum.push_back(Tensor::zeros(p.tensor->shape()));

  Generator data(5);
  for (int step = 0; step < 2; ++step) {
    const Tensor x = Tensor::normal(Shape{4, 32, 32, 3}, 0, 1, data);
    const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 3, 5, 7}, Shape{4});
    const int64_t nodes0 = autograd_stats().nodes_alive;
    const Tensor loss = softmax_cross_entropy(model->forward(x), y);
    // Only fc8's linear and the loss are recorded: conv1..fc7 run as plain inference.
    CHECK(autograd_stats().nodes_alive - nodes0 == 2);
    for (const ParameterRef& p : model->parameters()) p.tensor->zero_grad();
    loss.backward();
    std::vector<SgdParamRef> refs;
    const auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].trainable) refs.push_back({*params[i].tensor, params[i].tensor->grad(), momentum[i]});
    sgd_update(refs, SgdOptions{0.01f, 0.9f, 0.0f, false});
  }
  const auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    const bool fc8 = params[i].name.rfind("vgg16/fc8/", 0) == 0;
    CHECK(same_bits(*params[i].tensor, before[i]) == !fc8);
  }
}

TEST_CASE("bad weights files give readable errors naming file, entry, expected and found", "[weights][io]") {
  TempDir tmp;
  auto model = vgg(16, 8, 32, 3);
  const Tensor conv1_before = model->find("vgg16/conv1_1/weight").tensor->clone();

  SECTION("missing path") {
    const std::string p = tmp / "nope.h5";
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("does not exist"));
  }
  SECTION("not an HDF5 file") {
    const std::string p = tmp / "text.h5";
    std::ofstream(p) << "this is not HDF5\n";
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("not an HDF5 file"));
  }
  SECTION("truncated file") {
    const std::string p = tmp / "trunc.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      std::vector<float> v(1 << 20, 1.0f);
      f.root().write_f32("vgg16/fc7/weight", {1024, 1024}, v.data());
      f.close();
    }
    fs::resize_file(p, fs::file_size(p) / 2);
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("truncated"));
  }
  SECTION("kiln file for another model (VGG19)") {
    const std::string p = tmp / "vgg19.h5";
    start_kiln_file(p, "vgg19").close();
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("'vgg19'") && Contains("'vgg16'"));
  }
  SECTION("Keras VGG19 file into VGG16") {
    const std::string p = tmp / "keras_vgg19.h5";
    write_keras_file(p, {{"block1_conv1", {{"block1_conv1/kernel:0", {3, 3, 3, 64}}, {"block1_conv1/bias:0", {64}}}},
                         {"block3_conv4", {{"block3_conv4/kernel:0", {3, 3, 256, 256}}}}});
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("block3_conv4/kernel:0") &&
                                                     Contains("no parameter 'vgg16/conv3_4/weight'") &&
                                                     Contains("another model"));
  }
  SECTION("ResNet-like Keras names") {
    const std::string p = tmp / "resnet.h5";
    write_keras_file(p, {{"conv1_conv", {{"conv1_conv/kernel:0", {7, 7, 3, 64}}}},
                         {"res2a_branch2a", {{"res2a_branch2a/kernel:0", {1, 1, 64, 64}}}}});
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("res2a_branch2a") && Contains("another model"));
  }
  SECTION("wrong shape") {
    const std::string p = tmp / "shape.h5";
    write_keras_file(p, {{"block1_conv1", {{"block1_conv1/kernel:0", {3, 3, 3, 32}}, {"block1_conv1/bias:0", {32}}}}});
    io::ImportOptions opt;
    opt.allow_missing = true;
    CHECK_THROWS_WITH(io::import_weights(*model, p, opt), Contains(p) && Contains("/block1_conv1/block1_conv1/kernel:0") &&
                                                          Contains("expects (64, 3, 3, 3)") &&
                                                          Contains("file has (3, 3, 3, 32)"));
  }
  SECTION("wrong dtype") {
    const std::string p = tmp / "dtype.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      std::vector<int32_t> v(64 * 27, 1);
      f.root().write_i32("vgg16/conv1_1/weight", {64, 3, 3, 3}, v.data());
      f.close();
    }
    io::ImportOptions opt;
    opt.allow_missing = true;
    CHECK_THROWS_WITH(io::import_weights(*model, p, opt),
                      Contains(p) && Contains("/vgg16/conv1_1/weight") && Contains("expected float32") && Contains("int32"));
  }
  SECTION("missing layers: an error, or a report with allow_missing") {
    const std::string p = tmp / "partial.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      std::vector<float> w(64 * 27, 0.5f), b(64, 0.25f);
      f.root().write_f32("vgg16/conv1_1/weight", {64, 3, 3, 3}, w.data());
      f.root().write_f32("vgg16/conv1_1/bias", {64}, b.data());
      f.close();
    }
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("missing") && Contains("vgg16/conv1_2/weight"));
    // Nothing half-loaded: the failed import left conv1_1 as it was.
    CHECK(same_bits(*model->find("vgg16/conv1_1/weight").tensor, conv1_before));
    io::ImportOptions opt;
    opt.allow_missing = true;
    const io::ImportReport rep = io::import_weights(*model, p, opt);
    CHECK(rep.loaded.size() == 2);
    CHECK(rep.missing.size() == 30);
    CHECK_THAT(rep.to_string(), Contains("2 loaded") && Contains("30 missing") && Contains("caffe_bgr"));
    CHECK(model->find("vgg16/conv1_1/bias").tensor->to_vector<float>()[0] == 0.25f);
  }
  SECTION("Keras file listing a layer it does not hold") {
    const std::string p = tmp / "nolayer.h5";
    {
      io::h5::File f = io::h5::File::create(p);
      f.root().set_string_list_attribute("layer_names", {"block1_conv1"});
      f.close();
    }
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("block1_conv1"));
  }
  SECTION("HDF5 but not a weights file") {
    const std::string p = tmp / "other.h5";
    {
      io::h5::File f = io::h5::File::create(p);
      std::vector<float> v(4, 1.0f);
      f.root().write_f32("data", {4}, v.data());
      f.close();
    }
    CHECK_THROWS_WITH(io::import_weights(*model, p), Contains(p) && Contains("not a weights file") && Contains("data"));
  }
}

TEST_CASE("kiln weights files carry a CRC32C per tensor (format 2), verified on import", "[weights][io][checksum]") {
  TempDir tmp;
  const std::string path = tmp / "w.h5";
  auto src = vgg(11, 10, 32, 1);
  io::export_weights(*src, path);
  {
    const io::h5::File f = io::h5::File::open_read(path);
    const io::h5::Group root = f.root();
    CHECK(root.int_attribute("kiln_format_version") == 2);
    for (const ParameterRef& p : src->parameters()) {
      INFO(p.name);
      const std::vector<float> v = p.tensor->to_vector<float>();
      const io::h5::Dataset ds = root.dataset(p.name);
      REQUIRE(ds.has_attribute(io::kChecksumAttribute));
      CHECK(ds.int_attribute(io::kChecksumAttribute) == int64_t{io::tensor_checksum(v.data(), v.size())});
    }
  }
  auto dst = vgg(11, 10, 32, 2);
  const io::ImportReport rep = io::import_weights(*dst, path);
  CHECK(rep.loaded.size() == src->parameters().size());
  CHECK_THAT(rep.checksums, Contains("verified"));
  CHECK_THAT(rep.to_string(), Contains("checksums: verified"));
  CHECK_THAT(io::verify_weights(path), Contains("verified"));
}

TEST_CASE("a float changed in a kiln weights file is an error naming the file and the tensor", "[weights][io][checksum]") {
  TempDir tmp;
  const std::string path = tmp / "w.h5";
  auto src = vgg(11, 10, 32, 1);
  io::export_weights(*src, path);
  test::overwrite_first_float(path, *src->find("vgg11/conv3_2/weight").tensor, 3e38f);

  auto dst = vgg(11, 10, 32, 2);
  const Tensor conv1_before = dst->find("vgg11/conv1_1/weight").tensor->clone();
  auto error_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string import_error = error_of([&] { io::import_weights(*dst, path); });
  // All or nothing: the tensors read before the corrupt one were not assigned either.
  CHECK(same_bits(*dst->find("vgg11/conv1_1/weight").tensor, conv1_before));
  for (const std::string& msg : {import_error, error_of([&] { io::verify_weights(path); })})
    CHECK_THAT(msg, Contains("file '" + path + "' is corrupt: tensor 'vgg11/conv3_2/weight' fails its checksum (stored 0x") &&
                        Contains(", computed 0x") && Contains("); the file was changed after kiln wrote it"));
  // A skipped tensor is not read, so its damage does not stop the rest from loading.
  const io::ImportReport rep = io::import_weights(*dst, path, io::ImportOptions{{}, {"vgg11/conv3_2/"}, false});
  CHECK(rep.loaded.size() == src->parameters().size() - 2);
  CHECK_THAT(rep.checksums, Contains("verified"));
}

TEST_CASE("files without checksums load and the report says so, and format 2 requires them", "[weights][io][checksum]") {
  TempDir tmp;
  auto model = vgg(16, 8, 32, 3);
  io::ImportOptions partial;
  partial.allow_missing = true;
  std::vector<float> w(64 * 27, 0.5f), b(64, 0.25f);

  SECTION("kiln format 1 (older kiln, converted torchvision files)") {
    const std::string p = tmp / "v1.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      f.root().write_f32("vgg16/conv1_1/weight", {64, 3, 3, 3}, w.data());
      f.root().write_f32("vgg16/conv1_1/bias", {64}, b.data());
      f.close();
    }
    const io::ImportReport rep = io::import_weights(*model, p, partial);
    CHECK(rep.loaded.size() == 2);
    CHECK_THAT(rep.checksums, Contains("none") && Contains("kiln format version 1"));
    CHECK_THAT(rep.to_string(), Contains("checksums: none"));
    CHECK_THAT(io::verify_weights(p), Contains("kiln format version 1"));
  }
  SECTION("Keras") {
    const std::string p = tmp / "keras.h5";
    write_keras_file(p, {{"block1_conv1", {{"block1_conv1/kernel:0", {3, 3, 3, 64}}, {"block1_conv1/bias:0", {64}}}}});
    const io::ImportReport rep = io::import_weights(*model, p, partial);
    CHECK(rep.loaded.size() == 2);
    CHECK_THAT(rep.checksums, Contains("none in file (Keras files carry no checksums)"));
    CHECK_THAT(io::verify_weights(p), Contains("Keras files carry no checksums"));
  }
  SECTION("kiln format 2 with a tensor lacking its checksum") {
    const std::string p = tmp / "v2.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      io::h5::Group root = f.root();
      root.set_int_attribute("kiln_format_version", 2);
      io::write_checksummed(root, "vgg16/conv1_1/weight", {64, 3, 3, 3}, w.data());
      root.write_f32("vgg16/conv1_1/bias", {64}, b.data());
      f.close();
    }
    CHECK_THROWS_WITH(io::import_weights(*model, p, partial),
                      Contains(p) && Contains("tensor 'vgg16/conv1_1/bias' has no 'crc32c' checksum"));
  }
  SECTION("kiln format 3 is refused") {
    const std::string p = tmp / "v3.h5";
    {
      io::h5::File f = start_kiln_file(p, "vgg16");
      f.root().set_int_attribute("kiln_format_version", 3);
      f.close();
    }
    CHECK_THROWS_WITH(io::import_weights(*model, p, partial), Contains(p) && Contains("reads versions 1..2"));
  }
}

TEST_CASE("a Keras-layout file kiln exported names its model, so another network's weights are refused by name",
          "[weights][io]") {
  // VGG11's Keras names (block1_conv1, block2_conv1, ...) are a subset of VGG16's; read as
  // VGG16's, its layers landed where VGG16 has other inputs, with gaps between.
  TempDir tmp;
  const std::string path = tmp / "vgg11_keras.h5";
  io::ExportOptions keras;
  keras.format = io::WeightsFormat::keras;
  auto src = vgg(11, 10, 32, 1);
  io::export_weights(*src, path, keras);
  CHECK(io::weights_source_model(io::h5::File::open_read(path).root()) == "vgg11");
  auto vgg16 = vgg(16, 10, 32, 2);
  CHECK_THROWS_WITH(io::import_weights(*vgg16, path), Contains("is for model 'vgg11', not 'vgg16'"));
  io::ImportOptions partial;
  partial.allow_missing = true;
  CHECK_THROWS_WITH(io::import_weights(*vgg16, path, partial), Contains("is for model 'vgg11'"));
  // Into its own model it loads whole, named as before.
  auto back = vgg(11, 10, 32, 3);
  const io::ImportReport rep = io::import_weights(*back, path);
  CHECK(rep.source_model == "vgg11");
  CHECK(rep.loaded.size() == 22);
  CHECK(back->find("vgg11/conv2_1/weight").tensor->to_vector<float>() ==
        src->find("vgg11/conv2_1/weight").tensor->to_vector<float>());
}

TEST_CASE("a head shaped otherwise is mismatched and not missing - skip_mismatched keeps it - a map that fits nothing fails",
          "[weights][io]") {
  TempDir tmp;
  const std::string path = tmp / "vgg11_10.h5";
  io::export_weights(*vgg(11, 10, 32, 1), path);
  auto model = vgg(11, 2, 32, 2);
  const std::vector<float> head_before = model->find("vgg11/fc8/weight").tensor->to_vector<float>();
  // Without skip_mismatched: the shape is the one problem named, not also "missing".
  try {
    io::import_weights(*model, path);
    FAIL("a mismatched head loaded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Contains("model expects (2, 4096), file has (10, 4096)"));
    CHECK_THAT(e.what(), !Contains("missing from the file"));
  }
  // With it alone: every other layer loads and the head keeps its values (Keras's skip_mismatch).
  io::ImportOptions opt;
  opt.skip_mismatched = true;
  const io::ImportReport rep = io::import_weights(*model, path, opt);
  CHECK(rep.loaded.size() == 20);
  CHECK(rep.mismatched == std::vector<std::string>{"vgg11/fc8/bias", "vgg11/fc8/weight"});
  CHECK(rep.missing.empty());
  CHECK(model->find("vgg11/fc8/weight").tensor->to_vector<float>() == head_before);
  // A map whose keys cover no entry (no trailing '/'): an error, not "0 loaded".
  io::ImportOptions typo;
  typo.assignment_map = {{"vgg11", "vgg11/"}};
  REQUIRE_THROWS_WITH(io::import_weights(*model, path, typo),
                      Contains("no entry of the file maps to a model parameter") && Contains("'vgg11'") &&
                          Contains("a scope key ends in '/'"));
  // A map whose entries all mapped and were skipped loaded nothing on purpose: no error.
  io::ImportOptions head_only;
  head_only.assignment_map = {{"vgg11/fc8/", "vgg11/fc8/"}};
  head_only.skip_mismatched = true;
  const io::ImportReport none = io::import_weights(*model, path, head_only);
  CHECK(none.loaded.empty());
  CHECK(none.mismatched.size() == 2);
}

TEST_CASE("with skip_must_match a skip pattern that matches nothing is refused before anything loads",
          "[weights][io][errors]") {
  TempDir tmp;
  const std::string path = tmp / "vgg11_3.h5";
  io::export_weights(*vgg(11, 3, 32, 1), path);
  auto model = vgg(11, 3, 32, 2);
  const std::vector<float> before = model->find("vgg11/conv1_1/weight").tensor->to_vector<float>();
  io::ImportOptions opt;
  opt.skip = {"vgg11/fc8"};  // the scope without its '/': matches neither a file entry nor a parameter
  CHECK(io::import_weights(*model, path, opt).skipped.empty());  // without the flag: loads everything
  model = vgg(11, 3, 32, 2);
  opt.skip_must_match = true;
  REQUIRE_THROWS_WITH(io::import_weights(*model, path, opt),
                      Contains("skip pattern 'vgg11/fc8' matches no entry of the file and no parameter of the model") &&
                          Contains("e.g. 'vgg11/fc8/'"));
  CHECK(model->find("vgg11/conv1_1/weight").tensor->to_vector<float>() == before);  // nothing loaded
  // A pattern matching a parameter the file lacks, or an entry the model lacks, is used.
  opt.skip = {"vgg11/fc8/", "*/bias"};
  const io::ImportReport rep = io::import_weights(*model, path, opt);
  CHECK(rep.skipped.size() == 12);  // 11 biases and fc8's weight
}

// Hidden: run alone by the hdf5_exit_after_failed_writes ctest, so that its HDF5 call is the
// process's first. After a write that failed, HDF5 1.10 keeps the file's identifier but frees
// the file, and its shutdown at exit crashed on it (SIGSEGV); kiln turns that shutdown off
// (H5dont_atexit), which takes only before the library's first use. open_object_count() as
// the first call once let the shutdown stand: this process then died at exit.
TEST_CASE("after exports cut short by a full disk the process still exits cleanly", "[.hdf5_exit][weights][io]") {
  CHECK(io::h5::open_object_count() == 0);  // first: as a test or a fuzzer checking for leaks would
  TempDir tmp;
  Generator g(5);
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Linear>("fc1", 16, 8, true, g));
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto previous = std::signal(SIGXFSZ, SIG_IGN);
  int failed = 0;
  for (const rlim_t limit : {rlim_t{500}, rlim_t{1000}, rlim_t{2000}, rlim_t{3000}}) {
    struct rlimit cut = old;
    cut.rlim_cur = limit;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &cut) == 0);
    try {
      io::export_weights(*net, tmp / "w.h5");
    } catch (const Error&) {
      ++failed;
    }
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
  }
  std::signal(SIGXFSZ, previous);
  CHECK(failed == 4);
  CHECK(io::h5::open_object_count() > 0);  // the files HDF5 could not close: what its shutdown tripped on
}

TEST_CASE("a write cut short anywhere (disk full) fails the export: no file is ever reported written and damaged",
          "[weights][io]") {
  // RLIMIT_FSIZE makes every write past `limit` bytes fail (EFBIG), as a full disk would,
  // without a mount. Each run either throws, leaving the old file, or writes a whole one:
  // either way the file at `path` loads back (checksums verified) bit for bit. (A small
  // dataset's failed write surfaced only in a destructor, so exports "succeeded" with a bias
  // of zeros.) Nothing may crash at exit either.
  TempDir tmp;
  Generator g(5);
  auto tiny = [&g] {
    auto net = std::make_shared<Sequential>("net");
    net->add(std::make_shared<Linear>("fc1", 16, 8, true, g));
    net->add(std::make_shared<Linear>("fc2", 8, 3, true, g));
    return net;
  };
  const auto net = tiny();
  const std::string path = tmp / "w.h5";
  io::export_weights(*net, path);
  const auto full = static_cast<rlim_t>(fs::file_size(path));
  struct rlimit old {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto previous = std::signal(SIGXFSZ, SIG_IGN);
  int failed = 0;
  for (rlim_t limit = 0; limit <= full + 97; limit += 97) {
    INFO("file size limit " << limit << " of " << full << " bytes");
    struct rlimit cut = old;
    cut.rlim_cur = limit;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &cut) == 0);
    try {
      io::export_weights(*net, path);
    } catch (const Error&) {
      ++failed;
    }
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK_FALSE(fs::exists(path + ".tmp" + std::to_string(::getpid())));
    const auto back = tiny();
    REQUIRE(io::import_weights(*back, path).loaded.size() == 4);
    const auto ps = net->parameters(), pb = back->parameters();
    for (size_t i = 0; i < ps.size(); ++i) CHECK(same_bits(*ps[i].tensor, *pb[i].tensor));
  }
  std::signal(SIGXFSZ, previous);
  CHECK(failed >= static_cast<int>(full / 97));  // every limit under the file's size failed
}
