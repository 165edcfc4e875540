// Modules: stable hierarchical names, freezing by name/scope/glob, train/eval, and the
// VGG family built from one table.
#include <algorithm>
#include <cmath>
#include <optional>

#include <catch2/catch.hpp>

#include "layers/models/resnet.h"
#include "layers/models/vgg.h"
#include "layers/optim.h"

using namespace kiln;

TEST_CASE("parameters have stable hierarchical names in registration order", "[layers]") {
  Generator g(1);
  Sequential net("net");
  net.add(std::make_shared<Conv2d>("conv1", 3, 4, 3, Conv2dParams{1, 1, 1, 1}, true, g));
  net.add(std::make_shared<ReLU>("relu1"));
  net.add(std::make_shared<Flatten>("flatten"));
  net.add(std::make_shared<Linear>("fc", 4 * 5 * 5, 2, false, g));
  const std::vector<ParameterRef> p = net.parameters();
  REQUIRE(p.size() == 3);
  CHECK(p[0].name == "net/conv1/weight");
  CHECK(p[0].tensor->shape() == Shape{4, 3, 3, 3});
  CHECK(p[0].decay);
  CHECK(p[1].name == "net/conv1/bias");
  CHECK_FALSE(p[1].decay);
  CHECK(p[2].name == "net/fc/weight");
  CHECK(net.find("net/fc/weight").tensor == p[2].tensor);
  CHECK(net.find("net/fc/bias").tensor == nullptr);
  Tensor y = net(Tensor::ones(Shape{2, 5, 5, 3}));
  CHECK(y.shape() == Shape{2, 2});
  REQUIRE_THROWS_WITH(net.add(std::make_shared<ReLU>("relu1")), Catch::Contains("already has a child named 'relu1'"));
}

TEST_CASE("a module in two containers is listed once: tied weights update once a step", "[layers]") {
  Generator g(1);
  auto shared = std::make_shared<Linear>("fc", 2, 2, false, g);
  auto a = std::make_shared<Sequential>("a"), b = std::make_shared<Sequential>("b");
  a->add(shared);
  b->add(shared);
  Sequential net("net");
  net.add(a);
  net.add(b);
  const std::vector<ParameterRef> p = net.parameters();
  REQUIRE(p.size() == 1);
  CHECK(p[0].name == "net/a/fc/weight");
  const std::vector<float> w0 = shared->weight().to_vector<float>();
  SGD opt(net, SgdOptions{0.1f});
  sum(net(Tensor::ones(Shape{1, 2}))).backward();  // x -> fc -> fc: both uses reach one gradient
  const std::vector<float> g0 = shared->weight().grad().to_vector<float>();
  opt.step();
  const std::vector<float> w1 = shared->weight().to_vector<float>();
  for (size_t i = 0; i < w0.size(); ++i) CHECK(w1[i] == Approx(w0[i] - 0.1f * g0[i]));  // once, not twice

  // One tensor under two names (not a shared module) is refused: it would be updated twice.
  std::vector<ParameterRef> twice{p[0], ParameterRef{"other", p[0].tensor, true, true}};
  REQUIRE_THROWS_WITH(SGD(twice, SgdOptions{0.1f}), Catch::Contains("are the same memory") &&
                                                         Catch::Contains("net/a/fc/weight") && Catch::Contains("other"));
}

namespace {
// Research code's own module: a raw parameter beside children.
struct Custom final : Module {
  explicit Custom(const std::string& param) : Module("custom") { register_parameter(param, Tensor::ones(Shape{2}), true); }
  Tensor forward(const Tensor& x) override { return x; }
  void add_child(std::shared_ptr<Module> m) { register_module(std::move(m)); }
  void add_buffer(const std::string& name) { register_buffer(name, Tensor::zeros(Shape{1})); }
};
}  // namespace

