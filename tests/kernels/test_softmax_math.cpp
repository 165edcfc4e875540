// The softmax row math (kernels/common/softmax.h): its float exponential against double
// exp over the whole range it serves, and the CPU backend's softmax and cross-entropy
// against the serial row functions (the same bits: a fixed summation order) and against
// float64 sums.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/kiln.h"
#include "kernels/common/softmax.h"

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
