// ResNet-50 v1.5 and v1: torchvision's parameter names and counts, and PyTorch's logits
// from random weights with non-trivial batch-norm statistics, loaded from kiln's layout and
// (v1) from Keras's layouts; Keras's layer names; against real Keras where it is installed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/wait.h>

#include "core/kiln.h"
#include "io/hdf5.h"
#include "io/weights.h"
#include "layers/models/keras_names.h"
#include "layers/models/resnet.h"
#include "train/api.h"
#include "train/model_spec.h"
#include "tests/support/require_close.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

int64_t parameter_count(Module& m) {
  int64_t n = 0;
  for (const ParameterRef& p : m.parameters()) n += p.tensor->numel();
  return n;
}

std::shared_ptr<Sequential> resnet(ResNetVariant v, int64_t classes, int64_t image, uint64_t seed = 3) {
  Generator init(seed);
  return make_resnet50(ResNetOptions{v, classes, image}, init);
}

// Every parameter and buffer, by name, as host floats.
std::map<std::string, std::vector<float>> state_of(Module& m) {
  std::map<std::string, std::vector<float>> out;
  for (const ParameterRef& p : m.parameters()) out[p.name] = p.tensor->to_vector<float>();
  for (const BufferRef& b : m.buffers()) out[b.name] = b.tensor->to_vector<float>();
  return out;
}

Tensor read_input(const std::string& path) {
  std::vector<int64_t> shape;
  const std::vector<double> v = test::read_npy(path, &shape);
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), Shape(shape));
}

// Imports `file` into a fresh v1 model (10 classes, 64 px) and returns its logits on x.
std::vector<double> v1_logits(const std::string& file, const Tensor& x, io::ImportReport* report = nullptr) {
  auto model = resnet(ResNetVariant::v1, 10, 64);
  model->eval();
  const io::ImportReport rep = io::import_weights(*model, file);
  INFO(rep.to_string());
  CHECK(rep.loaded.size() == model->parameters().size() + model->buffers().size());
  CHECK(rep.missing.empty());
  CHECK(rep.unmapped.empty());
  if (report) *report = rep;
  return model->forward(x).to_vector<double>();
}

}  // namespace

TEST_CASE("ResNet-50 has torchvision's parameter names and counts", "[resnet]") {
  auto v15 = resnet(ResNetVariant::v1_5, 1000, 224);
  CHECK(parameter_count(*v15) == 25557032);  // sum(p.numel() for p in torchvision resnet50().parameters())
  CHECK(v15->parameters().size() == 161);     // len(list(resnet50().parameters()))
  CHECK(v15->buffers().size() == 106);        // 53 BNs, num_batches_tracked aside
  for (const char* name : {"resnet50/conv1/weight", "resnet50/bn1/bias", "resnet50/layer1/0/conv3/weight",
                           "resnet50/layer2/0/downsample/0/weight", "resnet50/layer4/2/bn3/weight", "resnet50/fc/bias"})
    CHECK(v15->find(name).tensor != nullptr);
  CHECK(v15->find("resnet50/layer1/1/downsample/0/weight").tensor == nullptr);  // identity shortcut
  CHECK(v15->find("resnet50/conv1/bias").tensor == nullptr);
  CHECK(v15->find("resnet50/layer4/2/bn3/running_var").tensor == nullptr);  // a buffer, not a parameter
  // v1 adds a bias to each of the 53 convs.
  auto v1 = resnet(ResNetVariant::v1, 1000, 224);
  CHECK(v1->parameters().size() == 161 + 53);
  CHECK(v1->find("resnet50_v1/layer3/0/downsample/0/bias").tensor != nullptr);
  REQUIRE_THROWS_WITH(resnet(ResNetVariant::v1_5, 10, 48), Catch::Contains("multiple of 32"));
}

