// Recorded training steps (train/step_graph.h): where the trainer uses them and why not, the
// CPU's clean refusal, and on a GPU: replays equal eager steps bit for bit (dropout
// included), masks renewed per replay, a failed capture leaves the device usable, and the
// trainer with graphs on trains as with them off (partial batches and phase 2 eager).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/kiln.h"
#include "io/dataset.h"
#include "layers/loss.h"
#include "layers/optim.h"
#include "train/model_spec.h"
#include "train/step_graph.h"
#include "train/trainer.h"
#include "tests/support/gpu.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

// flatten, fc1, relu, dropout, fc2: a head-only phase trains fc2 behind a dropout that runs
// every step (the cache stops before it), as VGG's phase 1 trains fc8 behind fc7's dropout.
std::shared_ptr<Sequential> dropout_net(Generator& init, Generator& drop) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc1", 16 * 16 * 3, 8, true, init));
  net->add(std::make_shared<ReLU>("relu1"));
  net->add(std::make_shared<Dropout>("drop1", 0.5f, drop));
  net->add(std::make_shared<Linear>("fc2", 8, 2, true, init));
  return net;
}

TrainerOptions graph_options(const std::string& dir, Device device, Generator* drop) {
  TrainerOptions t;
  t.phases = {Phase{"head", {"net/fc2/"}, 0.05, nullptr, 2, 0.9, 1e-4, HeadInit::as_is},
              Phase{"all", {}, 0.01, nullptr, 1, 0.9, 1e-4, HeadInit::as_is}};
  t.loader.batch_size = 3;  // 8 training images: batches of 3, 3 and 2 (a partial one)
  t.loader.num_workers = 1;
  t.loader.seed = 11;
  t.loader.resize_shorter = 18;
  t.loader.crop = 16;
  t.loader.augment = false;  // phase 1 from cached features: auto records it too
  t.loader.warn = false;
  t.loader.device = device;
  t.model_dir = dir;
  t.run.image_size = 16;  // the crop, as checkpoints record it
  t.run.convention = io::InputConvention::torchvision_rgb;
  t.dropout_gen = drop;
  return t;
}

// Trains dropout_net on the demo data under `mode`; returns its parameters and the step modes reported.
std::vector<std::vector<float>> train_with(CudaGraphMode mode, Device device, const std::string& root,
                                           std::vector<StepModeInfo>& modes) {
  const io::Dataset train = io::image_folder(root + "/data/train"), val = io::image_folder(root + "/data/val");
  Generator init(5), drop(6);
  auto net = dropout_net(init, drop);
  net->to(device);
  TrainerOptions t = graph_options(root + "/run_" + cuda_graph_mode_name(mode), device, &drop);
  t.cuda_graph = mode;
  t.run.classes = train.classes;
  TrainerHooks hooks;
  hooks.on_step_mode = [&modes](const StepModeInfo& m) { modes.push_back(m); };
  REQUIRE(Trainer(*net, find_model_spec("vgg16"), train, val, t, hooks).run(std::nullopt).finished);
  std::vector<std::vector<float>> params;
  for (const ParameterRef& p : net->parameters()) params.push_back(p.tensor->to_vector<float>());
  return params;
}

// conv, relu, flatten, fc1, relu, dropout, fc2 on [4, 8, 8, 3] NHWC inputs; the conv is frozen
// as a phase 1 backbone is (cuDNN's backward algorithms need not be deterministic; the bit-for-
// bit comparison is of replay against eager, not of cuDNN against itself).
std::shared_ptr<Sequential> conv_net(Generator& init, Generator& drop) {
  auto net = std::make_shared<Sequential>("conv");
  net->add(std::make_shared<Conv2d>("conv1", 3, 4, 3, Conv2dParams{1, 1, 1, 1}, true, init));
  net->add(std::make_shared<ReLU>("relu0"));
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc1", 8 * 8 * 4, 16, true, init));
  net->add(std::make_shared<ReLU>("relu1"));
  net->add(std::make_shared<Dropout>("drop1", 0.5f, drop));
  net->add(std::make_shared<Linear>("fc2", 16, 3, true, init));
  net->freeze("conv/conv1/");
  return net;
}

// Batch `k` of the GPU cases: inputs and labels drawn from a generator seeded by k.
void batch(int k, Tensor& x, Tensor& y) {
  Generator g(static_cast<uint64_t>(1000 + k));
  x = Tensor::uniform(Shape{4, 8, 8, 3}, -1, 1, g).to(Device::cuda());
  y = Tensor::from_vector(std::vector<int64_t>{k % 3, (k + 1) % 3, (k + 2) % 3, k % 3}, Shape{4}).to(Device::cuda());
}

std::vector<Tensor> params_of(Sequential& net) {
  std::vector<Tensor> out;
  for (const ParameterRef& p : net.trainable_parameters()) out.push_back(*p.tensor);
  return out;
}

