// Optimizers against PyTorch's trajectories, exactly-the-trainable-parameters and frozen
// bit-for-bit, the learning-rate schedules, and the loss's L2 term.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <numbers>

#include "layers/layers.h"
#include "layers/loss.h"
#include "layers/optim.h"
#include "layers/schedule.h"
#include "tests/support/gpu.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"
#include "tests/support/require_close.h"

using namespace kiln;

namespace {

// The issue's bound on each step of a trajectory; the reference runs in float64, so this is
// float32 rounding accumulated over a few steps, with an absolute floor of rtol * mean|ref|
// for elements that pass near zero.
constexpr double kRtolOptim = 1e-5;

std::vector<double> as_double(const Tensor& t) { return t.to_vector<double>(); }

// Sets p's gradient to exactly g through autograd: d/dp sum(p * g) = g.
void set_grad(Tensor& p, const Tensor& g) {
  p.zero_grad();
  sum(mul(p, g)).backward();
}

// Runs `make`'s optimizer for `steps` steps with generated gradients, the PyTorch reference
// with the same, and compares the parameters after every step.
template <typename Make>
void check_trajectory(const std::string& tag, const std::string& config_json, Make make) {
  constexpr int kSteps = 6;
  Generator gen(42);
  std::vector<Tensor> p = {Tensor::normal(Shape{3, 4}, 0, 1, gen), Tensor::normal(Shape{5}, 0, 1, gen)};
  const std::string dir = test::make_temp_dir("optim_" + tag);
  std::vector<ParameterRef> refs;
  for (size_t k = 0; k < p.size(); ++k) {
    test::write_npy(dir + "/p" + std::to_string(k) + ".npy", p[k]);
    p[k].set_requires_grad(true);
    refs.push_back({"net/p" + std::to_string(k), &p[k], true, true});
  }
  auto opt = make(refs);
  std::vector<std::vector<std::vector<double>>> got(kSteps);
  for (int s = 0; s < kSteps; ++s) {
    for (size_t k = 0; k < p.size(); ++k) {
      Tensor g = Tensor::normal(p[k].shape(), 0, 1, gen);
      test::write_npy(dir + "/g" + std::to_string(s) + "_" + std::to_string(k) + ".npy", g);
      set_grad(p[k], g);
    }
    opt->step();
    for (const Tensor& t : p) got[static_cast<size_t>(s)].push_back(as_double(t));
  }
  std::ofstream(dir + "/config.json") << "{" << config_json << ", \"params\": " << p.size()
                                      << ", \"steps\": " << kSteps << "}";
  test::run_reference_script("optim_reference.py", dir);
  CHECK(opt->steps() == kSteps);
  for (int s = 0; s < kSteps; ++s)
    for (size_t k = 0; k < p.size(); ++k) {
      const std::vector<double> ref =
          test::read_npy(dir + "/out" + std::to_string(s) + "_" + std::to_string(k) + ".npy");
      INFO(tag << " step " << s << " param " << k);
      KILN_REQUIRE_CLOSE(got[static_cast<size_t>(s)][k], ref, kRtolOptim * check::mean_abs(ref), kRtolOptim);
    }
}

// net: fc1 (frozen) -> relu -> fc2, both with bias.
std::shared_ptr<Sequential> small_net(Generator& g) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Linear>("fc1", 4, 6, true, g));
  net->add(std::make_shared<ReLU>("relu"));
  net->add(std::make_shared<Linear>("fc2", 6, 3, true, g));
  return net;
}

std::map<std::string, std::vector<float>> snapshot(Module& m) {
  std::map<std::string, std::vector<float>> out;
  for (const ParameterRef& p : m.parameters()) out[p.name] = p.tensor->to_vector<float>();
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("SGD with momentum follows torch.optim.SGD step by step", "[optim][sgd]") {
  check_trajectory("sgd_momentum", R"("optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": 0, "weight_decay": 0.01)",
                   [](std::vector<ParameterRef> r) { return std::make_unique<SGD>(r, SgdOptions{0.1f, 0.9f, 0.01f, false}); });
}

TEST_CASE("SGD with Nesterov momentum follows torch.optim.SGD step by step", "[optim][sgd]") {
  check_trajectory("sgd_nesterov", R"("optimizer": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": 1, "weight_decay": 0.0)",
                   [](std::vector<ParameterRef> r) { return std::make_unique<SGD>(r, SgdOptions{0.05f, 0.8f, 0.0f, true}); });
}

