// The digests that tests/kernels/test_clones_agree.sh compares across CPUs: kiln's own loops
// are compiled once per ISA (KILN_CPU_CLONES, core/hd.h) and must give the same bits on each,
// but a machine runs only the copy its CPU picks. The script runs this hidden case natively
// and under an emulator posing as CPUs that pick the other copies, and compares its lines:
// every op table case, then large ones (below) that reach the loops' threads and tails.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check/op_cases.h"
#include "io/crc32c.h"
#include "train/linear_probe.h"

using namespace kiln;
using namespace kiln::check;

namespace {

// CRC32C of a tensor's shape, dtype and bytes, every NaN as one pattern (qemu's NaNs are its
// default NaN, whatever the hardware's would be); "-" for an undefined tensor (no gradient).
std::string digest(const Tensor& t) {
  if (!t.defined()) return "-";
  std::vector<uint8_t> bytes(static_cast<const uint8_t*>(t.raw_data()),  // kiln's tensors are contiguous
                             static_cast<const uint8_t*>(t.raw_data()) + t.nbytes());
  if (t.dtype() == DType::f32 || t.dtype() == DType::bf16) {
    const size_t size = t.dtype() == DType::f32 ? 4 : 2;
    const uint32_t exponent = size == 4 ? 0x7f800000u : 0x7f80u, mantissa = size == 4 ? 0x007fffffu : 0x007fu;
    const uint32_t nan = size == 4 ? 0x7fc00000u : 0x7fc0u;
    for (size_t at = 0; at < bytes.size(); at += size) {
      uint32_t v = 0;  // little-endian: the low bytes of v
      std::memcpy(&v, &bytes[at], size);
      if ((v & exponent) == exponent && (v & mantissa) != 0) std::memcpy(&bytes[at], &nan, size);
    }
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%s:%08x", dtype_name(t.dtype()), t.shape().str().c_str(),
                io::crc32c(bytes.data(), bytes.size()));
  return buf;
}

// Which copy of the cloned loops this CPU runs (GCC's dispatcher asks the same questions).
const char* isa_level() {
#if defined(KILN_HAS_CPU_CLONES)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
  return "default";
#else
  return "none";  // one copy, compiled for the build's target
#endif
}

using Inputs = std::vector<Tensor>;

// A case at a size past its loops' thresholds for threads (16384 or 65536 elements, 64 rows),
// with odd extents (channels 37 and 131), so each copy runs its threaded split, its blocks'
// fix-ups and its scalar tail: the op table's cases are a few dozen elements, which no thread and
// no full vector reaches. Checked with gdb (a breakpoint on every AVX-512 copy's symbol, noting
// the thread): every cloned loop runs on a worker thread in some case here (each function, not
// each of its instantiations: not every op, dtype and stride pattern).
OpCase large(const std::string& name, Inputs inputs, std::vector<bool> differentiable,
             std::function<Tensor(const Inputs&)> forward, DType dtype = DType::f32) {
  OpCase k;
  k.name = "large/" + name + (dtype == DType::bf16 ? "_bf16" : "");
  k.inputs = std::move(inputs);
  k.differentiable = std::move(differentiable);
  k.forward = std::move(forward);
  k.dtype = dtype;
  return k;
}

const Shape kRows{409, 491};  // 200,819 elements

Tensor randn(Generator& g, const Shape& s, float scale = 1.0f) { return mul(Tensor::normal(s, 0.0f, 1.0f, g), scale); }
Tensor positive(Generator& g, const Shape& s) { return Tensor::uniform(s, 0.01f, 4.0f, g); }
// Integer-valued floats in [-3, 3] (a negative base's finite powers), every fifth one off by 0.5.
Tensor whole_powers(Generator& g, const Shape& s) {
  std::vector<float> v = Tensor::uniform(s, -3.49f, 3.49f, g).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::nearbyint(v[i]) + (i % 5 == 0 ? 0.5f : 0.0f);
  return Tensor::from_vector(v, s);
}
std::vector<int64_t> label_values(Generator& g, int64_t n, int64_t classes) {
  std::vector<int64_t> l;
  for (float u : Tensor::uniform(Shape{n}, 0.0f, static_cast<float>(classes) - 0.5f, g).to_vector<float>())
    l.push_back(static_cast<int64_t>(u));
  return l;
}
Tensor labels(Generator& g, int64_t n, int64_t classes) {
  return Tensor::from_vector(label_values(g, n, classes), Shape{n});
}

// Each unary op over N(0, 16): its tails, where exp, sigmoid and gelu take their other arms.
void add_large_unary(Generator& g, std::vector<OpCase>& cases) {
  const std::vector<std::pair<std::string, Tensor (*)(const Tensor&)>> ops = {
      {"exp", exp},   {"tanh", tanh}, {"sigmoid", sigmoid},   {"gelu", gelu}, {"silu", silu},
      {"abs", abs},   {"relu", relu}, {"softplus", softplus}, {"neg", neg}};
  for (const auto& [name, op] : ops)
    for (DType d : {DType::f32, DType::bf16})
      cases.push_back(large(name, {randn(g, kRows, 4.0f)}, {true}, [f = op](const Inputs& in) { return f(in[0]); }, d));
  for (DType d : {DType::f32, DType::bf16}) {
    cases.push_back(large("log", {positive(g, kRows)}, {true}, [](const Inputs& in) { return log(in[0]); }, d));
    cases.push_back(large("sqrt", {positive(g, kRows)}, {true}, [](const Inputs& in) { return sqrt(in[0]); }, d));
    cases.push_back(large("clamp", {randn(g, kRows)}, {true},
                          [](const Inputs& in) { return clamp(in[0], -0.5f, 0.7f); }, d));
  }
}

// Binary ops: the same shape, broadcast rows and columns, a number on either side, integer
// comparisons, and pow's vector loops (a tensor or number exponent, a number base), with the bases
// they leave to powf (zero and negative: pow_tensors; a negative number base: the scalar loop).
void add_large_binary(Generator& g, std::vector<OpCase>& cases) {
  const Shape row{491}, column{409, 1};
  const auto two = [&](const std::string& name, Tensor a, Tensor b, std::function<Tensor(const Inputs&)> f,
                       bool differentiable = true) {
    for (DType d : {DType::f32, DType::bf16})
      cases.push_back(large(name, {a, b}, {differentiable, differentiable}, f, d));
  };
  two("add_row", randn(g, kRows), randn(g, row), [](const Inputs& in) { return add(in[0], in[1]); });
  two("mul_column", randn(g, kRows), randn(g, column), [](const Inputs& in) { return mul(in[0], in[1]); });
  two("div", randn(g, kRows), positive(g, kRows), [](const Inputs& in) { return div(in[0], in[1]); });
  two("sub_row", randn(g, row), randn(g, kRows), [](const Inputs& in) { return sub(in[0], in[1]); });
  two("maximum", randn(g, kRows), randn(g, kRows), [](const Inputs& in) { return maximum(in[0], in[1]); });
  two("minimum_column", randn(g, kRows), randn(g, column), [](const Inputs& in) { return minimum(in[0], in[1]); });
  two("pow_tensors", mul(relu(randn(g, kRows, 2.0f)), randn(g, kRows)), whole_powers(g, kRows),
      [](const Inputs& in) { return pow(in[0], in[1]); });
  two("pow_row", randn(g, kRows), randn(g, row), [](const Inputs& in) { return pow(in[0], in[1]); });
  two("pow_column", mul(relu(randn(g, kRows, 2.0f)), randn(g, kRows)), whole_powers(g, column),
      [](const Inputs& in) { return pow(in[0], in[1]); });
  two("pow_base_row", mul(relu(randn(g, row, 2.0f)), randn(g, row)), whole_powers(g, kRows),
      [](const Inputs& in) { return pow(in[0], in[1]); });
  two("pow_short_rows", positive(g, {100003, 2}), whole_powers(g, {2}),
      [](const Inputs& in) { return pow(in[0], in[1]); });
  two("where", randn(g, kRows), randn(g, kRows),
      [](const Inputs& in) { return where(gt(in[0], in[1]), in[0], in[1]); });
  two("compare", randn(g, kRows), randn(g, row), [](const Inputs& in) { return add(ge(in[0], in[1]), lt(in[0], 0.3)); },
      false);
  const auto one = [&](const std::string& name, Tensor a, std::function<Tensor(const Inputs&)> f) {
    for (DType d : {DType::f32, DType::bf16}) cases.push_back(large(name, {a}, {true}, f, d));
  };
  one("pow_number", positive(g, kRows), [](const Inputs& in) { return pow(in[0], 2.5f); });
  one("square", randn(g, kRows), [](const Inputs& in) { return pow(in[0], 2.0f); });
  one("number_pow", randn(g, kRows, 4.0f), [](const Inputs& in) { return pow(0.7f, in[0]); });
  one("negative_number_pow", whole_powers(g, kRows), [](const Inputs& in) { return pow(-2.0f, in[0]); });
  const Tensor ints = Tensor::uniform(kRows, -5.0f, 5.0f, g).to(DType::i32);
  const Tensor int_row = Tensor::uniform(Shape{491}, -5.0f, 5.0f, g).to(DType::i64);
  cases.push_back(large("compare_integers", {ints, int_row}, {false, false},
                        [](const Inputs& in) { return add(ge(in[0], in[1]), ne(in[0], 2.0)); }));
  one("scalars", randn(g, kRows), [](const Inputs& in) { return sub(1.0f, div(3.0f, add(mul(in[0], 1.7f), 0.3f))); });
  one("masked_fill", randn(g, kRows), [](const Inputs& in) { return masked_fill(in[0], lt(in[0], 0.0), 0.5f); });
}

// Row-wise and reducing ops: softmax over every kind of dim, the losses, normalisations, pools,
// reductions and copies.
void add_large_rows(Generator& g, std::vector<OpCase>& cases) {
  const Shape cube{23, 89, 97}, image{2, 57, 61, 37};
  // Softmax, the losses, layer norm and the optimizers take float32 only.
  const auto one = [&](const std::string& name, Tensor a, std::function<Tensor(const Inputs&)> f, bool bf16 = true,
                       bool differentiable = true) {
    cases.push_back(large(name, {a}, {differentiable}, f));
    if (bf16) cases.push_back(large(name, {a}, {differentiable}, f, DType::bf16));
  };
  one("softmax", randn(g, kRows, 3.0f), [](const Inputs& in) { return softmax(in[0]); }, false);
  one("softmax_dim0", randn(g, kRows, 3.0f), [](const Inputs& in) { return softmax(in[0], 0); }, false);
  one("log_softmax_inner", randn(g, cube, 3.0f), [](const Inputs& in) { return log_softmax(in[0], 1); }, false);
  one("bce_with_logits", randn(g, kRows, 3.0f),
      [](const Inputs& in) { return binary_cross_entropy_with_logits(in[0], sigmoid(in[0] * 0.5f).detach()); }, false);
  one("mse_l1", randn(g, kRows),
      [](const Inputs& in) { return mse_loss(in[0], in[0] * 0.5f + 0.25f) + l1_loss(in[0], in[0] * -0.5f); }, false);
  one("sums", randn(g, kRows), [](const Inputs& in) {
    return sum(in[0]) + sum(mean(in[0], 1)) + sum(var(in[0], {0})) + sum(stddev(in[0], {1})) + sum(amax(in[0], 1)) +
           sum(amin(in[0], 0));
  });
  one("amin_inner", randn(g, cube), [](const Inputs& in) { return amin(in[0], 1); });
  one("argmax", randn(g, kRows), [](const Inputs& in) { return argmax(in[0], 1); }, true, false);
  one("argmin", randn(g, kRows), [](const Inputs& in) { return argmin(in[0], 1); }, true, false);
  one("cumsum_rows", randn(g, kRows), [](const Inputs& in) { return cumsum(in[0], 1); });
  one("cumsum_inner", randn(g, cube), [](const Inputs& in) { return cumsum(in[0], 1); });
  one("transpose", randn(g, kRows), [](const Inputs& in) { return transpose(in[0]); });
  one("permute", randn(g, cube), [](const Inputs& in) { return permute(in[0], {2, 0, 1}); });
  one("permute_210", randn(g, cube), [](const Inputs& in) { return permute(in[0], {2, 1, 0}); });
  one("max_pool2d", randn(g, image),
      [](const Inputs& in) { return max_pool2d(in[0], Pool2dParams{3, 3, 2, 2, 1, 1}); });
  one("adaptive_avg_pool2d", randn(g, image), [](const Inputs& in) { return adaptive_avg_pool2d(in[0], 7, 7); });
  one("adaptive_avg_pool2d_29x31", randn(g, image),
      [](const Inputs& in) { return adaptive_avg_pool2d(in[0], 29, 31); });
  one("cast", randn(g, kRows),
      [](const Inputs& in) { return in[0].to(DType::bf16).to(DType::f32) * in[0].to(DType::f32); });
  cases.push_back(large("softmax_cross_entropy", {randn(g, {4001, 53}, 3.0f), labels(g, 4001, 53)}, {true, false},
                        [](const Inputs& in) { return softmax_cross_entropy(in[0], in[1]); }));
  cases.push_back(large("layer_norm", {randn(g, kRows, 2.0f), randn(g, {491}), randn(g, {491})}, {true, true, true},
                        [](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); }));
  // Batch norm on the image, and on [8, 64, 64, 131] (training, fp32): 132 blocks of 250 rows
  // times 131 channels, past the threshold of the blocks' merge (16384), in three slices of channels.
  const auto batch_norm = [&](const std::string& name, const Shape& x, bool training, DType d) {
    const Shape c{x[3]};
    OpCase k = large(name, {add(randn(g, x, 1.5f), 0.7f), randn(g, c), randn(g, c), randn(g, c),
                            Tensor::uniform(c, 0.5f, 2.0f, g)},
                     {true, true, true, false, false}, [training](const Inputs& in) {
                       Tensor run_mean = in[3], run_var = in[4];  // handles: updated in place
                       return batch_norm2d(in[0], in[1], in[2], run_mean, run_var, training);
                     }, d);
    k.fp32_inputs = {1, 2, 3, 4};
    if (training) k.updated_inputs = {3, 4};
    cases.push_back(k);
  };
  for (DType d : {DType::f32, DType::bf16}) {
    batch_norm("batch_norm2d_training", image, true, d);
    batch_norm("batch_norm2d_inference", image, false, d);
  }
  batch_norm("batch_norm2d_merge", Shape{8, 64, 64, 131}, true, DType::f32);
}

