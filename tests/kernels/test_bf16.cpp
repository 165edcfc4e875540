// bfloat16 through the forward ops a frozen backbone runs on the CPU (conv2d, linear, relu,
// max_pool2d, inference dropout, the casts); their backward: test_bf16_backward.cpp. The reference of each op is the float32 op on
// the same bf16-rounded inputs, so the only differences allowed are bf16's own: one
// rounding of the output (half an ulp, at most 2^-8 of the value) and, where the op sums,
// the order in which oneDNN accumulates in fp32. conv2d and linear are also checked
// against PyTorch's bf16 ops (torch 1.13 on the CPU).
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/kiln.h"
#include "tests/support/npy.h"
#include "tests/support/reference.h"

using namespace kiln;
using Catch::Contains;

namespace {

const TensorOptions kBf16{DType::bf16, Device::cpu()};

// A normal(0, 1) tensor rounded to bf16 (the op's input) and the same values in f32.
struct Pair {
  Tensor b, f;
};
Pair random_pair(const Shape& s, uint64_t seed) {
  Generator g(seed);
  Tensor b = Tensor::normal(s, 0.0f, 1.0f, g).to(DType::bf16);
  return {b, b.to(DType::f32)};
}

std::vector<float> values(const Tensor& t) { return t.to(DType::f32).to_vector<float>(); }

// |got - ref| <= atol + rtol * |ref| everywhere; names the worst element when not.
void require_close(const Tensor& got, const Tensor& ref, double rtol, double atol) {
  REQUIRE(got.dtype() == DType::bf16);
  REQUIRE(got.shape() == ref.shape());
  const std::vector<float> g = values(got), r = values(ref);
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double err = std::abs(double(g[i]) - r[i]);
    const double ratio = err == 0 ? 0 : err / (atol + rtol * std::abs(double(r[i])));
    if (!(ratio <= worst)) worst = ratio, at = i;
  }
  INFO("worst element " << at << ": got " << (g.empty() ? 0 : g[at]) << ", reference " << (r.empty() ? 0 : r[at])
                        << ", error/tolerance " << worst);
  REQUIRE(worst <= 1.0);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : values(t)) m = std::max(m, double(std::abs(v)));
  return m;
}

// Round to nearest even written independently of BFloat16::from_float: the two bf16
// neighbours of v and the nearer one, ties to the even mantissa; past the largest finite
// bf16 the upper neighbour is infinity, placed at 2^128 as IEEE's overflow rule does.
uint16_t rne_reference(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint16_t lo = static_cast<uint16_t>(u >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dv = v, dlo = BFloat16::to_float(lo);
  double dhi = BFloat16::to_float(hi);
  if (std::isinf(dhi)) dhi = std::copysign(std::ldexp(1.0, 128), dv);
  const double elo = std::abs(dv - dlo), ehi = std::abs(dhi - dv);
  if (elo < ehi) return lo;
  if (ehi < elo) return hi;
  return (lo & 1) ? hi : lo;
}

// conv2d and linear: one output rounding (2^-8 relative) plus fp32 accumulation-order
// differences, at most K * 2^-24 of the sum of |terms| (K <= 576 here: ~3.4e-5, taken as
// 2^-12 of the largest output, which bounds that sum for these random inputs).
constexpr double kSumRtol = 1.0 / 256 * 1.001;
constexpr double kSumAtolOfMax = 1.0 / 4096;

struct ConvShape {
  int64_t n, h, w, c, o, k, stride, pad;
  bool bias;
};
const ConvShape kConvShapes[] = {
    {2, 7, 5, 3, 5, 3, 1, 1, true},     // odd everything, 3 input channels like an image
    {1, 9, 9, 16, 8, 3, 2, 1, false},   // strided, no bias
    {3, 6, 6, 64, 32, 3, 1, 1, true},   // VGG-like 3x3 same
    {2, 5, 7, 13, 11, 1, 1, 0, true},   // 1x1, odd channel counts
};

struct LinearShape {
  int64_t rows, in, out;
  bool bias;
};
const LinearShape kLinearShapes[] = {
    {1, 5, 7, true}, {3, 300, 33, false}, {8, 64, 16, true}, {17, 511, 9, true}, {3, 0, 4, true},
};

}  // namespace

