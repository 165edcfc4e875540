// The softmax row math (kernels/common/softmax.h): its float exponentials (kernels/common/exp.h)
// against double exp over the ranges they serve, and the CPU backend's softmax and cross-entropy
// against the serial row functions (the same bits: a fixed summation order) and against
// float64 sums.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/backend.h"
#include "core/kiln.h"
#include "kernels/common/exp.h"
#include "kernels/common/softmax.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/support/require_close.h"
#include "tests/support/scoped_backend.h"

using namespace kiln;

namespace {

// |got - want| in units of the float spacing at want (normal floats).
double ulps(float got, double want) {
  const float w = static_cast<float>(want);
  const double ulp = std::nextafter(w, std::numeric_limits<float>::infinity()) - w;
  return std::abs(static_cast<double>(got) - want) / ulp;
}

}  // namespace

TEST_CASE("exp_nonpositive is within 2 ulp of e^x on [-87, 0] and exact where it must be", "[softmax]") {
  double worst = 0;
  float worst_x = 0;
  const int64_t steps = int64_t{1} << 22;
  for (int64_t i = 0; i <= steps; ++i) {
    const float x = static_cast<float>(-87.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double u = ulps(common::exp_nonpositive(x), std::exp(static_cast<double>(x)));
    if (u > worst) worst = u, worst_x = x;
  }
  INFO("worst " << worst << " ulp at x = " << worst_x);
  CHECK(worst <= 2.0);
  CHECK(worst > 0.0);  // a float exponential is not exact everywhere: the sweep measured something
  CHECK(common::exp_nonpositive(0.0f) == 1.0f);
  CHECK(common::exp_nonpositive(-1e-30f) == 1.0f);
  CHECK(common::exp_nonpositive(-87.5f) == 0.0f);
  CHECK(common::exp_nonpositive(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(common::exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("exp_float and tanh_float are within 2 and 3 ulp over the float range, with IEEE's ends", "[softmax][ops]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  double worst_exp = 0, worst_tanh = 0;
  float at_exp = 0, at_tanh = 0;
  const int64_t steps = int64_t{1} << 21;
  for (int64_t i = 0; i <= steps; ++i) {
    // e^x where it is a normal float; tanh over [-10, 10] (+-1 beyond, checked below).
    const float x = static_cast<float>(-87.3 + 176.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double u = ulps(common::exp_float(x), std::exp(static_cast<double>(x)));
    if (u > worst_exp) worst_exp = u, at_exp = x;
    const float t = static_cast<float>(-10.0 + 20.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double want = std::tanh(static_cast<double>(t));
    const double v = want == 0 ? 0 : ulps(std::abs(common::tanh_float(t)), std::abs(want));
    if (v > worst_tanh) worst_tanh = v, at_tanh = t;
  }
  INFO("exp: worst " << worst_exp << " ulp at " << at_exp << "; tanh: worst " << worst_tanh << " ulp at " << at_tanh);
  CHECK(worst_exp <= 2.0);
  CHECK(worst_tanh <= 3.0);
  CHECK(worst_exp > 0.0);
  // Near zero tanh is its polynomial: relative error, where ulps of tiny values would be huge.
  for (const float t : {1e-30f, 1e-6f, 0.01f, 0.3f, 0.6249f})
    CHECK(std::abs(common::tanh_float(t) / std::tanh(static_cast<double>(t)) - 1.0) < 3e-7);
  // The ends: overflow, the denormals (rounded once, not flushed), zero, and NaN.
  CHECK(common::exp_float(0.0f) == 1.0f);
  CHECK(common::exp_float(88.73f) == inf);
  CHECK(common::exp_float(inf) == inf);
  CHECK(std::isfinite(common::exp_float(88.72f)));
  CHECK(common::exp_float(-inf) == 0.0f);
  CHECK(common::exp_float(-104.0f) == 0.0f);
  const float sub = common::exp_float(-100.0f);  // 3.7e-44: a denormal, 26 of 2^-149
  CHECK(std::abs(static_cast<double>(sub) - std::exp(-100.0)) <= std::ldexp(1.0, -149));
  CHECK(sub > 0.0f);
  CHECK(std::isnan(common::exp_float(nan)));
  CHECK(common::tanh_float(30.0f) == 1.0f);
  CHECK(common::tanh_float(-100.0f) == -1.0f);
  CHECK(common::tanh_float(inf) == 1.0f);
  CHECK(std::signbit(common::tanh_float(-0.0f)));
  CHECK(std::isnan(common::tanh_float(nan)));
}

TEST_CASE("log_float is within 2 ulp from the denormals to the largest float, with IEEE's ends", "[softmax][ops]") {
  double worst = 0;
  float at = 0;
  const int64_t steps = int64_t{1} << 21;
  for (int64_t i = 0; i <= steps; ++i) {  // x = 2^k, k over [-149, 128): every binade, denormals too
    const double k = -149.0 + 276.99 * static_cast<double>(i) / static_cast<double>(steps);
    const float x = static_cast<float>(std::exp2(k));
    const double want = std::log(static_cast<double>(x));
    if (want == 0) continue;
    const double u = ulps(std::abs(common::log_float(x)), std::abs(want));
    if (u > worst) worst = u, at = x;
  }
  INFO("worst " << worst << " ulp at x = " << at);
  CHECK(worst <= 2.0);
  CHECK(worst > 0.0);
  for (const float x : {0.999f, 1.0001f, 1.5f, 0.75f})  // near 1, where log is small: relative error
    CHECK(std::abs(common::log_float(x) / std::log(static_cast<double>(x)) - 1.0) < 3e-7);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(common::log_float(1.0f) == 0.0f);
  CHECK(common::log_float(0.0f) == -inf);
  CHECK(common::log_float(inf) == inf);
  CHECK(std::isnan(common::log_float(-1.0f)));
  CHECK(std::isnan(common::log_float(-inf)));
  CHECK(std::isnan(common::log_float(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("erfc_nonnegative is within 8 ulp, normal_cdf within 12 and below -2 within 2e-5", "[softmax][ops]") {
  double worst_erfc = 0, worst_cdf = 0, worst_tail = 0;
  float at_erfc = 0, at_cdf = 0;
  // erfc on every 251st float of [0, 9] (erfc(9) = 4e-37): a linear grid missed the small z
  // where P(t)'s terms cancel (an Estrin P reached 8.2 ulp at z = 0.052 between its points).
  for (uint32_t b = 0; b <= 0x41100000u; b += 251) {
    const float z = common::float_of(b);
    const double u = ulps(common::erfc_nonnegative(z), std::erfc(static_cast<double>(z)));
    if (u > worst_erfc) worst_erfc = u, at_erfc = z;
  }
  const int64_t steps = int64_t{1} << 20;
  for (int64_t i = 0; i <= steps; ++i) {
    const float x = static_cast<float>(-12.0 + 24.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double want = 0.5 * std::erfc(-static_cast<double>(x) / std::sqrt(2.0));
    if (x >= -2.0f) {
      const double v = ulps(common::normal_cdf(x), want);
      if (v > worst_cdf) worst_cdf = v, at_cdf = x;
    } else {  // the float x / sqrt(2) is off by up to half an ulp, and erfc's slope there is 2z times its value
      worst_tail = std::max(worst_tail, std::abs(common::normal_cdf(x) / want - 1.0));
    }
  }
  INFO("erfc: worst " << worst_erfc << " ulp at " << at_erfc << "; cdf: worst " << worst_cdf << " ulp at " << at_cdf
                      << ", below -2 " << worst_tail << " relative");
  CHECK(worst_erfc <= 8.0);
  CHECK(worst_cdf <= 12.0);  // erfc's 8 and the rounding of x / sqrt(2)
  CHECK(worst_tail <= 2e-5);  // torch's float gelu, 1 + erf(x / sqrt 2), cancels to nothing there
  CHECK(common::normal_cdf(0.0f) == 0.5f);
  CHECK(common::normal_cdf(20.0f) == 1.0f);
  CHECK(common::normal_cdf(-20.0f) == 0.0f);
  CHECK(common::normal_cdf(std::numeric_limits<float>::infinity()) == 1.0f);  // gelu(inf) = inf, not NaN
  CHECK(common::normal_cdf(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(common::erfc_nonnegative(std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(std::isnan(common::normal_cdf(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("normal_pdf is within 3 ulp where it is a normal float, 0 far out", "[softmax][ops]") {
  double worst = 0;
  float at = 0;
  const int64_t steps = int64_t{1} << 20;
  for (int64_t i = 0; i <= steps; ++i) {  // e^(-x^2/2) / sqrt(2 pi) is a normal float up to |x| = 13.2
    const float x = static_cast<float>(-13.0 + 26.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double xd = static_cast<double>(x);
    const double u = ulps(common::normal_pdf(x), std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * M_PI));
    if (u > worst) worst = u, at = x;
  }
  INFO("worst " << worst << " ulp at " << at);
  CHECK(worst <= 3.0);  // exp_float(-0.5f * x * x) was 65 ulp off near |x| = 12: x * x rounded in the exponent
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(common::normal_pdf(0.0f) == 0.39894228040143268f);
  CHECK(common::normal_pdf(20.0f) == 0.0f);
  CHECK(common::normal_pdf(-inf) == 0.0f);
  CHECK(std::isnan(common::normal_pdf(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("log1p_nonnegative and softplus_float are within 3 ulp, and exact at their ends", "[softmax][ops]") {
  double worst_log1p = 0, worst_softplus = 0;
  float at_log1p = 0, at_softplus = 0;
  const int64_t steps = int64_t{1} << 20;
  for (int64_t i = 0; i <= steps; ++i) {
    const double f = static_cast<double>(i) / static_cast<double>(steps);
    const float t = static_cast<float>(std::exp2(-40.0 + 41.0 * f));  // 2^-40 .. 2: 1 + t rounds t away below 2^-24
    const double u = ulps(common::log1p_nonnegative(t), std::log1p(static_cast<double>(t)));
    if (u > worst_log1p) worst_log1p = u, at_log1p = t;
    const float x = static_cast<float>(-90.0 + 180.0 * f);  // softplus(-90) = 8e-40: denormal
    const double want = std::log1p(std::exp(static_cast<double>(x)));
    if (want >= std::numeric_limits<float>::min()) {
      const double v = ulps(common::softplus_float(x), want);
      if (v > worst_softplus) worst_softplus = v, at_softplus = x;
    }
  }
  INFO("log1p worst " << worst_log1p << " ulp at " << at_log1p << "; softplus worst " << worst_softplus << " at "
                      << at_softplus);
  CHECK(worst_log1p <= 3.0);
  CHECK(worst_softplus <= 3.0);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(common::log1p_nonnegative(0.0f) == 0.0f);
  CHECK(common::log1p_nonnegative(inf) == inf);
  CHECK(common::softplus_float(0.0f) == static_cast<float>(std::log(2.0)));
  CHECK(common::softplus_float(inf) == inf);
  CHECK(common::softplus_float(-inf) == 0.0f);
  CHECK(common::softplus_float(100.0f) == 100.0f);
  CHECK(std::isnan(common::softplus_float(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("sigmoid_float is within 3 ulp where sigmoid is a normal float, and denormal below -87.3", "[softmax][ops]") {
  double worst = 0, worst_denormal = 0;
  float at = 0, at_denormal = 0;
  const int64_t steps = int64_t{1} << 20;
  for (int64_t i = 0; i <= steps; ++i) {
    const float x = static_cast<float>(-104.0 + 124.0 * static_cast<double>(i) / static_cast<double>(steps));
    const double want = 1.0 / (1.0 + std::exp(-static_cast<double>(x)));
    const float got = common::sigmoid_float(x);
    if (want >= std::numeric_limits<float>::min()) {
      const double u = ulps(got, want);
      if (u > worst) worst = u, at = x;
    } else {  // in units of the smallest denormal: e^x rounded there, then times 1 / (1 + e^x)
      const double d = std::abs(static_cast<double>(got) - want) / std::numeric_limits<float>::denorm_min();
      if (d > worst_denormal) worst_denormal = d, at_denormal = x;
    }
  }
  INFO("worst " << worst << " ulp at " << at << "; below the normal floats " << worst_denormal << " at "
                << at_denormal);
  CHECK(worst <= 3.0);
  CHECK(worst_denormal <= 1.0);
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(common::sigmoid_float(0.0f) == 0.5f);
  CHECK(common::sigmoid_float(-95.0f) > 0.0f);  // 5.5e-42; 1 / (1 + e^95) was 1 / inf = 0
  CHECK(common::sigmoid_float(-inf) == 0.0f);
  CHECK(common::sigmoid_float(inf) == 1.0f);
  CHECK(common::sigmoid_float(20.0f) == 1.0f);
  CHECK(std::isnan(common::sigmoid_float(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("pow_positive is within half an ulp of the power, but for ~1e-13, over every binade", "[softmax][ops]") {
  for (const float p : {1.5f, 0.3f, -1.7f, 2.5f, 7.0f, -0.25f, 1e-3f, 13.7f, 0.0f}) {
    double worst = 0;
    float at = 0;
    const int64_t steps = int64_t{1} << 18;
    for (int64_t i = 0; i <= steps; ++i) {  // x = 2^k, k over [-149, 128): denormal x too
      const double k = -149.0 + 276.99 * static_cast<double>(i) / static_cast<double>(steps);
      const float x = static_cast<float>(std::exp2(k));
      const double want = std::pow(static_cast<double>(x), static_cast<double>(p));
      const float got = common::pow_positive(x, p);
      if (want > std::numeric_limits<float>::max() * (1 + 0x1p-25)) {  // rounds past the largest float
        CHECK(got == std::numeric_limits<float>::infinity());
      } else if (want < std::numeric_limits<float>::min()) {  // into the denormals, rounded once
        CHECK(std::abs(static_cast<double>(got) - want) <= 0x1p-150 * (1 + 1e-9));
      } else {
        const double u = ulps(got, want);
        if (u > worst) worst = u, at = x;
      }
    }
    INFO("p = " << p << ": worst " << worst << " ulp at x = " << at);
    CHECK(worst <= 0.5 + 1e-5);  // 1e-5 ulp: ~1e-12 relative, ten times the double math's error
    CHECK(common::pow_positive(1.0f, p) == 1.0f);
  }
}

TEST_CASE("pow with a number exponent keeps powf's answers where the vector loop cannot go", "[softmax][ops]") {
  // Zero, negative, infinite and NaN bases take powf after their block (4096 elements): put them
  // at the start, inside and at the end of later blocks, among positive bases.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> odd = {0.0f, -0.0f, -2.0f, -0.5f, -inf, inf, nan, 1e-42f, 1.0f};
  for (const float p : {1.5f, -1.5f, 0.3f, 4.0f, -3.0f, 0.0f, 1e10f, -1e10f}) {
    INFO("p = " << p);
    std::vector<float> x(70000);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.25f + static_cast<float>(i % 1000) * 0.01f;
    for (size_t k = 0; k < odd.size(); ++k) x[(k * 8191 + 4095) % x.size()] = odd[k], x[x.size() - 1 - k] = odd[k];
    const Tensor xt = Tensor::from_vector(x, Shape{static_cast<int64_t>(x.size())});
    const std::vector<float> y = pow(xt, p).to_vector<float>();
    // In place (out is x), as core runs other number ops: the same bits.
    Tensor same = Tensor::from_vector(x, xt.shape());
    backend_for(Device::cpu()).binary_scalar(BinaryOp::pow, same, p, same);
    CHECK(std::memcmp(same.to_vector<float>().data(), y.data(), y.size() * sizeof(float)) == 0);
    int64_t wrong = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = std::pow(x[i], p);
      const bool odd_base = !(x[i] > 0.0f && x[i] < inf);
      // powf's own bits where powf answers; within an ulp of powf's (itself within 0.82) elsewhere
      const bool near = y[i] == want || std::abs(y[i] - want) <= std::abs(want) * 0x1p-23f;
      const bool same = std::isnan(want) ? std::isnan(y[i]) : odd_base ? std::memcmp(&y[i], &want, 4) == 0 : near;
      if (!same && wrong++ < 5) UNSCOPED_INFO("x = " << x[i] << ": " << y[i] << ", powf " << want);
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("a tensor exponent and a number base take the vector loop and keep powf's odd answers", "[softmax][ops]") {
  // Bases and exponents the vector loop leaves to powf (zero, negative, infinite, NaN bases; infinite
  // and NaN exponents) among ordinary ones, across blocks of 4096; in place on either operand.
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> odd_base = {0.0f, -0.0f, -2.0f, -0.5f, -inf, inf, nan, 1e-42f, 1.0f};
  const std::vector<float> powers = {1.5f, -1.5f, 0.3f, 4.0f, -3.0f, 0.0f, 1e10f, -1e10f, inf, -inf, nan, 2.0f, 0.5f};
  const size_t n = 70000;
  std::vector<float> x(n), p(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = 0.25f + static_cast<float>(i % 1000) * 0.01f;
    p[i] = powers[(i * 7) % powers.size()] * (i % 3 == 0 ? 1.0f : 0.37f);
  }
  for (size_t k = 0; k < odd_base.size(); ++k) x[(k * 8191 + 4095) % n] = odd_base[k], x[n - 1 - k] = odd_base[k];
  const Shape shape{static_cast<int64_t>(n)};
  // powf's own bits where powf answers; within an ulp of powf's (itself within 0.82) elsewhere.
  auto count_wrong = [&](const std::vector<float>& y, auto base, auto power) {
    int64_t wrong = 0;
    for (size_t i = 0; i < n; ++i) {
      const float b = base(i), e = power(i), want = std::pow(b, e);
      const bool vector = b > 0.0f && b < inf && std::isfinite(e);
      const bool near = y[i] == want || std::abs(y[i] - want) <= std::abs(want) * 0x1p-23f;
      const bool ok = std::isnan(want) ? std::isnan(y[i]) : vector ? near : std::memcmp(&y[i], &want, 4) == 0;
      if (!ok && wrong++ < 5) UNSCOPED_INFO(b << " ** " << e << ": " << y[i] << ", powf " << want);
    }
    return wrong;
  };
  const Tensor xt = Tensor::from_vector(x, shape), pt = Tensor::from_vector(p, shape);
  const std::vector<float> y = pow(xt, pt).to_vector<float>();
  CHECK(count_wrong(y, [&](size_t i) { return x[i]; }, [&](size_t i) { return p[i]; }) == 0);
  Backend& cpu = backend_for(Device::cpu());
  Tensor on_a = Tensor::from_vector(x, shape), on_b = Tensor::from_vector(p, shape);
  cpu.binary(BinaryOp::pow, on_a, pt, on_a);
  cpu.binary(BinaryOp::pow, xt, on_b, on_b);
  CHECK(std::memcmp(on_a.to_vector<float>().data(), y.data(), n * sizeof(float)) == 0);
  CHECK(std::memcmp(on_b.to_vector<float>().data(), y.data(), n * sizeof(float)) == 0);
  for (const float s : {2.0f, 0.5f, 10.0f, 1.0f, 3e-39f, 0.0f, -2.0f, inf}) {  // the last three: powf's loop
    INFO("base " << s);
    const std::vector<float> z = pow(s, pt).to_vector<float>();
    CHECK(count_wrong(z, [&](size_t) { return s; }, [&](size_t i) { return p[i]; }) == 0);
    Tensor same = Tensor::from_vector(p, shape);
    cpu.binary_scalar(BinaryOp::rpow, same, s, same);
    CHECK(std::memcmp(same.to_vector<float>().data(), z.data(), n * sizeof(float)) == 0);
  }
  // Broadcast: every pattern (a row of bases against one exponent, one base against a row of
  // exponents, two rows; rows long and short, a block spanning many) gives the same-shape loop's
  // bits, in place too. The grids' first elements hold a zero base, infinite and NaN exponents.
  for (const Shape& grid : {Shape{10, 7000}, Shape{7000, 3}}) {
    const int64_t rows = grid[0], cols = grid[1], col = cols > 4095 ? 4095 : 0;
    for (const DType dt : {DType::f32, DType::bf16}) {
      const Tensor xg = reshape(narrow(xt, 0, 0, grid.numel()), grid).to(dt);
      const Tensor pg = reshape(narrow(pt, 0, 0, grid.numel()), grid).to(dt);
      const Tensor xrow = narrow(xg, 0, rows / 2, 1), xcol = narrow(transpose(xg), 0, col, 1).reshape(Shape{rows, 1});
      const Tensor prow = narrow(pg, 0, 0, 1), pcol = narrow(transpose(pg), 0, cols - 1, 1).reshape(Shape{rows, 1});
      const Tensor x0 = reshape(narrow(xrow, 1, 1, 1), Shape{}), p0 = reshape(narrow(prow, 1, 2, 1), Shape{});
      const auto bits = [](const Tensor& t) { return t.to(DType::f32).to_vector<float>(); };
      const std::vector<std::pair<Tensor, Tensor>> pairs = {
          {xg, prow}, {xg, pcol}, {xrow, pg}, {xcol, pg}, {xrow, pcol}, {xcol, prow}, {xg, p0}, {x0, pg}};
      for (size_t k = 0; k < pairs.size(); ++k) {
        INFO("broadcast pair " << k << " over " << grid << " in " << dtype_name(dt));
        const auto& [a, b] = pairs[k];
        const std::vector<float> want = bits(pow(broadcast_to(a, grid), broadcast_to(b, grid)));
        const std::vector<float> got = bits(pow(a, b));
        CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
        if (a.shape() == grid) {
          Tensor in_place = a.clone();
          cpu.binary(BinaryOp::pow, in_place, b, in_place);
          CHECK(std::memcmp(bits(in_place).data(), want.data(), want.size() * sizeof(float)) == 0);
        }
        if (b.shape() == grid) {
          Tensor in_place = b.clone();
          cpu.binary(BinaryOp::pow, a, in_place, in_place);
          CHECK(std::memcmp(bits(in_place).data(), want.data(), want.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST_CASE("softmax and cross-entropy on the CPU give the serial row math's bits and float64's values", "[softmax]") {
  // 37 rows of 1000 classes (chunks of 256 and a tail of 232; rows * cols above the serial
  // cut, so rows run in parallel), logits spread over +-40 so some terms underflow.
  const int64_t rows = 37, cols = 1000;
  Generator g(5);
  const Tensor x = Tensor::uniform(Shape{rows, cols}, -40.0f, 40.0f, g);
  std::vector<int64_t> lab(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) lab[static_cast<size_t>(r)] = (r * 389) % cols;
  const Tensor labels = Tensor::from_vector(lab, Shape{rows});
  const std::vector<float> xv = x.to_vector<float>();

  double serial = 0, exact = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = xv.data() + r * cols;
    serial += common::cross_entropy_row(row, cols, lab[static_cast<size_t>(r)]);
    double m = row[0], s = 0;
    for (int64_t i = 0; i < cols; ++i) m = std::max(m, static_cast<double>(row[i]));
    for (int64_t i = 0; i < cols; ++i) s += std::exp(static_cast<double>(row[i]) - m);
    exact += std::log(s) - (static_cast<double>(row[lab[static_cast<size_t>(r)]]) - m);
  }
  const float loss = static_cast<float>(softmax_cross_entropy(x, labels).item());
  CHECK(loss == static_cast<float>(serial / static_cast<double>(rows)));
  CHECK(std::abs(loss - exact / rows) <= 1e-6 * std::abs(exact / rows));

  const std::vector<float> y = softmax(x).to_vector<float>(), ly = log_softmax(x).to_vector<float>();
  std::vector<float> y_serial(xv.size()), ly_serial(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    common::softmax_row(xv.data() + r * cols, cols, false, y_serial.data() + r * cols);
    common::softmax_row(xv.data() + r * cols, cols, true, ly_serial.data() + r * cols);
  }
  CHECK(y == y_serial);
  CHECK(ly == ly_serial);
  double row_sum = 0;
  for (int64_t i = 0; i < cols; ++i) row_sum += y[static_cast<size_t>(i)];
  CHECK(std::abs(row_sum - 1.0) <= 1e-5);
}

namespace {

// The CPU backend without its softmax along an inner dimension: core moves the dimension last
// and back around the last-dimension kernel, as on a backend without one (CUDA today).
class PermutingCpu final : public cpu::CpuBackend {
 public:
  bool has_softmax_inner() const override { return false; }
};

// softmax and log_softmax of fixed inputs along dim on whatever backend the CPU has now, and the
// gradients of sum(y * w) to x for each, flattened into one vector.
std::vector<double> softmax_along_run(const Shape& shape, int64_t dim) {
  Generator g(7);
  std::vector<double> all;
  for (const bool log : {false, true}) {
    Tensor x = mul(Tensor::normal(shape, 0, 1, g), 3.0f);
    const Tensor w = Tensor::normal(shape, 0, 1, g);
    x.set_requires_grad(true);
    const Tensor y = log ? log_softmax(x, dim) : softmax(x, dim);
    sum(mul(y, w)).backward();
    for (const Tensor& t : {y, x.grad()}) {
      const std::vector<double> v = t.to_vector<double>();
      all.insert(all.end(), v.begin(), v.end());
    }
  }
  return all;
}

}  // namespace

TEST_CASE("softmax along an inner dimension moved last and back (a GPU's way) equals the in-place kernel",
          "[softmax]") {
  // Over a partial vector block, over dim 0, at rank 9 (past the 8 this path took before), and a
  // negative dim.
  const std::vector<std::pair<Shape, int64_t>> cases = {{Shape{2, 5, 70}, 1}, {Shape{6, 4}, 0},
                                                        {Shape{2, 3, 1, 2, 1, 2, 1, 2, 3}, 4}, {Shape{3, 4, 5}, -2}};
  for (const auto& [shape, dim] : cases) {
    INFO(shape << " along " << dim);
    const std::vector<double> in_place = softmax_along_run(shape, dim);
    std::vector<double> moved;
    {
      PermutingCpu permuting;
      const test::ScopedBackend installed(DeviceType::cpu, &permuting);
      moved = softmax_along_run(shape, dim);  // every tensor it made is gone before the backend is
    }
    KILN_REQUIRE_CLOSE(moved, in_place, 1e-6, 1e-5);
  }
}

TEST_CASE("argmax along a dimension but the last takes any rank, the first maximum's index", "[softmax]") {
  Generator g(9);
  const Shape shape{2, 1, 3, 1, 2, 1, 1, 2, 4};  // rank 9 (refused past 8 before), [outer 6, n 2, inner 8]
  std::vector<float> v = Tensor::uniform(shape, -2, 2, g).to_vector<float>();
  for (size_t i = 0; i < 8; ++i) v[i + 8] = v[i];  // ties in the first outer block: index 0 wins
  const Tensor x = Tensor::from_vector(v, shape);
  const std::vector<int64_t> got = argmax(x, 4).to_vector<int64_t>();
  REQUIRE(got.size() == 48);
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t i = 0; i < 8; ++i) {
      const size_t first = static_cast<size_t>(o * 16 + i), second = first + 8;
      CHECK(got[static_cast<size_t>(o * 8 + i)] == (v[second] > v[first] ? 1 : 0));
    }
}