TEST_CASE("Adam follows torch.optim.Adam step by step", "[optim][adam]") {
  check_trajectory(
      "adam", R"("optimizer": "adam", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0)",
      [](std::vector<ParameterRef> r) { return std::make_unique<Adam>(r, AdamOptions{0.01f, 0.9f, 0.999f, 1e-8f, 0.0f}); });
  check_trajectory(
      "adam_wd", R"("optimizer": "adam", "lr": 0.003, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.05)",
      [](std::vector<ParameterRef> r) { return std::make_unique<Adam>(r, AdamOptions{0.003f, 0.8f, 0.99f, 1e-6f, 0.05f}); });
}

TEST_CASE("AdamW follows torch.optim.AdamW step by step", "[optim][adam]") {
  // A large decay, so that shrinking the weight before the update (not adding wd * w to the
  // gradient, Adam's) shows in every step.
  check_trajectory(
      "adamw", R"("optimizer": "adamw", "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.5)",
      [](std::vector<ParameterRef> r) {
        return std::make_unique<AdamW>(r, AdamOptions{0.01f, 0.9f, 0.999f, 1e-8f, 0.5f});
      });
  Tensor w = Tensor::zeros(Shape{1});
  w.set_requires_grad(true);
  const AdamW adamw({{"w", &w, true, true}}, AdamOptions{});
  const Adam adam({{"w", &w, true, true}}, AdamOptions{});
  CHECK(adamw.kind() == "AdamW");  // what a checkpoint records: one does not resume into the other
  CHECK(adam.kind() == "Adam");
  CHECK(adamw.options().decoupled_weight_decay);
}

TEST_CASE("an optimizer over tensors no Module owns holds them and refuses what it cannot update", "[optim]") {
  std::unique_ptr<Optimizer> opt;
  Tensor seen;
  {
    Tensor w = Tensor::from_vector(std::vector<float>{1, -2}, Shape{2});
    w.set_requires_grad(true);
    seen = w.detach();  // the same memory, to watch it move
    opt = std::make_unique<SGD>(std::vector<NamedTensor>{{"w", w}}, SgdOptions{0.5f});
    sum(mul(w, w)).backward();  // gradient 2w
  }  // the caller's handle is gone: the optimizer's keeps the tensor
  opt->step();
  CHECK(seen.to_vector<float>() == std::vector<float>{0, 0});
  CHECK(opt->state().back().name == "optimizer/step");

  Tensor leaf = Tensor::zeros(Shape{2});
  leaf.set_requires_grad(true);
  REQUIRE_THROWS_WITH(Adam(std::vector<NamedTensor>{{"x2", mul(leaf, 2.0f)}}, AdamOptions{}),
                      Catch::Contains("'x2'") && Catch::Contains("not a leaf"));
  REQUIRE_THROWS_WITH(Adam(std::vector<NamedTensor>{{"h", Tensor::zeros(Shape{2}, TensorOptions{DType::bf16})}},
                           AdamOptions{}),
                      Catch::Contains("'h' is bfloat16"));
  REQUIRE_THROWS_WITH(AdamW(std::vector<NamedTensor>{{"a", leaf}, {"a", Tensor::zeros(Shape{1})}}, AdamOptions{}),
                      Catch::Contains("'a' is given twice"));
  REQUIRE_THROWS_WITH(SGD(std::vector<NamedTensor>{}, SgdOptions{}), Catch::Contains("list of tensors is empty"));
}