TEST_CASE("bf16 casts round to nearest even and back exactly", "[bf16]") {
  std::vector<float> v = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -1.0f - 0x1p-8f, 0x1p-130f, -0.0f,
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), 3.14159265f, 65504.0f, 1e-40f};
  Generator g(7);
  for (float r : Tensor::normal(Shape{997}, 0.0f, 100.0f, g).to_vector<float>()) v.push_back(r);
  const Tensor b = Tensor::from_vector(v, Shape{int64_t(v.size())}).to(DType::bf16);
  REQUIRE(b.dtype() == DType::bf16);
  const BFloat16* pb = b.data<BFloat16>();
  for (size_t i = 0; i < v.size(); ++i) {
    INFO("value " << v[i] << " (element " << i << ")");
    if (std::isnan(v[i])) {
      REQUIRE(std::isnan(BFloat16::to_float(pb[i].bits)));
      continue;
    }
    REQUIRE(pb[i].bits == rne_reference(v[i]));
  }
  // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
  REQUIRE(pb[1].bits == 0x3f80);
  REQUIRE(pb[2].bits == 0x3f82);
  REQUIRE(std::isinf(BFloat16::to_float(pb[6].bits)));  // FLT_MAX rounds up past bf16's largest finite
  // bf16 -> f32 is exact, so f32 -> bf16 -> f32 -> bf16 is the identity on the bits.
  const Tensor back = b.to(DType::f32).to(DType::bf16);
  REQUIRE(std::memcmp(back.raw_data(), b.raw_data(), b.nbytes()) == 0);
}

TEST_CASE("bf16 conv2d matches the f32 op on the rounded inputs", "[bf16]") {
  uint64_t seed = 100;
  for (const ConvShape& s : kConvShapes) {
    const Pair x = random_pair(Shape{s.n, s.h, s.w, s.c}, ++seed);
    const Pair w = random_pair(Shape{s.o, s.k, s.k, s.c}, ++seed);
    const Pair b = s.bias ? random_pair(Shape{s.o}, ++seed) : Pair{};
    const Conv2dParams p{s.stride, s.stride, s.pad, s.pad};
    const Tensor ref = conv2d(x.f, w.f, b.f, p);
    const Tensor got = conv2d(x.b, w.b, b.b, p);
    INFO("x " << x.b.shape() << " w " << w.b.shape() << " stride " << s.stride << " pad " << s.pad);
    require_close(got, ref, kSumRtol, kSumAtolOfMax * max_abs(ref));
  }
}

TEST_CASE("bf16 linear matches the f32 op on the rounded inputs", "[bf16]") {
  uint64_t seed = 200;
  for (const LinearShape& s : kLinearShapes) {
    const Pair x = random_pair(Shape{s.rows, s.in}, ++seed);
    const Pair w = random_pair(Shape{s.out, s.in}, ++seed);
    const Pair b = s.bias ? random_pair(Shape{s.out}, ++seed) : Pair{};
    const Tensor ref = linear(x.f, w.f, b.f);
    const Tensor got = linear(x.b, w.b, b.b);
    INFO("x " << x.b.shape() << " w " << w.b.shape() << (s.bias ? " with bias" : ""));
    require_close(got, ref, kSumRtol, kSumAtolOfMax * max_abs(ref) + 1e-30);
  }
}

TEST_CASE("bf16 relu, max_pool2d and eval dropout are exact", "[bf16]") {
  // Each output is one of the inputs (or 0), so no rounding happens: tolerance 0.
  const Pair x = random_pair(Shape{2, 7, 5, 3}, 300);
  require_close(relu(x.b), relu(x.f), 0, 0);
  const Pair big = random_pair(Shape{3, 1000, 7, 11}, 301);  // large enough for the parallel loop
  require_close(relu(big.b), relu(big.f), 0, 0);
  for (const Pool2dParams& p : {Pool2dParams{2, 2, 2, 2, 0, 0}, Pool2dParams{3, 3, 2, 2, 1, 1}}) {
    INFO("pool kernel " << p.kernel_h << " stride " << p.stride_h << " pad " << p.pad_h);
    require_close(max_pool2d(x.b, p), max_pool2d(x.f, p), 0, 0);
    const Pair y = random_pair(Shape{1, 9, 9, 16}, 302);
    require_close(max_pool2d(y.b, p), max_pool2d(y.f, p), 0, 0);
  }
  const Tensor d = dropout(x.b, 0.5f, false);
  REQUIRE(d.raw_data() == x.b.raw_data());
}

