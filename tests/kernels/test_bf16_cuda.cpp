// bfloat16 ops on the GPU against the same ops on the CPU backend, on the same bf16 inputs
// (tests/kernels/test_bf16.cpp checks the CPU's against fp32 and PyTorch): the casts,
// conv2d (cuDNN, fp32 accumulation), linear (cuBLASLt, fp32 accumulation), relu,
// max_pool2d, eval dropout; the backward of linear, relu, max_pool2d and add/mul at
// VGG-like shapes; a small MLP trained under Precision::bf16 on both; what stays an error
// (mixed dtypes; conv2d backward and training dropout while CUDA refuses them in bf16); and
// a short bf16-against-fp32 timing of one VGG16 conv layer and fc6 that scripts/gpu_check.sh
// prints. Every case skips, saying so, where no GPU is found (or kiln has no CUDA).
#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/kiln.h"
#include "layers/layers.h"
#include "layers/optim.h"
#include "train/precision.h"
#include "tests/support/gpu.h"
#include "tests/support/require_close.h"
#if defined(KILN_HAS_CUDA)
#include "kernels/cuda/cuda_conv.h"
#include "kernels/cuda/cuda_info.h"
#endif

using namespace kiln;
using Catch::Contains;

namespace {

const Device kGpu = Device::cuda(0);

// A normal(0, 1) tensor rounded to bf16 on the CPU.
Tensor random_bf16(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::normal(s, 0.0f, 1.0f, g).to(DType::bf16);
}

// The raw 16-bit patterns of a bf16 tensor wherever it lives.
std::vector<uint16_t> bits(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  std::vector<uint16_t> out(static_cast<size_t>(h.numel()));
  if (!out.empty()) std::memcpy(out.data(), h.raw_data(), out.size() * 2);
  return out;
}

std::vector<double> values(const Tensor& t) { return t.to(Device::cpu()).to(DType::f32).to_vector<double>(); }

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Where the GPU's output may differ from the CPU's for a sum of products (conv2d, linear).
// Both sum exact fp32 products (bf16 x bf16 fits fp32) in fp32, in different orders, and
// round the sum to bf16 once: when the two sums straddle a rounding boundary the outputs
// differ by one bf16 ulp, at most 2^-7 of the value (kOneUlp), plus the order term, taken
// as 2^-12 of the largest output as in test_bf16.cpp (K <= 25088 here; the measured
// spread is far smaller). cuDNN's bias is a second rounding (conv into bf16, then y + b):
// one more half-ulp of the conv sum, at most 2^-8 of (largest output + largest bias).
constexpr double kOneUlp = 1.0 / 128 * 1.001;
constexpr double kOrderOfMax = 1.0 / 4096;
constexpr double kSecondRounding = 1.0 / 256;

void require_same_bits(const Tensor& gpu, const Tensor& cpu) {
  REQUIRE(gpu.dtype() == DType::bf16);
  REQUIRE(gpu.device() == kGpu);
  REQUIRE(gpu.shape() == cpu.shape());
  const std::vector<uint16_t> g = bits(gpu), c = bits(cpu);
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i] != c[i] && differ++ == 0) first = i;
  INFO(differ << " elements differ; first at " << first << ": GPU bits " << (differ ? g[first] : 0) << ", CPU bits "
              << (differ ? c[first] : 0));
  REQUIRE(differ == 0);
}

struct ConvShape {
  int64_t n, h, w, c, o, k, stride, pad;
  bool bias;
};
// The CPU test's odd shapes, then VGG16-like ones (3 input channels; 256 and 512 channels at
// 28x28 and 14x14), where cuDNN picks tensor-core bf16 kernels.
const ConvShape kConvShapes[] = {
    {2, 7, 5, 3, 5, 3, 1, 1, true},       {1, 9, 9, 16, 8, 3, 2, 1, false},     {3, 6, 6, 64, 32, 3, 1, 1, true},
    {2, 5, 7, 13, 11, 1, 1, 0, true},     {2, 32, 32, 3, 64, 3, 1, 1, true},    {2, 28, 28, 256, 512, 3, 1, 1, true},
    {1, 14, 14, 512, 512, 3, 1, 1, false},
};

