// The trainer (train/trainer.h): phases freeze what they say, the feature cache's cut is
// derived from the model and the phase (VGG16's head-only phase caches the flattened pool5
// output, as vgg_finetune always did), and any Sequential trains and resumes through it.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/kiln.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/weights.h"
#include "train/feature_cache.h"
#include "train/communicator.h"
#include "train/model_spec.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

using namespace kiln;
using Catch::Matchers::Contains;

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

// The demo data set in a temporary folder, removed with the fixture: train/ and val/ of
// `classes` classes, as the trainer tests use it.
struct DemoSplits {
  DemoSplits(const std::string& name, int classes, int train_per_class, int val_per_class)
      : root(test::make_temp_dir(name)) {
    app::make_demo_dataset(root + "/data", classes, train_per_class, val_per_class, 3);
    train = io::image_folder(root + "/data/train");
    val = io::image_folder(root + "/data/val");
  }
  ~DemoSplits() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
  DemoSplits(const DemoSplits&) = delete;
  DemoSplits& operator=(const DemoSplits&) = delete;
  std::string root;
  io::Dataset train, val;
};

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
  t.run.image_size = 16;  // the crop, as the checkpoint records it
  t.run.convention = io::InputConvention::torchvision_rgb;
  return t;
}

}  // namespace

TEST_CASE("a Trainer runs any Sequential's phases and resumes mid-epoch bit for bit", "[train]") {
  const DemoSplits d("trainer", 2, 4, 2);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
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
    CHECK(choice.checkpoint->meta.batch_size == 3);
    CHECK(choice.checkpoint->meta.loader_seed == uint64_t{11});
    CHECK(choice.checkpoint->meta.shuffle == true);
    CHECK(choice.checkpoint->meta.arch == "vgg16");
    Generator g3(99);
    auto c = tiny_net(g3);
    io::load_checkpoint_weights(*c, *choice.checkpoint);
    tb.stop_after_steps = 0;
    TrainerOptions other = tb;  // another run: its checkpoint cannot resume it
    other.run.image_size = other.loader.crop = 32;
    other.loader.resize_shorter = 36;
    REQUIRE_THROWS_WITH(Trainer(*c, spec, train, val, other).run(choice.checkpoint),
                        Contains("was trained with image size 16, not this run's 32"));
    TrainerOptions bigger = tb;  // its one batch done would be other images in batches of 4
    bigger.loader.batch_size = 4;
    REQUIRE_THROWS_WITH(Trainer(*c, spec, train, val, bigger).run(choice.checkpoint),
                        Contains("stopped 1 batches of 3 into epoch 2, and this run's batches are of 4"));
    TrainerOptions reseeded = tb;  // its epoch 2 is another order: the batch done may be other images
    reseeded.loader.seed = 12;
    REQUIRE_THROWS_WITH(Trainer(*c, spec, train, val, reseeded).run(choice.checkpoint),
                        Contains("epoch 2 of an order shuffled with loader seed 11, and this run's is an order "
                                 "shuffled with loader seed 12") && Contains("Resume with the checkpoint's seed"));
    reseeded = tb;
    reseeded.loader.shuffle = false;
    REQUIRE_THROWS_WITH(Trainer(*c, spec, train, val, reseeded).run(choice.checkpoint),
                        Contains("this run's is the data's order") && Contains("checkpoint's shuffling"));
    TrainerOptions remomentum = tb;  // the saved momentum is an average under 0.9: refused unless allowed
    remomentum.phases[0].momentum = 0.5;
    REQUIRE_THROWS_WITH(Trainer(*c, spec, train, val, remomentum).run(choice.checkpoint),
                        Contains("was saved by SGD with other settings (momentum 0.9 saved, 0.5 here)"));
    TrainerOptions past = tb;  // a stop at or before the checkpoint's step: nothing trains
    past.stop_after_steps = 3;
    std::vector<StopInfo> stops;
    TrainerHooks stop_seen;
    stop_seen.on_stop = [&stops](const StopInfo& i) { stops.push_back(i); };
    stop_seen.on_step = [](const StepInfo&) { FAIL("a step ran past the stop"); };
    CHECK_FALSE(Trainer(*c, spec, train, val, past, stop_seen).run(choice.checkpoint).finished);
    REQUIRE(stops.size() == 1);
    CHECK(stops[0].kind == StopInfo::Kind::already_past);
    CHECK(stops[0].global_step == 4);
    CHECK(io::newest_intact_checkpoint(tb.model_dir).checkpoint->state_path == choice.checkpoint->state_path);
    std::vector<StepInfo> after;  // img/s after a mid-epoch resume counts this process's images only
    TrainerHooks resumed_hooks;
    resumed_hooks.on_step = [&after](const StepInfo& i) { after.push_back(i); };
    const TrainResult rc = Trainer(*c, spec, train, val, tb, resumed_hooks).run(choice.checkpoint);
    CHECK(rc.finished);
    REQUIRE_FALSE(after.empty());
    CHECK(after[0].step_in_epoch == 2);
    CHECK(after[0].seen == 6);
    CHECK(after[0].timed_steps == 1);
    CHECK(after[0].timed_seen == 3);
    for (const ParameterRef& p : a->parameters())
      CHECK(c->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());

    // Stopped on request (Ctrl-C in the app) right after epoch 1's last batch: its checkpoint
    // has all 3 batches done, and the resume serves none, then finishes the epoch and the run.
    Generator g4(5);
    auto d = tiny_net(g4);
    TrainerOptions td = tiny_options(root + "/d" + std::to_string(augment), augment);
    td.run.classes = train.classes;
    td.checkpoint_on_stop = true;
    int64_t step = 0;
    TrainerHooks stop_hooks;
    stop_hooks.on_step = [&step](const StepInfo& i) { step = i.global_step; };
    stop_hooks.should_stop = [&step] { return step == 3; };
    CHECK(Trainer(*d, spec, train, val, td, stop_hooks).run(std::nullopt).interrupted);
    const io::ResumeChoice at_end = io::newest_intact_checkpoint(td.model_dir);
    REQUIRE(at_end.checkpoint);
    CHECK(at_end.checkpoint->meta.epochs_done == 0);
    CHECK(at_end.checkpoint->meta.batches_done == 3);
    Generator g5(99);
    auto e = tiny_net(g5);
    io::load_checkpoint_weights(*e, *at_end.checkpoint);
    CHECK(Trainer(*e, spec, train, val, td).run(at_end.checkpoint).finished);
    for (const ParameterRef& p : a->parameters())
      CHECK(e->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());
  }
}