TEST_CASE("sum and mean of a bf16 tensor: a bf16 result, the whole one float32's rounded to bf16", "[bf16]") {
  const Pair x = random_pair(Shape{37, 5, 11}, 303);
  double total = 0;
  for (float v : values(x.f)) total += v;
  for (bool is_mean : {false, true}) {
    INFO((is_mean ? "mean" : "sum"));
    Tensor xb = x.b.clone();
    xb.set_requires_grad(true);
    const Tensor got = is_mean ? mean(xb) : sum(xb);
    REQUIRE(got.dtype() == DType::bf16);
    REQUIRE(got.shape() == Shape{});
    const double exact = is_mean ? total / static_cast<double>(x.b.numel()) : total;
    // float32's sum (or mean) rounded to bf16: within half a bf16 ulp (8 significant bits) of the
    // exact value, but for float32's own roundings (2^-24 of it each, three for a mean).
    const double half_ulp = std::ldexp(1.0, std::ilogb(exact) - 8), slack = std::abs(exact) * 0x1p-22;
    REQUIRE(std::abs(values(got)[0] - exact) <= half_ulp + slack);
    REQUIRE(values(got) == values((is_mean ? mean(x.f) : sum(x.f)).to(DType::bf16)));
    got.backward();
    REQUIRE(xb.grad().dtype() == DType::bf16);
    const float each = is_mean ? 1.0f / static_cast<float>(x.b.numel()) : 1.0f;
    REQUIRE(values(xb.grad()) == values(Tensor::full(x.b.shape(), each).to(DType::bf16)));
  }
  // A mean that the bf16 sum, scaled and rounded again, puts 1.2 ulp off (-0.9140625; the exact
  // mean is -0.909375, torch's -0.91015625): the whole mean is float32's, rounded once; a mean
  // over dims keeps the two roundings (a float32 copy of x cost 4.2x), within 1.5 ulp.
  const Tensor five = Tensor::from_vector(std::vector<float>{-2.015625f, -1.203125f, 2.5f, -4.75f, 0.921875f},
                                          Shape{5}).to(DType::bf16);
  CHECK(values(mean(five))[0] == -0.91015625f);
  CHECK(std::abs(values(mean(five, 0))[0] + 0.909375) <= 1.5 * 0x1p-8);
  CHECK(std::abs(values(mean(reshape(five, Shape{1, 5}), {1}, true))[0] + 0.909375) <= 1.5 * 0x1p-8);
  // A bf16 scalar is its own sum.
  const Tensor s = Tensor::full(Shape{}, 2.5).to(DType::bf16);
  REQUIRE(values(sum(s))[0] == 2.5f);
  REQUIRE(values(mean(s))[0] == 2.5f);
  REQUIRE_THROWS_WITH(mean(Tensor::zeros(Shape{0, 3}, kBf16)), Contains("mean: empty input bfloat16[0, 3]"));
  // Integers sum whole into int64, as torch's; over dims, or as a mean, they are refused.
  const Tensor ints = Tensor::from_vector(std::vector<int64_t>{INT64_MAX, 2, 5}, Shape{3});
  CHECK(sum(ints).dtype() == DType::i64);
  CHECK(sum(ints).to_vector<int64_t>()[0] == INT64_MIN + 6);  // wraps past the range, as torch's
  const Tensor int32s = Tensor::from_vector(std::vector<int64_t>{INT32_MAX, 2, 5}, Shape{3}).to(DType::i32);
  CHECK(sum(int32s).to_vector<int64_t>()[0] == int64_t{INT32_MAX} + 7);  // int32 elements, an int64 sum
  REQUIRE_THROWS_WITH(sum(ints, 0), Contains("sum: int64[3] on cpu is integer") && Contains("astype"));
  REQUIRE_THROWS_WITH(mean(Tensor::zeros(Shape{0}, TensorOptions{DType::i32})),
                      Contains("mean: int32[0] on cpu is integer; convert it with astype"));
}