TEST_CASE("optimizers take exactly the trainable parameters, and frozen ones stay bit-for-bit unchanged",
          "[optim][frozen]") {
  Generator g(7);
  auto net = small_net(g);
  CHECK(net->freeze("net/fc1/") == 2);
  const Tensor x = Tensor::normal(Shape{8, 4}, 0, 1, g);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1}, Shape{8});

  SGD sgd(*net, SgdOptions{0.1f, 0.9f, 0.0f, true});
  Adam adam(*net, AdamOptions{0.01f});
  for (Optimizer* opt : {static_cast<Optimizer*>(&sgd), static_cast<Optimizer*>(&adam)}) {
    std::vector<std::string> names;
    for (const ParameterRef& p : opt->parameters()) names.push_back(p.name);
    CHECK(names == std::vector<std::string>{"net/fc2/weight", "net/fc2/bias"});
  }
  std::vector<std::string> state;
  for (const OptimizerStateRef& s : sgd.state()) state.push_back(s.name);
  CHECK(state == std::vector<std::string>{"net/fc2/weight/momentum", "net/fc2/bias/momentum", "optimizer/step"});
  state.clear();
  for (const OptimizerStateRef& s : adam.state()) state.push_back(s.name);
  CHECK(state == std::vector<std::string>{"net/fc2/weight/exp_avg", "net/fc2/weight/exp_avg_sq", "net/fc2/bias/exp_avg",
                                          "net/fc2/bias/exp_avg_sq", "optimizer/step"});
  // A frozen parameter handed over explicitly is refused, by name.
  REQUIRE_THROWS_WITH(SGD(net->parameters(), SgdOptions{0.1f}), Catch::Contains("net/fc1/weight") &&
                                                                    Catch::Contains("frozen"));
  // Nothing to train is refused too (found by audit: SGD and Adam of a fully frozen model were
  // accepted, and their steps changed nothing).
  auto frozen = small_net(g);
  frozen->freeze("net/");
  REQUIRE_THROWS_WITH(SGD(*frozen, SgdOptions{0.1f}), Catch::Contains("no trainable parameters to update"));
  REQUIRE_THROWS_WITH(Adam(std::vector<ParameterRef>{}, AdamOptions{0.01f}),
                      Catch::Contains("no trainable parameters to update"));

  const auto before = snapshot(*net);
  for (Optimizer* opt : {static_cast<Optimizer*>(&sgd), static_cast<Optimizer*>(&adam)}) {
    for (int s = 0; s < 3; ++s) {
      opt->zero_grad();
      classification_loss((*net)(x), y, *net, 5e-4f).backward();
      opt->step();
    }
    CHECK(opt->steps() == 3);
  }
  const auto after = snapshot(*net);
  CHECK(same_bits(before.at("net/fc1/weight"), after.at("net/fc1/weight")));
  CHECK(same_bits(before.at("net/fc1/bias"), after.at("net/fc1/bias")));
  CHECK_FALSE(same_bits(before.at("net/fc2/weight"), after.at("net/fc2/weight")));
  CHECK_FALSE(same_bits(before.at("net/fc2/bias"), after.at("net/fc2/bias")));
}