TEST_CASE("checkpoints written in the background hold what a run writing them in place holds", "[train][background]") {
  const DemoSplits d("trainer_bg", 2, 4, 2);
  const ModelSpec& spec = find_model_spec("vgg16");
  std::vector<std::vector<io::CheckpointInfo>> runs;
  for (const bool background : {false, true}) {
    Generator g(5);
    auto net = tiny_net(g);
    TrainerOptions t = tiny_options(d.root + (background ? "/bg" : "/sync"), true);
    t.run.classes = d.train.classes;
    t.background_checkpoints = background;
    t.keep = 100;  // every checkpoint kept, to compare them all
    t.stop_after_steps = 7;  // mid-epoch: the stop is reported once its checkpoint is on disk
    std::vector<StopInfo> stops;
    TrainerHooks hooks;
    hooks.on_stop = [&stops](const StopInfo& i) {
      CHECK(std::filesystem::exists(i.checkpoint));
      stops.push_back(i);
    };
    const TrainResult r = Trainer(*net, spec, d.train, d.val, t, hooks).run(std::nullopt);
    CHECK_FALSE(r.finished);
    REQUIRE(stops.size() == 1);
    CHECK(r.last_checkpoint == stops[0].checkpoint);
    CHECK(r.times.checkpoints > 0);
    runs.push_back(io::list_checkpoints(t.model_dir));
  }
  REQUIRE(runs[0].size() == 7);  // checkpoint_every 1: one per step
  REQUIRE(runs[1].size() == runs[0].size());
  for (size_t i = 0; i < runs[0].size(); ++i) {
    const io::CheckpointInfo &a = runs[0][i], &b = runs[1][i];
    INFO("checkpoint " << a.state_path);
    CHECK(std::filesystem::path(a.state_path).filename() == std::filesystem::path(b.state_path).filename());
    CHECK(a.meta.frozen_digest == b.meta.frozen_digest);
    CHECK(io::weights_digest_of(a.weights_path) == io::weights_digest_of(b.weights_path));  // every tensor's CRC32C
    CHECK_NOTHROW(io::verify_checkpoint(b));
    Generator g1(1), g2(2);
    auto na = tiny_net(g1), nb = tiny_net(g2);
    io::load_checkpoint_weights(*na, a);
    io::load_checkpoint_weights(*nb, b);
    for (const ParameterRef& p : na->parameters())
      CHECK(nb->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());
  }
}

TEST_CASE("a run says where its wall time went: steps, evaluation, checkpoints, the probe, caches, the rest",
          "[train]") {
  const DemoSplits d("trainer_times", 2, 4, 2);
  const ModelSpec& spec = find_model_spec("vgg16");
  Generator g(5);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/m", false);  // no augmentation: the head phase caches features
  t.run.classes = d.train.classes;
  t.phases[0].head_init = HeadInit::linear_probe;
  const TrainResult r = Trainer(*net, spec, d.train, d.val, t).run(std::nullopt);
  REQUIRE(r.finished);
  const RunTimes& w = r.times;
  CHECK(w.steps > 0);
  CHECK(w.evaluation > 0);   // after each of the 3 epochs
  CHECK(w.checkpoints > 0);  // after every step (checkpoint_every 1) and each epoch
  CHECK(w.probe > 0);
  CHECK(w.caches > 0);
  // The parts are disjoint: mid-epoch checkpoints count as checkpoints, not as steps.
  CHECK(w.steps + w.evaluation + w.checkpoints + w.probe + w.caches <= w.total);
  CHECK(w.other() >= 0);
}