TEST_CASE("names that would collide in a checkpoint are refused when registered", "[layers][errors]") {
  // They used to fail only at the first checkpoint, inside HDF5, hours into a run.
  Generator g(1);
  Custom c("w");
  REQUIRE_THROWS_WITH(c.add_child(std::make_shared<ReLU>("w")),
                      Catch::Contains("already has a parameter named 'w' (adding a child)"));
  c.add_child(std::make_shared<ReLU>("act"));
  REQUIRE_THROWS_WITH(c.add_child(std::make_shared<ReLU>("act")),
                      Catch::Contains("already has a child named 'act' (adding a child)"));
  REQUIRE_THROWS_WITH(c.add_buffer("w"), Catch::Contains("already has a parameter named 'w' (adding a buffer)"));
  REQUIRE_THROWS_WITH(c.add_buffer("act"), Catch::Contains("already has a child named 'act' (adding a buffer)"));
  REQUIRE_THROWS_WITH(c.add_buffer("a/b"), Catch::Contains("buffer name 'a/b'"));
  c.add_buffer("running");
  REQUIRE_THROWS_WITH(c.add_child(std::make_shared<ReLU>("running")),
                      Catch::Contains("already has a buffer named 'running'"));
  REQUIRE_THROWS_WITH(Custom("a/b"), Catch::Contains("parameter name 'a/b'") && Catch::Contains("contains '/'"));
  REQUIRE_THROWS_WITH(Custom(""), Catch::Contains("is empty") && Catch::Contains("non-empty"));
  // "." and ".." name no HDF5 group (an export failed naming its temporary file); '*' and '?'
  // would make a recipe's exact name a freeze glob.
  REQUIRE_THROWS_WITH(ReLU("."), Catch::Contains("module name '.' is '.'") && Catch::Contains("HDF5"));
  REQUIRE_THROWS_WITH(c.add_buffer(".."), Catch::Contains("buffer name '..' is '..'"));
  REQUIRE_THROWS_WITH(ReLU("fc*"), Catch::Contains("module name 'fc*' contains '*'"));
  REQUIRE_THROWS_WITH(c.add_child(std::make_shared<ReLU>("a?")), Catch::Contains("contains '?'"));
  CHECK_NOTHROW(ReLU("layer1.0"));  // a dot inside a name is a name
}

TEST_CASE("forward_range refuses a range outside the Sequential's layers", "[layers][errors]") {
  Sequential s("s");
  s.add(std::make_shared<ReLU>("a"));
  s.add(std::make_shared<ReLU>("b"));
  const Tensor x = Tensor::full(Shape{2}, -1.0f);
  CHECK(s.forward_range(2, 2, x).to_vector<float>() == x.to_vector<float>());  // empty: x itself
  CHECK(s.forward_range(0, 2, x).to_vector<float>() == std::vector<float>{0.0f, 0.0f});
  // It read past the children (a heap overflow under ASan, a crash without) and ran nothing for from > to.
  REQUIRE_THROWS_WITH(s.forward_range(1, 9, x), Catch::Contains("forward_range(1, 9) is not a range of its 2 layers"));
  REQUIRE_THROWS_WITH(s.forward_range(2, 1, x), Catch::Contains("0 <= from <= to <= 2"));
}

TEST_CASE("freeze and unfreeze take exact names, scopes and globs, and refuse typos", "[layers][frozen]") {
  Generator init(2), drop(3);
  auto vgg = make_vgg(VggOptions{16, 8, 0.5f, 32}, init, drop);
  CHECK(vgg->parameters().size() == 32);
  CHECK(vgg->freeze("vgg16/conv*") == 26);
  CHECK(vgg->freeze("vgg16/fc6/") == 2);
  CHECK(vgg->freeze("vgg16/fc7/weight") == 1);
  std::vector<std::string> trainable;
  for (const ParameterRef& p : vgg->trainable_parameters()) trainable.push_back(p.name);
  CHECK(trainable == std::vector<std::string>{"vgg16/fc7/bias", "vgg16/fc8/weight", "vgg16/fc8/bias"});
  CHECK_FALSE(vgg->find("vgg16/conv1_1/weight").tensor->requires_grad());
  CHECK(vgg->unfreeze("vgg16/conv5_?/bias") == 3);
  CHECK(vgg->find("vgg16/conv5_3/bias").tensor->requires_grad());
  REQUIRE_THROWS_WITH(vgg->freeze("vgg16/conv9_1/"), Catch::Contains("no parameter") && Catch::Contains("vgg16/conv1_1/weight"));
}