TEST_CASE("resnet50_convs lists the builder's convolutions with their weights' shapes and input sides",
          "[resnet]") {
  for (const ResNetVariant v : {ResNetVariant::v1_5, ResNetVariant::v1}) {
    const bool v1 = v == ResNetVariant::v1;
    auto net = resnet(v, 10, 224);
    const std::vector<ResNetConv> convs = resnet50_convs(ResNetOptions{v, 10, 224});
    REQUIRE(convs.size() == 53);
    int64_t weights = 0;
    for (const ParameterRef& p : net->parameters()) weights += p.tensor->rank() == 4;
    CHECK(weights == 53);
    std::map<std::string, ResNetConv> by_name;
    for (const ResNetConv& c : convs) {
      by_name[c.name] = c;
      const std::string w = net->name() + "/" + c.name + "/weight";
      INFO(w);
      REQUIRE(net->find(w).tensor != nullptr);
      CHECK(net->find(w).tensor->shape() == Shape{c.out_channels, c.kernel, c.kernel, c.in_channels});
      CHECK(c.pad == c.kernel / 2);
    }
    // Where the maps shrink: the stem (224 -> 112, pooled to 56), then each stage's first
    // block, in its 3x3 conv (v1.5) or its first 1x1 (v1), and in its shortcut.
    CHECK(by_name["conv1"].in_size == 224);
    CHECK(by_name["layer1/0/conv1"].in_size == 56);
    CHECK(by_name["layer2/0/downsample/0"].in_size == 56);
    CHECK(by_name["layer2/0/downsample/0"].stride == 2);
    CHECK(by_name["layer2/0/conv1"].stride == (v1 ? 2 : 1));
    CHECK(by_name["layer2/0/conv2"].stride == (v1 ? 1 : 2));
    CHECK(by_name["layer2/0/conv2"].in_size == (v1 ? 28 : 56));
    CHECK(by_name["layer2/0/conv3"].in_size == 28);
    CHECK(by_name["layer4/2/conv3"].in_size == 7);
  }
}

TEST_CASE("ResNet-50 v1.5 and v1 give PyTorch's logits", "[resnet]") {
  const std::string dir = test::make_temp_dir("resnet_reference");
  for (const auto& [variant, tag] : {std::pair{ResNetVariant::v1_5, "v1_5"}, std::pair{ResNetVariant::v1, "v1"}}) {
    INFO("variant " << tag);
    test::run_reference_script("make_resnet_reference.py",
                               "--out " + dir + " --variant " + tag + " --image 64 --batch 2 --classes 10");
    std::vector<int64_t> xs;
    const std::vector<double> xv = test::read_npy(dir + "/input_" + tag + ".npy", &xs);
    const Tensor x = Tensor::from_vector(std::vector<float>(xv.begin(), xv.end()), Shape(xs));
    const std::vector<double> want = test::read_npy(dir + "/logits_" + std::string(tag) + ".npy");
    auto model = resnet(variant, 10, 64);
    model->eval();
    const std::string file = dir + "/resnet50_" + tag + "_kiln.h5";
    const io::ImportReport rep = io::import_weights(*model, file);
    INFO(rep.to_string());
    CHECK(rep.loaded.size() == model->parameters().size() + model->buffers().size());
    CHECK(rep.missing.empty());
    CHECK(rep.unmapped.empty());
    std::filesystem::remove(file);
    const std::vector<double> got = model->forward(x).to_vector<double>();
    // The worst relative and the worst absolute difference, for the record.
    WARN(tag << ": " << check::compare(got, want, 0.0, 1.0).report << "\n" << check::compare(got, want, 1.0, 0.0).report);
    // 53 convs summed in another order than PyTorch's float64 reference.
    KILN_REQUIRE_CLOSE(got, want, 1e-4 * check::mean_abs(want), 1e-4);
  }
}

