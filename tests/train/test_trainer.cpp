// The trainer (train/trainer.h): phases freeze what they say, the feature cache's cut is
// derived from the model and the phase (VGG16's head-only phase caches the flattened pool5
// output, as vgg_finetune always did), and any Sequential trains and resumes through it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/kiln.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/weights.h"
#include "train/feature_cache.h"
#include "train/model_spec.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

size_t cut_for(Sequential& model, const Phase& phase) {
  apply_phase(model, phase);
  return feature_cut(model);
}

// A phase that trains `patterns` at the defaults (spelled out: -Wextra warns about the
// members a brace initialiser leaves out).
Phase phase(const std::string& name, std::vector<std::string> patterns) {
  Phase p;
  p.name = name;
  p.train_patterns = std::move(patterns);
  return p;
}

}  // namespace

TEST_CASE("VGG16's head-only phase caches up to the flattened pool5 and training all layers caches nothing", "[train]") {
  const ModelSpec& spec = find_model_spec("vgg16");
  Generator init(1), drop(2);
  auto model = spec.build(ModelOptions{3, 32, 0.5f}, init, drop);
  Phase head = phase("head", {spec.head_scope});
  const size_t cut = cut_for(*model, head);
  REQUIRE(cut > 0);
  REQUIRE(cut < model->children().size());
  CHECK(model->children()[cut - 1]->name() == "flatten");  // fc6 is frozen, but dropout follows it
  CHECK(model->children()[cut]->name() == "fc6");
  for (const ParameterRef& p : model->parameters())
    CHECK(p.trainable == (p.name.rfind(spec.head_scope, 0) == 0));
  CHECK(cut_for(*model, phase("all", {})) == 0);
  for (const ParameterRef& p : model->parameters()) CHECK(p.trainable);
}

TEST_CASE("feature_cut walks any Sequential's layers against the phase's freezing", "[train]") {
  Generator gen(3);
  Sequential net("net");
  net.add(std::make_shared<Linear>("fc1", 4, 4, true, gen));
  net.add(std::make_shared<ReLU>("relu1"));
  net.add(std::make_shared<Linear>("fc2", 4, 4, true, gen));
  net.add(std::make_shared<ReLU>("relu2"));
  net.add(std::make_shared<Linear>("fc3", 4, 2, true, gen));
  CHECK(cut_for(net, phase("last", {"net/fc3/"})) == 4);
  CHECK(cut_for(net, phase("middle", {"net/fc2/"})) == 2);
  CHECK(cut_for(net, phase("bias only", {"net/fc1/bias"})) == 0);
  CHECK(cut_for(net, phase("all", {})) == 0);

  // Cached features feed the rest of the model as the full forward would.
  apply_phase(net, phase("last", {"net/fc3/"}));
  const Tensor x = Tensor::uniform({3, 4}, -1.0f, 1.0f);
  const Tensor full = net(x);
  const auto& c = net.children();
  Tensor h = x;
  for (size_t i = 0; i < 4; ++i) h = (*c[i])(h);
  CHECK(run_from(net, 4, h).to_vector<float>() == full.to_vector<float>());
}

namespace {

// A model research code might write: no VGG in sight.
std::shared_ptr<Sequential> tiny_net(Generator& gen) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc1", 16 * 16 * 3, 8, true, gen));
  net->add(std::make_shared<ReLU>("relu1"));
  net->add(std::make_shared<Linear>("fc2", 8, 2, true, gen));
  return net;
}

TrainerOptions tiny_options(const std::string& dir, bool augment) {
  TrainerOptions t;
  t.phases = {Phase{"head", {"net/fc2/"}, 0.05, nullptr, 2, 0.9, 1e-4, HeadInit::as_is},
              Phase{"all", {}, 0.01, nullptr, 1, 0.9, 1e-4, HeadInit::as_is}};
  t.loader.batch_size = 3;
  t.loader.num_workers = 1;
  t.loader.seed = 11;
  t.loader.resize_shorter = 18;
  t.loader.crop = 16;
  t.loader.augment = augment;
  t.loader.warn = false;
  t.checkpoint_every = 1;
  t.model_dir = dir;
  t.run.image_size = 32;  // what the checkpoint records (its checks want 32..1024)
  t.run.convention = io::InputConvention::torchvision_rgb;
  return t;
}

}  // namespace

TEST_CASE("a Trainer runs any Sequential's phases and resumes mid-epoch bit for bit", "[train]") {
  const std::string root = test::make_temp_dir("trainer");
  const app::DemoDataset demo = app::make_demo_dataset(root + "/data", 2, 4, 2, 3);
  const io::Dataset train = io::image_folder(root + "/data/train"), val = io::image_folder(root + "/data/val");
  const ModelSpec& spec = find_model_spec("vgg16");  // only its name is recorded (arch)
  for (const bool augment : {true, false}) {
    INFO("augment " << augment);
    // Uninterrupted.
    Generator g1(5);
    auto a = tiny_net(g1);
    TrainerOptions ta = tiny_options(root + "/a" + std::to_string(augment), augment);
    ta.run.classes = train.classes;
    std::vector<size_t> cuts;
    TrainerHooks hooks;
    hooks.on_feature_mode = [&](const FeatureMode& m) { cuts.push_back(m.cached ? m.cut : 0); };
    const TrainResult ra = Trainer(*a, spec, train, val, ta, hooks).run(std::nullopt);
    CHECK(ra.finished);
    CHECK(ra.val.images == 4);
    if (!augment) CHECK(cuts == std::vector<size_t>{3});  // flatten, fc1, relu1: the frozen prefix

    // Stopped after 4 steps (mid-epoch 2 of phase 1: 3 batches per epoch), then resumed in a new model.
    Generator g2(5);
    auto b = tiny_net(g2);
    TrainerOptions tb = tiny_options(root + "/b" + std::to_string(augment), augment);
    tb.run.classes = train.classes;
    tb.stop_after_steps = 4;
    const TrainResult rb = Trainer(*b, spec, train, val, tb).run(std::nullopt);
    CHECK_FALSE(rb.finished);
    const io::ResumeChoice choice = io::newest_intact_checkpoint(tb.model_dir);
    REQUIRE(choice.checkpoint);
    CHECK(choice.checkpoint->meta.batches_done == 1);
    CHECK(choice.checkpoint->meta.arch == "vgg16");
    Generator g3(99);
    auto c = tiny_net(g3);
    io::load_checkpoint_weights(*c, *choice.checkpoint);
    tb.stop_after_steps = 0;
    const TrainResult rc = Trainer(*c, spec, train, val, tb).run(choice.checkpoint);
    CHECK(rc.finished);
    for (const ParameterRef& p : a->parameters())
      CHECK(c->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());
  }
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}