TEST_CASE("requires_grad set on a parameter by hand, against its module's flag, is refused where the flag is read",
          "[layers][frozen][errors]") {
  Generator init(2), drop(3);
  auto vgg = make_vgg(VggOptions{11, 3, 0.5f, 32}, init, drop);
  vgg->find("vgg11/fc8/bias").tensor->set_requires_grad(false);  // torch's way to freeze, not kiln's
  // (Catch's combined matchers hold their parts by reference: built inline, not kept in a variable.)
  REQUIRE_THROWS_WITH(vgg->trainable_parameters(),
                      Catch::Contains("parameter 'vgg11/fc8/bias': its tensor's requires_grad is off but its "
                                      "module has it trainable") &&
                          Catch::Contains("model.freeze(\"vgg11/fc8/bias\")"));
  REQUIRE_THROWS_WITH(vgg->summary(), Catch::Contains("its tensor's requires_grad is off"));
  CHECK(vgg->freeze("vgg11/fc8/bias") == 1);  // through the module: both agree again
  CHECK(vgg->trainable_parameters().size() == 21);
  vgg->find("vgg11/conv1_1/weight").tensor->set_requires_grad(true);  // and the other way
  vgg->freeze("vgg11/conv1_1/");
  vgg->find("vgg11/conv1_1/weight").tensor->set_requires_grad(true);
  REQUIRE_THROWS_WITH(vgg->trainable_parameters(), Catch::Contains("requires_grad is on but its module has it frozen"));
}

TEST_CASE("the frozen prefix of a VGG costs one forward pass: nodes only for what trains", "[layers][frozen]") {
  Generator init(4), drop(5);
  auto vgg = make_vgg(VggOptions{11, 3, 0.5f, 32}, init, drop);
  vgg->freeze("vgg11/");
  vgg->unfreeze("vgg11/fc8/");
  Tensor x = Tensor::normal(Shape{2, 32, 32, 3}, 0, 1, init);
  const AutogradStats before = autograd_stats();
  Tensor logits = vgg->forward(x);
  const AutogradStats after = autograd_stats();
  CHECK(after.nodes_alive - before.nodes_alive == 1);  // fc8's linear only
  Tensor loss = softmax_cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0, 2}, Shape{2}));
  loss.backward();
  CHECK(vgg->find("vgg11/fc8/weight").tensor->grad().defined());
  CHECK_FALSE(vgg->find("vgg11/fc7/weight").tensor->grad().defined());
}

TEST_CASE("VGG11/13/16/19 have the published layer counts and parameter totals", "[layers][vgg]") {
  // Totals for 1000 classes at 224x224 (torchvision's counts): 132.9M, 133.0M, 138.4M, 143.7M.
  const std::pair<int, int64_t> expected[] = {{11, 132863336}, {13, 133047848}, {16, 138357544}, {19, 143667240}};
  for (auto [depth, total] : expected) {
    const std::vector<std::string> names = vgg_layer_names(depth);
    CHECK(static_cast<int>(names.size()) == depth);
    // Counted from shapes without allocating 0.5 GB per model.
    int64_t n = 0, in = 3;
    const int64_t ch[5] = {64, 128, 256, 512, 512};
    int block = 0;
    for (const std::string& l : names) {
      if (l.rfind("conv", 0) == 0) {
        block = l[4] - '1';
        n += ch[block] * 9 * in + ch[block];
        in = ch[block];
      }
    }
    n += 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000;
    CHECK(n == total);
  }
  Generator init(6), drop(7);
  auto small = make_vgg(VggOptions{16, 8, 0.5f, 32}, init, drop);
  CHECK(small->find("vgg16/fc6/weight").tensor->shape() == Shape{4096, 512});
  CHECK(small->find("vgg16/fc8/weight").tensor->shape() == Shape{8, 4096});
  REQUIRE_THROWS_WITH(make_vgg(VggOptions{15}, init, drop), Catch::Contains("depth"));
}

TEST_CASE("dropout layers follow train and eval mode", "[layers]") {
  Generator init(8), drop(9);
  Sequential net("net");
  net.add(std::make_shared<Dropout>("drop", 0.5f, drop));
  Tensor x = Tensor::ones(Shape{1000});
  CHECK(net.training());
  const std::vector<float> t = net(x).to_vector<float>();
  int zeros = 0;
  for (float v : t) zeros += v == 0.0f;
  CHECK(zeros > 400);
  CHECK(zeros < 600);
  net.eval();
  CHECK(net(x).to_vector<float>() == x.to_vector<float>());
}