TEST_CASE("ResNet-50 Keras layer names map both ways and Keras lists the shortcut before conv3", "[resnet]") {
  const KerasLayerNames keras = keras_layer_names("resnet50_v1");
  const ModelSpec& spec = find_model_spec("resnet50_v1");
  const std::vector<std::string> layers = resnet50_weight_layers();
  REQUIRE(layers.size() == 107);  // 53 convs, 53 batch norms, fc
  for (const std::string& l : layers) {
    INFO(l);
    const std::string k = keras.to_keras(l);
    CHECK(k != l);
    CHECK(keras.from_keras(k) == l);
    CHECK(spec.kiln_to_keras(l) == k);  // the spec's maps are io's
    CHECK(spec.keras_to_kiln(k) == l);
  }
  CHECK(keras.to_keras("conv1") == "conv1_conv");
  CHECK(keras.to_keras("layer2/0/downsample/0") == "conv3_block1_0_conv");
  CHECK(keras.to_keras("layer4/2/bn3") == "conv5_block3_3_bn");
  CHECK(keras.from_keras("conv2_block1_0_bn") == "layer1/0/downsample/1");
  CHECK(keras.from_keras("predictions") == "fc");
  // Names the stage table lacks, and odd spellings, pass through unchanged.
  for (const char* n : {"conv2_block4_1_conv", "conv3_block2_0_conv", "conv6_block1_1_conv", "conv2_block1_4_bn",
                        "conv2_block01_1_conv", "conv2_block1_1_conv_x", "conv2_block1_1", "avg_pool", "", "_"}) {
    CHECK(keras.from_keras(n) == n);
  }
  for (const char* n : {"layer1/3/conv1", "layer2/1/downsample/0", "layer1/0/conv0", "layer1/0/conv4", "layer0/0/bn1",
                        "layer1/0/downsample/2", "layer1/0", "fc6"}) {
    CHECK(keras.to_keras(n) == n);
  }
  // Keras's model.layers order (Keras 3 numbers conv2d_N, batch_normalization_N by it):
  // conv1, bn1, conv2, bn2, the shortcut, conv3, bn3 in a downsampling block.
  const std::vector<std::string> order = resnet50_keras_layer_order();
  REQUIRE(std::is_permutation(order.begin(), order.end(), layers.begin(), layers.end()));
  const auto at = [&](const std::string& l) { return std::find(order.begin(), order.end(), l) - order.begin(); };
  CHECK(at("layer1/0/bn2") + 1 == at("layer1/0/downsample/0"));
  CHECK(at("layer1/0/downsample/1") + 1 == at("layer1/0/conv3"));
  CHECK(keras_layer_names("vgg16").to_keras("conv1_1") == "block1_conv1");  // VGG keeps its own
  CHECK(keras_layer_names("net").from_keras("conv1_conv") == "conv1_conv");
}