// The step every GPU case records: forward, loss, backward; returns the loss.
std::vector<Tensor> loss_step(Sequential& net, const std::vector<Tensor>& in) {
  Tensor loss = classification_loss(net(in[0]), in[1], net, 0.0f);
  loss.backward();
  return {loss};
}

std::vector<Tensor> scalar_output() { return {Tensor::empty(Shape{}, TensorOptions{DType::f32, Device::cuda()})}; }

}  // namespace

TEST_CASE("choose_step_graph records head-only phases of one process on a CUDA device", "[train][graph_step]") {
  const Device gpu = Device::cuda(), cpu = Device::cpu();
  CHECK(choose_step_graph(CudaGraphMode::on, gpu, false, true, false).use);
  CHECK(choose_step_graph(CudaGraphMode::on, gpu, false, true, true).use);
  CHECK(choose_step_graph(CudaGraphMode::automatic, gpu, false, true, true).use);
  const StepGraphChoice uncached = choose_step_graph(CudaGraphMode::automatic, gpu, false, true, false);
  CHECK_FALSE(uncached.use);
  CHECK_THAT(uncached.why, Catch::Contains("cached features"));
  CHECK_FALSE(choose_step_graph(CudaGraphMode::off, gpu, false, true, true).use);
  const StepGraphChoice on_cpu = choose_step_graph(CudaGraphMode::on, cpu, false, true, true);
  CHECK_FALSE(on_cpu.use);
  CHECK_THAT(on_cpu.why, Catch::Contains("need a CUDA device"));
  CHECK_THAT(choose_step_graph(CudaGraphMode::on, gpu, true, true, true).why, Catch::Contains("one process"));
  CHECK_THAT(choose_step_graph(CudaGraphMode::on, gpu, false, false, true).why, Catch::Contains("trains more layers"));
  CHECK(parse_cuda_graph_mode("auto") == CudaGraphMode::automatic);
  CHECK(std::string(cuda_graph_mode_name(parse_cuda_graph_mode("on"))) == "on");
  CHECK_THROWS_WITH(parse_cuda_graph_mode("yes"), Catch::Contains("off, on, auto"));
}

TEST_CASE("a StepGraph on the CPU refuses to record and leaves gradients and dropout as they were", "[train][graph_step]") {
  Generator init(1), drop(2);
  auto net = dropout_net(init, drop);
  const Tensor x = Tensor::uniform(Shape{3, 16, 16, 3}, -1, 1, init);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 0}, Shape{3});
  classification_loss((*net)(x), y, *net, 0.0f).backward();  // a stale gradient to be cleared
  const PhiloxState before = drop.state();
  StepGraph g({empty_like(x), empty_like(y)}, {Tensor::empty(Shape{})}, params_of(*net), &drop);
  bool ran = false;
  const std::string error = g.capture([&](const std::vector<Tensor>&) {
    ran = true;
    return std::vector<Tensor>{};
  });
  CHECK_THAT(error, Catch::Contains("cannot record graphs"));
  CHECK_FALSE(ran);
  CHECK_FALSE(g.captured());
  for (const Tensor& p : params_of(*net)) CHECK_FALSE(p.grad().defined());
  CHECK(drop.state().offset == before.offset);
  CHECK_THROWS_WITH(g.replay(), Catch::Contains("before a successful capture"));
}