TEST_CASE("a dropout layer whose generator was destroyed refuses to draw, and evaluates", "[layers][errors]") {
  // The README's net built inside a function with its Generator local: the layer outlived it
  // and drew masks from freed memory (garbage in Release, an abort under ASan).
  Sequential net("net");
  {
    Generator drop(9);
    net.add(std::make_shared<Dropout>("drop", 0.5f, drop));
  }
  const Tensor x = Tensor::ones(Shape{8});
  REQUIRE_THROWS_WITH(net(x), Catch::Contains("Dropout drop: the Generator it was made with has been destroyed"));
  net.eval();
  CHECK(net(x).to_vector<float>() == x.to_vector<float>());  // nothing drawn: no generator needed
}

TEST_CASE("VGG starts as torchvision initialises it, and a from-scratch net passes signal to fc8", "[layers][init]") {
  Generator init(3), drop(4);
  auto net = make_vgg(VggOptions{16, 10, 0.5f, 64}, init, drop);
  const auto stddev = [](const Tensor& t) {
    const std::vector<float> v = t.to_vector<float>();
    double s = 0, s2 = 0;
    for (float x : v) s += x, s2 += static_cast<double>(x) * x;
    const double n = static_cast<double>(v.size()), mean = s / n;
    return std::sqrt(s2 / n - mean * mean);
  };
  // Convs: Kaiming-normal fan-out, sqrt(2 / (out * 3 * 3)); linear layers: N(0, 0.01).
  CHECK(stddev(*net->find("vgg16/conv1_1/weight").tensor) == Approx(std::sqrt(2.0 / (64 * 9))).epsilon(0.05));
  CHECK(stddev(*net->find("vgg16/conv5_3/weight").tensor) == Approx(std::sqrt(2.0 / (512 * 9))).epsilon(0.01));
  CHECK(stddev(*net->find("vgg16/fc6/weight").tensor) == Approx(0.01).epsilon(0.01));
  CHECK(stddev(*net->find("vgg16/fc8/weight").tensor) == Approx(0.01).epsilon(0.05));
  CHECK(net->find("vgg16/fc8/bias").tensor->to_vector<float>() == std::vector<float>(10, 0.0f));
  // Under Xavier the signal halves per ReLU layer and the logits come out near-constant
  // (the loss sat at ln(C)); here different images give clearly different logits. Measured
  // with this seed: 1.2e-3 as built, 1.2e-4 with Xavier everywhere.
  net->eval();
  NoGradGuard no_grad;
  Generator data(5);
  const Tensor logits = (*net)(Tensor::uniform(Shape{4, 64, 64, 3}, -1.0f, 1.0f, data));
  const std::vector<float> l = logits.to_vector<float>();
  double spread = 0;
  for (int c = 0; c < 10; ++c) spread += std::fabs(l[c] - l[10 + c]);
  CHECK(spread / 10 > 4e-4);
}

TEST_CASE("a model built under init::SkipDraws draws nothing and leaves the generator where drawing would",
          "[layers][init]") {
  // For a model whose every weight a checkpoint then sets: zeros, and what is drawn after it
  // (another model, dropout's masks from its own generator) as if it had drawn.
  Generator a(3), b(3), drop_a(4), drop_b(4);
  auto drawn = make_vgg(VggOptions{11, 10, 0.5f, 32}, a, drop_a);
  std::shared_ptr<Sequential> skipped;
  {
    const init::SkipDraws skip;
    skipped = make_vgg(VggOptions{11, 10, 0.5f, 32}, b, drop_b);
  }
  CHECK(a.state().offset == b.state().offset);
  CHECK(a.state().offset > 0);
  for (const ParameterRef& p : skipped->parameters()) {
    INFO(p.name);
    const std::vector<float> v = p.tensor->to_vector<float>();
    CHECK(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; }));
  }
  // Out of its scope the draws are back: the next models are equal, and random.
  auto next_a = make_vgg(VggOptions{11, 10, 0.5f, 32}, a, drop_a);
  auto next_b = make_vgg(VggOptions{11, 10, 0.5f, 32}, b, drop_b);
  const std::vector<float> wa = next_a->find("vgg11/conv1_1/weight").tensor->to_vector<float>();
  CHECK(wa == next_b->find("vgg11/conv1_1/weight").tensor->to_vector<float>());
  CHECK(wa != drawn->find("vgg11/conv1_1/weight").tensor->to_vector<float>());
}

