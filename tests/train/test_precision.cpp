// The precision policy (train/precision.h): frozen layers compute in bf16 and trained ones in
// fp32 under bf16-frozen, the boundary moves with the phase's freezing, frozen weights are
// converted once per phase, a bf16 frozen prefix records no graph, and the comparison tool
// measures what it says.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/kiln.h"
#include "io/dataset.h"
#include "layers/models/resnet.h"
#include "layers/models/vgg.h"
#include "train/precision.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

// conv -> relu -> pool -> flatten -> fc1 -> relu -> fc2: two frozen weight layers and a head.
std::shared_ptr<Sequential> small_convnet(Generator& gen) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Conv2d>("conv1", 3, 8, 3, Conv2dParams{1, 1, 1, 1}, true, gen, Init::kaiming_normal));
  net->add(std::make_shared<ReLU>("relu1"));
  net->add(std::make_shared<MaxPool2d>("pool1", Pool2dParams{}));
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc1", 4 * 4 * 8, 16, true, gen, Init::kaiming_normal));
  net->add(std::make_shared<ReLU>("relu2"));
  net->add(std::make_shared<Linear>("fc2", 16, 3, true, gen));
  return net;
}

Phase train_only(std::vector<std::string> patterns) {
  Phase p;
  p.train_patterns = std::move(patterns);
  return p;
}

double rel_error(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to(DType::f32).to_vector<float>(), y = b.to(DType::f32).to_vector<float>();
  double d = 0, n = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    d += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    n += static_cast<double>(y[i]) * y[i];
  }
  return std::sqrt(d / n);
}

}  // namespace

TEST_CASE("bf16-frozen runs what the phase freezes in bf16 and the rest in fp32", "[train][precision]") {
  Generator gen(7);
  auto net = small_convnet(gen);
  const Tensor x = Tensor::normal(Shape{4, 8, 8, 3}, 0, 1, gen);
  apply_phase(*net, train_only({"net/fc2/"}));
  apply_precision(*net, Precision::fp32);
  const Tensor ref = (*net)(x);

  const PrecisionUse u = apply_precision(*net, Precision::bf16_frozen);
  CHECK(u.layers == 3);
  CHECK(u.bf16 == 2);
  CHECK(u.first_fp32 == "net/fc2");
  CHECK(u.describe() == "bf16-frozen: 2 of 3 weight layers in bf16, fp32 from net/fc2");
  CHECK(dynamic_cast<WeightLayer&>(*net->child("conv1")).compute_dtype() == DType::bf16);
  CHECK(dynamic_cast<WeightLayer&>(*net->child("fc2")).compute_dtype() == DType::f32);
  const Tensor y = (*net)(x);
  CHECK(y.dtype() == DType::f32);
  // Two bf16 layers, each rounding inputs, weights and output by <= 2^-9 relative: a few 2^-9.
  const double e = rel_error(y, ref);
  CHECK(e > 0);  // it did compute in bf16
  CHECK(e < 2e-2);

  // The boundary moves with the freezing: training fc1 and fc2 leaves only conv1 in bf16.
  apply_phase(*net, train_only({"net/fc1/", "net/fc2/"}));
  CHECK(apply_precision(*net, Precision::bf16_frozen).describe() == "bf16-frozen: 1 of 3 weight layers in bf16, fp32 from net/fc1");
  // A phase that freezes nothing is plain fp32, and says so.
  apply_phase(*net, train_only({}));
  const PrecisionUse all = apply_precision(*net, Precision::bf16_frozen);
  CHECK(all.bf16 == 0);
  CHECK(all.describe() == "bf16-frozen: all 3 weight layers in fp32 (nothing is frozen in this phase)");
  CHECK((*net)(x).to_vector<float>() == ref.to_vector<float>());
  CHECK(parse_precision("bf16-frozen") == Precision::bf16_frozen);
  REQUIRE_THROWS_WITH(parse_precision("fp16"), Catch::Contains("unknown precision 'fp16'") && Catch::Contains("bf16-frozen"));
}