TEST_CASE("a parameter without a gradient is skipped and stays unchanged", "[optim]") {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2}, Shape{2});
  Tensor b = Tensor::from_vector(std::vector<float>{3, 4}, Shape{2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Adam adam({{"a", &a, true, true}, {"b", &b, true, true}}, AdamOptions{0.1f});
  sum(a).backward();  // b gets no gradient
  adam.step();
  CHECK(b.to_vector<float>() == std::vector<float>{3, 4});
  // First Adam step moves each element by lr (m / sqrt(v) = sign(g) after bias correction).
  CHECK(a.at({0}) == Approx(0.9).epsilon(1e-6));
  CHECK(a.at({1}) == Approx(1.9).epsilon(1e-6));
  adam.zero_grad();
  CHECK_FALSE(a.grad().defined());
  // A rate that is not a finite number is refused, as a negative one is (StepLR with gamma > 1
  // could reach inf, and the weights would follow).
  REQUIRE_THROWS_WITH(adam.set_lr(INFINITY), Catch::Contains("finite"));
  REQUIRE_THROWS_WITH(adam.set_lr(NAN), Catch::Contains("finite"));
}

TEST_CASE("clip_grad_norm scales every gradient by max_norm over the norm of all of them", "[optim][clip]") {
  // Gradients [3, 4] and [12]: norms 5 and 12, together 13 (2-norm), 19 (1-norm), 12 (inf).
  const auto param = [](std::vector<float> g) {
    Tensor p = Tensor::zeros(Shape{static_cast<int64_t>(g.size())});
    p.set_requires_grad(true);
    p.set_grad(Tensor::from_vector(g, Shape{static_cast<int64_t>(g.size())}));
    return p;
  };
  Tensor a = param({3, 4}), b = param({12}), none = Tensor::zeros(Shape{2});
  const Tensor a_before = a.grad();
  const Tensor total = clip_grad_norm({a, none, b}, 6.5);
  CHECK(total.shape() == Shape{});
  CHECK(total.item() == 13.0);
  const double scale = static_cast<double>(6.5f / (13.0f + 1e-6f));
  CHECK_THAT(a.grad().to_vector<double>(), Catch::Approx(std::vector<double>{3 * scale, 4 * scale}).epsilon(1e-7));
  CHECK(b.grad().item() == Approx(12 * scale).epsilon(1e-7));
  CHECK(a_before.to_vector<float>() == a.grad().to_vector<float>());  // in place, as torch's mul_
  CHECK_FALSE(none.grad().defined());

  Tensor c = param({3, 4}), d = param({-12});
  CHECK(clip_grad_norm({c, d}, 100.0, 1.0).item() == 19.0);  // under max_norm: times 1, unchanged
  CHECK(c.grad().to_vector<float>() == std::vector<float>{3, 4});
  CHECK(clip_grad_norm({c, d}, 6.0, INFINITY).item() == 12.0);
  CHECK(d.grad().item() == Approx(-6.0).epsilon(1e-6));
  CHECK(clip_grad_norm({none}, 1.0).item() == 0.0);  // no gradient at all: total 0
  const std::vector<float> c_now = c.grad().to_vector<float>();  // about [1.5, 2] now
  CHECK(clip_grad_norm({c, d}, INFINITY).item() == Approx(std::sqrt(1.5 * 1.5 + 2 * 2 + 6 * 6.0)));  // inf: measures
  CHECK(c.grad().to_vector<float>() == c_now);

  Tensor e = param({NAN, 1});
  REQUIRE_THROWS_WITH(clip_grad_norm({e}, 1.0, 2.0, true),
                      Catch::Contains("nan") && Catch::Contains("error_if_nonfinite"));
  CHECK(std::isnan(clip_grad_norm({e}, 1.0).item()));  // as torch: scaled by the NaN without the check
  REQUIRE_THROWS_WITH(clip_grad_norm({a}, -1.0), Catch::Contains("max_norm"));
  REQUIRE_THROWS_WITH(clip_grad_norm({a}, 1.0, 0.0), Catch::Contains("norm_type"));

  Tensor f = param({3, -7, 0.5f});
  clip_grad_value({f, none}, 2.0);
  CHECK(f.grad().to_vector<float>() == std::vector<float>{2, -2, 0.5f});
  REQUIRE_THROWS_WITH(clip_grad_value({f}, -1.0), Catch::Contains("clip_value"));
}

TEST_CASE("adam_update checks its arguments", "[optim][adam]") {
  Tensor w = Tensor::zeros(Shape{3}), g = Tensor::zeros(Shape{2}), m = Tensor::zeros(Shape{3}), v = Tensor::zeros(Shape{3});
  std::vector<AdamParamRef> refs = {{w, g, m, v}};
  REQUIRE_THROWS_WITH(adam_update(refs, AdamOptions{}, 1),
                      Catch::Contains("adam_update") && Catch::Contains("grad") && Catch::Contains("[2]"));
  refs[0].grad = Tensor::zeros(Shape{3});
  REQUIRE_THROWS_WITH(adam_update(refs, AdamOptions{}, 0), Catch::Contains("step"));
  REQUIRE_THROWS_WITH(adam_update(refs, AdamOptions{0.1f, 1.0f}, 1), Catch::Contains("beta1"));
  adam_update({}, AdamOptions{}, 1);  // nothing to update is no error
  CHECK(w.to_vector<float>() == std::vector<float>{0, 0, 0});
}

TEST_CASE("learning-rate schedules give their values at chosen steps", "[optim][schedule]") {
  const ConstantLR constant(0.1f);
  CHECK(constant.lr(0) == 0.1f);
  CHECK(constant.lr(1000) == 0.1f);

  const StepLR step(0.1f, 10, 0.5f);
  CHECK(step.lr(0) == Approx(0.1));
  CHECK(step.lr(9) == Approx(0.1));
  CHECK(step.lr(10) == Approx(0.05));
  CHECK(step.lr(25) == Approx(0.025));

  const CosineLR cosine(0.1f, 100, 0.001f);
  CHECK(cosine.lr(0) == Approx(0.1));
  CHECK(cosine.lr(50) == Approx(0.001 + 0.099 * 0.5));
  CHECK(cosine.lr(25) == Approx(0.001 + 0.099 * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(cosine.lr(100) == Approx(0.001));
  CHECK(cosine.lr(500) == Approx(0.001));

  const WarmupLR warm(std::make_shared<StepLR>(0.2f, 10, 0.1f), 4);
  CHECK(warm.lr(0) == Approx(0.05));
  CHECK(warm.lr(1) == Approx(0.10));
  CHECK(warm.lr(3) == Approx(0.20));
  CHECK(warm.lr(4) == Approx(0.20));   // the wrapped schedule's step 0
  CHECK(warm.lr(14) == Approx(0.02));  // its step 10: first drop

  REQUIRE_THROWS_WITH(StepLR(0.1f, 0, 0.5f), Catch::Contains("StepLR"));
  REQUIRE_THROWS_WITH(CosineLR(0.1f, 10, 0.2f), Catch::Contains("floor"));
  REQUIRE_THROWS_WITH(ConstantLR(INFINITY), Catch::Contains("finite"));  // set_lr would refuse it later
  REQUIRE_THROWS_WITH(StepLR(0.1f, 2, INFINITY), Catch::Contains("finite gamma"));
  REQUIRE_THROWS_WITH(CosineLR(INFINITY, 10), Catch::Contains("finite"));
  REQUIRE_THROWS_WITH(constant.lr(-1), Catch::Contains("step"));

  // Driving an optimizer: the rate set before each step.
  Tensor w = Tensor::zeros(Shape{1});
  w.set_requires_grad(true);
  SGD sgd({{"w", &w, true, true}}, SgdOptions{1.0f});
  for (int s = 0; s < 3; ++s) {
    sgd.set_lr(warm.lr(sgd.steps()));
    sgd.zero_grad();
    sum(w).backward();
    sgd.step();
  }
  CHECK(w.at({0}) == Approx(-(0.05 + 0.10 + 0.15)));
}

TEST_CASE("the loss's L2 term covers trainable weights only, not biases or frozen weights", "[optim][loss]") {
  Generator g(3);
  auto net = small_net(g);
  const Tensor x = Tensor::normal(Shape{5, 4}, 0, 1, g);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 1, 0}, Shape{5});
  const float wd = 5e-4f;
  auto sum_sq = [](const Tensor& t) {
    double s = 0;
    for (double v : t.to_vector<double>()) s += v * v;
    return s;
  };
  const Tensor& w1 = *net->find("net/fc1/weight").tensor;
  const Tensor& w2 = *net->find("net/fc2/weight").tensor;

  const Tensor logits = (*net)(x);
  const double ce = softmax_cross_entropy(logits, y).item();
  const double all = classification_loss(logits, y, *net, wd).item();
  CHECK(all == Approx(ce + wd * (sum_sq(w1) + sum_sq(w2)) / 2).epsilon(1e-6));
  CHECK(classification_loss(logits, y, *net, 0.0f).item() == Approx(ce).epsilon(1e-7));
  // The data term alone, as vgg_finetune reports it next to the validation loss.
  Tensor data_loss;
  (void)classification_loss(logits, y, *net, wd, &data_loss);
  REQUIRE(data_loss.defined());
  CHECK(data_loss.item() == ce);

  net->freeze("net/fc1/");
  const double frozen = classification_loss(logits, y, *net, wd).item();
  CHECK(frozen == Approx(ce + wd * sum_sq(w2) / 2).epsilon(1e-6));
  std::vector<Tensor> decayed = decayed_weights(*net);
  REQUIRE(decayed.size() == 1);

  // Its gradient on fc2's weight is wd * w on top of the cross-entropy's; biases get none.
  auto grads = [&](float decay) {
    for (const ParameterRef& p : net->parameters()) p.tensor->zero_grad();
    classification_loss((*net)(x), y, *net, decay).backward();
    return std::make_pair(net->find("net/fc2/weight").tensor->grad().to_vector<double>(),
                          net->find("net/fc2/bias").tensor->grad().to_vector<double>());
  };
  const auto [gw_decay, gb_decay] = grads(wd);
  const auto [gw_plain, gb_plain] = grads(0.0f);
  CHECK_FALSE(net->find("net/fc1/weight").tensor->grad().defined());
  std::vector<double> diff(gw_decay.size()), want = w2.to_vector<double>();
  for (size_t i = 0; i < diff.size(); ++i) {
    diff[i] = gw_decay[i] - gw_plain[i];
    want[i] *= wd;
  }
  KILN_REQUIRE_CLOSE(diff, want, 1e-9, 1e-3);  // a difference of float32 sums: cancellation
  CHECK(gb_decay == gb_plain);
}

TEST_CASE("Adam on the GPU matches the CPU bit for bit, across launches", "[optim][adam][cuda]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device gpu{DeviceType::cuda, 0};
  Generator gen(5);
  // 50 tensors: more than one launch's 48; sizes cross the 4096-element chunk.
  std::vector<AdamParamRef> cpu, cuda;
  for (int k = 0; k < 50; ++k) {
    const Shape shape{1 + (k * 997) % 9000};
    const Tensor w = Tensor::normal(shape, 0, 1, gen), g = Tensor::normal(shape, 0, 1, gen);
    const Tensor m = Tensor::normal(shape, 0, 0.1f, gen), v = Tensor::uniform(shape, 0, 0.1f, gen);
    cpu.push_back({w.clone(), g.clone(), m.clone(), v.clone()});
    cuda.push_back({w.to(gpu), g.to(gpu), m.to(gpu), v.to(gpu)});
  }
  const AdamOptions o{0.01f, 0.9f, 0.999f, 1e-8f, 0.01f};
  const AdamOptions decoupled{0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, true};  // AdamW's shrink, step 3
  for (int64_t step = 1; step <= 3; ++step) {
    adam_update(cpu, step < 3 ? o : decoupled, step);
    adam_update(cuda, step < 3 ? o : decoupled, step);
  }
  for (size_t k = 0; k < cpu.size(); ++k) {
    INFO("tensor " << k);
    CHECK(same_bits(cpu[k].param.to_vector<float>(), cuda[k].param.to_vector<float>()));
    CHECK(same_bits(cpu[k].exp_avg.to_vector<float>(), cuda[k].exp_avg.to_vector<float>()));
    CHECK(same_bits(cpu[k].exp_avg_sq.to_vector<float>(), cuda[k].exp_avg_sq.to_vector<float>()));
  }
}

TEST_CASE("an optimizer made from a model refuses to step once a layer it lacks is unfrozen, changing nothing",
          "[optim][frozen][errors]") {
  Generator g(8);
  auto net = small_net(g);
  net->freeze("net/fc1/");
  SGD sgd(*net, SgdOptions{0.1f});
  Adam adam(*net, AdamOptions{0.01f});
  net->unfreeze("net/fc1/");  // progressive unfreezing: these optimizers do not hold fc1
  const Tensor x = Tensor::normal(Shape{8, 4}, 0, 1, g);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1}, Shape{8});
  softmax_cross_entropy((*net)(x), y).backward();
  const auto before = snapshot(*net);
  for (Optimizer* opt : {static_cast<Optimizer*>(&sgd), static_cast<Optimizer*>(&adam)})
    REQUIRE_THROWS_WITH(opt->step(), Catch::Contains("'net/fc1/weight' trains now but was frozen") &&
                                         Catch::Contains("make a new optimizer after unfreezing"));
  CHECK(snapshot(*net) == before);
  CHECK(sgd.steps() == 0);
  SGD fresh(*net, SgdOptions{0.1f});  // made after: holds fc1 and steps
  fresh.step();
  CHECK(snapshot(*net) != before);
}