TEST_CASE("drop_last drops the short training batch alike cached or not, and evaluation still sees every image",
          "[train]") {
  const DemoSplits d("trainer_drop_last", 2, 4, 2);  // 8 training images: batches of 3 are 3, 3 and a short 2
  const ModelSpec& spec = find_model_spec("vgg16");
  std::vector<std::vector<float>> weights;
  for (const bool cache : {true, false}) {
    INFO("feature cache " << cache);
    Generator g(5);
    auto net = tiny_net(g);
    TrainerOptions t = tiny_options(d.root + "/m" + std::to_string(cache), false);
    t.run.classes = d.train.classes;
    t.loader.drop_last = true;
    t.feature_cache = cache;
    std::vector<int64_t> steps, seen;  // per epoch: the steps it announced and the images it trained on
    TrainerHooks hooks;
    hooks.on_step = [&](const StepInfo& i) {
      if (i.step_in_epoch == 1) steps.push_back(i.steps), seen.push_back(0);
      seen.back() = i.seen;
    };
    std::vector<bool> cached;
    hooks.on_feature_mode = [&](const FeatureMode& m) { cached.push_back(m.cached); };
    const TrainResult r = Trainer(*net, spec, d.train, d.val, t, hooks).run(std::nullopt);
    CHECK(r.finished);
    CHECK(r.val.images == 4);  // validation never drops images
    CHECK(steps == std::vector<int64_t>{2, 2, 2});
    CHECK(seen == std::vector<int64_t>{6, 6, 6});
    REQUIRE_FALSE(cached.empty());
    CHECK(cached.front() == cache);
    weights.push_back(net->find("net/fc2/weight").tensor->to_vector<float>());
  }
  CHECK(weights[0] == weights[1]);
  // A batch larger than the data leaves no batch to train: said when the Trainer is made.
  Generator g(5);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/none", false);
  t.run.classes = d.train.classes;
  t.loader.drop_last = true;
  t.loader.batch_size = 9;
  CHECK_THROWS_WITH(Trainer(*net, spec, d.train, d.val, t),
                    Contains("drop_last with batch size 9 > the 8 training images leaves no batch"));
}

TEST_CASE("an error inside a training step names the phase, the epoch and the batch", "[train][errors]") {
  const DemoSplits d("trainer_context", 2, 4, 2);  // 8 training images: batches of 7, then 1
  auto net = std::make_shared<Sequential>("net");
  Generator g(5);
  net->add(std::make_shared<AdaptiveAvgPool2d>("pool", 1, 1));
  net->add(std::make_shared<BatchNorm2d>("bn", 3));  // one value per channel from a batch of one image
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc", 3, 2, true, g));
  TrainerOptions t = tiny_options(d.root + "/run", false);
  t.run.classes = d.train.classes;
  t.phases = {Phase{"all", {}, 0.01, nullptr, 1, 0.9, 0, HeadInit::as_is}};
  t.loader.batch_size = 7;
  CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t).run(std::nullopt),
                    Contains("trainer: phase 1 epoch 1/1, batch 2 of 2 (1 image(s)): ") &&
                        Contains("more than one value per channel"));
}

TEST_CASE("under bf16-frozen the trainer caches bf16 features, records the policy and resumes bit for bit", "[train][precision]") {
  const DemoSplits d("trainer_bf16", 2, 4, 2);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
  const ModelSpec& spec = find_model_spec("vgg16");
  std::vector<double> mib;
  std::vector<std::string> lines;
  std::shared_ptr<Sequential> done;
  for (const Precision p : {Precision::fp32, Precision::bf16_frozen}) {
    Generator g(5);
    done = tiny_net(g);
    TrainerOptions t = tiny_options(root + "/" + precision_name(p), false);
    t.run.classes = train.classes;
    t.precision = p;
    TrainerHooks hooks;
    hooks.on_feature_mode = [&](const FeatureMode& m) { mib.push_back(m.mib); };
    hooks.on_precision = [&](int, const PrecisionUse& u) { lines.push_back(u.describe()); };
    CHECK(Trainer(*done, spec, train, val, t, hooks).run(std::nullopt).finished);
  }
  REQUIRE(mib.size() == 2);
  CHECK(mib[1] == Approx(mib[0] / 2));  // the same rows in half the bytes
  CHECK(lines == std::vector<std::string>{"fp32: all 2 weight layers in fp32", "fp32: all 2 weight layers in fp32",
                                          "bf16-frozen: 1 of 2 weight layers in bf16, fp32 from net/fc2",
                                          "bf16-frozen: all 2 weight layers in fp32 (nothing is frozen in this phase)"});

  // Stopped mid-epoch and resumed in a new model: the same weights as the run above.
  Generator g2(5);
  auto b = tiny_net(g2);
  TrainerOptions tb = tiny_options(root + "/stopped", false);
  tb.run.classes = train.classes;
  tb.precision = Precision::bf16_frozen;
  tb.stop_after_steps = 4;
  CHECK_FALSE(Trainer(*b, spec, train, val, tb).run(std::nullopt).finished);
  const io::ResumeChoice choice = io::newest_intact_checkpoint(tb.model_dir);
  REQUIRE(choice.checkpoint);
  CHECK(choice.checkpoint->meta.precision == "bf16-frozen");
  Generator g3(99);
  auto c = tiny_net(g3);
  io::load_checkpoint_weights(*c, *choice.checkpoint);
  tb.stop_after_steps = 0;
  CHECK(Trainer(*c, spec, train, val, tb).run(choice.checkpoint).finished);
  for (const ParameterRef& p : done->parameters())
    CHECK(c->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());
}

TEST_CASE("ResNet-50's head-only phase caches up to global pooling", "[train][resnet]") {
  const ModelSpec& spec = find_model_spec("resnet50");
  Generator init(1), drop(2);
  auto model = spec.build(ModelOptions{3, 64}, init, drop);
  const size_t cut = cut_for(*model, phase("head", {spec.head_scope}));
  REQUIRE(cut > 1);
  REQUIRE(cut < model->children().size());
  CHECK(model->children()[cut]->name() == "fc");
  CHECK(model->children()[cut - 1]->name() == "flatten");
  CHECK(model->children()[cut - 2]->name() == "avgpool");
  CHECK(batch_norm_use(*model).layers == 53);
  CHECK(batch_norm_use(*model).frozen == 53);
  // Stage 4 trains: the cut moves before it, and its 10 batch-norm layers train.
  const size_t cut4 = cut_for(*model, phase("stage 4", {"resnet50/layer4/", spec.head_scope}));
  CHECK(model->children()[cut4]->name() == "layer4");
  CHECK(batch_norm_use(*model).frozen == 43);
  CHECK(cut_for(*model, phase("all", {})) == 0);
  CHECK(batch_norm_use(*model).frozen == 0);
}

