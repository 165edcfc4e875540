// kiln_bench --suite sgd: one multi-tensor optimizer step over VGG16's 32 parameter tensors
// (138M floats), with every parameter trainable and with conv1_1..fc7 frozen (fc8 only, as a
// fine-tuning run): SGD (momentum 0.9, weight decay 5e-4, PyTorch's convention) and Adam
// (PyTorch's defaults, weight decay 5e-4). Memory-bound: 20 bytes per trainable element for
// SGD (param, grad, momentum in; param, momentum out), 28 for Adam (param, grad, two moments
// in; param and moments out); judged against the measured copy bandwidth.
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

// One parameter's arrays: param, grad, then the optimizer's state (SGD's momentum, or Adam's
// two moments).
using ParamArrays = std::vector<Tensor>;

// Element `index` of every array of parameter `tensor`, before a step.
struct Sample {
  size_t tensor;
  int64_t index;
  std::vector<float> before;
};

// About 4096 samples of each parameter, both ends included.
std::vector<Sample> take_samples(const std::vector<ParamArrays>& params) {
  std::vector<Sample> samples;
  for (size_t t = 0; t < params.size(); ++t) {
    std::vector<Tensor> host(params[t].size());  // host views (copies when the tensors live on a GPU)
    std::vector<const float*> ptr;
    for (size_t a = 0; a < params[t].size(); ++a) ptr.push_back(host_floats(params[t][a], host[a]));
    const int64_t ne = params[t][0].numel(), stride = std::max<int64_t>(1, ne / 4096);
    const auto take = [&](int64_t i) {
      Sample s{t, i, {}};
      for (const float* p : ptr) s.before.push_back(p[i]);
      samples.push_back(std::move(s));
    };
    for (int64_t i = 0; i < ne; i += stride) take(i);
    take(ne - 1);
  }
  return samples;
}

// Checks one step against `want` (the updated param and state of a sample, in double, from
// its values before): trained parameters within a few float32 roundings, held tighter than
// the op table's elementwise class (a wrong lr or moment moves an element by far less than
// 1e-5 of it), frozen ones (below first_given) bit for bit unchanged.
void check_step(Row& r, const std::vector<ParamArrays>& params, const std::vector<Sample>& samples,
                size_t first_given, const std::function<std::vector<double>(const std::vector<float>&)>& want) {
  constexpr double kRtolUpdate = 1e-6;
  std::vector<std::vector<Tensor>> after(params.size());
  for (size_t t = 0; t < params.size(); ++t)
    for (size_t a = 0; a < params[t].size(); ++a) after[t].push_back(a == 1 ? Tensor() : params[t][a].cpu());
  std::vector<double> frozen_got, frozen_want;
  std::vector<std::vector<double>> got(params[0].size()), ref(params[0].size());
  for (const Sample& s : samples) {
    const std::vector<double> w = s.tensor < first_given ? std::vector<double>() : want(s.before);
    for (size_t a = 0; a < s.before.size(); ++a) {
      if (a == 1) continue;  // the gradient is read, not written
      const double out = after[s.tensor][a].data<float>()[s.index];
      if (s.tensor < first_given) {
        frozen_got.push_back(out);
        frozen_want.push_back(s.before[a]);
        continue;
      }
      got[a].push_back(out);
      ref[a].push_back(w[a == 0 ? 0 : a - 1]);
    }
  }
  for (size_t a = 0; a < got.size(); ++a)
    if (a != 1) check_row(r, got[a], ref[a], kRtolUpdate, a == 0 ? "params" : "state " + std::to_string(a - 1));
  if (!frozen_got.empty()) check_row(r, frozen_got, frozen_want, 0, "frozen");
}

// The rows of one optimizer: all parameters and fc8 alone, each as one multi-tensor call and
// as one call per tensor (@per_tensor: what an optimizer without multi-tensor kernels does;
// on a GPU, one launch each). update(first, per_tensor) steps params[first..].
void optimizer_rows(const std::string& name, std::vector<ParamArrays>& params, double flops_per, double bytes_per,
                    const std::function<void(size_t, bool)>& update,
                    const std::function<std::vector<double>(const std::vector<float>&)>& want, const Options& opt,
                    const MachineLimits& m, SuiteResult& res) {
  for (const bool frozen : {false, true}) {
    // fc8 is the last weight and bias; with frozen, everything before it is frozen, and the
    // update is given fc8 alone (as kiln's optimizers leave frozen parameters out).
    const size_t first_given = frozen ? params.size() - 2 : 0;
    double elements = 0;
    for (size_t t = first_given; t < params.size(); ++t) elements += static_cast<double>(params[t][0].numel());
    for (const bool per_tensor : {false, true}) {
      const std::vector<Sample> samples = take_samples(params);
      update(first_given, per_tensor);
      Row r;
      r.name = name + (frozen ? "/fc8_only" : "/all") + (per_tensor ? "@per_tensor" : "");
      r.kind = "sgd";
      r.shape = "VGG16 " + std::to_string(params.size()) + " tensors, " +
                (frozen ? std::to_string(params.size() - 2) + " frozen"
                        : std::to_string(static_cast<int64_t>(elements / 1e6)) + "M floats");
      r.flops = flops_per * elements;
      r.bytes = bytes_per * elements;
      check_step(r, params, samples, first_given, want);
      time_checked_row(std::move(r), opt, m, res, [&] { update(first_given, per_tensor); });
    }
  }
}

