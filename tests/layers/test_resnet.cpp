// ResNet-50 v1.5 and v1: torchvision's parameter names and counts, and PyTorch's logits
// from random weights with non-trivial batch-norm statistics.
#include <catch2/catch.hpp>

#include <filesystem>

#include "core/kiln.h"
#include "io/weights.h"
#include "layers/models/resnet.h"
#include "tests/support/compare.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

int64_t parameter_count(Module& m) {
  int64_t n = 0;
  for (const ParameterRef& p : m.parameters()) n += p.tensor->numel();
  return n;
}

std::shared_ptr<Sequential> resnet(ResNetVariant v, int64_t classes, int64_t image) {
  Generator init(3);
  return make_resnet50(ResNetOptions{v, classes, image}, init);
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
    WARN(tag << ": " << test::compare(got, want, 0.0, 1.0).report << "\n" << test::compare(got, want, 1.0, 0.0).report);
    // 53 convs summed in another order than PyTorch's float64 reference.
    KILN_REQUIRE_CLOSE(got, want, 1e-4 * test::mean_abs(want), 1e-4);
  }
}