// ResNet-50's residual add where the bf16-frozen boundary falls inside a stage: the
// block's own path trains in fp32 while its identity shortcut is the frozen block's bf16
// output. A review found the add
// refusing the two dtypes once batch norm stopped casting to fp32.
TEST_CASE("bf16-frozen with the boundary inside a ResNet-50 stage: forward and a step run, close to fp32",
          "[train][precision][resnet]") {
  Generator gen(9);
  auto net = make_resnet50(ResNetOptions{ResNetVariant::v1_5, 4, 32}, gen);
  const Tensor x = Tensor::normal(Shape{2, 32, 32, 3}, 0, 1, gen);
  for (const char* from : {"layer4/1/", "layer3/5/conv2/", "layer4/0/downsample/"}) {
    INFO("trained from " << from);
    std::vector<std::string> trained;
    bool on = false;
    for (const std::string& scope : net->parameter_scopes()) {
      on = on || scope.rfind(std::string("resnet50/") + from, 0) == 0;
      if (on) trained.push_back(scope);
    }
    REQUIRE(!trained.empty());
    apply_phase(*net, train_only(trained));
    // Evaluation mode: every batch norm on its running statistics, so the two runs differ
    // by bf16 alone (batch statistics over 2 images at 1x1 would amplify any difference).
    net->train(false);
    apply_precision(*net, Precision::fp32);
    const Tensor ref = (*net)(x);
    const PrecisionUse u = apply_precision(*net, Precision::bf16_frozen);
    CHECK(u.bf16 > 0);
    const Tensor y = (*net)(x);
    CHECK(y.dtype() == DType::f32);
    CHECK(rel_error(y, ref) < 5e-2);
    softmax_cross_entropy(y, Tensor::from_vector(std::vector<int64_t>{1, 3}, Shape{2})).backward();
    const Tensor* w = net->find("resnet50/fc/weight").tensor;
    REQUIRE(w->grad().defined());
    CHECK(w->grad().dtype() == DType::f32);
  }
}

TEST_CASE("a frozen conv and its relu run fused, with the values of the layers one by one", "[train][precision]") {
  Generator gen(12);
  auto net = small_convnet(gen);
  const Tensor x = Tensor::normal(Shape{3, 8, 8, 3}, 0, 1, gen);
  apply_phase(*net, train_only({"net/fc2/"}));
  for (const Precision p : {Precision::fp32, Precision::bf16_frozen}) {
    apply_precision(*net, p);
    Tensor h = x;
    for (const auto& c : net->children()) h = (*c)(h);  // unfused: conv1, then relu1
    CHECK((*net)(x).to_vector<float>() == h.to_vector<float>());
    CHECK(net->forward_range(0, 2, x).to(DType::f32).to_vector<float>() ==
          relu((*net->child("conv1"))(x)).to(DType::f32).to_vector<float>());
    CHECK(net->forward_range(0, 1, x).to(DType::f32).to_vector<float>() ==
          (*net->child("conv1"))(x).to(DType::f32).to_vector<float>());  // `to` splits the pair: no relu
  }
}