struct LinearShape {
  int64_t rows, in, out;
  bool bias;
};
// Odd shapes, an empty sum (in = 0: y = b), and fc6/fc8-like ones.
const LinearShape kLinearShapes[] = {
    {1, 5, 7, true},   {3, 300, 33, false},     {8, 64, 16, true},       {17, 511, 9, true},
    {3, 0, 4, true},   {4, 25088, 4096, true},  {5, 4096, 1000, false},
};

// Milliseconds per call of fn on the GPU: the median of `reps` after one warm-up.
template <typename Fn>
double time_ms(Fn&& fn, int reps) {
  fn();
  synchronize(kGpu);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    synchronize(kGpu);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

TEST_CASE("bf16 casts on the GPU give the CPU's bits", "[cuda][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  std::vector<float> v = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -1.0f - 0x1p-8f, 0x1p-130f, -0.0f,
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), 3.14159265f, 1e-40f};
  Generator g(7);
  for (float r : Tensor::normal(Shape{4093}, 0.0f, 100.0f, g).to_vector<float>()) v.push_back(r);
  const Tensor f = Tensor::from_vector(v, Shape{int64_t(v.size())});
  const Tensor cpu = f.to(DType::bf16);
  // f32 -> bf16 on the device (the convert kernel), then back to f32 there.
  const Tensor gpu = f.to(kGpu).to(DType::bf16);
  require_same_bits(gpu, cpu);
  const Tensor back = gpu.to(DType::f32);
  REQUIRE(back.device() == kGpu);
  const std::vector<float> gb = back.to_vector<float>(), cb = cpu.to(DType::f32).to_vector<float>();
  REQUIRE(std::memcmp(gb.data(), cb.data(), gb.size() * 4) == 0);
  // A bf16 tensor moved to the GPU and back keeps its bits.
  require_same_bits(cpu.to(kGpu), cpu);
}

TEST_CASE("bf16 conv2d on the GPU matches the CPU's", "[cuda][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  uint64_t seed = 500;
  for (const ConvShape& s : kConvShapes) {
    const Tensor x = random_bf16(Shape{s.n, s.h, s.w, s.c}, ++seed);
    const Tensor w = random_bf16(Shape{s.o, s.k, s.k, s.c}, ++seed);
    const Tensor b = s.bias ? random_bf16(Shape{s.o}, ++seed) : Tensor();
    const Conv2dParams p{s.stride, s.stride, s.pad, s.pad};
    const Tensor cpu = conv2d(x, w, b, p);
    const Tensor gpu = conv2d(x.to(kGpu), w.to(kGpu), s.bias ? b.to(kGpu) : Tensor(), p);
    REQUIRE(gpu.dtype() == DType::bf16);
    REQUIRE(gpu.device() == kGpu);
    REQUIRE(gpu.shape() == cpu.shape());
    const std::vector<double> ref = values(cpu);
    double atol = kOrderOfMax * max_abs(ref);
    if (s.bias) atol += kSecondRounding * (max_abs(ref) + max_abs(values(b)));
    INFO("x " << x.shape() << " w " << w.shape() << " stride " << s.stride << " pad " << s.pad
              << (s.bias ? " with bias" : ""));
    KILN_REQUIRE_CLOSE(values(gpu), ref, atol, kOneUlp);
  }
}

TEST_CASE("bf16 linear on the GPU matches the CPU's", "[cuda][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  uint64_t seed = 600;
  for (const LinearShape& s : kLinearShapes) {
    const Tensor x = random_bf16(Shape{s.rows, s.in}, ++seed);
    const Tensor w = random_bf16(Shape{s.out, s.in}, ++seed);
    const Tensor b = s.bias ? random_bf16(Shape{s.out}, ++seed) : Tensor();
    const Tensor cpu = linear(x, w, b);
    const Tensor gpu = linear(x.to(kGpu), w.to(kGpu), s.bias ? b.to(kGpu) : Tensor());
    REQUIRE(gpu.dtype() == DType::bf16);
    REQUIRE(gpu.device() == kGpu);
    REQUIRE(gpu.shape() == cpu.shape());
    INFO("x " << x.shape() << " w " << w.shape() << (s.bias ? " with bias" : ""));
    if (s.in == 0) {  // y = b (or 0) exactly
      require_same_bits(gpu, cpu);
      continue;
    }
    // cuBLASLt adds the bias in its epilogue before the one rounding: no second-rounding term.
    const std::vector<double> ref = values(cpu);
    KILN_REQUIRE_CLOSE(values(gpu), ref, kOrderOfMax * max_abs(ref), kOneUlp);
  }
}