TEST_CASE("with cuda_graph on, a CPU run reports eager steps and trains exactly as with it off", "[train][graph_step]") {
  const std::string root = test::make_temp_dir("step_graph_cpu");
  app::make_demo_dataset(root + "/data", 2, 4, 2, 3);
  std::vector<StepModeInfo> off_modes, on_modes;
  const auto off = train_with(CudaGraphMode::off, Device::cpu(), root, off_modes);
  const auto on = train_with(CudaGraphMode::on, Device::cpu(), root, on_modes);
  CHECK(on == off);
  CHECK(off_modes.empty());  // off says nothing
  REQUIRE(on_modes.size() == 2);
  for (const StepModeInfo& m : on_modes) {
    CHECK_FALSE(m.graph);
    CHECK_THAT(m.why, Catch::Contains("need a CUDA device"));
  }
  CHECK(on_modes[0].phase == 1);
  CHECK(on_modes[1].phase == 2);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

TEST_CASE("replayed steps of a conv net with dropout equal eager steps bit for bit", "[cuda][graph_step]") {
  KILN_SKIP_WITHOUT_GPU();
  constexpr int kSteps = 6;
  Generator init_a(3), drop_a(4), init_b(3), drop_b(4);
  auto a = conv_net(init_a, drop_a), b = conv_net(init_b, drop_b);
  a->to(Device::cuda());
  b->to(Device::cuda());
  SGD opt_a(*a, SgdOptions{0.1f, 0.9f, 0.0f, false}), opt_b(*b, SgdOptions{0.1f, 0.9f, 0.0f, false});
  std::vector<float> eager_losses, graph_losses;
  for (int k = 0; k < kSteps; ++k) {
    Tensor x, y;
    batch(k, x, y);
    opt_a.zero_grad();
    eager_losses.push_back(loss_step(*a, {x, y})[0].item());
    opt_a.step();
  }
  std::unique_ptr<StepGraph> g;
  for (int k = 0; k < kSteps; ++k) {
    Tensor x, y;
    batch(k, x, y);
    if (k == 0) {  // the eager warm-up step
      opt_b.zero_grad();
      graph_losses.push_back(loss_step(*b, {x, y})[0].item());
    } else {
      if (!g) {
        g = std::make_unique<StepGraph>(std::vector<Tensor>{empty_like(x), empty_like(y)}, scalar_output(),
                                        params_of(*b), &drop_b);
        const std::string error = g->capture([&b](const std::vector<Tensor>& in) { return loss_step(*b, in); });
        REQUIRE(error.empty());
      }
      graph_losses.push_back(g->replay({x, y})[0].item());
    }
    opt_b.step();
  }
  CHECK(graph_losses == eager_losses);
  CHECK(drop_b.state().offset == drop_a.state().offset);
  for (size_t i = 0; i < a->parameters().size(); ++i)
    CHECK(b->parameters()[i].tensor->to_vector<float>() == a->parameters()[i].tensor->to_vector<float>());
}

TEST_CASE("consecutive replays draw new dropout masks", "[cuda][graph_step]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator init(3), drop(4);
  auto net = conv_net(init, drop);
  net->to(Device::cuda());
  Tensor x, y;
  batch(0, x, y);
  loss_step(*net, {x, y});  // warm-up
  StepGraph g({empty_like(x), empty_like(y)}, scalar_output(), params_of(*net), &drop);
  REQUIRE(g.capture([&net](const std::vector<Tensor>& in) { return loss_step(*net, in); }).empty());
  const Tensor& fc1_weight = *net->find("conv/fc1/weight").tensor;
  g.replay({x, y});
  const std::vector<float> first = fc1_weight.grad().to_vector<float>();
  g.replay({x, y});  // same input and weights: only the masks can differ
  const std::vector<float> second = fc1_weight.grad().to_vector<float>();
  CHECK(first != second);
}

TEST_CASE("a capture that waits for the host fails, says why and leaves the device usable", "[cuda][graph_step]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator init(3), drop(4);
  auto net = conv_net(init, drop);
  net->to(Device::cuda());
  Tensor x, y;
  batch(0, x, y);
  loss_step(*net, {x, y});  // warm-up
  const PhiloxState before = drop.state();
  StepGraph bad({empty_like(x), empty_like(y)}, scalar_output(), params_of(*net), &drop);
  const std::string error = bad.capture([&net](const std::vector<Tensor>& in) {
    std::vector<Tensor> out = loss_step(*net, in);
    out[0].item();  // a copy to the host and a sync: not allowed while recording
    return out;
  });
  INFO(error);
  CHECK_FALSE(error.empty());
  CHECK_FALSE(bad.captured());
  CHECK(drop.state().offset == before.offset);
  for (const Tensor& p : params_of(*net)) CHECK_FALSE(p.grad().defined());
  // The device still computes, eagerly and recorded.
  const Tensor two = add(Tensor::ones(Shape{4}, TensorOptions{DType::f32, Device::cuda()}),
                         Tensor::ones(Shape{4}, TensorOptions{DType::f32, Device::cuda()}));
  CHECK(two.to_vector<float>() == std::vector<float>(4, 2.0f));
  StepGraph good({empty_like(x), empty_like(y)}, scalar_output(), params_of(*net), &drop);
  REQUIRE(good.capture([&net](const std::vector<Tensor>& in) { return loss_step(*net, in); }).empty());
  CHECK(std::isfinite(good.replay({x, y})[0].item()));
}

TEST_CASE("on a GPU the trainer with cuda_graph on trains as with it off, bit for bit", "[cuda][graph_step]") {
  KILN_SKIP_WITHOUT_GPU();
  const std::string root = test::make_temp_dir("step_graph_gpu");
  app::make_demo_dataset(root + "/data", 2, 4, 2, 3);
  std::vector<StepModeInfo> off_modes, on_modes, auto_modes;
  const auto off = train_with(CudaGraphMode::off, Device::cuda(), root, off_modes);
  const auto on = train_with(CudaGraphMode::on, Device::cuda(), root, on_modes);
  const auto automatic = train_with(CudaGraphMode::automatic, Device::cuda(), root, auto_modes);
  CHECK(on == off);
  CHECK(automatic == off);
  REQUIRE(on_modes.size() == 2);
  INFO(on_modes[0].why);
  CHECK(on_modes[0].graph);  // phase 1: warm-up, then replays (the partial batches eager)
  CHECK_FALSE(on_modes[1].graph);
  CHECK_THAT(on_modes[1].why, Catch::Contains("trains more layers"));
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}
