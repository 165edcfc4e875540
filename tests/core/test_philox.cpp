// Philox4x32-10 against the Random123 known-answer vectors, the stream addressing, and
// the GPU's copy of the same math where a GPU exists.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/kiln.h"
#include "kernels/common/normal.h"
#if defined(KILN_HAS_CUDA)
#include "kernels/cuda/cuda_info.h"
#endif

using namespace kiln;

TEST_CASE("philox4x32-10 reproduces the Random123 known-answer vectors", "[philox]") {
  const Philox4 zero = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  const Philox4 ones = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
  const Philox4 pi = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(pi.v[0] == 0xd16cfe09u);
  CHECK(pi.v[1] == 0x94fdccebu);
  CHECK(pi.v[2] == 0x5001e420u);
  CHECK(pi.v[3] == 0x24126ea1u);
}

TEST_CASE("a fill is a pure function of seed and offset", "[philox]") {
  Generator a(42), b(42), c(43);
  const std::vector<float> x = Tensor::uniform(Shape{1000}, 0.0f, 1.0f, a).to_vector<float>();
  const std::vector<float> y = Tensor::uniform(Shape{1000}, 0.0f, 1.0f, b).to_vector<float>();
  const std::vector<float> z = Tensor::uniform(Shape{1000}, 0.0f, 1.0f, c).to_vector<float>();
  CHECK(x == y);
  CHECK(x != z);
  // The second fill starts where the first stopped: offset advances by ceil(n / 4).
  CHECK(a.state().offset == 250);
  const std::vector<float> next = Tensor::uniform(Shape{8}, 0.0f, 1.0f, a).to_vector<float>();
  for (uint64_t i = 0; i < 8; ++i) CHECK(next[i] == philox_uniform(PhiloxState{42, 250}, i));
  // Restoring a saved state replays the stream.
  b.set_state(PhiloxState{42, 250});
  CHECK(Tensor::uniform(Shape{8}, 0.0f, 1.0f, b).to_vector<float>() == next);
}

TEST_CASE("fills and dropout masks made a Philox block at a time equal the stream element by element",
          "[philox]") {
  // Sizes that end inside a block, and more than one thread's share (the fill's OpenMP threshold).
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{40001}}) {
    Generator g(99);
    g.reserve(3);  // the fill starts at block 1
    const PhiloxState at = g.state();
    const std::vector<float> u = Tensor::uniform(Shape{n}, 0.0f, 1.0f, g).to_vector<float>();
    const std::vector<float> z = Tensor::normal(Shape{n}, 0.0f, 1.0f, g).to_vector<float>();
    const PhiloxState z_at{at.seed, at.offset + static_cast<uint64_t>((n + 3) / 4)};
    for (int64_t i = 0; i < n; ++i) {
      REQUIRE(u[i] == philox_uniform(at, static_cast<uint64_t>(i)));
      REQUIRE(z[i] == common::philox_normal(z_at, static_cast<uint64_t>(i)));
    }
    // Dropout's mask too: element i kept when its uniform is below keep, then scaled.
    const Tensor x = Tensor::full(Shape{n}, 3.0f);
    const PhiloxState d_at = g.state();
    const std::vector<float> y = dropout(x, 0.6f, true, g).to_vector<float>();
    for (int64_t i = 0; i < n; ++i)
      REQUIRE(y[i] == (philox_uniform(d_at, static_cast<uint64_t>(i)) < 0.6f ? 3.0f * (1.0f / 0.6f) : 0.0f));
  }
}