TEST_CASE("a frozen layer's bf16 copy follows its master, and unfrozen the layer trains", "[train][precision]") {
  Generator gen(8);
  auto net = small_convnet(gen);
  const Tensor x = Tensor::normal(Shape{2, 8, 8, 3}, 0, 1, gen);
  apply_phase(*net, train_only({"net/fc2/"}));
  apply_precision(*net, Precision::bf16_frozen);
  const std::vector<float> before = (*net)(x).to_vector<float>();
  CHECK((*net)(x).to_vector<float>() == before);
  // The fp32 master changes after the policy was applied (an import, a copy): the next
  // forward converts it again; it used to run the stale copy until the policy was reapplied.
  auto& conv1 = dynamic_cast<WeightLayer&>(*net->child("conv1"));
  conv1.weight().copy_from(Tensor::zeros(conv1.weight().shape()));
  const std::vector<float> zeroed = (*net)(x).to_vector<float>();
  CHECK(zeroed != before);
  apply_precision(*net, Precision::bf16_frozen);
  CHECK((*net)(x).to_vector<float>() == zeroed);
  // A master replaced outright: its new memory may sit at the freed block's address with a
  // write count of 0 again, and must still be converted anew.
  const Shape ws = conv1.weight().shape();
  conv1.weight() = Tensor();
  conv1.weight() = Tensor::full(ws, 0.25);
  const std::vector<float> replaced = (*net)(x).to_vector<float>();
  CHECK(replaced != zeroed);
  CHECK(replaced != before);

  // Unfrozen after set_compute: the layer casts through autograd and gets its gradient (it
  // used to keep running the frozen copy, and never trained, without a word).
  net->unfreeze("net/conv1/");
  sum((*net)(x)).backward();
  REQUIRE(conv1.weight().grad().defined());
  CHECK(conv1.compute_dtype() == DType::bf16);
}

TEST_CASE("a bf16 frozen prefix of a VGG records no graph: nodes only for what trains", "[train][precision][frozen]") {
  Generator init(4), drop(5);
  auto vgg = make_vgg(VggOptions{11, 3, 0.5f, 32}, init, drop);
  apply_phase(*vgg, train_only({"vgg11/fc8/"}));
  apply_precision(*vgg, Precision::bf16_frozen);
  Tensor x = Tensor::normal(Shape{2, 32, 32, 3}, 0, 1, init);
  const AutogradStats before = autograd_stats();
  Tensor logits = (*vgg)(x);
  const AutogradStats after = autograd_stats();
  CHECK(after.nodes_alive - before.nodes_alive == 1);  // fc8's linear only: the cast into it is of a frozen input
  CHECK(logits.dtype() == DType::f32);
  Tensor loss = softmax_cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0, 2}, Shape{2}));
  loss.backward();
  CHECK(vgg->find("vgg11/fc8/weight").tensor->grad().dtype() == DType::f32);
}

TEST_CASE("compare_precision measures the distance between two runs of the same weights", "[train][precision]") {
  const std::string root = test::make_temp_dir("precision");
  app::make_demo_dataset(root + "/data", 3, 2, 2, 4);
  const io::Dataset val = io::image_folder(root + "/data/val");
  io::LoaderOptions lo;
  lo.batch_size = 4;
  lo.num_workers = 1;
  lo.shuffle = false;
  lo.augment = false;
  lo.resize_shorter = 9;
  lo.crop = 8;
  lo.warn = false;
  Generator g1(9), g2(9);
  auto a = small_convnet(g1), b = small_convnet(g2);  // the same weights
  for (auto* m : {a.get(), b.get()}) apply_phase(*m, train_only({"net/fc2/"}));
  apply_precision(*a, Precision::fp32);
  apply_precision(*b, Precision::fp32);
  {
    io::Loader loader(val, lo);
    const PrecisionComparison same = compare_precision(*a, *b, loader);
    CHECK(same.images == 6);
    CHECK(same.layers.size() == 7);
    for (double e : same.rel_error) CHECK(e == 0);
    CHECK(same.kl == 0);
    CHECK(same.agree_all == 6);
    CHECK(same.correct_ref == same.correct_test);
  }
  apply_precision(*b, Precision::bf16_frozen);
  io::Loader loader(val, lo);
  const PrecisionComparison c = compare_precision(*a, *b, loader);
  CHECK(c.rel_error.front() > 0);       // conv1 ran in bf16
  CHECK(c.rel_error.front() < 1e-2);    // one bf16 layer: inputs, weights and output rounded
  CHECK(c.rel_error.back() < 3e-2);
  CHECK(c.kl >= 0);
  CHECK(c.clear <= c.images);
  CHECK(c.agree_clear <= c.clear);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}