TEST_CASE("ResNet-50 v1 in Keras's layouts (tf-keras, model.save, Keras 3, no-top) gives PyTorch's logits",
          "[resnet]") {
  const std::string dir = test::make_temp_dir("resnet_keras_layouts");
  test::run_reference_script("make_resnet_reference.py",
                             "--out " + dir + " --variant v1 --keras-layouts --image 64 --batch 2 --classes 10");
  const Tensor x = read_input(dir + "/input_v1.npy");
  const std::vector<double> want = test::read_npy(dir + "/logits_v1.npy");
  const double atol = 1e-4 * check::mean_abs(want);
  for (const auto& [name, format] : {std::pair{"keras.h5", io::WeightsFormat::keras},
                                     std::pair{"keras_model.h5", io::WeightsFormat::keras},
                                     std::pair{"keras3.weights.h5", io::WeightsFormat::keras3}}) {
    INFO("file resnet50_v1_" << name);
    const std::string file = dir + "/resnet50_v1_" + name;
    io::ImportReport rep;
    const std::vector<double> got = v1_logits(file, x, &rep);
    CHECK(rep.format == format);
    if (format == io::WeightsFormat::keras) {
      // The short path (train/api.h) reads the head's size from the file's predictions layer.
      LoadOptions lo;
      lo.image_size = 64;
      Model m = load_model("resnet50_v1", file, lo);
      CHECK(m.num_classes() == 10);
      CHECK(m.convention() == io::InputConvention::caffe_bgr);
      KILN_REQUIRE_CLOSE(m.logits(x).to_vector<double>(), want, atol, 1e-4);
    }
    std::filesystem::remove(file);
    WARN(name << ": " << check::compare(got, want, 0.0, 1.0).report);
    KILN_REQUIRE_CLOSE(got, want, atol, 1e-4);
  }
  {
    INFO("batch norms numbered in kiln's order instead of Keras's load (shapes fit) but give other logits");
    const std::string file = dir + "/resnet50_v1_keras3_wrong_order.weights.h5";
    const std::vector<double> got = v1_logits(file, x);
    CHECK_FALSE(check::compare(got, want, atol, 1e-4).ok);
  }
  auto reference = resnet(ResNetVariant::v1, 10, 64);
  io::import_weights(*reference, dir + "/resnet50_v1_kiln.h5");
  {
    INFO("a no-top file loads the whole backbone and reports fc missing");
    auto model = resnet(ResNetVariant::v1, 10, 64, 5);
    const std::string file = dir + "/resnet50_v1_keras_notop.h5";
    // Its layer names say it is keras.applications' ResNet50 (v1): refused by the v1.5 model.
    CHECK(io::weights_source_model(io::h5::File::open_read(file).root()) == "resnet50_v1");
    CHECK_THROWS_WITH(io::import_weights(*resnet(ResNetVariant::v1_5, 10, 64, 5), file),
                      Catch::Contains("is for model 'resnet50_v1', not 'resnet50'"));
    REQUIRE_THROWS_WITH(io::import_weights(*model, file), Catch::Contains("resnet50_v1/fc/weight") &&
                                                             Catch::Contains("missing from the file"));
    io::ImportOptions opt;
    opt.allow_missing = true;
    const io::ImportReport rep = io::import_weights(*model, file, opt);
    INFO(rep.to_string());
    std::vector<std::string> missing = rep.missing;
    std::sort(missing.begin(), missing.end());
    CHECK(missing == std::vector<std::string>{"resnet50_v1/fc/bias", "resnet50_v1/fc/weight"});
    CHECK(rep.loaded.size() == model->parameters().size() + model->buffers().size() - 2);
    CHECK(rep.unmapped.empty());
    const auto want_state = state_of(*reference), got_state = state_of(*model);
    for (const auto& [n, v] : want_state) {
      INFO(n);
      if (n.compare(0, 15, "resnet50_v1/fc/") == 0) CHECK(got_state.at(n) != v);  // kept as initialised
      else CHECK(got_state.at(n) == v);
    }
  }
  {
    INFO("export in Keras's layout writes Keras's names and imports back bit-exactly");
    const std::string out = dir + "/exported_keras.h5";
    io::ExportOptions keras;
    keras.format = io::WeightsFormat::keras;
    io::export_weights(*reference, out, keras);
    {
      const io::h5::File f = io::h5::File::open_read(out);
      const io::h5::Group root = f.root();
      const std::vector<std::string> layer_names = root.string_list_attribute("layer_names");
      CHECK(layer_names.size() == 107);
      CHECK(std::find(layer_names.begin(), layer_names.end(), "conv2_block1_0_conv") != layer_names.end());
      CHECK(root.group("conv3_block1_0_bn").string_list_attribute("weight_names") ==
            std::vector<std::string>{"conv3_block1_0_bn/gamma:0", "conv3_block1_0_bn/beta:0",
                                     "conv3_block1_0_bn/moving_mean:0", "conv3_block1_0_bn/moving_variance:0"});
      CHECK(root.group("conv1_conv").string_list_attribute("weight_names") ==
            std::vector<std::string>{"conv1_conv/kernel:0", "conv1_conv/bias:0"});
    }
    auto back = resnet(ResNetVariant::v1, 10, 64, 7);
    const io::ImportReport rep = io::import_weights(*back, out);
    CHECK(rep.missing.empty());
    CHECK(rep.unmapped.empty());
    CHECK(state_of(*back) == state_of(*reference));
  }
}

TEST_CASE("a torchvision resnet50 state_dict converts to kiln's layout and gives PyTorch's logits", "[resnet]") {
  const std::string dir = test::make_temp_dir("resnet_state_dict");
  const std::string pth = dir + "/resnet50.pth", converted = dir + "/converted.h5";
  test::run_reference_script("make_resnet_reference.py", "--out " + dir +
                                                             " --variant v1_5 --image 64 --batch 2 --classes 10"
                                                             " --save-state-dict " + pth);
  test::run_reference_script("make_resnet_reference.py", "--state-dict " + pth + " --out-weights " + converted);
  std::filesystem::remove(pth);
  auto model = resnet(ResNetVariant::v1_5, 10, 64);
  model->eval();
  const io::ImportReport rep = io::import_weights(*model, converted);
  INFO(rep.to_string());
  CHECK(rep.loaded.size() == model->parameters().size() + model->buffers().size());  // num_batches_tracked dropped
  CHECK(rep.source_model == "resnet50");
  const std::vector<double> want = test::read_npy(dir + "/logits_v1_5.npy");
  KILN_REQUIRE_CLOSE(model->forward(read_input(dir + "/input_v1_5.npy")).to_vector<double>(), want,
                     1e-4 * check::mean_abs(want), 1e-4);
}