TEST_CASE("a model built under init::DeferredDraws gets the eager model's values for every tensor not written since",
          "[layers][init]") {
  // As `vgg_finetune train --weights` builds: what the file has is written (copy_from), the
  // rest drawn afterwards, from the offsets the build reserved. The generator ends where the
  // eager build left it, and what is drawn after the build (before draw_untouched) is the same.
  Generator a(6), b(6), drop_a(7), drop_b(7);
  auto eager = make_vgg(VggOptions{11, 10, 0.5f, 32}, a, drop_a);
  const Tensor after_a = Tensor::normal(Shape{5}, 0.0f, 1.0f, a);
  init::DeferredDraws deferred;
  auto lazy = make_vgg(VggOptions{11, 10, 0.5f, 32}, b, drop_b);
  deferred.stop();
  CHECK(a.state().offset > b.state().offset);  // a drew after_a
  const Tensor after_b = Tensor::normal(Shape{5}, 0.0f, 1.0f, b);  // drawn at once: recording stopped
  CHECK(after_b.to_vector<float>() == after_a.to_vector<float>());
  CHECK(a.state().offset == b.state().offset);
  Tensor& loaded = *lazy->find("vgg11/conv2_1/weight").tensor;
  loaded.copy_from(Tensor::full(loaded.shape(), 0.25f));  // "from the file"
  int64_t expected = 0;
  for (const ParameterRef& p : lazy->parameters())
    if (p.name != "vgg11/conv2_1/weight" && p.name.find("/bias") == std::string::npos) expected += p.tensor->numel();
  CHECK(deferred.draw_untouched() == expected);  // biases start at zero: nothing to draw
  for (const ParameterRef& p : lazy->parameters()) {
    INFO(p.name);
    const std::vector<float> v = p.tensor->to_vector<float>();
    if (p.name == "vgg11/conv2_1/weight") CHECK(v == std::vector<float>(v.size(), 0.25f));
    else CHECK(v == eager->find(p.name).tensor->to_vector<float>());
  }
  CHECK(deferred.draw_untouched() == 0);  // once
}

TEST_CASE("each random initialiser deferred draws the eager values, and DeferredDraws refuses to nest",
          "[layers][init]") {
  const Shape conv{8, 3, 3, 5}, fc{7, 9};
  const auto draw_all = [&](Generator& g) {
    return std::vector<Tensor>{init::xavier_uniform(conv, g), init::kaiming_normal(conv, g),
                               init::kaiming_normal_fan_out(fc, g), init::normal(fc, 0.01f, g)};
  };
  Generator a(9), b(9);
  const std::vector<Tensor> eager = draw_all(a);
  std::vector<Tensor> lazy;
  {
    init::DeferredDraws deferred;
    lazy = draw_all(b);
    CHECK_THROWS_WITH(init::DeferredDraws(), Catch::Contains("already recording"));
    CHECK(deferred.draw_untouched() == 2 * conv.numel() + 2 * fc.numel());
  }
  for (size_t i = 0; i < eager.size(); ++i) CHECK(lazy[i].to_vector<float>() == eager[i].to_vector<float>());
  const init::SkipDraws skip;
  CHECK_THROWS_WITH(init::DeferredDraws(), Catch::Contains("record nothing"));
}

TEST_CASE("ResNet-50 built under init::DeferredDraws and drawn afterwards equals its eager build", "[layers][init]") {
  // Every initialiser the model uses (He normal fan-out convolutions, the head's normal)
  // returns the very tensor the layer keeps: a draw into a copy would never reach the model.
  Generator a(8), b(8);
  auto eager = make_resnet50(ResNetOptions{ResNetVariant::v1_5, 10, 64}, a);
  init::DeferredDraws deferred;
  auto lazy = make_resnet50(ResNetOptions{ResNetVariant::v1_5, 10, 64}, b);
  CHECK(a.state().offset == b.state().offset);
  CHECK(deferred.draw_untouched() > 20'000'000);
  for (const ParameterRef& p : lazy->parameters()) {
    INFO(p.name);
    CHECK(p.tensor->to_vector<float>() == eager->find(p.name).tensor->to_vector<float>());
  }
}

