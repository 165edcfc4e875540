// kiln_bench --suite sgd: one multi-tensor SGD step (momentum 0.9, weight decay 5e-4,
// PyTorch's convention) over VGG16's 32 parameter tensors (138M floats), with every
// parameter trainable and with conv1_1..fc7 frozen (fc8 only, as a fine-tuning run).
// Memory-bound: 20 bytes per trainable element (param, grad, momentum in; param, momentum
// out); judged against the measured copy bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/ops.h"

namespace kiln::bench {

namespace {

// VGG16's parameter shapes in its plan's order: 13 conv weights (OHWI) and biases, 3 fc
// weights and biases.
std::vector<Shape> vgg16_param_shapes() {
  std::vector<Shape> shapes;
  for (const kiln::LayerPlan& l : vgg16_plan()) {
    if (l.kind == kiln::LayerPlan::Kind::pool) continue;
    const int64_t o = l.out_channels, c = l.in_channels;
    shapes.push_back(l.kind == kiln::LayerPlan::Kind::conv ? Shape{o, l.kernel, l.kernel, c} : Shape{o, c});
    shapes.push_back(Shape{o});
  }
  return shapes;
}

}  // namespace

SuiteResult run_sgd(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(24, 34);
  print_table_header();
  const std::vector<Shape> shapes = vgg16_param_shapes();
  kiln::Generator gen(31337);
  std::vector<kiln::SgdParamRef> params;
  for (const Shape& s : shapes) {
    kiln::SgdParamRef p;
    p.param = to_bench_device(Tensor::uniform(s, -0.1f, 0.1f, gen), opt);
    p.grad = to_bench_device(Tensor::uniform(s, -0.01f, 0.01f, gen), opt);
    p.momentum_buf = to_bench_device(Tensor::uniform(s, -0.01f, 0.01f, gen), opt);
    params.push_back(p);
  }
  kiln::SgdOptions so;
  so.lr = 0.01f;
  so.momentum = 0.9f;
  so.weight_decay = 5e-4f;

  for (const bool frozen : {false, true}) {
    // fc8 is the last weight and bias; with frozen, everything before it is frozen, and the
    // update is given fc8 alone (as kiln's optimizers leave frozen parameters out).
    const std::span<kiln::SgdParamRef> given =
        frozen ? std::span<kiln::SgdParamRef>(params).last(2) : std::span<kiln::SgdParamRef>(params);
    const size_t first_given = params.size() - given.size();
    double elements = 0;
    for (const kiln::SgdParamRef& p : given) elements += static_cast<double>(p.param.numel());
    // The variant: one call per tensor (what an optimizer without multi-tensor kernels
    // does; on a GPU, one launch each) against kiln's one call for the whole list.
    const auto multi = [&] { kiln::sgd_update(given, so); };
    const auto per_tensor = [&] {
      for (kiln::SgdParamRef& p : given) kiln::sgd_update(std::span<kiln::SgdParamRef>(&p, 1), so);
    };
    for (const bool variant : {false, true}) {
      const std::function<void()> update = variant ? std::function<void()>(per_tensor) : std::function<void()>(multi);
      // Samples of each tensor before one step: about 4096 per tensor, both ends included.
      struct Sample {
        size_t tensor;
        int64_t index;
        float p, g, v;
      };
      std::vector<Sample> samples;
      for (size_t t = 0; t < params.size(); ++t) {
        Tensor pk, gk, vk;  // host views (copies when the tensors live on a GPU)
        const float* pp = host_floats(params[t].param, pk);
        const float* gp = host_floats(params[t].grad, gk);
        const float* vp = host_floats(params[t].momentum_buf, vk);
        const int64_t ne = params[t].param.numel(), stride = std::max<int64_t>(1, ne / 4096);
        for (int64_t i = 0; i < ne; i += stride) samples.push_back({t, i, pp[i], gp[i], vp[i]});
        samples.push_back({t, ne - 1, pp[ne - 1], gp[ne - 1], vp[ne - 1]});
      }
      update();
      // Frozen tensors: bit for bit unchanged. Trained ones: a few float32 roundings per
      // element, held tighter than the op table's elementwise class (a wrong lr or momentum
      // moves an element by far less than 1e-5 of it).
      constexpr double kRtolUpdate = 1e-6;
      std::vector<double> frozen_got, frozen_want, p_got, p_want, v_got, v_want;
      std::vector<Tensor> p_after, v_after;
      for (const kiln::SgdParamRef& p : params) {
        p_after.push_back(p.param.cpu());
        v_after.push_back(p.momentum_buf.cpu());
      }
      for (const Sample& s : samples) {
        const float p_out = p_after[s.tensor].data<float>()[s.index];
        const float v_out = v_after[s.tensor].data<float>()[s.index];
        if (s.tensor < first_given) {
          frozen_got.insert(frozen_got.end(), {p_out, v_out});
          frozen_want.insert(frozen_want.end(), {s.p, s.v});
          continue;
        }
        const double g = static_cast<double>(s.g) + static_cast<double>(so.weight_decay) * s.p;
        const double v = static_cast<double>(so.momentum) * s.v + g;
        v_got.push_back(v_out);
        v_want.push_back(v);
        p_got.push_back(p_out);
        p_want.push_back(static_cast<double>(s.p) - static_cast<double>(so.lr) * v);
      }
      Row r;
      r.name = std::string(frozen ? "sgd/fc8_only" : "sgd/all") + (variant ? "@per_tensor" : "");
      r.kind = "sgd";
      r.shape = "VGG16 " + std::to_string(params.size()) + " tensors, " +
                (frozen ? std::to_string(params.size() - 2) + " frozen"
                        : std::to_string(static_cast<int64_t>(elements / 1e6)) + "M floats");
      r.flops = 6.0 * elements;
      r.bytes = 20.0 * elements;
      check_row(r, p_got, p_want, kRtolUpdate, "params");
      check_row(r, v_got, v_want, kRtolUpdate, "momentum");
      if (!frozen_got.empty()) check_row(r, frozen_got, frozen_want, 0, "frozen");
      time_checked_row(std::move(r), opt, m, res, update);
    }
  }
  return res;
}

}  // namespace kiln::bench