namespace {

// conv -> batch norm -> ReLU -> global average pool -> fc: the smallest ResNet-like net.
std::shared_ptr<Sequential> tiny_bn_net(Generator& gen) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Conv2d>("conv", 3, 4, 3, Conv2dParams{1, 1, 1, 1}, false, gen));
  net->add(std::make_shared<BatchNorm2d>("bn", 4));
  net->add(std::make_shared<ReLU>("relu"));
  net->add(std::make_shared<AdaptiveAvgPool2d>("pool", 1, 1));
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc", 4, 2, true, gen));
  return net;
}

std::vector<float> values(const Tensor& t) { return t.cpu().to_vector<float>(); }

}  // namespace

TEST_CASE("batch-norm calibration takes the data's statistics and a frozen batch norm keeps them", "[train]") {
  const DemoSplits d("trainer_bn", 2, 4, 2);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
  const ModelSpec& spec = find_model_spec("resnet50");  // only its name is recorded (arch)
  Generator gen(4);
  auto net = tiny_bn_net(gen);
  auto* bn = dynamic_cast<BatchNorm2d*>(net->children()[1].get());
  REQUIRE(bn != nullptr);

  // Calibration over one batch holding every image: the running statistics are that batch's
  // per-channel mean and unbiased variance of the conv's output.
  TrainerOptions t = tiny_options(root + "/run", false);
  t.loader.batch_size = 8;
  const BatchNormCalibration c = calibrate_batch_norm(*net, train, t.loader);
  CHECK(c.layers == 1);
  CHECK(c.batches == 1);
  CHECK(c.images == 8);
  CHECK(net->training());  // the mode is restored
  io::LoaderOptions lo = t.loader;
  lo.shuffle = false;
  io::Loader loader(train, lo);
  const auto batch = loader.next();
  REQUIRE(batch);
  Tensor y;
  {
    NoGradGuard no_grad;
    y = (*net->children()[0])(batch->images);
  }
  const std::vector<float> yv = values(y), mean = values(bn->running_mean()), var = values(bn->running_var());
  const auto n = static_cast<int64_t>(yv.size() / 4);
  for (int64_t ch = 0; ch < 4; ++ch) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; ++i) s += yv[static_cast<size_t>(i * 4 + ch)];
    const double m = s / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) s2 += (yv[static_cast<size_t>(i * 4 + ch)] - m) * (yv[static_cast<size_t>(i * 4 + ch)] - m);
    CHECK(mean[static_cast<size_t>(ch)] == Approx(m).epsilon(1e-4).margin(1e-6));
    CHECK(var[static_cast<size_t>(ch)] == Approx(s2 / static_cast<double>(n - 1)).epsilon(1e-4));
  }

  // A run that calibrates, trains the head over a frozen batch norm (whose statistics must not
  // move), then trains all layers (whose statistics must).
  Generator gen2(4);
  auto run = tiny_bn_net(gen2);
  auto* rbn = dynamic_cast<BatchNorm2d*>(run->children()[1].get());
  TrainerOptions tr = tiny_options(root + "/run2", false);
  tr.phases[0].train_patterns = {"net/fc/"};
  tr.calibrate_batch_norm = true;
  tr.run.classes = train.classes;
  std::vector<std::vector<float>> at_phase_start;
  std::vector<BatchNormUse> uses;
  std::vector<size_t> cuts;
  int64_t calibrated = 0;
  TrainerHooks hooks;
  hooks.on_batch_norm_calibrated = [&](const BatchNormCalibration& b) { calibrated = b.layers; };
  hooks.on_phase_start = [&](int, const Phase&, Sequential& m) {
    at_phase_start.push_back(values(rbn->running_mean()));
    uses.push_back(batch_norm_use(m));
  };
  hooks.on_feature_mode = [&](const FeatureMode& m) { cuts.push_back(m.cached ? m.cut : 0); };
  REQUIRE(Trainer(*run, spec, train, val, tr, hooks).run(std::nullopt).finished);
  CHECK(calibrated == 1);
  REQUIRE(at_phase_start.size() == 2);
  CHECK(at_phase_start[0] != std::vector<float>(4, 0.0f));  // calibrated, not the initial zeros
  CHECK(at_phase_start[1] == at_phase_start[0]);            // phase 1 (frozen) left them
  CHECK(values(rbn->running_mean()) != at_phase_start[1]);  // phase 2 (trained) moved them
  CHECK(uses[0].frozen == 1);
  CHECK(uses[1].frozen == 0);
  CHECK(cuts == std::vector<size_t>{5});  // conv, bn, relu, pool, flatten: cached up to global pooling
}

TEST_CASE("an evaluation tally refuses logits wider or narrower than its classes", "[train][errors]") {
  // A 1000-class head tallied over a 2-class folder wrote past the confusion matrix.
  EvalTally tally(2);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1}, Shape{2});
  REQUIRE_THROWS_WITH(tally.add(Tensor::zeros(Shape{2, 1000}), labels),
                      Catch::Contains("float32[2, 1000]") && Catch::Contains("num_classes is 2") &&
                          Catch::Contains("the model's class count"));
  tally.add(Tensor::from_vector(std::vector<float>{1, 0, 0, 1}, Shape{2, 2}), labels);
  CHECK(tally.finish().acc == 1.0);
}