TEST_CASE("bf16 relu, max_pool2d and eval dropout on the GPU give the CPU's bits", "[cuda][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  // Each output is one of the inputs (or +0), so the two backends agree bit for bit.
  std::vector<float> special = {-0.0f, 0.0f, std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                                1e-40f, -1e-40f};
  const Tensor sp = Tensor::from_vector(special, Shape{int64_t(special.size())}).to(DType::bf16);
  require_same_bits(relu(sp.to(kGpu)), relu(sp));
  for (const Shape& s : {Shape{2, 7, 5, 3}, Shape{1, 9, 9, 16}, Shape{2, 28, 28, 512}}) {
    const Tensor x = random_bf16(s, 700 + s[3]);
    INFO("x " << s);
    require_same_bits(relu(x.to(kGpu)), relu(x));
    for (const Pool2dParams& p : {Pool2dParams{2, 2, 2, 2, 0, 0}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
      INFO("pool kernel " << p.kernel_h << " stride " << p.stride_h << " pad " << p.pad_h);
      require_same_bits(max_pool2d(x.to(kGpu), p), max_pool2d(x, p));
    }
  }
  // Eval dropout is the identity, on the GPU as well: the same tensor comes back.
  const Tensor xg = random_bf16(Shape{4, 33}, 710).to(kGpu);
  REQUIRE(dropout(xg, 0.5f, false).raw_data() == xg.raw_data());
}

TEST_CASE("bf16 on the GPU refuses mixed dtypes and gives bf16 gradients of conv2d and training dropout",
          "[cuda][bf16][errors]") {
  KILN_SKIP_WITHOUT_GPU();
  const TensorOptions bf16_gpu{DType::bf16, kGpu}, f32_gpu{DType::f32, kGpu};
  const Tensor xb = Tensor::zeros(Shape{1, 4, 4, 3}, bf16_gpu);
  REQUIRE_THROWS_WITH(conv2d(xb, Tensor::zeros(Shape{2, 3, 3, 3}, f32_gpu)),
                      Contains("conv2d") && Contains("input x is bfloat16") && Contains("weight w is float32"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{2, 3}, f32_gpu), Tensor::zeros(Shape{4, 3}, bf16_gpu)),
                      Contains("linear") && Contains("input x is float32") && Contains("weight w is bfloat16"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{2, 3}, bf16_gpu), Tensor::zeros(Shape{4, 3}, bf16_gpu),
                             Tensor::zeros(Shape{4}, f32_gpu)),
                      Contains("linear") && Contains("bias b is float32"));
  // conv2d's backward and training dropout run in bf16 (their values: the op table's bf16
  // cases in test_ops_cuda.cpp); the gradients stay bf16 and on the GPU.
  Tensor wg = Tensor::zeros(Shape{2, 3, 3, 3}, bf16_gpu);
  wg.set_requires_grad(true);
  Tensor yc = conv2d(xb, wg);
  yc.backward(Tensor::ones(yc.shape(), bf16_gpu));
  REQUIRE(wg.grad().dtype() == DType::bf16);
  REQUIRE(wg.grad().device() == kGpu);
  Tensor xd = Tensor::zeros(Shape{8}, bf16_gpu);
  xd.set_requires_grad(true);
  Tensor yd = dropout(xd, 0.5f, true);
  yd.backward(Tensor::ones(yd.shape(), bf16_gpu));
  REQUIRE(xd.grad().dtype() == DType::bf16);
  REQUIRE(xd.grad().device() == kGpu);
  // With grad mode off nothing is recorded: a trainable bf16 weight runs forward on the GPU.
  NoGradGuard off;
  REQUIRE(conv2d(xb, wg).dtype() == DType::bf16);
}

namespace {

// The gradient of f at x, taken as a fresh leaf on `d`, for the upstream gradient `up`.
template <typename Fn>
Tensor grad_at(Fn&& f, const Tensor& x, const Tensor& up, Device d) {
  Tensor leaf = x.to(d).clone();
  leaf.set_requires_grad(true);
  f(leaf).backward(up.to(d));
  return leaf.grad();
}

}  // namespace