// What trains: SGD and Adam steps on a parameter past the threads' threshold, the random fills
// and dropout's mask (Philox, then a transform per element), and the demo's ridge probe.
void add_large_updates(Generator& g, std::vector<OpCase>& cases) {
  const Shape flat{200003};
  cases.push_back(large("sgd", {randn(g, flat), randn(g, flat), randn(g, flat)}, {false, false, false},
                          [](const Inputs& in) {
                            SgdParamRef p{in[0].clone(), in[1], in[2].clone()};
                            for (bool nesterov : {false, true})
                              sgd_update({&p, 1}, SgdOptions{0.05f, 0.9f, 1e-3f, nesterov});
                            sgd_update({&p, 1}, SgdOptions{0.05f, 0.0f, 1e-3f, false});  // no momentum
                            return p.param + p.momentum_buf;
                          }));
    cases.push_back(large("adam", {randn(g, flat), randn(g, flat), randn(g, flat, 0.1f), positive(g, flat)},
                          {false, false, false, false}, [](const Inputs& in) {
                            AdamParamRef p{in[0].clone(), in[1], in[2].clone(), in[3].clone()};
                            for (int64_t step = 1; step <= 3; ++step)
                              adam_update({&p, 1}, AdamOptions{1e-2f, 0.9f, 0.999f, 1e-8f, 1e-2f}, step);
                            return p.param + p.exp_avg + p.exp_avg_sq;
                          }));
  for (DType d : {DType::f32, DType::bf16})
    cases.push_back(large("dropout", {randn(g, kRows)}, {true}, [](const Inputs& in) {
                            Generator dg(91);
                            return dropout(in[0], 0.8f, true, dg);
                          }, d));
  cases.push_back(large("fills", {}, {}, [](const Inputs&) {
    Generator fg(17);
    return Tensor::normal(Shape{200003}, 0.5f, 2.0f, fg) + Tensor::uniform(Shape{200003}, -1.0f, 3.0f, fg);
  }));
  cases.push_back(large("l2_penalty", {randn(g, kRows), randn(g, {1003})}, {true, true}, [](const Inputs& in) {
    const Tensor weights[] = {in[0], in[1]};
    return l2_penalty(weights, 1e-3f);
  }));
  const Tensor feats = randn(g, {803, 67});
  const std::vector<int64_t> probe_labels = label_values(g, 803, 5);
  cases.push_back(large("linear_probe", {}, {}, [feats, probe_labels](const Inputs&) {
    const LinearProbe p = fit_linear_probe(feats, probe_labels, 5);
    return Tensor::from_vector(p.weight, Shape{p.classes, p.dim}) * static_cast<float>(p.scale);
  }));
}