TEST_CASE("eval_details says a class had no images instead of 0.0 percent", "[train]") {
  EvalResult r;
  r.confusion = {{3, 1}, {0, 0}};
  const std::string d = eval_details(r, {"cat", "dog"});
  CHECK_THAT(d, Catch::Contains("cat     75.0%  (3/4)"));
  CHECK_THAT(d, Catch::Contains("dog        -   (no images of this class here)"));
  CHECK_THAT(d, !Catch::Contains("0/0"));
  // A name outside ASCII is padded by the columns it takes, not its bytes ("é" is two).
  const std::string u = eval_details(r, {"caf\xc3\xa9", "chat"});
  CHECK_THAT(u, Catch::Contains("caf\xc3\xa9    75.0%  (3/4)"));
  CHECK_THAT(u, Catch::Contains("  caf\xc3\xa9      3     1\n  chat      0     0\n"));
}

TEST_CASE("a resume over changed training data: refused mid-epoch, said at an epoch's end", "[train][errors]") {
  const DemoSplits d("trainer_data", 2, 4, 2);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
  io::Dataset fewer = train;  // one image gone since the checkpoint
  fewer.samples.pop_back();
  fewer.class_counts.back() -= 1;
  CHECK(samples_digest(fewer) != samples_digest(train));
  io::Dataset moved = train;  // the same files under another folder: the same data
  moved.root = "/elsewhere/train";
  for (io::Sample& smp : moved.samples) smp.path = "/elsewhere/train" + smp.path.substr(train.root.size());
  CHECK(samples_digest(moved) == samples_digest(train));
  const ModelSpec& spec = find_model_spec("vgg16");
  for (const bool mid_epoch : {true, false}) {
    INFO("mid-epoch " << mid_epoch);
    Generator g(5);
    auto net = tiny_net(g);
    TrainerOptions t = tiny_options(root + "/run" + std::to_string(mid_epoch), false);
    t.checkpoint_every = mid_epoch ? 1 : 0;
    if (mid_epoch) t.stop_after_steps = 4;  // 3 batches per epoch: 1 batch into epoch 2
    else t.stop_after_epochs = 1;
    Trainer(*net, spec, train, val, t).run(std::nullopt);
    const io::ResumeChoice choice = io::newest_intact_checkpoint(t.model_dir);
    REQUIRE(choice.checkpoint);
    CHECK(choice.checkpoint->meta.data_size == 8);
    CHECK((choice.checkpoint->meta.batches_done > 0) == mid_epoch);
    t.stop_after_steps = t.stop_after_epochs = 0;
    std::vector<std::pair<int64_t, int64_t>> said;
    TrainerHooks hooks;
    hooks.on_data_changed = [&](int64_t then, int64_t now) { said.emplace_back(then, now); };
    if (mid_epoch) {
      REQUIRE_THROWS_WITH(Trainer(*net, spec, fewer, val, t, hooks).run(choice.checkpoint),
                          Contains("changed since checkpoint") && Contains("(8 images then, 7 now)") &&
                              Contains("1 batches into an epoch"));
      CHECK(Trainer(*net, spec, train, val, t, hooks).run(choice.checkpoint).finished);  // the same data: resumes
      CHECK(said.empty());
    } else {
      CHECK(Trainer(*net, spec, fewer, val, t, hooks).run(choice.checkpoint).finished);
      CHECK(said == std::vector<std::pair<int64_t, int64_t>>{{8, 7}});
    }
  }
}

TEST_CASE("a resume whose phases put the checkpoint's epoch in another phase is refused", "[train][errors]") {
  // Found by review: a config.txt edited to a longer phase 1 after phase 2 began resumed and
  // ran a phase-1 epoch after the phase-2 ones (the app compared the flag with config.txt).
  const DemoSplits d("trainer_phases", 2, 2, 1);
  Generator g(5);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/run", false);
  t.checkpoint_every = 0;
  t.stop_after_epochs = 1;
  const ModelSpec& spec = find_model_spec("vgg16");
  Trainer(*net, spec, d.train, d.val, t).run(std::nullopt);  // phase 1 (2 epochs), stopped after 1
  t.stop_after_epochs = 0;
  const auto resume = [&](const std::vector<int64_t>& epochs) {
    TrainerOptions o = t;
    o.phases[0].epochs = epochs[0];
    o.phases[1].epochs = epochs[1];
    return Trainer(*net, spec, d.train, d.val, o).run(io::newest_intact_checkpoint(t.model_dir).checkpoint);
  };
  CHECK_THROWS_WITH(resume({0, 3}), Contains("is in phase 1 at epoch 1, but this run's phases put epoch 1 in phase 2") &&
                                        Contains("that phase would end before the epochs it ran"));
  CHECK(resume({2, 1}).finished);  // as it was: phase 2 ends the run at epoch 3
  CHECK_THROWS_WITH(resume({3, 1}), Contains("is in phase 2 at epoch 3, but this run's phases put epoch 3 in phase 1") &&
                                        Contains("would run again after the next"));
  CHECK(resume({2, 2}).finished);  // a longer phase 2 goes on from where it is
  CHECK(io::newest_intact_checkpoint(t.model_dir).checkpoint->meta.epochs_done == 4);
}

