// In-place writes (core/ops.h, binary_in_place and its kin): the out-of-place op's bits written over
// the tensor, its views seeing them, its version advanced, and the writes autograd would need refused.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "tests/support/gpu.h"

using namespace kiln;

namespace {

// Identical bits, NaN included.
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ha = a.cpu(), hb = b.cpu();
  return std::memcmp(ha.raw_data(), hb.raw_data(), ha.nbytes()) == 0;
}

Tensor values(const Shape& shape, uint64_t seed, Device device = Device::cpu()) {
  Generator gen(seed);
  return Tensor::normal(shape, 0.0f, 1.0f, gen).to(device);
}

// Every arithmetic op of t with other, in place and out of place, for `dtype` on `device`.
void check_ops_match_out_of_place(DType dtype, Device device) {
  const BinaryOp ops[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div,
                          BinaryOp::maximum, BinaryOp::minimum, BinaryOp::pow};
  const Shape shapes[] = {Shape{5, 7}, Shape{7}, Shape{1, 7}, Shape{}};
  for (BinaryOp op : ops) {
    for (const Shape& other_shape : shapes) {
      const Tensor t0 = abs(values(Shape{5, 7}, 1, device)).to(dtype);  // positive: pow is defined
      const Tensor other = values(other_shape, 2, device).to(dtype);
      Tensor want;
      if (op == BinaryOp::add) want = add(t0, other);
      if (op == BinaryOp::sub) want = sub(t0, other);
      if (op == BinaryOp::mul) want = mul(t0, other);
      if (op == BinaryOp::div) want = div(t0, other);
      if (op == BinaryOp::maximum) want = maximum(t0, other);
      if (op == BinaryOp::minimum) want = minimum(t0, other);
      if (op == BinaryOp::pow) want = pow(t0, other);
      const Tensor t = t0.clone();
      const void* memory = t.raw_data();
      binary_in_place(op, t, other);
      CAPTURE(static_cast<int>(op), other_shape);
      CHECK(t.raw_data() == memory);
      CHECK(same_bits(t, want));
    }
  }
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div}) {
    const Tensor t0 = values(Shape{33}, 3, device).to(dtype);
    const Tensor t = t0.clone();
    binary_in_place(op, t, 0.1f);
    const Tensor want = op == BinaryOp::add ? add(t0, 0.1f) : op == BinaryOp::sub ? sub(t0, 0.1f)
                        : op == BinaryOp::mul ? mul(t0, 0.1f) : div(t0, 0.1f);
    CHECK(same_bits(t, want));
  }
  const Tensor x0 = values(Shape{9, 5}, 6, device).to(dtype);
  for (UnaryOp op : {UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt, UnaryOp::tanh, UnaryOp::sigmoid, UnaryOp::abs}) {
    const Tensor t = x0.clone();
    unary_in_place(op, t);
    const Tensor want = op == UnaryOp::exp ? exp(x0) : op == UnaryOp::log ? log(x0) : op == UnaryOp::sqrt ? sqrt(x0)
                        : op == UnaryOp::tanh ? tanh(x0) : op == UnaryOp::sigmoid ? sigmoid(x0) : abs(x0);
    CAPTURE(static_cast<int>(op));
    CHECK(same_bits(t, want));  // NaN from log and sqrt of negatives too
  }
  const Tensor t = x0.clone();
  clamp_in_place(t, -0.3f, 0.7f);
  CHECK(same_bits(t, clamp(x0, -0.3f, 0.7f)));
}

}  // namespace

TEST_CASE("in-place arithmetic writes the out-of-place op's bits over the tensor", "[in_place]") {
  check_ops_match_out_of_place(DType::f32, Device::cpu());
  check_ops_match_out_of_place(DType::bf16, Device::cpu());
  const Tensor i = Tensor::from_vector(std::vector<int64_t>{1, -2, 3}, Shape{3});
  binary_in_place(BinaryOp::mul, i, Tensor::from_vector(std::vector<int64_t>{int64_t{1} << 40}, Shape{}));
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{int64_t{1} << 40, -(int64_t{2} << 40), int64_t{3} << 40});
  const Tensor f = Tensor::from_vector(std::vector<float>{0.5f, 1.5f}, Shape{2});
  binary_in_place(BinaryOp::add, f, Tensor::from_vector(std::vector<int64_t>{1, 2}, Shape{2}));  // promoted
  CHECK(f.to_vector<float>() == std::vector<float>{1.5f, 3.5f});
}

