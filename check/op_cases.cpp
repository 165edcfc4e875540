#include "check/op_cases.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <tuple>

#include "core/op_checks.h"

namespace kiln::check {
namespace {

Tensor randn(Generator& g, Shape s) { return Tensor::normal(s, 0.0f, 1.0f, g); }

// Distinct values spaced well apart (a shuffled ramp) so max-pool has no ties and no
// max flips under a finite-difference step: Caffe's "kink" care, built into the data.
Tensor distinct(Generator& g, Shape s) {
  const int64_t n = s.numel();
  std::vector<float> key = Tensor::uniform(Shape{n}, 0.0f, 1.0f, g).to_vector<float>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[static_cast<size_t>(a)] < key[static_cast<size_t>(b)]; });
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(order[static_cast<size_t>(i)])] = 0.1f * static_cast<float>(i - n / 2);
  return Tensor::from_vector(v, s);
}

// Values at least 0.1 away from zero, for relu's kink.
Tensor away_from_zero(Generator& g, Shape s) {
  std::vector<float> v = Tensor::uniform(s, -1.0f, 1.0f, g).to_vector<float>();
  for (float& x : v) x = x < 0 ? x - 0.1f : x + 0.1f;
  return Tensor::from_vector(v, s);
}

Tensor labels(Generator& g, int64_t n, int64_t classes) {
  std::vector<float> u = Tensor::uniform(Shape{n}, 0.0f, static_cast<float>(classes), g).to_vector<float>();
  std::vector<int64_t> l(u.size());
  for (size_t i = 0; i < u.size(); ++i) l[i] = std::min<int64_t>(classes - 1, static_cast<int64_t>(u[i]));
  return Tensor::from_vector(l, Shape{n});
}

// Bytes of every input: what a forward must read at least once.
double input_bytes(const OpCase& k) {
  double b = 0;
  for (const Tensor& t : k.inputs) b += static_cast<double>(t.nbytes());
  return b;
}

// An op that reads its inputs once and writes `out_elements` floats, doing
// `flops_per_element` operations per element of its first input (elementwise ops: one
// per element; softmax-like rows: max, subtract, exp, sum, divide or log = 5; reductions:
// one add per element, two for a sum of squares).
void set_streaming_cost(OpCase& k, double flops_per_element, int64_t out_elements) {
  k.flops = flops_per_element * static_cast<double>(k.inputs[0].numel());
  k.bytes = input_bytes(k) + 4.0 * static_cast<double>(out_elements);
}

// Integers ordered exactly: a row's entries sit 0 to 4 above +-base (2^40 for int64, 2^30 for
// int32), neighbours float32 cannot tell apart, with ties.
Tensor wide_integers(Shape s, DType dtype) {
  const int64_t base = dtype == DType::i64 ? (int64_t{1} << 40) : (int64_t{1} << 30);
  std::vector<int64_t> v(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 3 == 1 ? -base : base) + static_cast<int64_t>((i * 7) % 5);
  return Tensor::from_vector(v, s).to(dtype);
}

// As set_streaming_cost, for a case built in one expression.
OpCase streaming(OpCase k, double flops_per_element, int64_t out_elements) {
  set_streaming_cost(k, flops_per_element, out_elements);
  return k;
}

// linear: a multiply-add per output and input feature (2 FLOPs), one add per output for
// the bias; reads x, w (and b) once, writes y once.
OpCase with_linear_cost(OpCase k) {
  const double m = static_cast<double>(k.inputs[0].dim(0)), in = static_cast<double>(k.inputs[0].dim(1));
  const double out = static_cast<double>(k.inputs[1].dim(0));
  k.flops = m * out * (2.0 * in + (k.inputs.size() > 2 ? 1.0 : 0.0));
  k.bytes = input_bytes(k) + 4.0 * m * out;
  return k;
}

// One output window per index of an adaptive pool: [floor(i*in/out), ceil((i+1)*in/out)).
int64_t adaptive_window_sum(int64_t in, int64_t out) {
  int64_t s = 0;
  for (int64_t i = 0; i < out; ++i) s += ((i + 1) * in + out - 1) / out - (i * in) / out;
  return s;
}

OpCase conv_case(Generator& g, const std::string& name, int64_t n, int64_t h, int64_t w, int64_t c, int64_t o,
                 int64_t kh, int64_t kw, int64_t s, int64_t p, bool bias) {
  OpCase k;
  k.name = "conv2d/" + name;
  k.op = "conv2d";
  k.params = {{"stride", static_cast<double>(s)}, {"pad", static_cast<double>(p)}, {"bias", bias ? 1.0 : 0.0}};
  k.inputs = {randn(g, {n, h, w, c}), randn(g, {o, kh, kw, c})};
  k.differentiable = {true, true};
  if (bias) {
    k.inputs.push_back(randn(g, {o}));
    k.differentiable.push_back(true);
  }
  const Conv2dParams cp{s, s, p, p};
  k.forward = [cp, bias](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], bias ? in[2] : Tensor(), cp); };
  // A multiply-add per output element and filter tap (2 FLOPs), one add per output for the
  // bias; reads x, w (and b) once, writes y once.
  const double outs = static_cast<double>(n * ((h + 2 * p - kh) / s + 1) * ((w + 2 * p - kw) / s + 1) * o);
  k.flops = outs * (2.0 * static_cast<double>(kh * kw * c) + (bias ? 1.0 : 0.0));
  k.bytes = input_bytes(k) + 4.0 * outs;
  return k;
}

OpCase pool_case(Generator& g, const std::string& name, int64_t n, int64_t h, int64_t w, int64_t c, int64_t kernel,
                 int64_t s, int64_t p) {
  OpCase k;
  k.name = "max_pool2d/" + name;
  k.op = "max_pool2d";
  k.params = {{"kernel", static_cast<double>(kernel)}, {"stride", static_cast<double>(s)}, {"pad", static_cast<double>(p)}};
  k.inputs = {distinct(g, {n, h, w, c})};
  k.differentiable = {true};
  const Pool2dParams pp{kernel, kernel, s, s, p, p};
  k.forward = [pp](const std::vector<Tensor>& in) { return max_pool2d(in[0], pp); };
  k.rtol = kRtolElementwise;
  // One comparison per window element; reads x once, writes y once.
  const double outs = static_cast<double>(n * ((h + 2 * p - kernel) / s + 1) * ((w + 2 * p - kernel) / s + 1) * c);
  k.flops = outs * static_cast<double>(kernel * kernel);
  k.bytes = input_bytes(k) + 4.0 * outs;
  return k;
}

OpCase adaptive_case(Generator& g, const std::string& name, int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh,
                     int64_t ow) {
  OpCase k;
  k.name = "adaptive_avg_pool2d/" + name;
  k.op = "adaptive_avg_pool2d";
  k.params = {{"out_h", static_cast<double>(oh)}, {"out_w", static_cast<double>(ow)}};
  k.inputs = {randn(g, {n, h, w, c})};
  k.differentiable = {true};
  k.forward = [oh, ow](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], oh, ow); };
  k.rtol = kRtolReduction;
  // One add per element of each output's window, one divide per output; windows overlap
  // or repeat inputs when the sizes do not divide, so this can exceed the input's size.
  const double outs = static_cast<double>(n * oh * ow * c);
  k.flops = static_cast<double>(n * c * adaptive_window_sum(h, oh) * adaptive_window_sum(w, ow)) + outs;
  k.bytes = input_bytes(k) + 4.0 * outs;
  return k;
}

// batch_norm2d with non-trivial statistics: x off-centre and spread (mean 0.7, std 1.5), gamma
// around 1, running mean != 0 and running var in [0.5, 2]. Inputs: x, [gamma, beta,]
// running_mean, running_var; the running statistics are updated in place (training).
OpCase batch_norm_case(Generator& g, const std::string& name, int64_t n, int64_t h, int64_t w, int64_t c, bool training,
                       bool affine, float momentum) {
  const float eps = 1e-5f;
  OpCase k;
  k.name = "batch_norm2d/" + name;
  k.op = "batch_norm2d";
  k.params = {{"training", training ? 1.0 : 0.0}, {"affine", affine ? 1.0 : 0.0},
              {"momentum", static_cast<double>(momentum)}, {"eps", static_cast<double>(eps)}};
  k.inputs = {add(mul(randn(g, {n, h, w, c}), 1.5f), 0.7f)};
  k.differentiable = {true};
  if (affine) {
    k.inputs.push_back(add(mul(randn(g, {c}), 0.5f), 1.0f));
    k.inputs.push_back(randn(g, {c}));
    k.differentiable.insert(k.differentiable.end(), {true, true});
  }
  const size_t rm = k.inputs.size();
  k.inputs.push_back(randn(g, {c}));
  k.inputs.push_back(Tensor::uniform(Shape{c}, 0.5f, 2.0f, g));
  for (size_t i = 1; i < k.inputs.size(); ++i) k.fp32_inputs.push_back(i);  // gamma, beta, statistics
  k.differentiable.insert(k.differentiable.end(), {false, false});
  if (training) k.updated_inputs = {rm, rm + 1};
  k.forward = [=](const std::vector<Tensor>& in) {
    Tensor run_mean = in[rm], run_var = in[rm + 1];  // handles: updated in place
    return batch_norm2d(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), run_mean, run_var, training,
                        momentum, eps);
  };
  k.rtol = kRtolReduction;
  // Per element: training adds 1 (mean) + 3 (variance) to the 4 of (x - mean) * inv_std *
  // gamma + beta; inference does only those 4. Reads every input once, writes y, and in
  // training writes the two running statistics back.
  const double el = static_cast<double>(n * h * w * c);
  k.flops = (training ? 8.0 : 4.0) * el;
  k.bytes = input_bytes(k) + 4.0 * el + (training ? 8.0 * static_cast<double>(c) : 0.0);
  return k;
}

OpCase simple(const std::string& name, const std::string& op, std::vector<Tensor> inputs, std::vector<bool> diff,
              std::function<Tensor(const std::vector<Tensor>&)> fwd, double rtol) {
  OpCase k;
  k.name = name;
  k.op = op;
  k.inputs = std::move(inputs);
  k.differentiable = std::move(diff);
  k.forward = std::move(fwd);
  k.rtol = rtol;
  return k;
}