TEST_CASE("bf16 ops refuse mixed dtypes and record gradients like fp32", "[bf16][errors]") {
  const Tensor xb = Tensor::zeros(Shape{1, 4, 4, 3}, kBf16);
  const Tensor wf = Tensor::zeros(Shape{2, 3, 3, 3});
  REQUIRE_THROWS_WITH(conv2d(xb, wf), Contains("conv2d") && Contains("input x is bfloat16") &&
                                          Contains("weight w is float32") && Contains(".to(DType::"));
  REQUIRE_THROWS_WITH(conv2d(xb, wf.to(DType::bf16), Tensor::zeros(Shape{2})),
                      Contains("conv2d") && Contains("bias b is float32"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{2, 3}), Tensor::zeros(Shape{4, 3}, kBf16)),
                      Contains("linear") && Contains("input x is float32") && Contains("weight w is bfloat16"));
  REQUIRE_THROWS_WITH(max_pool2d(Tensor::zeros(Shape{1, 4, 4, 3}, TensorOptions{DType::i32})),
                      Contains("max_pool2d") && Contains("float32 or bfloat16") && Contains("int32"));

  // A bf16 input that needs a gradient records a node (the values: test_bf16_backward.cpp).
  Tensor wg = Tensor::zeros(Shape{2, 3, 3, 3}, kBf16);
  wg.set_requires_grad(true);
  REQUIRE(conv2d(xb, wg).requires_grad());
  Tensor xg = Tensor::zeros(Shape{2, 3}, kBf16);
  xg.set_requires_grad(true);
  REQUIRE(relu(xg).grad_fn()->name() == "relu");
  REQUIRE(linear(xg, Tensor::zeros(Shape{4, 3}, kBf16)).dtype() == DType::bf16);
  // With grad mode off nothing is recorded.
  NoGradGuard off;
  REQUIRE_FALSE(conv2d(xb, wg).requires_grad());
}

TEST_CASE("bf16 conv2d and linear match PyTorch's bf16 ops", "[bf16][torch]") {
  // Both sides round an fp32 sum once: at most half an ulp each from the exact value, so
  // 2^-7 relative between them, plus the accumulation-order term as above.
  const std::string dir = test::make_temp_dir("bf16_vs_torch");
  std::ofstream manifest(dir + "/cases.txt");
  std::vector<Tensor> outs;
  uint64_t seed = 400;
  for (const ConvShape& s : kConvShapes) {
    const Pair x = random_pair(Shape{s.n, s.h, s.w, s.c}, ++seed);
    const Pair w = random_pair(Shape{s.o, s.k, s.k, s.c}, ++seed);
    const Pair b = random_pair(Shape{s.o}, ++seed);
    const std::string id = "c" + std::to_string(outs.size());
    test::write_npy(dir + "/" + id + "_x.npy", x.f);
    test::write_npy(dir + "/" + id + "_w.npy", w.f);
    if (s.bias) test::write_npy(dir + "/" + id + "_b.npy", b.f);
    manifest << id << " conv2d " << s.stride << " " << s.pad << " " << s.bias << "\n";
    outs.push_back(conv2d(x.b, w.b, s.bias ? b.b : Tensor(), Conv2dParams{s.stride, s.stride, s.pad, s.pad}));
  }
  for (const LinearShape& s : kLinearShapes) {
    if (s.in == 0) continue;
    const Pair x = random_pair(Shape{s.rows, s.in}, ++seed);
    const Pair w = random_pair(Shape{s.out, s.in}, ++seed);
    const Pair b = random_pair(Shape{s.out}, ++seed);
    const std::string id = "c" + std::to_string(outs.size());
    test::write_npy(dir + "/" + id + "_x.npy", x.f);
    test::write_npy(dir + "/" + id + "_w.npy", w.f);
    if (s.bias) test::write_npy(dir + "/" + id + "_b.npy", b.f);
    manifest << id << " linear 0 0 " << s.bias << "\n";
    outs.push_back(linear(x.b, w.b, s.bias ? b.b : Tensor()));
  }
  manifest.close();
  test::run_reference_script("bf16_reference.py", dir);
  for (size_t i = 0; i < outs.size(); ++i) {
    std::vector<int64_t> shape;
    const std::vector<double> r = test::read_npy(dir + "/c" + std::to_string(i) + "_out.npy", &shape);
    const Tensor ref = Tensor::from_vector(std::vector<float>(r.begin(), r.end()), Shape(shape));
    INFO("case " << i << " " << outs[i].description());
    require_close(outs[i], ref, 2 * kSumRtol, kSumAtolOfMax * max_abs(ref));
  }
}