TEST_CASE("bf16 backward on the GPU: relu, max_pool2d, add/sub/mul give the CPU's bits, linear within an ulp",
          "[cuda][bf16]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device cpu = Device::cpu();
  // relu and 2x2/2 max-pool (VGG's): each gradient element is an upstream value or 0.
  const Shape s{2, 28, 28, 64};
  const Tensor x = random_bf16(s, 900), up = random_bf16(s, 901);
  const auto r = [](const Tensor& t) { return relu(t); };
  require_same_bits(grad_at(r, x, up, kGpu), grad_at(r, x, up, cpu));
  const Tensor up_pool = random_bf16(Shape{2, 14, 14, 64}, 902);
  const auto pool = [](const Tensor& t) { return max_pool2d(t, Pool2dParams{2, 2, 2, 2, 0, 0}); };
  require_same_bits(grad_at(pool, x, up_pool, kGpu), grad_at(pool, x, up_pool, cpu));
  // Overlapping 3x3/2 windows sum up to four gradients per input in fp32 before the one
  // rounding; the GPU gathers them in the CPU's order, so the bits agree too.
  const auto pool3 = [](const Tensor& t) { return max_pool2d(t, Pool2dParams{3, 3, 2, 2, 1, 1}); };
  require_same_bits(grad_at(pool3, x, up_pool, kGpu), grad_at(pool3, x, up_pool, cpu));
  // add/sub/mul, tensor and scalar, forward and backward: fp32 math, one rounding each.
  const Shape e{8, 4099};
  const Tensor a = random_bf16(e, 903), b = random_bf16(e, 904), g = random_bf16(e, 905);
  require_same_bits(add(a.to(kGpu), b.to(kGpu)), add(a, b));
  require_same_bits(mul(a.to(kGpu), b.to(kGpu)), mul(a, b));
  require_same_bits(sub(a.to(kGpu), 0.3f), sub(a, 0.3f));
  const auto times_b = [&](const Tensor& t) { return mul(t, t.device() == kGpu ? b.to(kGpu) : b); };
  require_same_bits(grad_at(times_b, a, g, kGpu), grad_at(times_b, a, g, cpu));                     // g * b
  const auto minus = [&](const Tensor& t) { return sub(t.device() == kGpu ? b.to(kGpu) : b, t); };
  require_same_bits(grad_at(minus, a, g, kGpu), grad_at(minus, a, g, cpu));                         // g * -1
  const auto scaled = [](const Tensor& t) { return mul(t, 0.37f); };
  require_same_bits(grad_at(scaled, a, g, kGpu), grad_at(scaled, a, g, cpu));                       // g * 0.37
  // linear: dx = dy w and dw = dy^T x through cuBLASLt against oneDNN, each one rounding of
  // an fp32 sum (bounds as the forward's); db sums exact bf16 values in double on both, so
  // its bits agree.
  uint64_t seed = 910;
  for (const LinearShape& ls : {LinearShape{5, 7, 3, true}, LinearShape{3, 300, 33, true},
                                LinearShape{16, 4096, 1000, true}, LinearShape{4, 64, 16, false}}) {
    INFO("x [" << ls.rows << ", " << ls.in << "], w [" << ls.out << ", " << ls.in << "]");
    const Tensor xb = random_bf16(Shape{ls.rows, ls.in}, ++seed), wb = random_bf16(Shape{ls.out, ls.in}, ++seed);
    const std::vector<Tensor> in = ls.bias ? std::vector<Tensor>{xb, wb, random_bf16(Shape{ls.out}, ++seed)}
                                           : std::vector<Tensor>{xb, wb};
    const Tensor dy = random_bf16(Shape{ls.rows, ls.out}, ++seed);
    std::vector<Tensor> on_cpu, on_gpu;
    for (const Tensor& t : in) {
      on_cpu.push_back(t.clone());
      on_gpu.push_back(t.to(kGpu));
      on_cpu.back().set_requires_grad(true);
      on_gpu.back().set_requires_grad(true);
    }
    linear(on_cpu[0], on_cpu[1], ls.bias ? on_cpu[2] : Tensor()).backward(dy);
    linear(on_gpu[0], on_gpu[1], ls.bias ? on_gpu[2] : Tensor()).backward(dy.to(kGpu));
    for (size_t i = 0; i < 2; ++i) {
      INFO((i == 0 ? "dx" : "dw"));
      REQUIRE(on_gpu[i].grad().dtype() == DType::bf16);
      const std::vector<double> ref = values(on_cpu[i].grad());
      KILN_REQUIRE_CLOSE(values(on_gpu[i].grad()), ref, kOrderOfMax * max_abs(ref), kOneUlp);
    }
    if (ls.bias) require_same_bits(on_gpu[2].grad(), on_cpu[2].grad());
  }
}