TEST_CASE("a Trainer refuses negative counts and rates in its options, naming them", "[train][errors]") {
  const DemoSplits d("trainer_options", 2, 2, 1);
  Generator g(3);
  auto net = tiny_net(g);
  const TrainerOptions good = tiny_options(d.root + "/run", false);
  const auto refused = [&](const std::function<void(TrainerOptions&)>& change, const std::string& says) {
    TrainerOptions t = good;
    t.run.classes = d.train.classes;
    change(t);
    CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t), Contains(says));
  };
  refused([](TrainerOptions& t) { t.keep = 0; }, "keep must be 1 or more");
  refused([](TrainerOptions& t) { t.keep = -1; }, "got -1");
  refused([](TrainerOptions& t) { t.checkpoint_every = -5; }, "checkpoint_every must be 0 (off) or positive, got -5");
  refused([](TrainerOptions& t) { t.stop_after_steps = -1; }, "stop_after_steps must be 0");
  refused([](TrainerOptions& t) { t.phases[1].epochs = -2; }, "phase 'all' has -2 epochs");
  refused([](TrainerOptions& t) { t.phases[0].lr = -0.1; }, "phase 'head' has learning rate -0.1");
  refused([](TrainerOptions& t) { t.phases[0].lr = std::nan(""); }, "learning rate nan");
  refused([](TrainerOptions& t) { t.phases[0].momentum = 1; }, "0 <= momentum < 1");
  refused([](TrainerOptions& t) { t.phases[0].weight_decay = -1e-4; }, "weight decay -0.0001");
  CHECK_FALSE(std::filesystem::exists(good.model_dir));  // refused before anything was written
}

TEST_CASE("an on_epoch hook that throws stops the run after its epoch is checkpointed", "[train][errors]") {
  const DemoSplits d("trainer_hook", 2, 2, 1);
  Generator g(3);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/run", false);
  t.run.classes = d.train.classes;
  TrainerHooks hooks;  // a caller's logging bug, met after the first epoch
  hooks.on_epoch = [](const EpochSummary&) { throw std::runtime_error("a typo in my logging"); };
  REQUIRE_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t, hooks).run(std::nullopt),
                      "a typo in my logging");
  const io::ResumeChoice choice = io::newest_intact_checkpoint(t.model_dir);
  REQUIRE(choice.checkpoint);
  CHECK(choice.checkpoint->meta.epochs_done == 1);
  CHECK(choice.checkpoint->meta.batches_done == 0);
}

TEST_CASE("a weight gone NaN behind a ReLU is caught before it is checkpointed, the loss being finite", "[train][errors]") {
  const DemoSplits d("trainer_nan", 2, 2, 1);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
  Generator g(3);
  auto net = tiny_net(g);
  // One weight of fc1's first unit: that unit's output is NaN, ReLU makes it 0, fc2 sees a
  // finite input; its gradient is 0 there, so SGD keeps the NaN.
  net->find("net/fc1/weight").tensor->data<float>()[0] = std::nanf("");
  net->find("net/fc1/bias").tensor->data<float>()[0] = std::nanf("");  // the same unit: named too
  TrainerOptions t = tiny_options(root + "/run", false);
  t.run.classes = train.classes;
  t.phases = {Phase{"all", {}, 0.01, nullptr, 1, 0.9, 0, HeadInit::as_is}};
  REQUIRE_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), train, val, t).run(std::nullopt),
                      Contains("parameter 'net/fc1/weight' holds NaN or infinity at step") &&
                          Contains("(1 NaN and 0 infinite of its 6144 values), as do net/fc1/bias:") &&
                          Contains("no checkpoint was written yet"));
  CHECK_FALSE(io::newest_intact_checkpoint(root + "/run").checkpoint);
}

TEST_CASE("a Trainer refuses a model, head or labelling that does not fit the run, before writing anything",
          "[train][errors]") {
  const DemoSplits d("trainer_fit", 3, 2, 1);
  const std::string& root = d.root;
  const io::Dataset &train = d.train, &val = d.val;
  TrainerOptions t = tiny_options(root + "/run", false);
  t.run.classes = train.classes;
  // A registered model under another's name.
  Generator g(1);
  auto vgg11 = find_model_spec("vgg11").build(ModelOptions{3, 32, 0.5f}, g, g);
  REQUIRE_THROWS_WITH(Trainer(*vgg11, find_model_spec("vgg16"), train, val, t).run(std::nullopt),
                      Contains("the model is a vgg11") && Contains("names it vgg16"));
  // The head sized for 2 classes, the data has 3.
  auto two = find_model_spec("vgg11").build(ModelOptions{2, 32, 0.5f}, g, g);
  REQUIRE_THROWS_WITH(Trainer(*two, find_model_spec("vgg11"), train, val, t).run(std::nullopt),
                      Contains("vgg11/fc8/ has 2 outputs") && Contains("3 classes"));
  // val labelled by its own class list (one class fewer: other numbers).
  io::Dataset val2 = val;
  val2.classes.pop_back();
  REQUIRE_THROWS_WITH(Trainer(*vgg11, find_model_spec("vgg11"), train, val2, t).run(std::nullopt),
                      Contains("labelled by other classes"));
  CHECK_FALSE(std::filesystem::exists(root + "/run"));
  TrainerOptions none = t;  // once a division by zero (SIGFPE) before the loader's own check
  none.loader.batch_size = 0;
  REQUIRE_THROWS_WITH(Trainer(*vgg11, find_model_spec("vgg11"), train, val, none),
                      Contains("the batch size must be positive, got 0"));
  // Two Trainers of one process on one directory (research code's threads): the second is
  // refused while the first holds it.
  std::filesystem::create_directories(t.model_dir);
  auto net = tiny_net(g);
  {
    const Trainer first(*net, find_model_spec("vgg16"), train, val, t);
    REQUIRE_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), train, val, t),
                        Contains("is in use by another run in this process"));
  }
  CHECK_NOTHROW(Trainer(*net, find_model_spec("vgg16"), train, val, t));  // the first one ended
}