TEST_CASE("Box-Muller's sine and cosine of a turn are within 1.2e-7, its normals within 1e-6 of double's", "[philox]") {
  double worst_trig = 0, worst_normal = 0;
  for (uint32_t k = 0; k < (1u << 24); k += 3) {  // u = k / 2^24: every third draw bits_to_unit_float gives
    const float u = static_cast<float>(k) * (1.0f / 16777216.0f);
    float s = 0, c = 0;
    common::sincos_turns(u, s, c);
    const double theta = 6.283185307179586 * static_cast<double>(u);
    worst_trig = std::max({worst_trig, std::abs(s - std::sin(theta)), std::abs(c - std::cos(theta))});
    const uint32_t w1 = (k * 2654435761u) & 0xffffff00u, w2 = k << 8;  // a spread of radii, every angle
    float z0 = 0, z1 = 0;
    common::box_muller(w1, w2, z0, z1);
    const double r = std::sqrt(-2.0 * std::log((static_cast<double>(w1 >> 8) + 1.0) / 16777216.0));
    worst_normal = std::max({worst_normal, std::abs(z0 - r * std::cos(theta)), std::abs(z1 - r * std::sin(theta))});
  }
  INFO("sin/cos worst " << worst_trig << ", normals worst " << worst_normal << " absolute");
  CHECK(worst_trig <= 1.2e-7);  // a float near 1 is within 6e-8 of the value; Cephes' polynomials add 1 ulp
  CHECK(worst_normal <= 1e-6);  // radius up to 5.8: a few ulp of it
  float s = 1, c = 0;
  common::sincos_turns(0.0f, s, c);
  CHECK((s == 0.0f && c == 1.0f));
  common::sincos_turns(0.25f, s, c);
  CHECK((s == 1.0f && c == 0.0f));
  common::sincos_turns(0.5f, s, c);
  CHECK((s == 0.0f && c == -1.0f));
}

TEST_CASE("uniform and normal fills have the right moments", "[philox]") {
  Generator g(7);
  const std::vector<double> u = Tensor::uniform(Shape{200000}, -2.0f, 4.0f, g).to_vector<double>();
  const std::vector<double> n = Tensor::normal(Shape{200000}, 1.5f, 0.5f, g).to_vector<double>();
  double su = 0, sn = 0, sn2 = 0, lo = 1e9, hi = -1e9;
  for (double v : u) {
    su += v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  for (double v : n) {
    sn += v;
    sn2 += v * v;
  }
  const double mu = su / u.size(), mn = sn / n.size(), sd = std::sqrt(sn2 / n.size() - mn * mn);
  CHECK(lo >= -2.0);
  CHECK(hi < 4.0);
  CHECK(mu == Approx(1.0).margin(0.02));
  CHECK(mn == Approx(1.5).margin(0.01));
  CHECK(sd == Approx(0.5).margin(0.01));
}

#if defined(KILN_HAS_CUDA)
namespace {
// One fill of 4099 numbers (a block and three over 4096), drawn on the GPU and on the CPU from
// two generators of one seed: {gpu, cpu}. `draw(gen, options)` makes the tensor.
template <typename Draw>
std::pair<std::vector<float>, std::vector<float>> gpu_and_cpu_fill(uint64_t seed, Draw draw) {
  Generator a(seed), b(seed);
  return {draw(a, TensorOptions{DType::f32, Device::cuda(0)}).template to_vector<float>(),
          draw(b, TensorOptions{}).template to_vector<float>()};
}
}  // namespace
#endif

TEST_CASE("the GPU draws the same uniform stream as the CPU, bit for bit", "[philox][cuda]") {
#if defined(KILN_HAS_CUDA)
  if (cuda::device_count() == 0) {
    WARN("no GPU found: CUDA case skipped");
    return;
  }
  const auto [gpu, cpu] = gpu_and_cpu_fill(123456789, [](Generator& g, TensorOptions o) {
    return Tensor::uniform(Shape{4099}, -1.0f, 3.0f, g, o);
  });
  for (size_t i = 0; i < gpu.size(); ++i) REQUIRE(gpu[i] == cpu[i]);
#else
  WARN("built without CUDA: CUDA case skipped");
#endif
}

TEST_CASE("the GPU draws the CPU's normal stream to within a few ulp", "[philox][cuda]") {
#if defined(KILN_HAS_CUDA)
  if (cuda::device_count() == 0) {
    WARN("no GPU found: CUDA case skipped");
    return;
  }
  const auto [gpu, cpu] = gpu_and_cpu_fill(987654321, [](Generator& g, TensorOptions o) {
    return Tensor::normal(Shape{4099}, 0.0f, 1.0f, g, o);
  });
  for (size_t i = 0; i < gpu.size(); ++i)  // the same formula; nvcc contracts its multiply-adds
    REQUIRE(std::abs(gpu[i] - cpu[i]) <= 1e-6f * std::max(1.0f, std::abs(cpu[i])));
#else
  WARN("built without CUDA: CUDA case skipped");
#endif
}