// A conv-free MLP (linear-relu-dropout-linear, dropout in its eval form) trained 3 SGD steps
// under Precision::bf16 -- fp32 masters cast to bf16 each step, the logits handed on in fp32 --
// on the GPU and on the CPU from the same weights and batch.
TEST_CASE("an MLP trains 3 SGD steps under Precision::bf16 on the GPU like on the CPU", "[cuda][bf16][training]") {
  KILN_SKIP_WITHOUT_GPU();
  struct Net {
    Generator gen{77};
    Sequential seq{"mlp"};
    Net() {
      seq.add(std::make_shared<Linear>("fc1", 64, 96, true, gen, Init::kaiming_normal));
      seq.add(std::make_shared<ReLU>("relu1"));
      seq.add(std::make_shared<Dropout>("drop1", 0.5f, gen));
      seq.add(std::make_shared<Linear>("fc2", 96, 10, true, gen));
      seq.eval();  // dropout is the identity; autograd still records
    }
  };
  Net cpu_net, gpu_net;
  gpu_net.seq.to(kGpu);
  for (Net* n : {&cpu_net, &gpu_net}) {
    const PrecisionUse use = apply_precision(n->seq, Precision::bf16);
    REQUIRE(use.bf16 == 2);
  }
  Generator data(78);
  const Tensor x = Tensor::normal(Shape{32, 64}, 0.0f, 1.0f, data);
  std::vector<int64_t> l(32);
  for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<int64_t>((i * 7) % 10);
  const Tensor labels = Tensor::from_vector(l, Shape{32});
  std::vector<Tensor> before;
  for (const ParameterRef& p : cpu_net.seq.parameters()) before.push_back(p.tensor->clone());
  const SgdOptions o{0.05f, 0.9f, 0.0f, false};
  SGD cpu_opt(cpu_net.seq, o), gpu_opt(gpu_net.seq, o);
  for (int step = 0; step < 3; ++step) {
    double loss[2];
    int k = 0;
    for (auto [net, opt, d] : {std::tuple{&cpu_net, &cpu_opt, Device::cpu()}, std::tuple{&gpu_net, &gpu_opt, kGpu}}) {
      opt->zero_grad();
      const Tensor logits = net->seq.forward(x.to(d));
      REQUIRE(logits.dtype() == DType::f32);  // the last weight layer hands fp32 on
      const Tensor lv = softmax_cross_entropy(logits, labels.to(d));
      lv.backward();
      opt->step();
      loss[k++] = lv.item();
    }
    // The logits carry bf16 roundings of two layers (2^-8 each) in different sums: the
    // losses agree to a few parts in a thousand.
    INFO("step " << step << ": CPU loss " << loss[0] << ", GPU loss " << loss[1]);
    REQUIRE(std::abs(loss[1] - loss[0]) <= 0.01 * std::abs(loss[0]));
  }
  // The weights' change over 3 steps, GPU against CPU, in norm: both compute every GEMM in
  // bf16 with fp32 sums and round once, but in different orders, so an element may round to
  // the neighbouring bf16 value (2^-8 relative) in each rounded tensor on the way (x, h, the
  // logits' gradient, dh, dw, db and the cast back): a few times 2^-8 of the update in norm.
  // Rarely a pre-activation within that noise of 0 flips relu's gate, moving one row's
  // contribution of one sample (1/sqrt(32 * 96) of fc1's update in norm, ~2%). For scale,
  // this run in bf16 against the same run in fp32 on the CPU, where every rounding differs,
  // measured 2.2% (fc1's weight; 0.1-1.8% for the others). 10% bounds both with room; a
  // wrong gradient (a missing term, a transposed GEMM) moves it by O(1).
  const std::vector<ParameterRef> pc = cpu_net.seq.parameters(), pg = gpu_net.seq.parameters();
  REQUIRE(pc.size() == 4);
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO(pc[i].name);
    REQUIRE(pg[i].tensor->dtype() == DType::f32);  // masters stay fp32
    const std::vector<double> w0 = values(before[i]), wc = values(*pc[i].tensor), wg = values(*pg[i].tensor);
    double diff = 0, update = 0;
    for (size_t j = 0; j < w0.size(); ++j) {
      diff += (wg[j] - wc[j]) * (wg[j] - wc[j]);
      update += (wc[j] - w0[j]) * (wc[j] - w0[j]);
    }
    INFO("|GPU - CPU| / |update| = " << std::sqrt(diff / update));
    REQUIRE(update > 0);
    REQUIRE(std::sqrt(diff) <= 0.1 * std::sqrt(update));
  }
}

