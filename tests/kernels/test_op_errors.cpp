// Bad arguments raise kiln::Error naming the op and the shapes (or dtypes, or devices).
#include <catch2/catch.hpp>
#include <cstring>

#include "core/kiln.h"
#include "kernels/cpu/cpu_backend.h"

using namespace kiln;
using Catch::Contains;

TEST_CASE("shape mismatches name the op and both shapes", "[ops][errors]") {
  Tensor x = Tensor::zeros(Shape{2, 5, 5, 3});
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{4, 3, 3, 2})),
                      Contains("conv2d") && Contains("[2, 5, 5, 3]") && Contains("[4, 3, 3, 2]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{4, 3, 3, 3}), Tensor::zeros(Shape{5})),
                      Contains("conv2d") && Contains("bias") && Contains("[5]"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{4, 7, 7, 3})), Contains("conv2d") && Contains("does not fit"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{5, 5, 3}), Tensor::zeros(Shape{4, 3, 3, 3})),
                      Contains("conv2d") && Contains("rank 4") && Contains("[5, 5, 3]"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{2, 7}), Tensor::zeros(Shape{3, 6})),
                      Contains("linear") && Contains("[2, 7]") && Contains("[3, 6]"));
  REQUIRE_THROWS_WITH(add(Tensor::zeros(Shape{2, 3}), Tensor::zeros(Shape{3, 2})),
                      Contains("add") && Contains("[2, 3]") && Contains("[3, 2]"));
  REQUIRE_THROWS_WITH(max_pool2d(Tensor::zeros(Shape{1, 1, 1, 3})), Contains("max_pool2d") && Contains("[1, 1, 1, 3]"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(Tensor::zeros(Shape{4, 3}), Tensor::zeros(Shape{5}, TensorOptions{DType::i64})),
                      Contains("softmax_cross_entropy") && Contains("[4, 3]") && Contains("[5]"));
}

TEST_CASE("wrong dtypes name the op and the dtype", "[ops][errors]") {
  Tensor i = Tensor::zeros(Shape{2, 4, 4, 3}, TensorOptions{DType::i32});
  REQUIRE_THROWS_WITH(conv2d(i, Tensor::zeros(Shape{4, 3, 3, 3})), Contains("conv2d") && Contains("int32[2, 4, 4, 3]"));
  REQUIRE_THROWS_WITH(softmax(Tensor::zeros(Shape{3}, TensorOptions{DType::bf16})),
                      Contains("softmax") && Contains("float32") && Contains("bfloat16[3]"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(Tensor::zeros(Shape{2, 3}), Tensor::zeros(Shape{2})),
                      Contains("softmax_cross_entropy") && Contains("int32 or int64") && Contains("float32[2]"));
  REQUIRE_THROWS_WITH(Tensor::zeros(Shape{2}, TensorOptions{DType::i64}).set_requires_grad(true),
                      Contains("floating"));
}

TEST_CASE("out-of-range labels are an error naming the label and row", "[ops][errors]") {
  Tensor logits = Tensor::zeros(Shape{3, 4});
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{0, 4, 1}, Shape{3})),
                      Contains("label 4") && Contains("row 1") && Contains("[0, 4)"));
  REQUIRE_THROWS_WITH(softmax_cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{-1, 0, 1}, Shape{3})),
                      Contains("label -1"));
}