TEST_CASE("an op's error inside a model names the layer, as a path from the model", "[module][errors]") {
  Generator g(3);
  auto inner = std::make_shared<Sequential>("block");
  inner->add(std::make_shared<Linear>("fc", 4, 2, true, g));
  Sequential net("net");
  net.add(std::make_shared<Linear>("first", 4, 4, true, g));
  net.add(inner);
  CHECK(net(Tensor::zeros(Shape{2, 4})).shape() == Shape{2, 2});
  REQUIRE_THROWS_WITH(net(Tensor::zeros(Shape{2, 5})),
                      Catch::StartsWith("in layer 'net/first': linear: input x [2, 5] has 5 features"));
  auto wrong = std::make_shared<Sequential>("block2");
  wrong->add(std::make_shared<Linear>("fc", 3, 2, true, g));
  net.add(wrong);
  REQUIRE_THROWS_WITH(net(Tensor::zeros(Shape{2, 4})), Catch::StartsWith("in layer 'net/block2/fc': linear"));
}

namespace {

// An op whose backward fails, to see how backward reports an error it did not word itself.
struct FailingNode : Node {
  FailingNode() : Node("failing") {}
  std::vector<Tensor> apply(const Tensor&) override { KILN_CHECK(false, "boom"); }
};

// A layer whose output's backward fails.
struct FailingLayer : Module {
  FailingLayer() : Module("faulty") {}
  Tensor forward(const Tensor& x) override {
    Tensor y = x.detach().clone();
    auto node = std::make_shared<FailingNode>();
    node->next.push_back(autograd::edge_for(x));
    autograd::set_history(y, node);
    return y;
  }
};

// A layer whose forward runs a backward of its own (a gradient penalty's way) through `inner`.
struct BackwardInside : Module {
  explicit BackwardInside(std::shared_ptr<Sequential> inner) : Module("probe"), inner_(register_module(inner)) {}
  Tensor forward(const Tensor& x) override {
    sum(inner_->forward(x)).backward();
    return x;
  }
  std::shared_ptr<Sequential> inner_;
};

}  // namespace

TEST_CASE("an error in backward names the op and, inside a model, the layer, as forward's do", "[module][errors]") {
  Generator g(3);
  Sequential net("net");
  net.add(std::make_shared<Linear>("first", 4, 4, true, g));
  net.add(std::make_shared<ReLU>("relu"));
  auto block = std::make_shared<Sequential>("block");
  block->add(std::make_shared<Linear>("fc", 4, 2, true, g));
  net.add(block);
  const Tensor x = Tensor::ones(Shape{2, 4});
  Tensor* fc_weight = net.find("net/block/fc/weight").tensor;
  REQUIRE(fc_weight != nullptr);

  // The weight fc saved changes before backward: its node was recorded inside net/block/fc.
  Tensor loss = sum(net(x));
  fc_weight->copy_from(fc_weight->clone());
  REQUIRE_THROWS_WITH(loss.backward(), Catch::StartsWith("in layer 'net/block/fc': backward of linear: a tensor it "
                                                         "saved"));
  // The same op outside a model names the op alone: the scopes closed with the forward.
  Tensor w = fc_weight->detach().clone();
  w.set_requires_grad(true);
  Tensor input = x.clone();
  Tensor plain = sum(linear(input, w, Tensor()));
  input.copy_from(x);
  REQUIRE_THROWS_WITH(plain.backward(), Catch::StartsWith("backward of linear: a tensor it saved"));

  // A graph walked twice names the layer of the first freed node it meets.
  Tensor y = net(x);
  y.backward(Tensor::ones(y.shape()));
  REQUIRE_THROWS_WITH(y.backward(Tensor::ones(y.shape())),
                      Catch::Contains("(op linear in layer 'net/block/fc')"));

  // An error the op did not word itself gets the op's name and the layer's path.
  net.add(std::make_shared<FailingLayer>());
  Tensor failing = sum(net(x));
  REQUIRE_THROWS_WITH(failing.backward(), Catch::StartsWith("in layer 'net/faulty': backward of failing: boom"));

  // A backward inside a forward fails: its path is whole, not prefixed again on the way out.
  auto teacher = std::make_shared<Sequential>("teacher");
  teacher->add(std::make_shared<FailingLayer>());
  Sequential outer("outer");
  outer.add(std::make_shared<BackwardInside>(teacher));
  Tensor leaf = x.clone();
  leaf.set_requires_grad(true);
  REQUIRE_THROWS_WITH(outer(leaf),
                      Catch::StartsWith("in layer 'outer/probe/teacher/faulty': backward of failing: boom"));
}

