// kiln_bench --suite step: whole training steps as vgg_finetune runs them -- the model
// from its spec (--model, VGG16 by default; 8 classes), kiln::SGD (momentum 0.9), softmax
// cross-entropy -- at --batch, on the bench device (--device cuda: the model moved there,
// as the app does): inference, a phase-1 step (the backbone frozen, the head trained: fc8,
// or ResNet-50's fc with its batch norms on running statistics) and a phase-2 step (every
// layer trained), each step also under its lower precision (bf16-frozen, bf16); --only
// picks rows (then nothing else touches the device: an outside memory meter sees the row).
// Rows are named MODEL/forward, MODEL/step_HEAD, MODEL/step_all. Checked before timing:
// the loss is finite and the step moves exactly the parameters it should (the layers'
// values are checked by the conv, gemm, pool and norm suites).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/autograd.h"
#include "core/backend.h"
#include "core/conv_api.h"
#include "core/ops.h"
#include "layers/optim.h"
#include "train/precision.h"
#include "train/step_graph.h"

namespace kiln::bench {

namespace {

constexpr int64_t kClasses = 8;

// Runs one step through `run` and writes into the row whether it moved exactly the
// parameters it should, with a finite loss.
using CheckStep = std::function<void(Row&, const std::function<void()>& run)>;

// The first or the last parameter under `scope` ("vgg16/fc7/", "resnet50/layer4/").
kiln::ParameterRef param_in(Module& model, const std::string& scope, bool last) {
  std::vector<kiln::ParameterRef> in;
  for (const kiln::ParameterRef& p : model.parameters())
    if (p.name.rfind(scope, 0) == 0) in.push_back(p);
  if (in.empty()) throw std::runtime_error("step suite: the model has no parameter under " + scope);
  return last ? in.back() : in.front();
}

// On a GPU, the device memory high-water mark of the row just timed, as a summary value
// "<what>_peak_mib" (the CPU backend keeps no such count).
void record_peak_memory(const std::string& what, const Options& opt, SuiteResult& res) {
  const kiln::Device d = bench_device(opt);
  if (!d.is_cpu())
    res.summary.emplace_back(what + "_peak_mib", static_cast<double>(kiln::memory_stats(d).peak_bytes) / 1048576.0);
}

// A step row again under a lower precision policy (train/precision.h), with the same FLOPs
// and its own check: bf16-frozen for the phase-1 step (conv1..fc7 in bf16, fc8 in fp32),
// bf16 for the phase-2 step (every layer computes in bf16 from fp32 masters). Skipped where
// the device has no native bf16; a failure (the CUDA bf16 kernels were written without a
// GPU) is reported and the suite goes on.
void time_precision_variant(Row r, kiln::Precision p, Sequential& model, const std::function<void()>& step,
                            const CheckStep& check_step, const Options& opt,
                            const MachineLimits& m, SuiteResult& res) {
  const kiln::Device d = bench_device(opt);
  r.name += std::string("@") + kiln::precision_name(p);
  r.math = Math::bf16;  // the convolutions, nearly all of the FLOPs, run in bf16 (fc8 alone stays fp32)
  if (!row_wanted(opt, r.name)) return;
  if (d.is_cpu() && !kiln::native_bf16(d)) {
    std::printf("%s: skipped (this CPU has no AVX-512 BF16: bf16 would be emulated)\n", r.name.c_str());
    return;
  }
  const std::string key = r.name.substr(r.name.find('/') + 1);  // "step_fc8@bf16-frozen"
  std::string stem = key;
  for (char& c : stem)
    if (c == '@' || c == '-') c = '_';  // "step_fc8_bf16_frozen"
  try {
    const kiln::PrecisionUse u = kiln::apply_precision(model, p);
    check_step(r, step);
    r.check = u.describe() + "; " + r.check;
    kiln::reset_peak_memory(d);
    time_checked_row(std::move(r), opt, m, res, step);
    record_peak_memory(stem, opt, res);
    if (res.rows.back().timed)
      res.summary.emplace_back(stem + "_img_per_s", static_cast<double>(opt.batch) / (res.rows.back().t.median_ms * 1e-3));
  } catch (const kiln::Error& e) {
    std::printf("%s: FAILED on %s: %s\n", r.name.c_str(), d.str().c_str(), e.what());
  }
  kiln::apply_precision(model, kiln::Precision::fp32);
}

// The bf16-frozen phase-1 step recorded once as a CUDA graph (train/step_graph.h) and
// replayed: forward, loss and backward in one launch, then the optimizer eagerly, as the
// trainer's --cuda-graph. GPU only; a failed capture is reported and the suite goes on.
void time_graph_variant(Row r, Sequential& model, SGD& sgd, const Tensor& x, const Tensor& labels,
                        kiln::Generator& drop, Tensor& last_loss, const CheckStep& check_step,
                        const Options& opt, const MachineLimits& m, SuiteResult& res) {
  const kiln::Device d = bench_device(opt);
  const std::string r_key = r.name.substr(r.name.find('/') + 1);  // "step_fc8"
  r.name += "@bf16-frozen+graph";
  r.math = Math::bf16;
  if (d.is_cpu() || !row_wanted(opt, r.name)) return;
  try {
    const kiln::PrecisionUse u = kiln::apply_precision(model, kiln::Precision::bf16_frozen);
    std::vector<Tensor> params;
    for (const kiln::ParameterRef& p : model.trainable_parameters()) params.push_back(*p.tensor);
    const auto record = [&](const std::vector<Tensor>& in) {
      Tensor loss = softmax_cross_entropy(model(in[0]), in[1]);
      loss.backward();
      return std::vector<Tensor>{loss};
    };
    sgd.zero_grad();
    (void)record({x, labels});  // eager once: plans, workspaces and bf16 copies exist before recording
    sgd.zero_grad();
    kiln::StepGraph graph({kiln::empty_like(x), kiln::empty_like(labels)},
                          {Tensor::empty(Shape{}, kiln::TensorOptions{kiln::DType::f32, d})}, std::move(params), &drop);
    const std::string error = graph.capture(record);
    if (!error.empty()) KILN_FAIL("the capture failed: ", error);
    graph.replay({x, labels});  // the same batch every step, as the eager rows
    const std::function<void()> step = [&] {
      last_loss = graph.replay()[0];
      sgd.step();
    };
    check_step(r, step);  // one replayed step: it must move fc8 and nothing frozen, with a finite loss
    r.check = u.describe() + "; recorded once, replayed; " + r.check;
    time_checked_row(std::move(r), opt, m, res, step);
    if (res.rows.back().timed)  // "step_fc8_bf16_frozen_graph_img_per_s"
      res.summary.emplace_back(r_key + "_bf16_frozen_graph_img_per_s",
                               static_cast<double>(opt.batch) / (res.rows.back().t.median_ms * 1e-3));
  } catch (const kiln::Error& e) {
    std::printf("%s: FAILED on %s: %s\n", r.name.c_str(), d.str().c_str(), e.what());
  }
  sgd.zero_grad();
  kiln::apply_precision(model, kiln::Precision::fp32);
}

// A whole-network row. Its FLOPs are nearly all convolutions, which on a GPU run in TF32
// unless KILN_TF32=none: that is the peak it is judged against there.
Row net_row(const std::string& name, const std::string& shape, double flops, double bytes, const Options& opt) {
  return make_row(name, "net", shape, flops, bytes,
                  !bench_device(opt).is_cpu() && kiln::compute_options().conv_tf32 ? Math::tf32 : Math::fp32);
}

// Under the graph API, whether its plans served the rows or shapes fell back to legacy
// (the H200 run of 2026-12-04 could not tell: strict fp32 timed the same on both APIs).
void print_conv_api_use(const Options& opt) {
  if (bench_device(opt).is_cpu() || kiln::conv_api() != kiln::ConvApi::graph) return;
  const kiln::ConvApiCounts c = kiln::conv_api_counts();
  std::printf("conv graph API over the suite: %lld plans built (%lld fused), %lld fallbacks to the legacy API, "
              "%lld graph runs (%lld fused); conv + bias + ReLU timed fused against apart for %lld shapes, apart "
              "faster for %lld\n", static_cast<long long>(c.graph_plans), static_cast<long long>(c.fused_plans),
              static_cast<long long>(c.fallbacks), static_cast<long long>(c.graph_runs),
              static_cast<long long>(c.fused_runs), static_cast<long long>(c.fuse_timed),
              static_cast<long long>(c.fuse_declined));
}

}  // namespace

std::vector<std::string> step_row_names(const kiln::ModelSpec& spec) {
  const std::string step_head = spec.name + "/step_" + kiln::layer_of(spec, spec.head_scope);
  const std::string step_all = spec.name + "/step_all";
  const std::string frozen = std::string("@") + kiln::precision_name(kiln::Precision::bf16_frozen);
  return {spec.name + "/forward", step_head, step_head + frozen, step_head + frozen + "+graph", step_all,
          step_all + "@" + kiln::precision_name(kiln::Precision::bf16)};
}

SuiteResult run_step(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  const kiln::ModelSpec& spec = kiln::find_model_spec(opt.model);
  const std::string head = kiln::layer_of(spec, spec.head_scope);  // "fc8", "fc"
  const std::string step_head = spec.name + "/step_" + head;
  // Room for the longest row name ("vgg16/step_fc8@bf16-frozen+graph").
  set_table_widths(static_cast<int>(step_head.size() + std::string("@bf16-frozen+graph").size()), 34);
  print_table_header();
  const int64_t n = opt.batch;
  kiln::Generator init(11), drop(12), data(13);
  std::shared_ptr<Sequential> model = spec.build(kiln::ModelOptions{kClasses, 0, 0.5f}, init, drop);
  model->to(bench_device(opt));
  const int64_t side = spec.default_image_size;
  const Tensor x = to_bench_device(Tensor::uniform(Shape{n, side, side, 3}, -1.0f, 1.0f, data), opt);
  std::vector<int64_t> lab(static_cast<size_t>(n));
  for (size_t i = 0; i < lab.size(); ++i) lab[i] = static_cast<int64_t>((i * 5) % kClasses);
  const Tensor labels = to_bench_device(Tensor::from_vector(lab, Shape{n}), opt);
  const auto [fwd_flops, fwd_bytes] = forward_cost(spec, n, kClasses);
  const std::string shape = shape_str(x.shape()) + "->" + std::to_string(kClasses);

  // Inference: eval mode (dropout off, batch norm on running statistics), no graph.
  if (row_wanted(opt, spec.name + "/forward")) {
    Row r = net_row(spec.name + "/forward", shape, fwd_flops, fwd_bytes, opt);
    model->train(false);
    kiln::NoGradGuard ng;
    const std::vector<float> logits = (*model)(x).to_vector<float>();
    bool finite = true;
    for (const float v : logits) finite = finite && std::isfinite(v);
    r.checked = true;
    r.check_ok = finite;
    r.check = finite ? "finite logits" : "NON-finite logits";
    kiln::reset_peak_memory(bench_device(opt));
    time_checked_row(std::move(r), opt, m, res, [&] { (void)(*model)(x); });
    record_peak_memory("forward", opt, res);
  }

  model->train(true);
  // The head's weight (fc8), the backbone's last and first parameter (fc7's bias,
  // conv1_1's weight; ResNet-50: layer4's last batch norm's beta, conv1's weight).
  const kiln::ParameterRef head_w = param_in(*model, spec.head_scope, false);
  const kiln::ParameterRef last_w = param_in(*model, spec.backbone_scopes.back(), true);
  const kiln::ParameterRef first_w = param_in(*model, spec.backbone_scopes.front(), false);
  const int64_t head_in = head_w.tensor->dim(1);  // the head's inputs
  const std::string last_name = last_w.name.substr(spec.name.size() + 1);
  const std::string first_name = first_w.name.substr(spec.name.size() + 1);
  // The head as built, restored before phase 2: phase 1's timed steps fit it to the one
  // batch, and at batch 1 a saturated softmax (loss 0, every gradient 0) would move nothing.
  std::vector<std::pair<Tensor*, Tensor>> head_init;
  for (const kiln::ParameterRef& p : model->parameters())
    if (p.name.rfind(spec.head_scope, 0) == 0) head_init.emplace_back(p.tensor, p.tensor->clone());
  for (const int phase : {1, 2}) {
    for (auto& [param, init_value] : head_init) param->copy_from(init_value);
    if (phase == 1) {
      for (const std::string& scope : spec.backbone_scopes) model->freeze(scope);
    } else {
      model->unfreeze(spec.name + "/");
    }
    SgdOptions so;
    so.lr = phase == 1 ? 1e-3f : 1e-5f;
    so.momentum = 0.9f;
    SGD sgd(*model, so);
    Tensor last_loss;
    const auto step = [&] {
      last_loss = softmax_cross_entropy((*model)(x), labels);
      sgd.zero_grad();
      last_loss.backward();
      sgd.step();
    };
    // Phase 1: the forward plus the head's two gradient products; phase 2: forward and
    // two backward products per layer (the usual 3x).
    Row r = net_row(phase == 1 ? step_head : spec.name + "/step_all", shape,
                    phase == 1 ? fwd_flops + 2.0 * 2.0 * n * head_in * kClasses : 3.0 * fwd_flops,
                    phase == 1 ? fwd_bytes : 3.0 * fwd_bytes, opt);
    // One checked step: it must touch what is trainable and nothing else.
    const CheckStep check_step = [&](Row& row, const std::function<void()>& run) {
      const std::vector<float> last_before = last_w.tensor->to_vector<float>();
      const std::vector<float> first_before = first_w.tensor->to_vector<float>();
      const std::vector<float> head_before = head_w.tensor->to_vector<float>();
      run();
      const double loss = last_loss.item();
      const bool head_moved = head_w.tensor->to_vector<float>() != head_before;
      const bool last_moved = last_w.tensor->to_vector<float>() != last_before;
      const bool first_moved = first_w.tensor->to_vector<float>() != first_before;
      const bool frozen_ok = phase == 1 ? !last_moved && !first_moved : last_moved && first_moved;
      const std::string pair = last_name + " and " + first_name;
      row.checked = true;
      row.check_ok = std::isfinite(loss) && head_moved && frozen_ok;
      row.check = "loss " + std::to_string(loss) + (head_moved ? ", " + head + " updated" : ", " + head + " NOT updated") +
                  (phase == 1 ? (frozen_ok ? ", " + pair + " untouched (frozen)" : ", a FROZEN layer changed")
                              : (frozen_ok ? ", " + pair + " updated" : ", a layer was NOT updated"));
      if (!std::isfinite(loss)) row.check += " (NOT finite)";
    };
    const Row variant = r;
    if (row_wanted(opt, r.name)) {
      check_step(r, step);
      kiln::reset_peak_memory(bench_device(opt));
      time_checked_row(std::move(r), opt, m, res, step);
      const std::string key = phase == 1 ? "step_" + head : "step_all";  // "step_fc8"
      record_peak_memory(key, opt, res);
      const Row& done = res.rows.back();
      if (done.timed) res.summary.emplace_back(key + "_img_per_s", static_cast<double>(n) / (done.t.median_ms * 1e-3));
    }
    // The same step in the precision the GPU target table compares (docs/gpu.md).
    time_precision_variant(variant, phase == 1 ? kiln::Precision::bf16_frozen : kiln::Precision::bf16, *model, step,
                           check_step, opt, m, res);
    if (phase == 1) time_graph_variant(variant, *model, sgd, x, labels, drop, last_loss, check_step, opt, m, res);
  }
  if (!res.rows.empty() && res.rows.front().name == spec.name + "/forward" && res.rows.front().timed)
    res.summary.emplace_back("forward_img_per_s", static_cast<double>(n) / (res.rows.front().t.median_ms * 1e-3));
  for (const auto& [k, v] : res.summary) std::printf("%s: %.2f (batch %lld)\n", k.c_str(), v, static_cast<long long>(n));
  print_conv_api_use(opt);
  return res;
}

}  // namespace kiln::bench