TEST_CASE("bad op parameters are errors", "[ops][errors]") {
  Tensor x = Tensor::zeros(Shape{1, 4, 4, 1});
  REQUIRE_THROWS_WITH(dropout(x, 0.0f, true), Contains("keep_prob"));
  REQUIRE_THROWS_WITH(dropout(x, 1.5f, true), Contains("keep_prob"));
  REQUIRE_THROWS_WITH(max_pool2d(x, Pool2dParams{2, 2, 0, 1, 0, 0}), Contains("stride"));
  REQUIRE_THROWS_WITH(max_pool2d(x, Pool2dParams{2, 2, 2, 2, 2, 0}), Contains("padding"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{1, 1, 1, 1}), Tensor(), Conv2dParams{0, 1, 0, 0}),
                      Contains("stride"));
  // Empty weights: no output channel, no input channel, no tap (oneDNN's own words before).
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{0, 3, 3, 1})), Contains("conv2d: weight w [0, 3, 3, 1] is empty"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{1, 4, 4, 0}), Tensor::zeros(Shape{2, 3, 3, 0})), Contains("is empty"));
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{2, 0, 3, 1})), Contains("is empty"));
  // Sizes past 64 bits are refused, not wrapped (a wrapped size allocated nothing and crashed).
  REQUIRE_THROWS_WITH(Tensor::ones(Shape{int64_t{1} << 31, int64_t{1} << 31, 4}), Contains("more than 2^63 - 1 elements"));
  REQUIRE_THROWS_WITH(Tensor::ones(Shape{int64_t{1} << 62}), Contains("would take more than 2^64 bytes"));
  REQUIRE_THROWS_WITH(reshape(Tensor::ones(Shape{0}), Shape{int64_t{1} << 62, 2, 2, 4}), Contains("2^63 - 1"));
  CHECK(reshape(Tensor::ones(Shape{0}), Shape{int64_t{1} << 62, 0}).numel() == 0);
  // A padding past the int range oneDNN and cuDNN take is refused by name; an extent near
  // 2^63 (an empty batch holds one) with padding still overflows, and is refused too.
  REQUIRE_THROWS_WITH(conv2d(x, Tensor::zeros(Shape{1, 1, 1, 1}), Tensor(), Conv2dParams{1, 1, INT64_MAX / 2 + 1, 0}),
                      Contains("conv2d: padding must be in [0, 2147483647]"));
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{0, INT64_MAX - 1, 1, 1}), Tensor::zeros(Shape{1, 1, 1, 1}), Tensor(),
                             Conv2dParams{1, 1, 1, 0}),
                      Contains("overflows 64-bit sizes"));
  Tensor w = Tensor::zeros(Shape{2});
  std::vector<SgdParamRef> refs = {{w, Tensor::zeros(Shape{3}), Tensor()}};
  REQUIRE_THROWS_WITH(sgd_update(refs, SgdOptions{}), Contains("sgd_update") && Contains("[3]") && Contains("[2]"));
  REQUIRE_THROWS_WITH(sgd_update(refs, SgdOptions{-1.0f}), Contains("lr"));
}

namespace {
// A stand-in "GPU" whose memory is host memory, so device checks can be tested on a
// machine without CUDA.
class FakeDevice : public cpu::CpuBackend {
 public:
  const char* name() const override { return "fake-cuda"; }
  void copy(const Tensor& src, Tensor& dst, bool) override { std::memmove(dst.raw_data(), src.raw_data(), src.nbytes()); }
};
}  // namespace

TEST_CASE("mixing devices names the op and both devices", "[ops][errors]") {
  if (device_count(DeviceType::cuda) > 0) {
    Tensor g = Tensor::zeros(Shape{4, 3, 3, 3}, TensorOptions{DType::f32, Device::cuda(0)});
    REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{1, 5, 5, 3}), g), Contains("conv2d") && Contains("cuda:0"));
    return;
  }
  FakeDevice fake;
  struct Restore {
    Backend* previous;
    ~Restore() { register_backend(DeviceType::cuda, previous); }
  } restore{register_backend(DeviceType::cuda, &fake)};
  Tensor w = Tensor::zeros(Shape{4, 3, 3, 3}, TensorOptions{DType::f32, Device::cuda(0)});
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{1, 5, 5, 3}), w),
                      Contains("conv2d") && Contains("is on cpu") && Contains("cuda:0"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{1, 3}), Tensor::zeros(Shape{2, 3}).to(Device::cuda(0))),
                      Contains("linear") && Contains("cuda:0"));
  REQUIRE_THROWS_WITH(add(Tensor::zeros(Shape{3}), Tensor::zeros(Shape{3}).to(Device::cuda(0))),
                      Contains("add") && Contains("cuda:0"));
}
