// The model spec registry (train/model_spec.h): each spec's plan, builder, scopes and
// weight-name maps agree with each other and with the published VGG layouts.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/kiln.h"
#include "train/model_spec.h"

using namespace kiln;

TEST_CASE("the registry holds VGG11/13/16/19 and ResNet-50 and names the known models on a miss", "[train][spec]") {
  std::vector<std::string> names;
  for (const ModelSpec& s : model_specs()) names.push_back(s.name);
  CHECK(names == std::vector<std::string>{"vgg11", "vgg13", "vgg16", "vgg19", "resnet50", "resnet50_v1"});
  CHECK(find_model_spec("vgg16").head_scope == "vgg16/fc8/");
  REQUIRE_THROWS_WITH(find_model_spec("resnet101"), Catch::Contains("resnet101") && Catch::Contains("vgg11, vgg13"));
  // A negative image size is refused (0 is the default), not taken as the default.
  Generator g(1);
  for (const char* name : {"vgg16", "resnet50"})
    REQUIRE_THROWS_WITH(find_model_spec(name).build(ModelOptions{10, -5}, g, g),
                        Catch::Contains(std::string(name) + ": image size -5 is negative (0 takes the default, 224)"));
}

TEST_CASE("ResNet-50's specs: root scope is the name, scopes freeze to head-only, torchvision keys map", "[train][spec][resnet]") {
  for (const char* name : {"resnet50", "resnet50_v1"}) {
    INFO(name);
    const ModelSpec& spec = find_model_spec(name);
    Generator init(1), drop(2);
    auto model = spec.build(ModelOptions{8, 64}, init, drop);
    CHECK(model->name() == spec.name);
    CHECK(spec.head_scope == spec.name + "/fc/");
    for (const std::string& scope : spec.backbone_scopes) model->freeze(scope);
    std::vector<std::string> trainable;
    for (const ParameterRef& p : model->trainable_parameters()) trainable.push_back(p.name);
    CHECK(trainable == std::vector<std::string>{spec.head_scope + "weight", spec.head_scope + "bias"});
    // Every parameter and buffer has a torchvision key that maps back to it.
    size_t mapped = 0;
    for (const auto& [layer, path] : spec.torchvision_layers)
      for (const char* what : {"weight", "bias", "running_mean", "running_var"})
        if (model->find(spec.name + "/" + layer + "/" + what).tensor) {
          CHECK(torchvision_to_kiln(spec, path + "." + what) == spec.name + "/" + layer + "/" + what);
          ++mapped;
        }
    CHECK(mapped == model->parameters().size());
    CHECK(torchvision_to_kiln(spec, "layer2.0.downsample.1.running_var") == spec.name + "/layer2/0/downsample/1/running_var");
    CHECK(torchvision_to_kiln(spec, "layer1.0.bn1.num_batches_tracked").empty());
    REQUIRE_THROWS_WITH(spec.build(ModelOptions{8, 64, 0.5f, "avg"}, init, drop), Catch::Contains("no head 'avg'"));
  }
}

TEST_CASE("VGG16's plan at 224x224: 13 convs, 5 pools, fc6 takes 7x7x512", "[train][spec]") {
  const ModelSpec& spec = find_model_spec("vgg16");
  const std::vector<LayerPlan> plan = spec.plan(ModelOptions{1000});
  REQUIRE(plan.size() == 21);
  int convs = 0, pools = 0;
  for (const LayerPlan& l : plan) {
    convs += l.kind == LayerPlan::Kind::conv;
    pools += l.kind == LayerPlan::Kind::pool;
  }
  CHECK(convs == 13);
  CHECK(pools == 5);
  CHECK(plan.front().name == "conv1_1");
  CHECK(plan.front().in_size == 224);
  CHECK(plan.front().in_channels == 3);
  CHECK(plan[17].name == "pool5");
  CHECK(plan[17].out_size == 7);
  CHECK(plan[18].name == "fc6");
  CHECK(plan[18].in_channels == 25088);
  CHECK(plan.back().out_channels == 1000);
  CHECK_FALSE(plan.back().relu);
  CHECK(spec.plan(ModelOptions{8, 64})[18].in_channels == 2048);
  REQUIRE_THROWS_WITH(spec.plan(ModelOptions{8, 100}), Catch::Contains("multiple of 32"));
}

TEST_CASE("a spec's builder makes exactly the parameters its plan lists", "[train][spec]") {
  for (const char* name : {"vgg11", "vgg16"}) {
    const ModelSpec& spec = find_model_spec(name);
    Generator init(1), drop(2);
    auto model = spec.build(ModelOptions{8, 32, 0.5f}, init, drop);
    size_t weighted = 0;
    for (const LayerPlan& l : spec.plan(ModelOptions{8, 32})) {
      if (l.kind == LayerPlan::Kind::pool) continue;
      ++weighted;
      const std::string scope = spec.name + "/" + l.name + "/";
      const Tensor* w = model->find(scope + "weight").tensor;
      REQUIRE(w != nullptr);
      const Shape want = l.kind == LayerPlan::Kind::conv ? Shape{l.out_channels, l.kernel, l.kernel, l.in_channels}
                                                         : Shape{l.out_channels, l.in_channels};
      CHECK(w->shape() == want);
      CHECK(model->find(scope + "bias").tensor->shape() == Shape{l.out_channels});
    }
    CHECK(model->parameters().size() == 2 * weighted);
    CHECK(spec.backbone_scopes.size() + 1 == weighted);
    // A head-only phase: the backbone scopes frozen, the head alone trains.
    for (const std::string& scope : spec.backbone_scopes) model->freeze(scope);
    std::vector<std::string> trainable;
    for (const ParameterRef& p : model->trainable_parameters()) trainable.push_back(p.name);
    CHECK(trainable == std::vector<std::string>{spec.head_scope + "weight", spec.head_scope + "bias"});
  }
}