namespace {

// Runs `cmd` through the shell; its exit code (-1 when it did not exit normally), output in `out`.
int run_command(const std::string& cmd, std::string& out) {
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

// Not in CI (no Keras there: Skipped). The interpreter is $KILN_KERAS_PYTHON, else
// /usr/bin/python3; e.g. KILN_KERAS_PYTHON=/tmp/venv-keras/bin/python (pip install keras
// numpy h5py scipy jax; KERAS_BACKEND=numpy). ~10 s with Keras 3's numpy backend.
TEST_CASE("ResNet-50 v1 loads the files real Keras writes and gives Keras's logits", "[resnet][keras]") {
  const char* env = std::getenv("KILN_KERAS_PYTHON");
  const std::string python = env ? env : "/usr/bin/python3";
  const std::string dir = test::make_temp_dir("resnet_real_keras");
  std::string log;
  const int rc = run_command("env KERAS_HOME=" + dir + "/keras_home TF_CPP_MIN_LOG_LEVEL=3 CUDA_VISIBLE_DEVICES= " +
                                 python + " " + test::source_path("tests/reference/make_real_keras_resnet.py") +
                                 " --out " + dir + "/files",
                             log);
  if (rc == 77) {
    WARN("no Keras for " << python << " (set KILN_KERAS_PYTHON): Keras case skipped\n" << log);
    return;
  }
  INFO(log);
  REQUIRE(rc == 0);
  const Tensor x = read_input(dir + "/files/input.npy");
  std::ifstream manifest(dir + "/files/manifest.tsv");
  std::string line;
  // Per writer (its weights are its own): the state of its first full file's import.
  std::map<std::string, std::map<std::string, std::vector<float>>> backbone;
  int full = 0, notop = 0;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, '\t');) f.push_back(cell);
    REQUIRE(f.size() == 5);
    INFO(f[0] << " " << f[1] << " " << f[2] << ": " << f[3]);
    if (f[1] == "full") {
      ++full;
      auto model = resnet(ResNetVariant::v1, 10, 64);
      model->eval();
      const io::ImportReport rep = io::import_weights(*model, f[3]);
      INFO(rep.to_string());
      CHECK(rep.loaded.size() == model->parameters().size() + model->buffers().size());
      CHECK(rep.unmapped.empty());
      const std::vector<double> want = test::read_npy(f[4]);
      const std::vector<double> got = model->forward(x).to_vector<double>();
      WARN(f[0] << " " << f[2] << ": " << check::compare(got, want, 0.0, 1.0).report);
      KILN_REQUIRE_CLOSE(got, want, 1e-4 * check::mean_abs(want), 1e-4);
      if (!backbone.count(f[0])) backbone[f[0]] = state_of(*model);
    } else {
      ++notop;
      REQUIRE(backbone.count(f[0]));
      auto model = resnet(ResNetVariant::v1, 10, 64);
      io::ImportOptions opt;
      opt.allow_missing = true;
      const io::ImportReport rep = io::import_weights(*model, f[3], opt);
      INFO(rep.to_string());
      std::vector<std::string> missing = rep.missing;
      std::sort(missing.begin(), missing.end());
      CHECK(missing == std::vector<std::string>{"resnet50_v1/fc/bias", "resnet50_v1/fc/weight"});
      CHECK(rep.unmapped.empty());
      for (const auto& [n, v] : state_of(*model))
        if (n.compare(0, 15, "resnet50_v1/fc/") != 0) CHECK(backbone[f[0]].at(n) == v);
    }
  }
  CHECK(full > 0);
  CHECK(notop > 0);
}

TEST_CASE("an op's error deep in ResNet-50 names the whole layer path, blocks included", "[resnet][errors]") {
  Generator init(3);
  auto net = make_resnet50(ResNetOptions{ResNetVariant::v1_5, 10, 32}, init);
  Tensor* w = net->find("resnet50/layer1/0/downsample/0/weight").tensor;
  REQUIRE(w != nullptr);
  *w = Tensor::zeros(Shape{256, 1, 1, 32});  // 32 input channels where the block gives 64
  REQUIRE_THROWS_WITH((*net)(Tensor::zeros(Shape{1, 32, 32, 3})),
                      Catch::StartsWith("in layer 'resnet50/layer1/0/downsample/0': conv2d"));
}