TEST_CASE("bf16 against fp32 on the GPU: one VGG16 conv layer and fc6, timed", "[cuda][bf16][timing]") {
  KILN_SKIP_WITHOUT_GPU();
  // Prints one line per layer for scripts/gpu_check.sh (section bf16); speed is not
  // asserted, the bf16 result is checked against the fp32 op on the same rounded inputs.
  // fp32 is strict (FMA) unless KILN_TF32 is set (kiln_tests runs strict by default); 5 timed calls each, well under a second.
  const int reps = 5;
  {
    const int64_t n = 32, hw = 28, c = 512;  // conv4_2: 28x28x512 -> 512, 3x3, batch 32
    const Tensor xb = random_bf16(Shape{n, hw, hw, c}, 800).to(kGpu);
    const Tensor wb = random_bf16(Shape{c, 3, 3, c}, 801).to(kGpu);
    const Tensor bb = random_bf16(Shape{c}, 802).to(kGpu);
    const Tensor xf = xb.to(DType::f32), wf = wb.to(DType::f32), bf = bb.to(DType::f32);
    const Conv2dParams p{1, 1, 1, 1};
    Tensor yb, yf;
    const double ms_f = time_ms([&] { yf = conv2d(xf, wf, bf, p); }, reps);
    const double ms_b = time_ms([&] { yb = conv2d(xb, wb, bb, p); }, reps);
    const double gflop = 2.0 * n * hw * hw * c * 9 * c / 1e9;
    std::string algo = "?";
#if defined(KILN_HAS_CUDA)
    for (const cuda::ConvAlgoInfo& a : cuda::conv_forward_candidates(xb, wb, p))
      if (a.chosen) algo = std::string(a.name) + (a.tensor_ops ? " (tensor ops)" : "");
    std::printf("bf16 timing: GPU %s\n", cuda::device_name(0).c_str());
#endif
    std::printf("bf16 timing: conv %lldx%lldx%lld->%lld 3x3 b%lld: fp32 %.3f ms (%.1f TFLOP/s), bf16 %.3f ms "
                "(%.1f TFLOP/s), x%.2f; bf16 algorithm %s\n",
                (long long)hw, (long long)hw, (long long)c, (long long)c, (long long)n, ms_f, gflop / ms_f, ms_b,
                gflop / ms_b, ms_f / ms_b, algo.c_str());
    std::fflush(stdout);
    const std::vector<double> ref = values(yf);
    KILN_REQUIRE_CLOSE(values(yb), ref, (kOrderOfMax + 2 * kSecondRounding) * max_abs(ref), kOneUlp);
  }
  {
    const int64_t n = 64, in = 25088, out = 4096;  // fc6 at batch 64
    const Tensor xb = random_bf16(Shape{n, in}, 810).to(kGpu);
    const Tensor wb = random_bf16(Shape{out, in}, 811).to(kGpu);
    const Tensor bb = random_bf16(Shape{out}, 812).to(kGpu);
    const Tensor xf = xb.to(DType::f32), wf = wb.to(DType::f32), bf = bb.to(DType::f32);
    Tensor yb, yf;
    const double ms_f = time_ms([&] { yf = linear(xf, wf, bf); }, reps);
    const double ms_b = time_ms([&] { yb = linear(xb, wb, bb); }, reps);
    const double gflop = 2.0 * n * in * out / 1e9;
    std::printf("bf16 timing: fc6 %lld->%lld b%lld: fp32 %.3f ms (%.1f TFLOP/s), bf16 %.3f ms (%.1f TFLOP/s), "
                "x%.2f\n",
                (long long)in, (long long)out, (long long)n, ms_f, gflop / ms_f, ms_b, gflop / ms_b,
                ms_f / ms_b);
    std::fflush(stdout);
    const std::vector<double> ref = values(yf);
    KILN_REQUIRE_CLOSE(values(yb), ref, (kOrderOfMax + kSecondRounding) * max_abs(ref), kOneUlp);
  }
}