TEST_CASE("a conv, ReLU and max-pool run fused still name the failing layer", "[module][errors]") {
  // Sequential runs conv + ReLU + pool as one op; an error must still name the layer the
  // user wrote: the pool whose window does not fit, or the conv whose input is wrong.
  Generator g(4);
  Sequential net("net");
  net.add(std::make_shared<Conv2d>("conv", 3, 4, 3, Conv2dParams{1, 1, 1, 1}, true, g));
  net.add(std::make_shared<ReLU>("relu"));
  net.add(std::make_shared<MaxPool2d>("pool", Pool2dParams{2, 2, 2, 2, 0, 0}));
  for (const bool grad : {false, true}) {
    INFO("recording: " << grad);
    std::optional<NoGradGuard> off;
    if (!grad) off.emplace();
    CHECK(net(Tensor::zeros(Shape{1, 4, 4, 3})).shape() == Shape{1, 2, 2, 4});
    REQUIRE_THROWS_WITH(net(Tensor::zeros(Shape{1, 1, 1, 3})), Catch::StartsWith("in layer 'net/pool': max_pool2d"));
    REQUIRE_THROWS_WITH(net(Tensor::zeros(Shape{1, 4, 4, 5})), Catch::StartsWith("in layer 'net/conv': conv2d"));
  }
}

TEST_CASE("layers built without a generator draw from the default one, as torch's do", "[layers]") {
  manual_seed(21);
  Linear fc("fc", 4, 3);
  Conv2d conv("conv", 3, 2, 3);
  Generator g(21);
  Linear fc_given("fc", 4, 3, true, g);
  Conv2d conv_given("conv", 3, 2, 3, Conv2dParams{}, true, g);
  CHECK(fc.weight().to_vector<float>() == fc_given.weight().to_vector<float>());
  CHECK(conv.weight().to_vector<float>() == conv_given.weight().to_vector<float>());
  CHECK(fc.has_bias());
}

TEST_CASE("layers and optimizers refuse bad geometry and hyper-parameters when made and name the layer",
          "[module][errors]") {
  // Found by review: Conv2d(stride=0) and MaxPool2d(kernel=0) were refused only at the first
  // forward, and SGD(momentum=2) not at all (a trainer's Phase refuses it).
  Generator g(1);
  CHECK_THROWS_WITH(Conv2d("c1", 3, 4, 3, Conv2dParams{0, 0, 1, 1}, true, g),
                    Catch::Contains("Conv2d c1: stride must be in [1, 2147483647], got 0x0"));
  CHECK_THROWS_WITH(Conv2d("c2", 3, 4, 3, Conv2dParams{1, 1, -1, -1}, true, g),
                    Catch::Contains("padding must be in [0, 2147483647]"));
  CHECK_THROWS_WITH(MaxPool2d("p", Pool2dParams{0, 0, 1, 1, 0, 0}),
                    Catch::Contains("MaxPool2d p: kernel must be in [1, "));
  // Found by audit: a stride of 2^40 reached oneDNN, which failed as "status 2" naming no argument.
  const int64_t huge = int64_t{1} << 40;
  CHECK_THROWS_WITH(Conv2d("c3", 3, 4, 3, Conv2dParams{huge, 1, 0, 0}, true, g),
                    Catch::Contains("Conv2d c3: stride must be in [1, 2147483647], got 1099511627776x1"));
  CHECK_THROWS_WITH(Conv2d("c4", 3, 4, huge, Conv2dParams{}, true, g), Catch::Contains("Conv2d c4: kernel must be in"));
  CHECK_THROWS_WITH(MaxPool2d("q", Pool2dParams{2, 2, huge, huge, 0, 0}),
                    Catch::Contains("MaxPool2d q: stride must be"));
  CHECK_THROWS_WITH(conv2d(Tensor::ones(Shape{1, 4, 4, 1}), Tensor::ones(Shape{1, 1, 1, 1}), Tensor(),
                           Conv2dParams{1, 1, huge / 1024, 0}),
                    Catch::Contains("conv2d: padding 1073741824x0 makes an output of 2147483652x4"));
  Linear l("l", 2, 2, true, g);
  CHECK_THROWS_WITH(SGD(l, SgdOptions{.lr = 0.1f, .momentum = 2.0f}), Catch::Contains("momentum must be in [0, 1)"));
  CHECK_NOTHROW(SGD(l, SgdOptions{.lr = 0.1f, .momentum = 0.9f}));
}