namespace {

// Ranks as threads of this process, for tests: each collective is a meeting where the last
// rank to arrive reduces (or copies) through every rank's buffer while the others wait. A
// rank left waiting 30 s fails, as a real backend's timeout would, instead of hanging the test.
struct ThreadRanks {
  explicit ThreadRanks(int n) : size(n), data(static_cast<size_t>(n)) {}
  // Runs `op` over all ranks' buffers once every rank has brought its own.
  void meet(int rank, void* mine, const std::function<void(std::vector<void*>&)>& op) {
    std::unique_lock<std::mutex> lock(mu);
    data[static_cast<size_t>(rank)] = mine;
    const uint64_t gen = generation;
    if (++arrived == size) {
      op(data);
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    KILN_CHECK(cv.wait_for(lock, std::chrono::seconds(30), [&] { return generation != gen; }), "rank ", rank,
               ": the other ranks did not join the collective within 30 s");
  }
  const int size;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<void*> data;
};

class ThreadComm final : public Communicator {
 public:
  ThreadComm(ThreadRanks& g, int rank) : g_(g), rank_(rank) {}
  ~ThreadComm() override { shutdown(); }
  int rank() const override { return rank_; }
  int size() const override { return g_.size; }
  std::string backend() const override { return "threads"; }

 protected:
  void do_allreduce_sum(void* data, int64_t count, Elem elem, Device) override {
    g_.meet(rank_, data, [&](std::vector<void*>& all) {
      if (elem == Elem::f32) sum<float>(all, count);
      else sum<double>(all, count);
    });
  }
  void do_broadcast(void* data, int64_t bytes, int root, Device) override {
    g_.meet(rank_, data, [&](std::vector<void*>& all) {
      for (void* p : all)
        if (p != all[static_cast<size_t>(root)]) std::memcpy(p, all[static_cast<size_t>(root)], static_cast<size_t>(bytes));
    });
  }
  void do_barrier() override {
    g_.meet(rank_, nullptr, [](std::vector<void*>&) {});
  }