// Training-form dropout at keep 0.7 on a [4, 9] input drawn from g, its mask from Philox
// seed `seed`: the generator is rebuilt on every call, so every evaluation sees the same mask,
// which the reference reads from reference_extras.
OpCase training_dropout(Generator& g, const std::string& name, uint64_t seed, double rtol) {
  OpCase k = simple(name, "dropout", {randn(g, {4, 9})}, {true},
                    [seed](const std::vector<Tensor>& in) {
                      Generator dg(seed);
                      return dropout(in[0], 0.7f, true, dg);
                    },
                    rtol);
  k.params = {{"keep", 0.7}};
  Generator dg(seed);
  const PhiloxState s = dg.reserve(36);
  std::vector<float> mask(36);
  for (uint64_t i = 0; i < 36; ++i) mask[i] = philox_uniform(s, i) < 0.7f ? 1.0f : 0.0f;
  k.reference_extras = {Tensor::from_vector(mask, Shape{4, 9})};
  set_streaming_cost(k, 2, 36);  // a comparison with the mask's uniform and a scale
  return k;
}

// linear, the elementwise ops, views, softmax and the reductions, after the conv, pool and
// batch-norm cases (the order fixes each case's random inputs).
void append_math_cases(Generator& g, std::vector<OpCase>& cases) {
  // linear
  {
    OpCase k = simple("linear/bias", "linear", {randn(g, {3, 7}), randn(g, {5, 7}), randn(g, {5})},
                      {true, true, true}, [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                      kRtolReduction);
    cases.push_back(with_linear_cost(k));
    cases.push_back(with_linear_cost(simple("linear/nobias_batch1", "linear", {randn(g, {1, 4}), randn(g, {6, 4})}, {true, true},
                           [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, kRtolReduction)));
    // From 8 rows the CPU forward takes oneDNN's matmul primitive instead of sgemm.
    cases.push_back(with_linear_cost(simple("linear/bias_batch9_matmul_path", "linear",
                           {randn(g, {9, 11}), randn(g, {6, 11}), randn(g, {6})}, {true, true, true},
                           [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, kRtolReduction)));
    cases.push_back(with_linear_cost(simple("linear/nobias_batch16_matmul_path", "linear",
                                            {randn(g, {16, 5}), randn(g, {7, 5})}, {true, true},
                                            [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
                                            kRtolReduction)));
  }
  cases.push_back(streaming(simple("relu/away_from_kink", "relu", {away_from_zero(g, {3, 5, 2})}, {true},
                                   [](const std::vector<Tensor>& in) { return relu(in[0]); }, kRtolElementwise),
                            1, 30));
  cases.push_back(training_dropout(g, "dropout/keep0.7", 77, kRtolElementwise));
  // flatten, reshape and slice are views: no arithmetic, no data moved (flops, bytes 0).
  cases.push_back(simple("flatten/nhwc", "flatten", {randn(g, {2, 3, 4, 5})}, {true},
                         [](const std::vector<Tensor>& in) { return flatten(in[0]); }, kRtolElementwise));
  {
    OpCase k = simple("reshape/infer", "reshape", {randn(g, {2, 6})}, {true},
                      [](const std::vector<Tensor>& in) { return reshape(in[0], Shape{3, -1}); }, kRtolElementwise);
    k.params = {{"d0", 3}, {"d1", 4}};
    cases.push_back(k);
  }
  {
    OpCase k = simple("slice/rows1to3", "slice", {randn(g, {4, 3})}, {true},
                      [](const std::vector<Tensor>& in) { return slice(in[0], 1, 3); }, kRtolElementwise);
    k.params = {{"begin", 1}, {"end", 3}};
    cases.push_back(k);
  }
  // softmax_cross_entropy: a log-softmax per row (5 per element), writing the mean loss.
  cases.push_back(streaming(simple("softmax_cross_entropy/int64", "softmax_cross_entropy",
                                   {mul(randn(g, {5, 7}), 3.0f), labels(g, 5, 7)}, {true, false},
                                   [](const std::vector<Tensor>& in) { return softmax_cross_entropy(in[0], in[1]); },
                                   kRtolReduction),
                            5, 1));
  cases.push_back(streaming(simple("softmax_cross_entropy/batch1_large_logits", "softmax_cross_entropy",
                                   {add(mul(randn(g, {1, 4}), 5.0f), 80.0f), labels(g, 1, 4)}, {true, false},
                                   [](const std::vector<Tensor>& in) { return softmax_cross_entropy(in[0], in[1]); },
                                   kRtolReduction),
                            5, 1));
  cases.push_back(streaming(simple("softmax/rank2", "softmax", {randn(g, {4, 6})}, {true},
                                   [](const std::vector<Tensor>& in) { return softmax(in[0]); }, kRtolElementwise),
                            5, 24));
  cases.push_back(streaming(simple("log_softmax/rank3", "log_softmax", {randn(g, {2, 3, 5})}, {true},
                                   [](const std::vector<Tensor>& in) { return log_softmax(in[0]); }, kRtolElementwise),
                            5, 30));
  cases.push_back(streaming(simple("add/tensor", "add", {randn(g, {3, 4}), randn(g, {3, 4})}, {true, true},
                                   [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, kRtolElementwise),
                            1, 12));
  cases.push_back(streaming(simple("sub/tensor", "sub", {randn(g, {3, 4}), randn(g, {3, 4})}, {true, true},
                                   [](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, kRtolElementwise),
                            1, 12));
  cases.push_back(streaming(simple("mul/tensor", "mul", {randn(g, {3, 4}), randn(g, {3, 4})}, {true, true},
                                   [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, kRtolElementwise),
                            1, 12));
  for (const auto& [op, s] : std::vector<std::pair<std::string, float>>{{"add", 1.5f}, {"sub", 0.25f}, {"mul", -2.0f}}) {
    OpCase k = simple(op + "/scalar", op + "_scalar", {randn(g, {2, 5})}, {true},
                      [op = op, s = s](const std::vector<Tensor>& in) {
                        return op == "add" ? add(in[0], s) : op == "sub" ? sub(in[0], s) : mul(in[0], s);
                      },
                      kRtolElementwise);
    k.params = {{"s", static_cast<double>(s)}};
    set_streaming_cost(k, 1, 10);
    cases.push_back(k);
  }
  cases.push_back(streaming(simple("sum/all", "sum", {randn(g, {3, 5})}, {true},
                                   [](const std::vector<Tensor>& in) { return sum(in[0]); }, kRtolReduction),
                            1, 1));
  cases.push_back(streaming(simple("mean/all", "mean", {randn(g, {4, 3, 2})}, {true},
                                   [](const std::vector<Tensor>& in) { return mean(in[0]); }, kRtolReduction),
                            1, 1));
  {
    OpCase k = simple("l2_penalty/two_weights", "l2_penalty", {randn(g, {3, 4}), randn(g, {5})}, {true, true},
                      [](const std::vector<Tensor>& in) { return l2_penalty(in, 0.1f); }, kRtolReduction);
    k.params = {{"scale", 0.1}};
    k.flops = 2.0 * static_cast<double>(k.inputs[0].numel() + k.inputs[1].numel());  // square, add
    k.bytes = input_bytes(k) + 4.0;
    cases.push_back(k);
  }
}

// Whether input i stays float32 in a lower-precision run of k.
bool kept_fp32(const OpCase& k, size_t i) {
  return std::find(k.fp32_inputs.begin(), k.fp32_inputs.end(), i) != k.fp32_inputs.end();
}

// The bfloat16 form of an fp32 case: inputs rounded to bf16 values (held in float32), named
// "<op>/bf16_<shape>", held to the fp32 op at rtol. Every floating input but fp32_inputs and
// the output are bf16, so the bytes moved halve; the FLOPs do not change.
OpCase bf16_variant(OpCase k, double rtol) {
  const size_t slash = k.name.find('/');
  k.name = k.name.substr(0, slash + 1) + "bf16_" + k.name.substr(slash + 1);
  for (size_t i = 0; i < k.inputs.size(); ++i)
    if (is_floating(k.inputs[i].dtype()) && !kept_fp32(k, i)) k.inputs[i] = k.inputs[i].to(DType::bf16).to(DType::f32);
  k.dtype = DType::bf16;
  k.rtol = rtol;
  k.bytes *= 0.5;
  return k;
}

// bfloat16 cases, on a generator of their own so that the fp32 cases keep their inputs:
// the ops a bf16 segment runs, at odd shapes, forward and backward.
void append_bf16_cases(std::vector<OpCase>& cases) {
  Generator g(20261202);
  cases.push_back(bf16_variant(conv_case(g, "k3_s1_p1_bias", 2, 5, 6, 3, 4, 3, 3, 1, 1, true), kRtolBf16));
  cases.push_back(bf16_variant(conv_case(g, "k3_s2_p0_odd_batch1", 1, 7, 5, 2, 3, 3, 3, 2, 0, true), kRtolBf16));
  cases.push_back(bf16_variant(conv_case(g, "k1_s1_p0_nobias", 2, 4, 3, 4, 5, 1, 1, 1, 0, false), kRtolBf16));
  cases.push_back(bf16_variant(with_linear_cost(simple("linear/bias", "linear",
                                   {randn(g, {3, 7}), randn(g, {5, 7}), randn(g, {5})}, {true, true, true},
                                   [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, 0)),
                               kRtolBf16));
  cases.push_back(bf16_variant(with_linear_cost(simple("linear/nobias_batch16", "linear",
                                   {randn(g, {16, 5}), randn(g, {7, 5})}, {true, true},
                                   [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, 0)),
                               kRtolBf16));
  cases.push_back(bf16_variant(streaming(simple("relu/away_from_kink", "relu", {away_from_zero(g, {3, 5, 2})}, {true},
                                                [](const std::vector<Tensor>& in) { return relu(in[0]); }, 0),
                                         1, 30),
                               kRtolExact));
  // Distinct inputs stay distinct in bf16 here: 0.1 apart, below 16 in magnitude (ulp <= 1/16).
  cases.push_back(bf16_variant(pool_case(g, "k2_s2", 2, 6, 6, 3, 2, 2, 0), kRtolExact));
  // Overlapping windows: backward sums up to four gradients per input, rounded once.
  cases.push_back(bf16_variant(pool_case(g, "k3_s2_p1_odd_batch1", 1, 7, 5, 2, 3, 2, 1), kRtolBf16));
  cases.push_back(bf16_variant(adaptive_case(g, "10x10_to_7x7_overlap", 1, 10, 10, 2, 7, 7), kRtolBf16));
  cases.push_back(bf16_variant(adaptive_case(g, "global_1x1", 2, 3, 4, 5, 1, 1), kRtolBf16));
  // ResNet's batch norm in a bf16 segment (x, y, dy, dx in bf16; statistics and gamma/beta
  // in fp32): both forms, an odd channel count.
  cases.push_back(bf16_variant(batch_norm_case(g, "train_2x3x5x7", 2, 3, 5, 7, true, true, 0.1f), kRtolBf16));
  cases.push_back(bf16_variant(batch_norm_case(g, "eval_2x3x5x7", 2, 3, 5, 7, false, true, 0.1f), kRtolBf16));
  // ResNet's residual add.
  cases.push_back(bf16_variant(streaming(simple("add/tensor", "add", {randn(g, {3, 4}), randn(g, {3, 4})}, {true, true},
                                                [](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, 0),
                                         1, 12),
                               kRtolBf16));
  // Training form: the fp32 op's Philox mask (reference_extras), x / keep rounded once.
  cases.push_back(bf16_variant(training_dropout(g, "dropout/train_keep0.7", 78, 0), kRtolBf16));
  {
    // Eval form: the input itself (the reference reads it as a keep-everything mask).
    OpCase k = simple("dropout/eval", "dropout", {randn(g, {3, 5})}, {true},
                      [](const std::vector<Tensor>& in) { return dropout(in[0], 0.5f, false); }, 0);
    k.params = {{"keep", 1.0}};
    k.reference_extras = {Tensor::ones(Shape{3, 5})};
    set_streaming_cost(k, 0, 15);
    cases.push_back(bf16_variant(k, kRtolExact));
  }
  // The casts (Tensor::to): bf16 -> f32 widens exactly; f32 -> bf16 of a widened value is
  // exact too, both ways (f32 -> bf16 rounding of arbitrary values: tests/kernels/test_bf16.cpp).
  {
    OpCase k = streaming(simple("cast/to_f32", "cast", {randn(g, {3, 7})}, {true},
                                [](const std::vector<Tensor>& in) { return in[0].to(DType::f32); }, 0),
                         1, 21);
    // Its backward rounds the fp32 upstream gradient to bf16: one rounding.
    k = bf16_variant(k, kRtolBf16);
    k.bytes = 2.0 * 21 + 4.0 * 21;  // reads bf16, writes f32
    cases.push_back(k);
    cases.push_back(bf16_variant(
        streaming(simple("cast/to_f32_and_back", "cast", {randn(g, {2, 3, 5})}, {true},
                         [](const std::vector<Tensor>& in) { return in[0].to(DType::f32).to(DType::bf16); }, 0),
                  2, 30),
        kRtolExact));
  }
}

// Values of magnitude in [lo, hi] with random signs: divisors kept off zero, where 1/b's
// curvature would swamp a finite difference.
Tensor magnitude_between(Generator& g, Shape s, float lo, float hi) {
  std::vector<float> v = Tensor::uniform(s, lo, hi, g).to_vector<float>();
  const std::vector<float> sign = Tensor::uniform(s, -1.0f, 1.0f, g).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = sign[i] < 0 ? -v[i] : v[i];
  return Tensor::from_vector(v, s);
}

// A case resizing its input to `shape` (sum_to or broadcast_to); the reference gets the
// shape as params rank, d0, d1, ...
OpCase resize_case(const std::string& name, const std::string& op, Tensor x, const Shape& shape) {
  const bool sums = op == "sum_to";
  OpCase k = simple(name, op, {std::move(x)}, {true},
                    [sums, shape](const std::vector<Tensor>& in) {
                      return sums ? sum_to(in[0], shape) : broadcast_to(in[0], shape);
                    },
                    sums ? kRtolReduction : kRtolElementwise);  // broadcast_to's gradient is a sum
  k.params["rank"] = static_cast<double>(shape.rank());
  for (int64_t d = 0; d < shape.rank(); ++d) k.params["d" + std::to_string(d)] = static_cast<double>(shape[d]);
  // A sum adds each input element once; a repeat writes the output and computes nothing.
  set_streaming_cost(k, sums ? 1 : 0, shape.numel());
  return k;
}

// A binary op on operands of different shapes (or a 0-d one), with its broadcast's cost:
// one operation per output element, each operand read once, the output written once.
OpCase broadcast_case(const std::string& name, const std::string& op, Tensor a, Tensor b, double rtol) {
  const int64_t out = checks::broadcast_shape(op.c_str(), a.shape(), b.shape()).numel();
  OpCase k = simple(name, op, {std::move(a), std::move(b)}, {true, true},
                    [op](const std::vector<Tensor>& in) {
                      return op == "add" ? add(in[0], in[1])
                             : op == "sub" ? sub(in[0], in[1])
                             : op == "mul" ? mul(in[0], in[1])
                                           : div(in[0], in[1]);
                    },
                    rtol);
  k.flops = static_cast<double>(out);
  k.bytes = input_bytes(k) + 4.0 * static_cast<double>(out);
  return k;
}

// The scalar on the left, s - a and s / a (divisors kept off zero), in fp32 and bf16.
void append_reversed_scalar_cases(Generator& g, std::vector<OpCase>& cases) {
  for (const bool divides : {false, true}) {
    const float s = divides ? 2.5f : -0.75f;
    const std::string op = divides ? "rdiv_scalar" : "rsub_scalar";
    OpCase k = simple((divides ? "div" : "sub") + std::string("/scalar_left"), op,
                      {divides ? magnitude_between(g, {3, 5}, 0.5f, 1.5f) : randn(g, {3, 5})}, {true},
                      [divides, s](const std::vector<Tensor>& in) { return divides ? s / in[0] : s - in[0]; },
                      kRtolElementwise);
    k.params = {{"s", static_cast<double>(s)}};
    set_streaming_cost(k, 1, 15);
    cases.push_back(k);
    cases.push_back(bf16_variant(k, kRtolBf16));
  }
}

// Division, broadcasting (each binary op, a 0-d operand, both operands broadcast), sum_to
// and broadcast_to, on a generator of their own so that the cases above keep their inputs.
void append_broadcast_cases(std::vector<OpCase>& cases) {
  Generator g(20261205);
  cases.push_back(broadcast_case("div/tensor", "div", randn(g, {3, 4}), magnitude_between(g, {3, 4}, 0.5f, 1.5f),
                                 kRtolElementwise));
  {
    OpCase k = simple("div/scalar", "div_scalar", {randn(g, {2, 5})}, {true},
                      [](const std::vector<Tensor>& in) { return div(in[0], -1.75f); }, kRtolElementwise);
    k.params = {{"s", -1.75}};
    set_streaming_cost(k, 1, 10);
    cases.push_back(k);
  }
  cases.push_back(broadcast_case("add/broadcast_channels", "add", randn(g, {2, 3, 4, 5}), randn(g, {5}),
                                 kRtolElementwise));
  cases.push_back(broadcast_case("sub/broadcast_both", "sub", randn(g, {3, 1, 4}), randn(g, {2, 1}),
                                 kRtolElementwise));
  cases.push_back(broadcast_case("mul/broadcast_rows", "mul", randn(g, {4, 5}), randn(g, {4, 1}), kRtolElementwise));
  cases.push_back(broadcast_case("div/broadcast_leading", "div", randn(g, {2, 3}),
                                 magnitude_between(g, {1, 1, 3}, 0.5f, 1.5f), kRtolElementwise));
  cases.push_back(broadcast_case("add/scalar_tensor", "add", randn(g, {3, 4}), randn(g, {}), kRtolElementwise));
  cases.push_back(resize_case("sum_to/channels", "sum_to", randn(g, {2, 3, 4, 5}), Shape{5}));
  cases.push_back(resize_case("sum_to/keep_middle", "sum_to", randn(g, {3, 4, 5}), Shape{4, 1}));
  cases.push_back(resize_case("sum_to/keep_leading", "sum_to", randn(g, {3, 4, 5}), Shape{3, 1, 1}));
  cases.push_back(resize_case("sum_to/all", "sum_to", randn(g, {2, 3}), Shape{}));
  cases.push_back(resize_case("broadcast_to/rows_and_leading", "broadcast_to", randn(g, {4, 1}), Shape{3, 4, 5}));
  cases.push_back(
      bf16_variant(broadcast_case("add/broadcast_channels", "add", randn(g, {2, 3, 4, 5}), randn(g, {5}), 0), kRtolBf16));
  cases.push_back(bf16_variant(resize_case("sum_to/channels", "sum_to", randn(g, {2, 3, 4, 5}), Shape{5}), kRtolBf16));
  append_reversed_scalar_cases(g, cases);  // last, so that the cases above keep their inputs
}

// Integer arithmetic: add, sub, mul, maximum and minimum of int64 and int32 tensors (broadcast, an
// int32 beside an int64 widened, products and sums that wrap past 2^63 as torch's), and the
// whole-tensor sum into int64. No gradient; exact.
void append_integer_arithmetic_cases(std::vector<OpCase>& cases) {
  using Fn = Tensor (*)(const Tensor&, const Tensor&);
  const Tensor big = wide_integers({3, 4}, DType::i64), row = wide_integers({4}, DType::i32);
  const Tensor huge = Tensor::from_vector(std::vector<int64_t>{INT64_MAX, INT64_MIN + 1, 3037000500, -7}, {4});
  const std::tuple<const char*, const char*, Fn, Tensor, Tensor> pairs[] = {
      {"add/int64_3x4_int32_4", "add", &kiln::add, big, row},
      {"sub/int32_4_int64_3x4", "sub", &kiln::sub, row, big},
      {"mul/int64_wrapping", "mul", &kiln::mul, huge, huge},
      {"add/int64_wrapping", "add", &kiln::add, huge.reshape({4, 1}), huge},
      {"maximum/int64_3x4_int32_4", "maximum", &kiln::maximum, big, row},
      {"minimum/int32_4x1_4", "minimum", &kiln::minimum, row.reshape({4, 1}), row}};
  for (const auto& [name, op, fn, a, b] : pairs) {
    OpCase k = simple(name, op, {a, b}, {false, false},
                      [fn = fn](const std::vector<Tensor>& in) { return fn(in[0], in[1]); }, kRtolExact);
    const auto out = static_cast<double>(checks::broadcast_shape(op, a.shape(), b.shape()).numel());
    k.flops = out;
    k.bytes = input_bytes(k) + 8.0 * out;  // an int64 result at most
    cases.push_back(k);
  }
  for (const Tensor& x : {wide_integers({5, 300}, DType::i64), wide_integers({7, 3}, DType::i32), huge}) {
    OpCase k = simple(std::string("sum/") + dtype_name(x.dtype()) + "_" + std::to_string(x.numel()), "sum", {x},
                      {false}, [](const std::vector<Tensor>& in) { return sum(in[0]); }, kRtolExact);
    k.flops = static_cast<double>(x.numel());
    k.bytes = input_bytes(k);
    cases.push_back(k);
  }
}

// The unary math ops (exp, log, ...), fp32 and bf16, on a generator of their own so that
// the cases above keep their inputs. log and sqrt on [0.2, 3] (their domain, away from 0's
// steep slopes); abs away from its kink at 0; the others over [-3, 3], where sigmoid, tanh,
// gelu and silu bend.
void append_unary_cases(std::vector<OpCase>& cases) {
  Generator g(20261206);
  struct U {
    const char* op;
    Tensor (*fn)(const Tensor&);
    int domain;  // 0: [-3, 3]; 1: [0.2, 3]; 2: |x| in [0.1, 3]
  };
  const U ops[] = {{"exp", &kiln::exp, 0},         {"log", &kiln::log, 1},   {"sqrt", &kiln::sqrt, 1},
                   {"tanh", &kiln::tanh, 0},       {"sigmoid", &kiln::sigmoid, 0}, {"gelu", &kiln::gelu, 0},
                   {"silu", &kiln::silu, 0},       {"abs", &kiln::abs, 2},   {"neg", &kiln::neg, 0},
                   {"softplus", &kiln::softplus, 0}, {"gelu_tanh", &kiln::gelu_tanh, 0}};
  for (const U& u : ops) {
    const Shape s{3, 5, 2};
    Tensor x = u.domain == 0 ? Tensor::uniform(s, -3.0f, 3.0f, g)
               : u.domain == 1 ? Tensor::uniform(s, 0.2f, 3.0f, g)
                              : magnitude_between(g, s, 0.1f, 3.0f);
    const auto fn = u.fn;
    OpCase k = simple(std::string(u.op) + "/3x5x2", u.op, {x}, {true},
                      [fn](const std::vector<Tensor>& in) { return fn(in[0]); }, kRtolElementwise);
    set_streaming_cost(k, 1, 30);
    cases.push_back(k);
    cases.push_back(bf16_variant(k, kRtolBf16));
  }
  // torch's softplus(x, beta, threshold), both sides of the threshold in one input; no sample within
  // 0.05 of beta x = threshold, where the op jumps (to x) and finite differences would straddle it.
  for (const auto& [beta_, threshold_] : {std::pair{2.0f, 1.0f}, std::pair{-0.5f, 0.5f}}) {
    const float beta = beta_, threshold = threshold_;  // locals: a lambda captures no structured binding (clang 14)
    const Shape s{3, 5, 2};
    std::vector<float> v = Tensor::uniform(s, -3.0f, 3.0f, g).to_vector<float>();
    for (float& e : v)
      if (std::abs(beta * e - threshold) < 0.05f) e += 0.1f / beta;
    OpCase k = simple(std::string("softplus_beta/") + (beta > 0 ? "2" : "-0.5") + "_3x5x2", "softplus_beta",
                      {Tensor::from_vector(v, s)}, {true},
                      [beta, threshold](const std::vector<Tensor>& in) { return softplus(in[0], beta, threshold); },
                      kRtolElementwise);
    k.params = {{"beta", beta}, {"threshold", threshold}};
    set_streaming_cost(k, 1, 40);
    cases.push_back(k);
    cases.push_back(bf16_variant(k, kRtolBf16));
  }
}

// cross_entropy and nll_loss with torch's options: ignored targets, class weights (inputs the
// gradient does not reach), label smoothing, each reduction, classes second of four dimensions,
// and probability targets (the gradient reaches them too). The reference's params name the
// options: reduction 0 mean, 1 sum, 2 none.
void append_class_loss_cases(std::vector<OpCase>& cases, Generator& g) {
  const auto idx = [](std::vector<int64_t> v, const Shape& s) { return Tensor::from_vector(v, s); };
  const auto class_case = [](const std::string& name, const char* op, std::vector<Tensor> in, std::vector<bool> diff,
                             Reduction red, float smoothing) {
    const bool weighted = in.size() > 2;
    const int64_t rows = in[0].numel() / (in[0].rank() == 1 ? in[0].dim(0) : in[0].dim(1));
    OpCase k = simple(name, op, std::move(in), std::move(diff),
                      [op, red, smoothing, weighted](const std::vector<Tensor>& x) {
                        ClassLossOptions o;
                        o.reduction = red;
                        o.label_smoothing = smoothing;
                        if (weighted) o.weight = x[2];
                        return std::string(op) == "nll_loss" ? nll_loss(x[0], x[1], o) : cross_entropy(x[0], x[1], o);
                      },
                      kRtolReduction);
    k.params = {{"reduction", static_cast<double>(red)}, {"label_smoothing", smoothing},
                {"weighted", weighted ? 1.0 : 0.0}};
    return streaming(k, 8, red == Reduction::none ? rows : 1);
  };
  const Tensor w = Tensor::uniform(Shape{5}, 0.5f, 2.0f, g);
  const Tensor t6 = idx({0, 4, -100, 2, 1, -100}, Shape{6});
  cases.push_back(class_case("cross_entropy/ignore_weight_smooth_mean", "cross_entropy", {randn(g, {6, 5}), t6, w},
                             {true, false, false}, Reduction::mean, 0.1f));
  cases.push_back(class_case("cross_entropy/ignore_sum", "cross_entropy", {randn(g, {6, 5}), t6}, {true, false},
                             Reduction::sum, 0.0f));
  cases.push_back(class_case("cross_entropy/2x4x3x2_classes_second_none", "cross_entropy",
                             {randn(g, {2, 4, 3, 2}), idx({0, 3, 1, -100, 2, 2, 3, 0, 1, 1, -100, 3}, Shape{2, 3, 2})},
                             {true, false}, Reduction::none, 0.2f));
  Tensor p = softmax(randn(g, {4, 5}));
  cases.push_back(class_case("cross_entropy/probabilities_weight_smooth", "cross_entropy", {randn(g, {4, 5}), p, w},
                             {true, true, false}, Reduction::mean, 0.3f));
  cases.push_back(class_case("cross_entropy/one_sample", "cross_entropy", {randn(g, {5}), idx({3}, Shape{})},
                             {true, false}, Reduction::mean, 0.0f));
  cases.push_back(class_case("nll_loss/ignore_weight_none", "nll_loss", {log_softmax(randn(g, {6, 5})), t6, w},
                             {true, false, false}, Reduction::none, 0.0f));
}

// The losses (mse, l1, binary cross-entropy on logits), on a generator of their own: gradients
// to both operands. The targets of the cross-entropy in [0, 1], as probabilities are.
void append_loss_cases(std::vector<OpCase>& cases) {
  Generator g(20261207);
  using Loss = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, Loss> losses[] = {{"mse_loss", &kiln::mse_loss},
                                                 {"l1_loss", &kiln::l1_loss},
                                                 {"bce_with_logits", &kiln::binary_cross_entropy_with_logits}};
  for (const auto& [op, fn] : losses) {
    const Shape s{4, 3};
    const Tensor a = Tensor::uniform(s, -3.0f, 3.0f, g);
    const Tensor b = std::string(op) == "bce_with_logits" ? Tensor::uniform(s, 0.0f, 1.0f, g)
                                                           : Tensor::uniform(s, -3.0f, 3.0f, g);
    const Loss f = fn;
    cases.push_back(streaming(simple(std::string(op) + "/4x3", op, {a, b}, {true, true},
                                     [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, kRtolReduction),
                              4, 1));
  }
  append_class_loss_cases(cases, g);
}

// transpose (one matrix, and a batch of them over tiles' edges) and matmul, fp32 and bf16, on a
// generator of their own.
void append_matrix_cases(std::vector<OpCase>& cases) {
  Generator g(20261208);
  OpCase t = simple("transpose/3x4", "transpose", {randn(g, {3, 4})}, {true},
                    [](const std::vector<Tensor>& in) { return transpose(in[0]); }, kRtolExact);
  cases.push_back(t);
  cases.push_back(bf16_variant(t, kRtolExact));
  cases.push_back(simple("transpose/batched_2x33x35", "transpose", {randn(g, {2, 33, 35})}, {true},
                         [](const std::vector<Tensor>& in) { return transpose(in[0]); }, kRtolExact));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));  // the CPU's 8 x 8 blocks of 16-bit elements
  OpCase m = simple("matmul/5x4x3", "matmul", {randn(g, {5, 4}), randn(g, {4, 3})}, {true, true},
                    [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, kRtolReduction);
  m.flops = 2.0 * 5 * 4 * 3;
  cases.push_back(m);
  cases.push_back(bf16_variant(m, kRtolBf16));
  // [..., M, K] @ [K, N]: every row of a through one product; [B, M, K] @ [B, K, N]: a product per matrix.
  OpCase rows = simple("matmul/2x3x4_by_4x5", "matmul", {randn(g, {2, 3, 4}), randn(g, {4, 5})}, {true, true},
                       [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, kRtolReduction);
  rows.flops = 2.0 * 6 * 4 * 5;
  cases.push_back(rows);
  OpCase batched = simple("matmul/2x3x4x5_by_2x3x5x2", "matmul", {randn(g, {2, 3, 4, 5}), randn(g, {2, 3, 5, 2})},
                          {true, true}, [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                          kRtolReduction);
  batched.flops = 2.0 * 6 * 4 * 5 * 2;
  cases.push_back(batched);
  cases.push_back(bf16_variant(batched, kRtolBf16));
  // Batch dimensions broadcast both ways ([2, 1] against [3]: each operand repeated), and a b of
  // batch extents 1 (one product for all of a's rows).
  OpCase both = simple("matmul/2x1x4x5_by_3x5x2", "matmul", {randn(g, {2, 1, 4, 5}), randn(g, {3, 5, 2})},
                       {true, true}, [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                       kRtolReduction);
  both.flops = 2.0 * 6 * 4 * 5 * 2;
  cases.push_back(both);
  OpCase one_b = simple("matmul/2x3x4_by_1x1x4x5", "matmul", {randn(g, {2, 3, 4}), randn(g, {1, 1, 4, 5})},
                        {true, true}, [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                        kRtolReduction);
  one_b.flops = 2.0 * 6 * 4 * 5;
  cases.push_back(one_b);
  // torch's vectors: [K] @ [K] (0-d), [B, M, K] @ [K], [K] @ [B, K, N].
  const std::pair<Shape, Shape> vectors[] = {{{7}, {7}}, {{2, 3, 4}, {4}}, {{4}, {2, 4, 5}}};
  const auto named = [](const Shape& s) {
    std::string n;
    for (int64_t d : s.dims()) n += (n.empty() ? "" : "x") + std::to_string(d);
    return n;
  };
  for (const auto& [sa, sb] : vectors) {
    OpCase v = simple("matmul/" + named(sa) + "_by_" + named(sb), "matmul", {randn(g, sa), randn(g, sb)}, {true, true},
                      [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }, kRtolReduction);
    v.flops = 2.0 * static_cast<double>(sa.numel() * sb.numel() / sa.dims().back());
    cases.push_back(v);
  }
  // torch.tril and torch.triu over a batch of 3 x 5 matrices, diagonals on both sides of 0.
  for (const auto& [lower_, diagonal_] : {std::pair{true, 0}, std::pair{true, -1}, std::pair{false, 2}}) {
    const bool lower = lower_;  // locals: a lambda captures no structured binding (clang 14)
    const int diagonal = diagonal_;
    const char* op = lower ? "tril" : "triu";
    OpCase k = simple(std::string(op) + "/2x3x5_" + std::to_string(diagonal), op, {randn(g, {2, 3, 5})}, {true},
                      [lower, diagonal](const std::vector<Tensor>& in) {
                        return lower ? tril(in[0], diagonal) : triu(in[0], diagonal);
                      },
                      kRtolExact);
    k.params = {{"diagonal", diagonal}};
    set_streaming_cost(k, 1, 1);
    cases.push_back(k);
  }
}

// maximum, minimum, clamp and the comparisons. Operands of maximum and minimum differ by 0.05 or
// more and clamp's inputs stay 0.025 from its bounds, past the finite differences' step (0.01), so
// no difference straddles a kink; eq and ne get ties on purpose (every other element).
void append_select_cases(std::vector<OpCase>& cases) {
  Generator g(20261209);
  const Tensor a = distinct(g, {3, 4});
  const Tensor row = Tensor::from_vector(std::vector<float>{-0.15f, 0.05f, 0.25f, -0.35f}, {4});
  for (const char* op : {"maximum", "minimum"}) {
    const bool is_max = std::string(op) == "maximum";
    OpCase k = simple(std::string(op) + "/3x4_by_4", op, {a, row}, {true, true},
                      [is_max](const std::vector<Tensor>& in) {
                        return is_max ? maximum(in[0], in[1]) : minimum(in[0], in[1]);
                      },
                      kRtolElementwise);  // exact but for the broadcast operand's summed gradient
    set_streaming_cost(k, 1, 12);
    cases.push_back(k);
    cases.push_back(bf16_variant(k, kRtolBf16));
  }
  OpCase c = simple("clamp/3x5", "clamp", {distinct(g, {3, 5})}, {true},
                    [](const std::vector<Tensor>& in) { return clamp(in[0], -0.375f, 0.4375f); }, kRtolExact);
  c.params = {{"lo", -0.375}, {"hi", 0.4375}};  // bounds exact in bf16, 0.025 or more from every input
  set_streaming_cost(c, 2, 15);
  cases.push_back(c);
  cases.push_back(bf16_variant(c, kRtolExact));
  std::vector<float> tied = a.to_vector<float>();
  for (size_t i = 0; i < tied.size(); i += 2) tied[i] += 0.3f;
  const Tensor b = Tensor::from_vector(tied, {3, 4});
  using Compare = Tensor (*)(const Tensor&, const Tensor&);
  using CompareScalar = Tensor (*)(const Tensor&, double);
  const std::tuple<const char*, Compare, CompareScalar> ops[] = {
      {"gt", &kiln::gt, &kiln::gt}, {"ge", &kiln::ge, &kiln::ge}, {"lt", &kiln::lt, &kiln::lt},
      {"le", &kiln::le, &kiln::le}, {"eq", &kiln::eq, &kiln::eq}, {"ne", &kiln::ne, &kiln::ne}};
  for (const auto& [op, fn, fn_s] : ops) {
    const Compare f = fn;
    const CompareScalar fs = fn_s;
    cases.push_back(streaming(simple(std::string(op) + "/3x4_ties", op, {a, b}, {false, false},
                                     [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, kRtolExact),
                              1, 12));
    cases.push_back(streaming(simple(std::string(op) + "/3x4_by_4", op, {a, row}, {false, false},
                                     [f](const std::vector<Tensor>& in) { return f(in[0], in[1]); }, kRtolExact),
                              1, 12));
    OpCase k = simple(std::string(op) + "_scalar/3x4", std::string(op) + "_scalar", {a}, {false},
                      [fs](const std::vector<Tensor>& in) { return fs(in[0], 0.5f); }, kRtolExact);
    k.params = {{"s", 0.5}};  // one of a's values (0.1f * 5 rounds to 0.5f): a tie
    cases.push_back(streaming(k, 1, 12));
  }
}

// index_add and scatter_add, the gathers' reverse: repeated indices accumulate into one entry.
void append_scatter_add_cases(std::vector<OpCase>& cases, Generator& g, const Tensor& spread) {
  const auto scatter_case = [](const std::string& name, const char* op, Tensor x, Tensor src, Tensor idx, int64_t dim) {
    const int64_t out = x.numel();
    const bool per_element = std::string(op) == "scatter_add";
    OpCase k = simple(name, op, {std::move(x), std::move(src), std::move(idx)}, {true, true, false},
                      [dim, per_element](const std::vector<Tensor>& in) {
                        const auto add = per_element ? &kiln::scatter_add : &kiln::index_add;
                        return add(in[0], dim, in[2], in[1]);
                      },
                      kRtolElementwise);  // a sum of a few terms per entry
    k.params = {{"dim", static_cast<double>(dim)}};
    return streaming(k, 1, out);
  };
  cases.push_back(scatter_case("index_add/4x5x3_dim1_by_6", "index_add", randn(g, {4, 5, 3}), randn(g, {4, 6, 3}),
                               Tensor::from_vector(std::vector<int64_t>{4, 0, 2, 4, 1, 4}, {6}), 1));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(scatter_case("index_add/5x2_dim-1_by_3_i32", "index_add", randn(g, {5, 2}), randn(g, {5, 3}),
                               Tensor::from_vector(std::vector<int64_t>{1, 1, 0}, {3}).to(DType::i32), -1));
  // Indices [3, 6, 5] into x [3, 4, 5] along dimension 1, src of their shape (torch 1.13's backward
  // fails on a longer one: python/tests/test_ops.py checks that corner against torch's on the corner).
  cases.push_back(scatter_case("scatter_add/3x4x5_dim1_by_3x6x5", "scatter_add", randn(g, {3, 4, 5}),
                               randn(g, {3, 6, 5}), spread.reshape({3, 6, 5}), 1));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  // Indices shorter than x in the dimensions but dim's: x's corner [2, 5, 2] takes the sums.
  std::vector<int64_t> corner(24);
  for (size_t i = 0; i < corner.size(); ++i) corner[i] = static_cast<int64_t>((i * 3 + i / 4) % 5);
  cases.push_back(scatter_case("scatter_add/4x5x3_dim1_by_2x6x2", "scatter_add", randn(g, {4, 5, 3}),
                               randn(g, {2, 6, 2}), Tensor::from_vector(corner, {2, 6, 2}), 1));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
}

// argmax and argmin along the last dimension and another, keepdim or not: values of five levels,
// so rows tie (the first wins), -0 beside +0 (equal), and a NaN in two rows (it wins, torch's).
void append_arg_extreme_cases(std::vector<OpCase>& cases, Generator& g) {
  const auto levels = [&g](Shape s) {
    std::vector<float> v = Tensor::uniform(s, 0.0f, 5.0f, g).to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = i == 5 || i == v.size() / 2 ? NAN : i % 7 == 3 ? -0.0f : std::floor(v[i]) - 2.0f;
    return Tensor::from_vector(v, s);
  };
  const auto extreme = [](const std::string& name, const std::string& op, Tensor x, int64_t dim, bool keepdim) {
    const int64_t n = x.numel();
    OpCase k = simple(name, op, {std::move(x)}, {false}, [op, dim, keepdim](const std::vector<Tensor>& in) {
      return op == "argmax" ? argmax(in[0], dim, keepdim) : argmin(in[0], dim, keepdim);
    }, kRtolExact);
    k.params = {{"dim", static_cast<double>(dim)}, {"keepdim", keepdim ? 1.0 : 0.0}};
    k.bytes = n * 4.0;  // read x; the int64 positions are few
    return k;
  };
  cases.push_back(extreme("argmax/6x40_dim-1", "argmax", levels({6, 40}), -1, false));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  cases.push_back(extreme("argmin/6x40_dim-1", "argmin", levels({6, 40}), -1, false));
  cases.push_back(extreme("argmax/5x7x3_dim1_keepdim", "argmax", levels({5, 7, 3}), 1, true));
  cases.push_back(extreme("argmin/5x7x3_dim0", "argmin", levels({5, 7, 3}), 0, false));
  // Rows past 256 (a GPU block of 256 threads, warps combined through shared memory), a NaN at
  // 500 in the second, ties across warps.
  cases.push_back(extreme("argmax/3x1000_dim-1", "argmax", levels({3, 1000}), -1, false));
  cases.push_back(extreme("argmin/3x1000_dim-1", "argmin", levels({3, 1000}), -1, true));
  cases.push_back(extreme("argmax/int64_6x40_dim-1", "argmax", wide_integers({6, 40}, DType::i64), -1, false));
  cases.push_back(extreme("argmin/int32_5x7x3_dim1_keepdim", "argmin", wide_integers({5, 7, 3}, DType::i32), 1, true));
  cases.push_back(extreme("argmax/int64_3x1500_dim-1", "argmax", wide_integers({3, 1500}, DType::i64), -1, false));
  // max and min along a dimension: argmax's positions, the values gathered there (distinct inputs: the
  // gradient goes to the one position, as torch's).
  const auto along = [](const std::string& name, const std::string& op, Tensor x, int64_t dim, bool keepdim) {
    const int64_t n = x.numel();
    OpCase k = simple(name, op, {std::move(x)}, {true}, [op, dim, keepdim](const std::vector<Tensor>& in) {
      return (op == "max_dim" ? max(in[0], dim, keepdim) : min(in[0], dim, keepdim)).values;
    }, kRtolExact);
    k.params = {{"dim", static_cast<double>(dim)}, {"keepdim", keepdim ? 1.0 : 0.0}};
    k.bytes = n * 4.0;  // read x; the values and positions are few
    return k;
  };
  cases.push_back(along("max_dim/6x40_dim1", "max_dim", distinct(g, {6, 40}), 1, false));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  cases.push_back(along("min_dim/5x7x3_dim0_keepdim", "min_dim", distinct(g, {5, 7, 3}), 0, true));
}

// sort, argsort and topk along the last dimension and others, ascending and descending; then
// argmax, argmin and cumsum. The differentiable sorts take values spaced apart (distinct): no ties
// (torch.topk leaves their order open) and no order flips under gradcheck's finite difference;
// argsort random normals.
void append_sort_cases(std::vector<OpCase>& cases, Generator& g) {
  const auto sorted = [](const std::string& name, const std::string& op, Tensor x, int64_t dim, bool descending) {
    const bool values = op == "sort";
    const int64_t n = x.numel();
    OpCase k = simple(name, op, {std::move(x)}, {values}, [op, dim, descending](const std::vector<Tensor>& in) {
      return op == "sort" ? sort(in[0], dim, descending).values : argsort(in[0], dim, descending);
    }, kRtolElementwise);
    k.params = {{"dim", static_cast<double>(dim)}, {"descending", descending ? 1.0 : 0.0}};
    k.bytes = n * (4.0 + (values ? 4.0 : 8.0));  // read x, write values or int64 indices
    return k;
  };
  cases.push_back(sorted("sort/5x9_dim-1", "sort", distinct(g, {5, 9}), -1, false));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(sorted("sort/4x6x3_dim1_descending", "sort", distinct(g, {4, 6, 3}), 1, true));
  cases.push_back(sorted("argsort/7x5_dim0", "argsort", randn(g, {7, 5}), 0, false));
  cases.push_back(sorted("argsort/3x40_dim1_descending", "argsort", randn(g, {3, 40}), 1, true));
  const auto top = [](const std::string& name, Tensor x, int64_t k, int64_t dim, bool largest) {
    const int64_t n = x.numel();
    OpCase c = simple(name, "topk", {std::move(x)}, {true}, [k, dim, largest](const std::vector<Tensor>& in) {
      return topk(in[0], k, dim, largest).values;
    }, kRtolElementwise);
    c.params = {{"k", static_cast<double>(k)}, {"dim", static_cast<double>(dim)}, {"largest", largest ? 1.0 : 0.0}};
    c.bytes = n * 4.0;  // read x; the k outputs are few
    return c;
  };
  cases.push_back(top("topk/6x50_k5", distinct(g, {6, 50}), 5, -1, true));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(top("topk/8x3x4_k2_dim0_smallest", distinct(g, {8, 3, 4}), 2, 0, false));
  append_arg_extreme_cases(cases, g);
  const auto running = [](const std::string& name, Tensor x, int64_t dim) {
    const int64_t n = x.numel();
    OpCase k = simple(name, "cumsum", {std::move(x)}, {true},
                      [dim](const std::vector<Tensor>& in) { return cumsum(in[0], dim); }, kRtolElementwise);
    k.params = {{"dim", static_cast<double>(dim)}};
    k.bytes = n * 8.0;  // read x, write y
    return k;
  };
  cases.push_back(running("cumsum/7x33_dim-1", randn(g, {7, 33}), -1));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(running("cumsum/3x6x257_dim1", randn(g, {3, 6, 257}), 1));  // chunks of 256 lines and of 1
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(running("cumsum/9x2_dim0", randn(g, {9, 2}), 0));
}

// index_select along a middle dimension (repeats, so the gradient sums), the last (rows of one
// element) and the first by a single index; bfloat16; and an integer tensor (no gradient). Then
// gather, an index per element.
void append_index_select_cases(std::vector<OpCase>& cases, Generator& g) {
  const auto idx64 = [](std::vector<int64_t> v) {
    const auto n = static_cast<int64_t>(v.size());
    return Tensor::from_vector(std::move(v), {n});
  };
  const auto select = [](const std::string& name, Tensor x, Tensor idx, int64_t dim, bool diff) {
    OpCase k = simple(name, "index_select", {std::move(x), std::move(idx)}, {diff, false},
                      [dim](const std::vector<Tensor>& in) { return index_select(in[0], dim, in[1]); },
                      kRtolElementwise);  // exact but for the repeated entries' summed gradients
    k.params = {{"dim", static_cast<double>(dim)}};
    return k;
  };
  cases.push_back(streaming(select("index_select/4x5x3_dim1_by_6", randn(g, {4, 5, 3}), idx64({4, 0, 2, 4, 1, 4}), 1,
                                   true), 0, 72));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(streaming(select("index_select/6x7_dim-1_by_i32", randn(g, {6, 7}),
                                   idx64({6, 0, 3, 3}).to(DType::i32), -1, true), 0, 24));
  cases.push_back(streaming(select("index_select/5x3_dim0_by_one", randn(g, {5, 3}),
                                   Tensor::from_vector(std::vector<int64_t>{2}, {}), 0, true), 0, 3));
  OpCase labels = select("index_select/i64_3x4_dim1", idx64({5, 1, 9, 0, 7, 2, 11, 3, 8, 4, 6, 10}).reshape({3, 4}),
                         idx64({3, 1}), 1, false);
  labels.bytes = 2 * 6 * 8.0;  // six int64 read and written
  cases.push_back(labels);
  const auto gather_case = [](const std::string& name, Tensor x, Tensor idx, int64_t dim) {
    const int64_t out = idx.numel();
    OpCase k = simple(name, "gather", {std::move(x), std::move(idx)}, {true, false},
                      [dim](const std::vector<Tensor>& in) { return gather(in[0], dim, in[1]); }, kRtolElementwise);
    k.params = {{"dim", static_cast<double>(dim)}};
    return streaming(k, 0, out);
  };
  // Along the middle dimension, longer than x there (indices repeat); along the last, of int32;
  // along the first with indices shorter than x in the others (x's corner is read).
  std::vector<int64_t> spread(90);  // 6 per (block, column) in [0, 4): each column repeats some
  for (size_t i = 0; i < spread.size(); ++i) spread[i] = static_cast<int64_t>((i * 7 + i / 5) % 4);
  cases.push_back(gather_case("gather/3x4x5_dim1_by_3x6x5", randn(g, {3, 4, 5}), idx64(spread).reshape({3, 6, 5}), 1));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(gather_case("gather/4x6_dim-1_by_4x2_i32", randn(g, {4, 6}),
                              idx64({5, 0, 2, 2, 1, 4, 3, 3}).reshape({4, 2}).to(DType::i32), -1));
  cases.push_back(gather_case("gather/5x3x2_dim0_by_2x2x1", randn(g, {5, 3, 2}), idx64({4, 0, 4, 2}).reshape({2, 2, 1}),
                              0));
  append_scatter_add_cases(cases, g, idx64(spread));
  append_sort_cases(cases, g);
}

// Reductions over chosen dimensions, narrow, concat, stack, embedding, index_select and layer_norm.
void append_shape_cases(std::vector<OpCase>& cases) {
  Generator g(20261210);
  const Tensor x = randn(g, {2, 3, 4});
  using Reduce = Tensor (*)(const Tensor&, const std::vector<int64_t>&, bool);
  const auto reduce_case = [&](const char* op, Reduce fn, std::vector<int64_t> dims, bool keepdim) {
    std::string name = std::string(op) + "/2x3x4_over";
    for (int64_t d : dims) name += "_" + std::to_string(d);
    const bool extreme = op[0] == 'a';  // amax, amin: distinct inputs, so no tie sits under a finite difference
    OpCase k = simple(name + (keepdim ? "_keepdim" : ""), op, {extreme ? distinct(g, {2, 3, 4}) : x}, {true},
                      [=](const std::vector<Tensor>& in) { return fn(in[0], dims, keepdim); },
                      extreme ? kRtolExact : kRtolReduction);
    k.params = {{"keepdim", keepdim ? 1.0 : 0.0}, {"ndims", static_cast<double>(dims.size())}};
    for (size_t i = 0; i < dims.size(); ++i) k.params["d" + std::to_string(i)] = static_cast<double>(dims[i]);
    return k;
  };
  const Reduce sum_dims = &kiln::sum, mean_dims = &kiln::mean, amax_dims = &kiln::amax, amin_dims = &kiln::amin;
  cases.push_back(streaming(reduce_case("sum_dims", sum_dims, {1}, false), 1, 8));
  cases.push_back(streaming(reduce_case("sum_dims", sum_dims, {-1}, true), 1, 6));
  cases.push_back(streaming(reduce_case("mean_dims", mean_dims, {0, 2}, true), 1, 3));
  cases.push_back(bf16_variant(streaming(reduce_case("mean_dims", mean_dims, {0}, false), 1, 12), kRtolBf16));
  cases.push_back(streaming(reduce_case("amax", amax_dims, {1}, false), 1, 8));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  cases.push_back(streaming(reduce_case("amin", amin_dims, {0, 2}, true), 1, 3));
  cases.push_back(streaming(reduce_case("amax", amax_dims, {-1}, false), 1, 6));
  const Reduce logsumexp_dims = &kiln::logsumexp;  // exp and log per element, a sum per row
  cases.push_back(streaming(reduce_case("logsumexp", logsumexp_dims, {1}, false), 3, 8));
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  cases.push_back(streaming(reduce_case("logsumexp", logsumexp_dims, {0, 2}, true), 3, 3));
  // The p-norms: 2 (a root of sums of squares), 1, 3 (powers and a root), inf (the largest |x|).
  struct Norm {
    double p;
    std::vector<int64_t> dims;
    bool keepdim;
  };
  const Norm norms[] = {{2.0, {1}, false}, {1.0, {0, 2}, true}, {3.0, {-1}, false}, {INFINITY, {0, 1, 2}, false}};
  for (const Norm& norm : norms) {
    const double p = norm.p;
    const std::vector<int64_t> dims = norm.dims;
    const bool keepdim = norm.keepdim;
    std::string name = "vector_norm/2x3x4_p" + (std::isinf(p) ? std::string("inf") : std::to_string(int(p))) + "_over";
    for (int64_t d : dims) name += "_" + std::to_string(d);
    OpCase k = simple(name, "vector_norm", {std::isinf(p) ? distinct(g, {2, 3, 4}) : x}, {true},
                      [p, dims, keepdim](const std::vector<Tensor>& in) {
                        return vector_norm(in[0], p, dims, keepdim);
                      },
                      kRtolReduction);
    // p 0 stands for inf: the manifest is JSON, which has no infinity
    k.params = {{"p", std::isinf(p) ? 0.0 : p}, {"keepdim", keepdim ? 1.0 : 0.0},
                {"ndims", static_cast<double>(dims.size())}};
    for (size_t i = 0; i < dims.size(); ++i) k.params["d" + std::to_string(i)] = static_cast<double>(dims[i]);
    cases.push_back(streaming(k, 3, 6));
  }
  cases.push_back(bf16_variant(cases.back(), kRtolBf16));
  // Rows long enough for the GPU's block-per-row kernel (1024 and more), maximum not at the start.
  OpCase long_rows = simple("amax/3x1500_over_1", "amax", {distinct(g, {3, 1500})}, {true},
                            [](const std::vector<Tensor>& in) { return amax(in[0], 1); }, kRtolExact);
  long_rows.params = {{"keepdim", 0.0}, {"ndims", 1.0}, {"d0", 1.0}};
  cases.push_back(streaming(long_rows, 1, 3));
  // Integers: along short rows (CPU lanes), slabs (inner > 1) and long rows (a GPU block each).
  const auto integer_case = [](const char* op, Reduce fn, const char* shape, Tensor in, std::vector<int64_t> dims,
                                bool keepdim) {
    std::string name = std::string(op) + "/" + dtype_name(in.dtype()) + "_" + shape + "_over";
    for (int64_t d : dims) name += "_" + std::to_string(d);
    OpCase k = simple(name + (keepdim ? "_keepdim" : ""), op, {std::move(in)}, {false},
                      [=](const std::vector<Tensor>& x) { return fn(x[0], dims, keepdim); }, kRtolExact);
    k.params = {{"keepdim", keepdim ? 1.0 : 0.0}, {"ndims", static_cast<double>(dims.size())}};
    for (size_t i = 0; i < dims.size(); ++i) k.params["d" + std::to_string(i)] = static_cast<double>(dims[i]);
    return k;
  };
  cases.push_back(integer_case("amax", amax_dims, "6x40", wide_integers({6, 40}, DType::i64), {1}, false));
  cases.push_back(integer_case("amin", amin_dims, "5x7x3", wide_integers({5, 7, 3}, DType::i32), {0, 2}, true));
  cases.push_back(integer_case("amax", amax_dims, "3x1500", wide_integers({3, 1500}, DType::i64), {-1}, false));
  cases.push_back(integer_case("amin", amin_dims, "3x1500", wide_integers({3, 1500}, DType::i32), {1}, false));
  OpCase f = simple("flip/3x5x4_dims0_2", "flip", {randn(g, {3, 5, 4})}, {true},
                    [](const std::vector<Tensor>& in) { return flip(in[0], {0, -1}); }, kRtolExact);
  f.params = {{"ndims", 2}, {"d0", 0}, {"d1", 2}};
  f.bytes = 60 * 8.0 * 2;  // an index_select per dimension, each reading x and writing a copy
  cases.push_back(f);
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  OpCase n = simple("narrow/3x5x4_dim1_1to4", "narrow", {randn(g, {3, 5, 4})}, {true},
                    [](const std::vector<Tensor>& in) { return narrow(in[0], 1, 1, 3); }, kRtolExact);
  n.params = {{"dim", 1}, {"start", 1}, {"length", 3}};
  cases.push_back(streaming(n, 0, 36));
  OpCase c = simple("concat/2x3x4_2x1x4_2x2x4_dim1", "concat", {x, randn(g, {2, 1, 4}), randn(g, {2, 2, 4})},
                    {true, true, true}, [](const std::vector<Tensor>& in) { return concat(in, 1); }, kRtolExact);
  c.params = {{"dim", 1}};
  cases.push_back(streaming(c, 0, 48));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  OpCase li = simple("concat/i64_labels", "concat",
                     {Tensor::from_vector(std::vector<int64_t>{3, 1, 4}, {3}),
                      Tensor::from_vector(std::vector<int64_t>{1, 5}, {2})},
                     {false, false}, [](const std::vector<Tensor>& in) { return concat(in, 0); }, kRtolExact);
  li.params = {{"dim", 0}};
  li.bytes = 2 * 5 * 8.0;  // five int64 read and written
  cases.push_back(li);
  OpCase st = simple("stack/3x4_twice_dim1", "stack", {randn(g, {3, 4}), randn(g, {3, 4})}, {true, true},
                     [](const std::vector<Tensor>& in) { return stack(in, 1); }, kRtolExact);
  st.params = {{"dim", 1}};
  cases.push_back(streaming(st, 0, 24));
  // Indices with repeats (rows 1 and 4 twice), so the gradient sums rows.
  OpCase emb = simple("embedding/7x5_by_2x3", "embedding",
                      {randn(g, {7, 5}), Tensor::from_vector(std::vector<int64_t>{1, 4, 6, 4, 0, 1}, {2, 3})},
                      {true, false}, [](const std::vector<Tensor>& in) { return embedding(in[0], in[1]); },
                      kRtolElementwise);  // exact but for the repeated rows' summed gradients
  cases.push_back(streaming(emb, 0, 30));
  append_index_select_cases(cases, g);
  // Rows off-centre and spread, as batch_norm2d's, so the normalisation has work to do.
  OpCase ln = simple("layer_norm/4x6", "layer_norm",
                     {add(mul(randn(g, {4, 6}), 1.5f), 0.7f), add(mul(randn(g, {6}), 0.5f), 1.0f), randn(g, {6})},
                     {true, true, true},
                     [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5f); },
                     kRtolReduction);
  ln.params = {{"eps", 1e-5}};
  cases.push_back(streaming(ln, 8, 24));
}

// pow: a number exponent (each of pow_number's exact forms, and two through powf), a number base,
// and a tensor exponent broadcast and of the base's shape. Fractional exponents take bases in
// [0.5, 2] (a negative base's power is NaN there); integer ones take either sign, |x| >= 0.5,
// away from -1 and -2's poles.
void append_power_cases(std::vector<OpCase>& cases) {
  Generator g(20261211);
  for (const float p : {2.0f, 3.0f, -1.0f, -2.0f, 0.5f, -0.5f, 1.5f, 0.3f, 0.0f}) {
    const bool integer = p == std::floor(p);
    Tensor x = integer ? magnitude_between(g, {3, 4}, 0.5f, 2.0f) : Tensor::uniform({3, 4}, 0.5f, 2.0f, g);
    std::ostringstream name;
    name << "pow/3x4_to_" << p;
    OpCase k = simple(name.str(), "pow_scalar", {std::move(x)}, {true},
                      [p](const std::vector<Tensor>& in) { return pow(in[0], p); }, kRtolElementwise);
    k.params = {{"p", static_cast<double>(p)}};
    set_streaming_cost(k, 1, 12);
    cases.push_back(k);
    if (p == 2.0f || p == 1.5f) cases.push_back(bf16_variant(k, kRtolBf16));
  }
  OpCase r = simple("pow/2.5_to_3x4", "rpow_scalar", {Tensor::uniform({3, 4}, -2.0f, 2.0f, g)}, {true},
                    [](const std::vector<Tensor>& in) { return pow(2.5f, in[0]); }, kRtolElementwise);
  r.params = {{"s", 2.5}};
  set_streaming_cost(r, 1, 12);
  cases.push_back(r);
  cases.push_back(bf16_variant(r, kRtolBf16));
  Tensor base = Tensor::uniform({3, 4}, 0.5f, 2.0f, g), exponent = Tensor::uniform({4}, -2.0f, 2.0f, g);
  OpCase t = simple("pow/3x4_by_4", "pow", {std::move(base), std::move(exponent)}, {true, true},
                    [](const std::vector<Tensor>& in) { return pow(in[0], in[1]); },
                    kRtolElementwise);  // the exponent's gradient is summed over rows
  set_streaming_cost(t, 1, 12);
  cases.push_back(t);
  // One shape: the CPU's vector loop (kernels/cpu/cpu_elementwise.cpp pow_vector_loop).
  Tensor same_base = Tensor::uniform({3, 4}, 0.5f, 2.0f, g), same_exponent = Tensor::uniform({3, 4}, -2.0f, 2.0f, g);
  OpCase u = simple("pow/3x4_by_3x4", "pow", {std::move(same_base), std::move(same_exponent)}, {true, true},
                    [](const std::vector<Tensor>& in) { return pow(in[0], in[1]); }, kRtolElementwise);
  set_streaming_cost(u, 1, 12);
  cases.push_back(u);
  cases.push_back(bf16_variant(u, kRtolBf16));
}

// where (a row of b broadcast against a [3, 4] mask, a NaN in the mask counting as true) and
// masked_fill (a mask of rows broadcast over x), fp32 and bf16.
void append_where_cases(std::vector<OpCase>& cases) {
  Generator g(20261212);
  std::vector<float> mask = gt(randn(g, {3, 4}), 0.0f).to_vector<float>();
  mask[5] = std::nanf("");
  OpCase w = simple("where/3x4_mask_by_4", "where",
                    {Tensor::from_vector(mask, {3, 4}), randn(g, {3, 4}), randn(g, {4})}, {false, true, true},
                    [](const std::vector<Tensor>& in) { return where(in[0], in[1], in[2]); },
                    kRtolElementwise);  // exact but for b's summed gradient
  set_streaming_cost(w, 0, 12);
  cases.push_back(w);
  cases.push_back(bf16_variant(w, kRtolBf16));
  OpCase m = simple("masked_fill/3x4_by_3x1", "masked_fill",
                    {randn(g, {3, 4}), Tensor::from_vector(std::vector<float>{1, 0, 1}, {3, 1})}, {true, false},
                    [](const std::vector<Tensor>& in) { return masked_fill(in[0], in[1], -2.5f); }, kRtolExact);
  m.params = {{"value", -2.5}};
  set_streaming_cost(m, 0, 12);
  cases.push_back(m);
  cases.push_back(bf16_variant(m, kRtolExact));
}

// permute: attention's head split (innermost kept: runs), NCHW to NHWC and a dimension moved
// first (two groups swapped: transpose's kernel, over its 8 x 8 blocks and their edges), one
// that moves the innermost dimension otherwise (strided), the last two swapped and an int64 one
// (moved as bits).
void append_permute_cases(std::vector<OpCase>& cases) {
  Generator g(20261213);
  const auto permute_case = [&](const std::string& name, Tensor x, std::vector<int64_t> dims) {
    const bool floats = x.dtype() == DType::f32;
    const int64_t n = x.numel();
    OpCase k = simple("permute/" + name, "permute", {std::move(x)}, {floats},
                      [dims](const std::vector<Tensor>& in) { return permute(in[0], dims); }, kRtolExact);
    k.params = {{"ndims", static_cast<double>(dims.size())}};
    for (size_t i = 0; i < dims.size(); ++i) k.params["d" + std::to_string(i)] = static_cast<double>(dims[i]);
    return streaming(k, 0, n);
  };
  cases.push_back(permute_case("2x3x4x5_0213", randn(g, {2, 3, 4, 5}), {0, 2, 1, 3}));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  cases.push_back(permute_case("2x9x4x5_0231", randn(g, {2, 9, 4, 5}), {0, 2, 3, 1}));
  cases.push_back(bf16_variant(cases.back(), kRtolExact));
  cases.push_back(permute_case("2x3x4_201", randn(g, {2, 3, 4}), {2, 0, 1}));
  cases.push_back(permute_case("2x3x4_210", randn(g, {2, 3, 4}), {2, 1, 0}));
  cases.push_back(permute_case("3x4_10", randn(g, {3, 4}), {1, -2}));
  cases.push_back(permute_case("i64_2x3_10", Tensor::from_vector(std::vector<int64_t>{3, 1, 4, 1, 5, 9}, {2, 3}),
                               {1, 0}));
  cases.back().bytes = 2 * 6 * 8.0;  // six int64 read and written
  OpCase t = simple("transpose/2x3x4_dims_0_2", "transpose_dims", {randn(g, {2, 3, 4})}, {true},
                    [](const std::vector<Tensor>& in) { return transpose(in[0], 0, 2); }, kRtolExact);
  t.params = {{"d0", 0}, {"d1", 2}};
  cases.push_back(streaming(t, 0, 24));
  // Over a middle dimension (the CPU's kernel along it, in blocks of 64 columns: [2, 5, 70] has a
  // full block and a partial one; the GPU's last-dimension kernel between two permutations) and
  // over the first.
  for (const bool log : {false, true}) {
    const std::string op = log ? "log_softmax" : "softmax";
    using Case = std::tuple<const char*, std::vector<int64_t>, int64_t>;
    for (const auto& [name, shape, dim] : {Case{"2x5x3_dim1", {2, 5, 3}, 1},
                                           {"2x5x70_dim1", {2, 5, 70}, 1}, {"6x4_dim0", {6, 4}, 0},
                                           {"3x4x1_dim1", {3, 4, 1}, 1}}) {  // nothing after dim: the last's kernel
      const Tensor x = randn(g, Shape(shape));
      const int64_t d = dim;  // a copy: clang 14 captures no structured binding
      OpCase s = simple(op + "/" + name, op + "_dim", {x}, {true},
                        [log, d](const std::vector<Tensor>& in) { return log ? log_softmax(in[0], d) : softmax(in[0], d); },
                        kRtolReduction);
      s.params = {{"dim", static_cast<double>(d)}};
      cases.push_back(streaming(s, 4, x.numel()));
    }
  }
}

// var and stddev over chosen dimensions, unbiased and the population's, on inputs off-centre so
// that the mean's subtraction has work to do.
void append_statistics_cases(std::vector<OpCase>& cases) {
  Generator g(20261214);
  const Tensor x = add(mul(randn(g, {2, 5, 3}), 1.5f), 0.7f);
  for (const auto& [op, correction, dims] : {std::tuple<const char*, int64_t, std::vector<int64_t>>{"var", 1, {1}},
                                             {"var", 0, {0, 2}}, {"std", 1, {-1}}}) {
    const bool is_var = std::string(op) == "var";
    std::string name = std::string(op) + "/2x5x3_over";
    for (const int64_t d : dims) name += "_" + std::to_string(d);
    const int64_t c = correction;
    const std::vector<int64_t> ds = dims;
    OpCase k = simple(name + "_correction" + std::to_string(c), std::string(op) + "_dims", {x}, {true},
                      [is_var, ds, c](const std::vector<Tensor>& in) {
                        return is_var ? var(in[0], ds, c) : stddev(in[0], ds, c);
                      },
                      kRtolReduction);
    k.params = {{"correction", static_cast<double>(c)}, {"ndims", static_cast<double>(ds.size())}};
    for (size_t i = 0; i < ds.size(); ++i) k.params["d" + std::to_string(i)] = static_cast<double>(ds[i]);
    cases.push_back(streaming(k, 5, 30));
  }
}

}  // namespace

std::vector<OpCase> all_op_cases() {
  Generator g(20261129);
  std::vector<OpCase> cases;
  // conv2d: odd sizes, stride 1 and 2, padding 0 and 1, batch 1, with and without bias,
  // non-square kernels.
  cases.push_back(conv_case(g, "k3_s1_p1_bias", 2, 5, 6, 3, 4, 3, 3, 1, 1, true));
  cases.push_back(conv_case(g, "k3_s2_p0_odd_batch1", 1, 7, 5, 2, 3, 3, 3, 2, 0, true));
  cases.push_back(conv_case(g, "k1_s1_p0_nobias", 2, 4, 3, 4, 5, 1, 1, 1, 0, false));
  cases.push_back(conv_case(g, "k3x2_s2_p1", 1, 8, 7, 3, 2, 3, 2, 2, 1, true));
  cases.push_back(conv_case(g, "k5_s1_p1_batch1", 1, 9, 8, 2, 3, 5, 5, 1, 1, false));
  // 16 input channels and more at stride 1 on 28x28 and larger: the CPU's backward-data runs
  // as a forward convolution of dy with the flipped filter (kernels/cpu/cpu_conv.cpp);
  // smaller images, 1x1 filters and padding over k-1 keep oneDNN's own backward-data.
  cases.push_back(conv_case(g, "k3_s1_p1_c16_28x28", 1, 28, 28, 16, 8, 3, 3, 1, 1, true));
  cases.push_back(conv_case(g, "k3x2_s1_p0_c17_30x27", 1, 30, 27, 17, 5, 3, 2, 1, 0, false));
  cases.push_back(conv_case(g, "k5_s1_p2_c16_batch2_28x29", 2, 28, 29, 16, 3, 5, 5, 1, 2, false));
  cases.push_back(conv_case(g, "k3_s1_p1_c16_small", 2, 6, 5, 16, 8, 3, 3, 1, 1, true));
  cases.push_back(conv_case(g, "k1_s1_p1_c16_pad_over_k", 1, 4, 3, 16, 4, 1, 1, 1, 1, false));
  // max_pool2d: VGG's 2x2/2, odd sizes with a 3x3/2 window and padding, overlapping 2x2/1.
  cases.push_back(pool_case(g, "k2_s2", 2, 6, 6, 3, 2, 2, 0));
  cases.push_back(pool_case(g, "k3_s2_p1_odd_batch1", 1, 7, 5, 2, 3, 2, 1));
  cases.push_back(pool_case(g, "k2_s1_overlap", 2, 5, 5, 4, 2, 1, 0));
  cases.push_back(pool_case(g, "k2_s2_odd_floor", 1, 5, 7, 3, 2, 2, 0));
  // adaptive_avg_pool2d: VGG's pool5 at 64 px (2x2 -> 7x7, inputs repeated), at 320 px
  // shrunk (10x10 -> 7x7, overlapping windows), uneven (5x7 -> 3x2), global (-> 1x1).
  cases.push_back(adaptive_case(g, "2x2_to_7x7_upsample", 2, 2, 2, 3, 7, 7));
  cases.push_back(adaptive_case(g, "10x10_to_7x7_overlap", 1, 10, 10, 2, 7, 7));
  cases.push_back(adaptive_case(g, "5x7_to_3x2_uneven", 2, 5, 7, 3, 3, 2));
  cases.push_back(adaptive_case(g, "global_1x1", 2, 3, 4, 5, 1, 1));
  // batch_norm2d: both forms on odd shapes, without gamma/beta, one image (N = 1, H*W > 1
  // is legal in training), and a single pixel in the inference form (training refuses it).
  cases.push_back(batch_norm_case(g, "train_2x3x5x4", 2, 3, 5, 4, true, true, 0.1f));
  cases.push_back(batch_norm_case(g, "eval_2x3x5x4", 2, 3, 5, 4, false, true, 0.1f));
  cases.push_back(batch_norm_case(g, "train_no_affine_momentum0.3", 3, 2, 2, 5, true, false, 0.3f));
  cases.push_back(batch_norm_case(g, "train_batch1_4x3x3", 1, 4, 3, 3, true, true, 0.1f));
  cases.push_back(batch_norm_case(g, "eval_single_pixel_1x1x1x3", 1, 1, 1, 3, false, true, 0.1f));
  append_math_cases(g, cases);
  append_bf16_cases(cases);
  append_broadcast_cases(cases);
  append_integer_arithmetic_cases(cases);
  append_unary_cases(cases);
  append_loss_cases(cases);
  append_matrix_cases(cases);
  append_select_cases(cases);
  append_shape_cases(cases);
  append_power_cases(cases);
  append_where_cases(cases);
  append_permute_cases(cases);
  append_statistics_cases(cases);
  return cases;
}

namespace {
std::vector<Tensor> inputs_as(const OpCase& c, DType dtype, Device device, bool requires_grad) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Tensor& src = c.inputs[i];
    Tensor t = (is_floating(src.dtype()) && !kept_fp32(c, i) ? src.to(dtype) : src).to(device).clone();
    if (requires_grad && c.differentiable[i]) t.set_requires_grad(true);
    out.push_back(t);
  }
  return out;
}
}  // namespace

std::vector<Tensor> prepare_inputs(const OpCase& c, Device device, bool requires_grad) {
  return inputs_as(c, c.dtype, device, requires_grad);
}

std::vector<Tensor> prepare_fp32_inputs(const OpCase& c, Device device, bool requires_grad) {
  return inputs_as(c, DType::f32, device, requires_grad);
}

}  // namespace kiln::check