// VGG16's parameters with `state` optimizer arrays each, on the bench device.
std::vector<ParamArrays> make_params(int state, const Options& opt) {
  kiln::Generator gen(31337);
  std::vector<ParamArrays> params;
  for (const Shape& s : vgg16_param_shapes()) {
    ParamArrays p{to_bench_device(Tensor::uniform(s, -0.1f, 0.1f, gen), opt),
                  to_bench_device(Tensor::uniform(s, -0.01f, 0.01f, gen), opt)};
    for (int i = 0; i < state; ++i)  // SGD's momentum, Adam's first moment: signed; Adam's second: not
      p.push_back(to_bench_device(Tensor::uniform(s, i == 1 ? 0.0f : -0.01f, i == 1 ? 1e-4f : 0.01f, gen), opt));
    params.push_back(std::move(p));
  }
  return params;
}

}  // namespace

SuiteResult run_sgd(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(24, 34);
  print_table_header();
  {
    std::vector<ParamArrays> params = make_params(1, opt);
    kiln::SgdOptions so;
    so.lr = 0.01f;
    so.momentum = 0.9f;
    so.weight_decay = 5e-4f;
    std::vector<kiln::SgdParamRef> refs;
    for (ParamArrays& p : params) refs.push_back({p[0], p[1], p[2]});
    const auto update = [&](size_t first, bool per_tensor) {
      const std::span<kiln::SgdParamRef> given = std::span<kiln::SgdParamRef>(refs).subspan(first);
      if (!per_tensor) return kiln::sgd_update(given, so);
      for (kiln::SgdParamRef& p : given) kiln::sgd_update(std::span<kiln::SgdParamRef>(&p, 1), so);
    };
    const auto want = [&](const std::vector<float>& b) {  // b: param, grad, momentum
      const double g = static_cast<double>(b[1]) + static_cast<double>(so.weight_decay) * b[0];
      const double v = static_cast<double>(so.momentum) * b[2] + g;
      return std::vector<double>{static_cast<double>(b[0]) - static_cast<double>(so.lr) * v, v};
    };
    optimizer_rows("sgd", params, 6.0, 20.0, update, want, opt, m, res);
  }
  {
    std::vector<ParamArrays> params = make_params(2, opt);
    kiln::AdamOptions ao;
    ao.weight_decay = 5e-4f;
    constexpr int64_t kStep = 10;  // every timed step repeats step 10's bias correction
    std::vector<kiln::AdamParamRef> refs;
    for (ParamArrays& p : params) refs.push_back({p[0], p[1], p[2], p[3]});
    const auto update = [&](size_t first, bool per_tensor) {
      const std::span<kiln::AdamParamRef> given = std::span<kiln::AdamParamRef>(refs).subspan(first);
      if (!per_tensor) return kiln::adam_update(given, ao, kStep);
      for (kiln::AdamParamRef& p : given) kiln::adam_update(std::span<kiln::AdamParamRef>(&p, 1), ao, kStep);
    };
    const auto want = [&](const std::vector<float>& b) {  // b: param, grad, first and second moments
      const double b1 = ao.beta1, b2 = ao.beta2;
      const double g = static_cast<double>(b[1]) + static_cast<double>(ao.weight_decay) * b[0];
      const double m1 = b1 * b[2] + (1 - b1) * g, m2 = b2 * b[3] + (1 - b2) * g * g;
      const double bc1 = 1 - std::pow(b1, kStep), bc2 = 1 - std::pow(b2, kStep);
      const double step = static_cast<double>(ao.lr) / bc1 * m1 / (std::sqrt(m2) / std::sqrt(bc2) + ao.eps);
      return std::vector<double>{static_cast<double>(b[0]) - step, m1, m2};
    };
    // Per element: weight decay 2, moments 6, the step's square root, divisions and update 6.
    optimizer_rows("adam", params, 14.0, 28.0, update, want, opt, m, res);
  }
  return res;
}

}  // namespace kiln::bench