 private:
  template <typename T>
  static void sum(std::vector<void*>& all, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      T s = 0;
      for (void* p : all) s += static_cast<T*>(p)[i];
      for (void* p : all) static_cast<T*>(p)[i] = s;
    }
  }
  ThreadRanks& g_;
  int rank_;
};

// Runs `per_rank(rank, comm)` on two ranks at once; returns each rank's error text ("" if none).
std::vector<std::string> run_two_ranks(const std::function<void(int, Communicator&)>& per_rank) {
  ThreadRanks g(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(g, r);
      try {
        per_rank(r, comm);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  return errors;
}

}  // namespace

TEST_CASE("data-parallel ranks stop together when one is asked to, or when one's on_epoch hook fails",
          "[train][dist][errors]") {
  const DemoSplits d("trainer_ranks", 2, 4, 2);
  const ModelSpec& spec = find_model_spec("vgg16");
  // One rank's run of tiny_net into d.root + dir with `h`; `edit` changes its options first.
  const auto run_rank = [&](Communicator& comm, const std::string& dir, const TrainerHooks& h,
                            const std::function<void(TrainerOptions&)>& edit = nullptr) {
    Generator g(5);
    auto net = tiny_net(g);
    TrainerOptions t = tiny_options(d.root + dir, false);
    t.run.classes = d.train.classes;
    t.comm = &comm;
    if (edit) edit(t);
    return Trainer(*net, spec, d.train, d.val, t, h).run(std::nullopt);
  };
  // should_stop says yes on rank 1 alone, after its second step: both ranks stop after the
  // same step, and rank 0 checkpoints there.
  std::vector<int64_t> stopped_at(2, -1);
  std::vector<std::string> errors = run_two_ranks([&](int rank, Communicator& comm) {
    int64_t steps = 0;
    TrainerHooks h;
    h.on_step = [&steps](const StepInfo& i) { steps = i.global_step; };
    h.should_stop = [&steps, rank] { return rank == 1 && steps >= 2; };
    h.on_stop = [&stopped_at, rank](const StopInfo& i) { stopped_at[static_cast<size_t>(rank)] = i.global_step; };
    CHECK(run_rank(comm, "/stop", h, [](TrainerOptions& t) {
            t.checkpoint_every = 0;
            t.checkpoint_on_stop = true;
          }).interrupted);
  });
  CHECK(errors == std::vector<std::string>{"", ""});
  CHECK(stopped_at[0] == stopped_at[1]);
  CHECK(stopped_at[0] >= 3);  // asked before step 3's all-reduce at the latest
  const io::ResumeChoice choice = io::newest_intact_checkpoint(d.root + "/stop");
  REQUIRE(choice.checkpoint);
  CHECK(choice.checkpoint->meta.global_step == stopped_at[0]);

  // on_epoch throws on rank 1 after epoch 1: rank 1 raises its error, rank 0 names rank 1,
  // both after the epoch's checkpoint (before, rank 0 waited in the next step's all-reduce).
  errors = run_two_ranks([&](int rank, Communicator& comm) {
    TrainerHooks h;
    h.on_epoch = [rank](const EpochSummary&) {
      if (rank == 1) throw std::runtime_error("a typo in rank 1's logging");
    };
    run_rank(comm, "/hook", h);
  });
  CHECK(errors[1] == "a typo in rank 1's logging");
  CHECK_THAT(errors[0], Contains("rank(s) 1 failed after epoch 1") && Contains("after the epoch's checkpoint"));
  const io::ResumeChoice hook = io::newest_intact_checkpoint(d.root + "/hook");
  REQUIRE(hook.checkpoint);
  CHECK(hook.checkpoint->meta.epochs_done == 1);

  // on_epoch_saved on every rank sees rank 0's checkpoint on disk (rank 1 once ran its hook
  // while rank 0's background write was still going); one that throws stops both ranks.
  std::vector<std::vector<std::string>> seen(2);
  errors = run_two_ranks([&](int rank, Communicator& comm) {
    TrainerHooks h;
    h.on_epoch_saved = [&seen, rank](const EpochSummary& sum, const std::string& checkpoint) {
      const bool there =
          std::filesystem::exists(checkpoint) && io::read_checkpoint_meta(checkpoint).epochs_done == sum.epoch;
      seen[static_cast<size_t>(rank)].push_back(there ? "epoch " + std::to_string(sum.epoch) : "missing");
      if (rank == 1 && sum.epoch == 2) throw std::runtime_error("rank 1's hook gives up");
    };
    run_rank(comm, "/saved", h);
  });
  CHECK(seen[0] == std::vector<std::string>{"epoch 1", "epoch 2"});
  CHECK(seen[1] == std::vector<std::string>{"epoch 1", "epoch 2"});
  CHECK(errors[1] == "rank 1's hook gives up");
  CHECK_THAT(errors[0], Contains("rank(s) 1 failed after epoch 2"));
}

TEST_CASE("a phase whose train pattern matches nothing is named in the error, not an unfreeze call it never made", "[train][errors]") {
  Generator g(1);
  auto net = tiny_net(g);
  CHECK_THROWS_WITH(apply_phase(*net, phase("head only", {"net/fc9/"})),
                    Contains("phase 'head only' trains 'net/fc9/', which matches nothing: unfreeze('net/fc9/'): no "
                             "parameter of net matches (names look like 'net/fc1/weight'"));
  Sequential empty("empty");
  CHECK_THROWS_WITH(empty.freeze("*"), Contains("no parameter of empty matches (it has no parameters;"));
  // A Trainer refuses it when it is made, before a model directory exists.
  const DemoSplits d("trainer_patterns", 2, 4, 2);
  TrainerOptions t = tiny_options(d.root + "/m", false);
  t.run.classes = d.train.classes;
  t.phases[1].train_patterns = {"net/fc9/"};
  CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t),
                    Contains("phase 'all' trains 'net/fc9/', which matches no parameter of net (names look like "
                             "'net/fc1/weight'"));
  CHECK_FALSE(std::filesystem::exists(d.root + "/m"));
}

TEST_CASE("a fresh run into a model directory holding checkpoints is refused, replacing none", "[train][errors]") {
  const DemoSplits d("trainer_fresh_over", 2, 4, 2);
  Generator g(6);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/m", false);
  t.run.classes = d.train.classes;
  t.phases.resize(1);
  t.phases[0].epochs = 1;
  REQUIRE(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t).run(std::nullopt).finished);
  const io::ResumeChoice before = io::newest_intact_checkpoint(d.root + "/m");
  REQUIRE(before.checkpoint);
  const auto written = std::filesystem::last_write_time(before.checkpoint->state_path);
  CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t).run(std::nullopt),
                    Contains("already holds") && Contains("resume from them"));
  CHECK(std::filesystem::last_write_time(before.checkpoint->state_path) == written);
  // Resuming from them is what it asks for: the finished run has nothing left to do.
  CHECK(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, t).run(before.checkpoint).finished);
}

TEST_CASE("checkpoints record what the loader feeds: run.image_size and run.convention must agree with it",
          "[train][errors]") {
  const DemoSplits d("trainer_run_record", 2, 4, 2);
  Generator g(7);
  auto net = tiny_net(g);
  TrainerOptions t = tiny_options(d.root + "/m", false);
  t.run.classes = d.train.classes;
  TrainerOptions size = t;
  size.run.image_size = 224;
  CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, size),
                    Contains("run.image_size is 224 but the loader crops 16 px inputs"));
  TrainerOptions conv = t;
  conv.loader.convention = io::InputConvention::torchvision_rgb;
  conv.run.convention = io::InputConvention::caffe_bgr;
  CHECK_THROWS_WITH(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, conv),
                    Contains("run.convention is caffe_bgr but the loader normalises as torchvision_rgb"));
  // Left unknown, the loader's is what the checkpoints record.
  TrainerOptions unknown = t;
  unknown.loader.convention = io::InputConvention::tf_rgb;
  unknown.run.convention = io::InputConvention::unknown;
  unknown.phases.resize(1);
  unknown.phases[0].epochs = 1;
  REQUIRE(Trainer(*net, find_model_spec("vgg16"), d.train, d.val, unknown).run(std::nullopt).finished);
  const io::ResumeChoice c = io::newest_intact_checkpoint(d.root + "/m");
  REQUIRE(c.checkpoint);
  CHECK(c.checkpoint->meta.convention == io::InputConvention::tf_rgb);
}