TEST_CASE("conv2d_relu_max_pool2d equals max_pool2d(conv2d_relu) bit for bit, values and gradients", "[bf16][conv]") {
  Generator gen(41);
  // VGG's 2x2 windows, odd sides with overlapping 3x3 windows and padding; biases around 0
  // and below, so that some windows hold no positive value (their gradient is ReLU's 0).
  const std::vector<std::pair<Shape, Pool2dParams>> cases = {{Shape{2, 8, 8, 4}, Pool2dParams{2, 2, 2, 2, 0, 0}},
                                                             {Shape{2, 9, 7, 4}, Pool2dParams{3, 3, 2, 2, 1, 1}}};
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [xs, pp] : cases) {
      INFO(dtype_name(dt) << " x " << xs << " pool " << pp.kernel_h << "x" << pp.kernel_w << " stride " << pp.stride_h);
      const Tensor x = Tensor::normal(xs, 0, 1, gen).to(dt);
      const Tensor w = Tensor::normal(Shape{6, 3, 3, 4}, 0, 0.3f, gen).to(dt);
      const Tensor b = Tensor::normal(Shape{6}, -0.5f, 0.5f, gen).to(dt);
      const Conv2dParams cp{1, 1, 1, 1};
      const Tensor ref = max_pool2d(conv2d_relu(x, w, b, cp), pp).to(DType::f32);
      CHECK(conv2d_relu_max_pool2d(x, w, b, cp, pp).to(DType::f32).to_vector<float>() == ref.to_vector<float>());
      // Which of x, w and b train: all, a first layer's (no dx), a frozen layer's input only.
      const std::array<bool, 3> all{true, true, true}, first_layer{false, true, true}, frozen{true, false, false};
      for (const std::array<bool, 3>& trains : {all, first_layer, frozen}) {
        const auto grads = [&](bool fused) {
          std::vector<Tensor> leaves{x.detach(), w.detach(), b.detach()};
          for (size_t i = 0; i < 3; ++i) leaves[i].set_requires_grad(trains[i]);
          const Tensor y = fused ? conv2d_relu_max_pool2d(leaves[0], leaves[1], leaves[2], cp, pp)
                                 : max_pool2d(conv2d_relu(leaves[0], leaves[1], leaves[2], cp), pp);
          if (fused) {
            REQUIRE(y.grad_fn() != nullptr);
            CHECK(y.grad_fn()->name() == "conv2d_relu_max_pool2d");
            CHECK(y.to(DType::f32).to_vector<float>() == ref.to_vector<float>());
          }
          Generator gu(42);
          y.backward(Tensor::normal(y.shape(), 0, 1, gu).to(dt));
          std::vector<std::vector<float>> g;
          for (const Tensor& t : leaves)
            if (t.requires_grad()) g.push_back(t.grad().to(DType::f32).to_vector<float>());
          return g;
        };
        CHECK(grads(true) == grads(false));
      }
    }
  }
}

TEST_CASE("conv2d_relu equals relu(conv2d) bit for bit, values and gradients, in fp32 and bf16", "[bf16][conv]") {
  Generator gen(31);
  for (const DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    const Tensor x = Tensor::normal(Shape{2, 9, 7, 5}, 0, 1, gen).to(dt);
    const Tensor w = Tensor::normal(Shape{6, 3, 3, 5}, 0, 0.3f, gen).to(dt);
    const Tensor b = Tensor::normal(Shape{6}, 0, 0.5f, gen).to(dt);
    const Conv2dParams p{1, 2, 1, 0};
    const Tensor ref = relu(conv2d(x, w, b, p)).to(DType::f32);
    // Nothing needs a gradient: the fused pass.
    CHECK(conv2d_relu(x, w, b, p).to(DType::f32).to_vector<float>() == ref.to_vector<float>());
    CHECK(conv2d_relu(x, w, Tensor(), p).to(DType::f32).to_vector<float>() ==
          relu(conv2d(x, w, Tensor(), p)).to(DType::f32).to_vector<float>());
    // Everything trains: the same values and gradients bit for bit (the CPU records the two
    // ops; the GPU one fused node, test_ops_cuda.cpp).
    const auto grads = [&](bool fused) {
      std::vector<Tensor> leaves{x.detach(), w.detach(), b.detach()};
      for (Tensor& t : leaves) t.set_requires_grad(true);
      const Tensor y = fused ? conv2d_relu(leaves[0], leaves[1], leaves[2], p)
                             : relu(conv2d(leaves[0], leaves[1], leaves[2], p));
      if (fused) CHECK(y.to(DType::f32).to_vector<float>() == ref.to_vector<float>());
      Generator gu(32);
      y.backward(Tensor::normal(y.shape(), 0, 1, gu).to(dt));
      std::vector<std::vector<float>> g;
      for (const Tensor& t : leaves) g.push_back(t.grad().to(DType::f32).to_vector<float>());
      return g;
    };
    CHECK(grads(true) == grads(false));
  }
}