TEST_CASE("optimizers made before Module::to follow its parameters to the GPU", "[optim][cuda]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device gpu{DeviceType::cuda, 0};
  Generator g(12), h(12);
  auto moved = small_net(g), stay = small_net(h);  // the same weights; one goes to the GPU
  const auto named = [](Module& net) {
    std::vector<NamedTensor> out;
    for (const ParameterRef& p : net.parameters()) out.push_back({p.name, *p.tensor});
    return out;
  };
  Adam adam(named(*moved), AdamOptions{0.01f});  // handles of its own, as Python's AdamW(model.parameters())
  Adam adam_ref(named(*stay), AdamOptions{0.01f});
  moved->to(gpu);  // in place: adam's handles see the move, its state follows at the step
  const Tensor x = Tensor::normal(Shape{8, 4}, 0, 1, g);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1}, Shape{8});
  for (int step = 0; step < 2; ++step) {
    adam.zero_grad();
    adam_ref.zero_grad();
    softmax_cross_entropy((*moved)(x.to(gpu)), y.to(gpu)).backward();
    softmax_cross_entropy((*stay)(x), y).backward();
    adam.step();
    adam_ref.step();
  }
  for (const ParameterRef& p : moved->parameters()) {
    INFO(p.name);
    CHECK(p.tensor->device() == gpu);
    const Tensor* ref = stay->find(p.name).tensor;
    KILN_REQUIRE_CLOSE(p.tensor->to(Device::cpu()).to_vector<double>(), ref->to_vector<double>(), 1e-5, 1e-5);
  }
  for (const OptimizerStateRef& s : adam.state())
    if (s.name != "optimizer/step") CHECK(s.tensor->device() == gpu);
}