TEST_CASE("in-place writes reach views, read aliased operands first and advance the version", "[in_place]") {
  const Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, Shape{4});
  const Tensor view = t.slice(1, 3);
  const uint64_t version = t.version();
  binary_in_place(BinaryOp::mul, view, 10.0f);
  CHECK(t.to_vector<float>() == std::vector<float>{1, 20, 30, 4});
  CHECK(t.version() > version);
  binary_in_place(BinaryOp::add, t, t);  // the same view: each element read before it is written
  CHECK(t.to_vector<float>() == std::vector<float>{2, 40, 60, 8});
  binary_in_place(BinaryOp::sub, t.slice(1, 4), t.slice(0, 3));  // overlapping: as if read first
  CHECK(t.to_vector<float>() == std::vector<float>{2, 38, 20, -52});
  copy_in_place(t.slice(0, 2), t.slice(2, 4));
  CHECK(t.to_vector<float>() == std::vector<float>{20, -52, 20, -52});
  fill_in_place(view, -1.0);
  CHECK(t.to_vector<float>() == std::vector<float>{20, -1, -1, -52});
}

TEST_CASE("copy_in_place broadcasts and converts, store_in_place keeps the tensor's shape", "[in_place]") {
  const Tensor t = Tensor::zeros(Shape{2, 3}, TensorOptions{DType::i32});
  copy_in_place(t, Tensor::from_vector(std::vector<float>{1.7f, -2.5f, 3.0f}, Shape{3}));
  CHECK(t.to_vector<int32_t>() == std::vector<int32_t>{1, -2, 3, 1, -2, 3});
  CHECK_THROWS_WITH(copy_in_place(t, Tensor::zeros(Shape{4})), Catch::Contains("does not broadcast to int32[2, 3]"));
  CHECK_THROWS_WITH(store_in_place("exp_", t, Tensor::zeros(Shape{2, 3})),
                    Catch::Contains("exp_: the result is float32, which int32[2, 3] on cpu cannot store in place"));
  const Tensor f = Tensor::zeros(Shape{3});
  CHECK_THROWS_WITH(binary_in_place(BinaryOp::add, f, Tensor::zeros(Shape{2, 3})),
                    Catch::Contains("add_: the result has shape [2, 3], which float32[3] on cpu cannot hold"));
  CHECK_THROWS_WITH(binary_in_place(BinaryOp::div, t, 2.0f),
                    Catch::Contains("div_: int32[2, 3] on cpu with the number 2: the result is float32"));
  CHECK_THROWS_WITH(binary_in_place(BinaryOp::gt, f, f), Catch::Contains("gt_: not an in-place op"));
}

TEST_CASE("in-place writes autograd would need are refused, and under no_grad they update", "[in_place]") {
  Tensor w = Tensor::ones(Shape{3});
  w.set_requires_grad(true);
  CHECK_THROWS_WITH(binary_in_place(BinaryOp::mul, w, 2.0f),
                    Catch::Contains("mul_: float32[3] on cpu is a leaf that requires grad"));
  const Tensor buf = Tensor::zeros(Shape{3});
  const Tensor y = mul(w, 2.0f);
  CHECK_THROWS_WITH(binary_in_place(BinaryOp::add, buf, y),
                    Catch::Contains("the operand, float32[3] on cpu, requires grad"));
  CHECK_THROWS_WITH(fill_in_place(y, 0.0), Catch::Contains("fill_: the tensor written, float32[3] on cpu"));
  const Tensor h = Tensor::full(Shape{3}, 2.0);
  const Tensor loss = sum(mul(w, h));  // saves h
  {
    NoGradGuard no_grad;
    binary_in_place(BinaryOp::sub, w, 0.5f);
    binary_in_place(BinaryOp::add, h, 1.0f);
  }
  CHECK(w.to_vector<float>() == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK_THROWS_WITH(loss.backward(), Catch::Contains("changed in place"));
}

TEST_CASE("in-place writes on a GPU give the CPU's bits", "[in_place][cuda]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  const Tensor other = values(Shape{9}, 5, gpu);
  const Tensor again = values(Shape{64, 9}, 4, gpu);
  binary_in_place(BinaryOp::mul, again, other);
  CHECK(same_bits(again, mul(values(Shape{64, 9}, 4), other.cpu())));  // IEEE products: the same everywhere
  copy_in_place(again, Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9}, Shape{9}));
  CHECK(again.cpu().to_vector<float>()[10] == 2.0f);
  fill_in_place(again.slice(0, 1), 7.0);
  CHECK(again.cpu().to_vector<float>()[8] == 7.0f);
  CHECK(again.cpu().to_vector<float>()[9] == 1.0f);
  check_ops_match_out_of_place(DType::f32, gpu);
  check_ops_match_out_of_place(DType::bf16, gpu);
}
