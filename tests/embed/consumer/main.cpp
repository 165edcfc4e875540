// kiln_consumer: the smallest program that embeds an installed kiln. It runs
// loss = sum(relu(linear(x, w, b))) with autograd and checks the loss and every gradient
// against values worked out by hand. Exit status 0 only when all of them match.
#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

#include "core/kiln.h"

namespace {

int failures = 0;

void expect(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
  bool ok = got.size() == want.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = std::fabs(got[i] - want[i]) <= 1e-5f;
  std::printf("%-8s", what);
  for (float v : got) std::printf(" %g", static_cast<double>(v));
  if (ok) {
    std::printf("  ok\n");
  } else {
    std::printf("  WRONG, expected");
    for (float v : want) std::printf(" %g", static_cast<double>(v));
    std::printf("\n");
    ++failures;
  }
}

}  // namespace

int main() {
  try {
    using kiln::Shape;
    using kiln::Tensor;
    // x: [2, 2], w: [out 2, in 2], b: [2].
    Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3, 4}, Shape{2, 2});
    Tensor w = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, Shape{2, 2});
    Tensor b = Tensor::from_vector(std::vector<float>{0.5f, -0.5f}, Shape{2});
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    b.set_requires_grad(true);

    // z = x w^T + b = [[-2.5, -5.5], [11.5, 24.5]]; relu keeps the second row; sum = 36.
    Tensor z = kiln::linear(x, w, b);
    Tensor loss = kiln::sum(kiln::relu(z));
    loss.backward();

    expect("z", z.to_vector<float>(), {-2.5f, -5.5f, 11.5f, 24.5f});
    expect("loss", loss.to_vector<float>(), {36.0f});
    // dL/dz = [[0, 0], [1, 1]]: dx = dz w, dw = dz^T x, db = column sums of dz.
    expect("dL/dx", x.grad().to_vector<float>(), {0, 0, 4, 6});
    expect("dL/dw", w.grad().to_vector<float>(), {3, 4, 3, 4});
    expect("dL/db", b.grad().to_vector<float>(), {1, 1});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_consumer: error: %s\n", e.what());
    return 1;
  }
  if (failures != 0) {
    std::fprintf(stderr, "kiln_consumer: %d check(s) failed\n", failures);
    return 1;
  }
  std::printf("kiln_consumer: ok\n");
  return 0;
}