TEST_CASE("Keras layer names map both ways and leave other names alone", "[train][spec][keras]") {
  const ModelSpec& spec = find_model_spec("vgg19");
  CHECK(spec.keras_to_kiln("block3_conv4") == "conv3_4");
  CHECK(spec.keras_to_kiln("fc1") == "fc6");
  CHECK(spec.keras_to_kiln("predictions") == "fc8");
  CHECK(spec.keras_to_kiln("block2_pool") == "pool2");
  CHECK(spec.kiln_to_keras("fc7") == "fc2");
  for (const LayerPlan& l : spec.plan(ModelOptions{1000})) {
    CHECK(spec.keras_to_kiln(l.keras) == l.name);
    CHECK(spec.kiln_to_keras(l.name) == l.keras);
  }
  // Names come from files: odd ones pass through unchanged, none throws.
  for (const std::string odd : {"", "block", "block_conv", "blockX_conv1", "block1_conv", "block123456789_conv1",
                                "block1_conv1x", "conv", "conv1_", "pool", "block_pool", "dense_3"}) {
    CHECK(spec.keras_to_kiln(odd) == odd);
    CHECK(spec.kiln_to_keras(odd) == odd);
  }
}

TEST_CASE("torchvision state_dict keys map onto kiln's parameter names", "[train][spec][torchvision]") {
  const ModelSpec& vgg16 = find_model_spec("vgg16");
  CHECK(torchvision_to_kiln(vgg16, "features.0.weight") == "vgg16/conv1_1/weight");
  CHECK(torchvision_to_kiln(vgg16, "features.5.bias") == "vgg16/conv2_1/bias");
  CHECK(torchvision_to_kiln(vgg16, "features.28.weight") == "vgg16/conv5_3/weight");
  CHECK(torchvision_to_kiln(vgg16, "classifier.0.weight") == "vgg16/fc6/weight");
  CHECK(torchvision_to_kiln(vgg16, "classifier.6.bias") == "vgg16/fc8/bias");
  CHECK(torchvision_to_kiln(vgg16, "features.1.weight").empty());  // a ReLU
  CHECK(torchvision_to_kiln(vgg16, "features.4.weight").empty());  // a pool
  CHECK(torchvision_to_kiln(vgg16, "nonsense").empty());
  CHECK(torchvision_to_kiln(find_model_spec("vgg11"), "features.3.weight") == "vgg11/conv2_1/weight");
  CHECK(vgg16.torchvision_layers.size() == 16);
}

TEST_CASE("plan_json carries the spec and one object per layer", "[train][spec]") {
  const std::string js = plan_json(find_model_spec("vgg13"), 64, 10);
  CHECK(js.find("\"model\": \"vgg13\"") != std::string::npos);
  CHECK(js.find("\"image_size\": 64") != std::string::npos);
  CHECK(js.find("\"head_scope\": \"vgg13/fc8/\"") != std::string::npos);
  size_t layers = 0;
  for (size_t at = js.find("{\"name\""); at != std::string::npos; at = js.find("{\"name\"", at + 1)) ++layers;
  CHECK(layers == 18);  // 10 convs, 5 pools, 3 fcs
  CHECK(js.find("\"torchvision\": \"classifier.6\"") != std::string::npos);
}

TEST_CASE("VGG heads: adaptive pooling keeps pretrained fc6's shape at any size, avg pools globally", "[model_spec]") {
  const ModelSpec& spec = find_model_spec("vgg16");
  const auto find = [](const std::vector<LayerPlan>& plan, const std::string& name) {
    for (const LayerPlan& l : plan)
      if (l.name == name) return l;
    return LayerPlan{};
  };
  // 64 px: pool5 is 2x2; pooled adaptively to 7x7, fc6 takes the published 25088 inputs.
  const std::vector<LayerPlan> pooled = spec.plan(ModelOptions{8, 64, 0.5f, "fc", true});
  CHECK(find(pooled, "pool5_7x7").kind == LayerPlan::Kind::adaptive_avg_pool);
  CHECK(find(pooled, "pool5_7x7").in_size == 2);
  CHECK(find(pooled, "fc6").in_channels == 512 * 7 * 7);
  // 224 px: pool5 is 7x7 already, no layer is added; without the option fc6 follows the size.
  CHECK(spec.plan(ModelOptions{8, 224, 0.5f, "fc", true}).size() == spec.plan(ModelOptions{8, 224}).size());
  CHECK(find(spec.plan(ModelOptions{8, 64}), "fc6").in_channels == 512 * 2 * 2);
  // avg: global pooling then fc8 alone, 512 -> classes, at any size.
  const std::vector<LayerPlan> avg = spec.plan(ModelOptions{8, 96, 0.5f, "avg"});
  CHECK(find(avg, "global_pool").out_size == 1);
  CHECK(find(avg, "fc6").name.empty());
  CHECK(find(avg, "fc8").in_channels == 512);
  REQUIRE_THROWS_WITH(spec.plan(ModelOptions{8, 96, 0.5f, "max"}), Catch::Contains("no head 'max'"));
  // Built, the pooled model's fc6 has the published shape and runs a 64 px batch.
  Generator init(1), drop(2);
  auto net = spec.build(ModelOptions{3, 64, 0.5f, "avg"}, init, drop);
  CHECK(net->parameter_scopes().back() == spec.head_scope);
  CHECK(net->parameter_scopes().size() == 14);  // 13 convs and fc8
  net->eval();
  NoGradGuard no_grad;
  CHECK((*net)(Tensor::zeros(Shape{2, 64, 64, 3})).shape() == Shape{2, 3});
}