std::vector<OpCase> large_cases() {
  Generator g(2024);
  std::vector<OpCase> cases;
  add_large_unary(g, cases);
  add_large_binary(g, cases);
  add_large_rows(g, cases);
  add_large_updates(g, cases);
  return cases;
}

}  // namespace

TEST_CASE("every op case's output and gradients as digests, for comparing CPUs", "[.clone_digests]") {
  std::printf("clones %s\n", isa_level());
  std::vector<OpCase> cases = all_op_cases();
  for (OpCase& c : large_cases()) cases.push_back(std::move(c));
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const OpCase& c = cases[ci];
    try {
      std::vector<Tensor> inputs = prepare_inputs(c, Device::cpu(), true);
      const Tensor out = c.forward(inputs);
      std::string line = c.name + " " + digest(out);
      if (has_gradient(c)) {
        Generator g(ci + 1);
        const DType up_dtype = is_floating(out.dtype()) ? out.dtype() : DType::f32;
        out.backward(Tensor::normal(out.shape(), 0.0f, 1.0f, g).to(up_dtype));
      }
      for (const Tensor& t : inputs) line += " " + digest(t.requires_grad() ? t.grad() : Tensor());
      for (size_t i : c.updated_inputs) line += " " + digest(inputs[i]);
      std::printf("digest %s\n", line.c_str());
    } catch (const Error& e) {  // oneDNN's bf16 convolutions need AVX-512: the script lists these
      std::printf("refused %s: %s\n", c.name.c_str(), e.message().c_str());
    }
  }
}
