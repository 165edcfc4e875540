// Bad arguments raise kiln::Error naming the op and the shapes (or dtypes, or devices).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstring>

#include "core/kiln.h"
#include "kernels/cpu/cpu_backend.h"
#include "layers/layers.h"
#include "tests/support/scoped_backend.h"

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
  // Integers compare with integers only (a float32 holds int64s exactly only to 2^24), not uint8.
  const Tensor labels = Tensor::zeros(Shape{4}, TensorOptions{DType::i64});
  REQUIRE_THROWS_WITH(eq(labels, Tensor::zeros(Shape{4})), Contains("eq: a is int64[4] on cpu and b is float32[4]") &&
                                                                Contains("integers compare with integers"));
  const Tensor bytes = Tensor::zeros(Shape{4}, TensorOptions{DType::u8});
  REQUIRE_THROWS_WITH(gt(bytes, 1.0), Contains("gt: a is uint8[4]") && Contains("int32 or int64"));
  REQUIRE_THROWS_WITH(gt(bytes, Tensor::zeros(Shape{4})), Contains("gt: a is uint8[4] on cpu; comparisons take"));
  REQUIRE_THROWS_WITH(gt(labels, Tensor()), Contains("gt: b is an undefined tensor"));
  CHECK(add(labels, labels).dtype() == DType::i64);  // integer arithmetic, exact
  CHECK(div(labels, labels).dtype() == DType::f32);  // torch's true division of integers
  CHECK(add(labels, Tensor::zeros(Shape{4}, TensorOptions{DType::bf16})).dtype() == DType::bf16);  // torch's promotion
  REQUIRE_THROWS_WITH(pow(labels, labels), Contains("pow: int64[4] on cpu and int64[4] on cpu are integers") &&
                                               Contains("astype(\"float32\") for pow"));
  REQUIRE_THROWS_WITH(add(labels, 0.5f), Contains("add: int64[4] on cpu with the number 0.5"));
  REQUIRE_THROWS_WITH(add(bytes, bytes), Contains("add: a is uint8[4] on cpu; kiln's arithmetic takes"));
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

TEST_CASE("the dimension ops and selections name what was wrong", "[ops][errors]") {
  const Tensor x = Tensor::zeros(Shape{2, 3, 4});
  REQUIRE_THROWS_WITH(sum(x, 3), Contains("sum: dimension 3 is out of range") && Contains("-3 to 2"));
  REQUIRE_THROWS_WITH(mean(x, {1, -2}), Contains("mean: dimension 1 is named twice"));
  REQUIRE_THROWS_WITH(mean(Tensor::zeros(Shape{2, 0}), 1), Contains("hold no element"));
  REQUIRE_THROWS_WITH(sum(x, std::vector<int64_t>{}), Contains("no dimension given") && Contains("sum(x)"));
  REQUIRE_THROWS_WITH(narrow(x, 1, 2, 2), Contains("narrow: [2, 2 + 2) is outside dimension 1") && Contains("0 to 3"));
  REQUIRE_THROWS_WITH(narrow(x, -4, 0, 1), Contains("narrow: dimension -4 is out of range"));
  REQUIRE_THROWS_WITH(concat({}, 0), Contains("concat: no tensor given"));
  REQUIRE_THROWS_WITH(concat({x, Tensor::zeros(Shape{2, 3, 5})}, 1),
                      Contains("tensor 1 is float32[2, 3, 5]") && Contains("every extent but dimension 1's"));
  REQUIRE_THROWS_WITH(concat({x, Tensor::zeros(Shape{2, 3, 4}, TensorOptions{DType::i64})}, 0),
                      Contains("concat") && Contains("int64"));
  REQUIRE_THROWS_WITH(concat({x, Tensor()}, 0), Contains("concat") && Contains("tensor 1"));
  REQUIRE_THROWS_WITH(stack({x, Tensor::zeros(Shape{2, 3, 5})}, 0), Contains("stacked tensors have one shape"));
  REQUIRE_THROWS_WITH(stack({x}, 4), Contains("stack: dimension 4 is out of range") && Contains("-4 to 3"));
  REQUIRE_THROWS_WITH(stack({x, Tensor::zeros(Shape{2, 3, 4}, TensorOptions{DType::i64})}, 0),
                      Contains("stack") && Contains("int64"));
  REQUIRE_THROWS_WITH(amax(Tensor::zeros(Shape{0, 3}), 0), Contains("amax") && Contains("no maximum"));
  REQUIRE_THROWS_WITH(sum(Tensor::zeros(Shape{}), 1), Contains("out of range for a scalar (0 or -1 only)"));
  CHECK(sum(Tensor::full(Shape{}, 2.5), 0).item() == 2.5);  // a scalar's dimension 0 is itself, as torch
  REQUIRE_THROWS_WITH(clamp(x, 1.0f, -1.0f), Contains("clamp: lo 1 is above hi -1"));
  REQUIRE_THROWS_WITH(clamp(x, std::nanf(""), 1.0f), Contains("clamp: a bound is NaN"));
  REQUIRE_THROWS_WITH(maximum(x, Tensor::zeros(Shape{5})), Contains("maximum") && Contains("[5]"));
  REQUIRE_THROWS_WITH(where(Tensor::ones(Shape{2}), x, x), Contains("where: shapes") && Contains("do not broadcast"));
  REQUIRE_THROWS_WITH(where(x, x, x.to(DType::bf16)), Contains("where: a is float32 but b is bfloat16"));
  REQUIRE_THROWS_WITH(where(Tensor(), x, 0.0f), Contains("where: cond is an undefined tensor"));
  REQUIRE_THROWS_WITH(masked_fill(x, Tensor::ones(Shape{5, 3, 4}), 0.0f),
                      Contains("masked_fill: mask [5, 3, 4] does not broadcast to x's shape [2, 3, 4]"));
  REQUIRE_THROWS_WITH(permute(x, {2, 1}), Contains("permute: 2 dimension(s) given") && Contains("each of its 3"));
  REQUIRE_THROWS_WITH(permute(x, {2, 1, -1}), Contains("permute: dimension 2 is named twice (positions 0 and 2"));
  REQUIRE_THROWS_WITH(permute(x, {0, 1, 5}), Contains("permute: dimension 5 is out of range"));
  REQUIRE_THROWS_WITH(permute(Tensor(), {}), Contains("permute: x is an undefined tensor"));
  REQUIRE_THROWS_WITH(pow(x, Tensor::zeros(Shape{5})), Contains("pow") && Contains("[5]"));
  REQUIRE_THROWS_WITH(pow(Tensor::zeros(Shape{3}, TensorOptions{DType::i64}), 2.0f),
                      Contains("pow") && Contains("int64"));
  REQUIRE_THROWS_WITH(layer_norm(x, Tensor::ones(Shape{3})), Contains("layer_norm: gamma must be [4]"));
  REQUIRE_THROWS_WITH(layer_norm(x.to(DType::bf16)), Contains("layer_norm") && Contains("bfloat16"));
  REQUIRE_THROWS_WITH(LayerNorm("ln", 0), Contains("LayerNorm ln: features must be >= 1"));
  REQUIRE_THROWS_WITH(LayerNorm("ln", 5).forward(x), Contains("LayerNorm ln") && Contains("its 5 features"));
}

TEST_CASE("index_select, gather and the adds name the index outside and its dimension", "[ops][errors]") {
  const Tensor x = Tensor::zeros(Shape{2, 3, 4});
  const auto idx = [](std::vector<int64_t> v, Shape s) { return Tensor::from_vector(v, s); };
  REQUIRE_THROWS_WITH(index_select(x, 1, idx({0, 3}, Shape{2})),
                      Contains("index_select: index 3 at position 1") &&
                          Contains("outside dimension 1 of float32[2, 3, 4]") && Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(index_select(x, -1, idx({-1}, Shape{1})),
                      Contains("index -1 at position 0") && Contains("[0, 4)"));
  REQUIRE_THROWS_WITH(index_select(x, 3, idx({0}, Shape{1})), Contains("index_select: dimension 3 is out of range"));
  REQUIRE_THROWS_WITH(index_select(x, 0, idx({0, 1}, Shape{1, 2})),
                      Contains("rank 0 or 1") && Contains("reshape them to [n]"));
  REQUIRE_THROWS_WITH(index_select(x, 0, Tensor::zeros(Shape{1})), Contains("indices must be int32 or int64"));
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{}), 0, idx({0}, Shape{1})), Contains("rank >= 1"));
  REQUIRE_THROWS_WITH(embedding(Tensor::zeros(Shape{4, 2}), idx({1, 4}, Shape{2})),
                      Contains("embedding: index 4 at position 1") && Contains("outside the table's 4 rows [0, 4)"));
  REQUIRE_THROWS_WITH(gather(x, 1, idx({0, 3}, Shape{1, 2, 1})),
                      Contains("gather: index 3 at position 1") && Contains("outside dimension 1"));
  REQUIRE_THROWS_WITH(gather(x, 1, idx({0}, Shape{1})), Contains("gather: indices must have x's rank (3)"));
  REQUIRE_THROWS_WITH(gather(x, 0, idx({0, 0, 0, 0, 0}, Shape{1, 1, 5})),
                      Contains("longer than x") && Contains("along dimension 2"));
  const Tensor src = Tensor::zeros(Shape{2, 2, 4});
  REQUIRE_THROWS_WITH(index_add(x, 1, idx({0, 3}, Shape{2}), src),
                      Contains("index_add: index 3 at position 1") && Contains("outside dimension 1"));
  REQUIRE_THROWS_WITH(index_add(x, 1, idx({0}, Shape{1}), src),
                      Contains("index_add: src float32[2, 2, 4]") &&
                          Contains("but 1 (one per index) along dimension 1"));
  REQUIRE_THROWS_WITH(index_add(x, 1, idx({0, 1}, Shape{2}), src.to(DType::bf16)), Contains("index_add") &&
                                                                                      Contains("bfloat16"));
  REQUIRE_THROWS_WITH(scatter_add(x, 1, Tensor::zeros(Shape{3, 2, 4}, TensorOptions{DType::i64}), src),
                      Contains("scatter_add: indices int64[3, 2, 4]") &&
                          Contains("are longer than x float32[2, 3, 4] on cpu along dimension 0"));
  REQUIRE_THROWS_WITH(scatter_add(x, 0, Tensor::zeros(Shape{2, 3, 4}, TensorOptions{DType::i64}), src),
                      Contains("scatter_add: indices") && Contains("longer than src"));
  // An empty selection is no error: [2, 0, 4], as torch.
  CHECK(index_select(x, 1, Tensor::zeros(Shape{0}, TensorOptions{DType::i64})).shape() == Shape{2, 0, 4});
}

// The range check runs inside each kernel path (a row or an element per index, along the last
// dimension or not, one block or several, split over threads or not): every path names the first
// bad index, not a later one another thread met first.
TEST_CASE("every gather and scatter-add path names the first index outside whatever the thread that met it",
          "[ops][errors]") {
  const auto big = [](int64_t n, int64_t extent, std::vector<std::pair<int64_t, int64_t>> bad, Shape s) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i % extent;
    for (const auto& [at, value] : bad) v[static_cast<size_t>(at)] = value;
    return Tensor::from_vector(v, std::move(s));
  };
  const int64_t n = 300000;  // past the kernels' threshold for splitting over threads
  const auto named = [](int64_t value, int64_t at) {
    return Contains("index " + std::to_string(value) + " at position " + std::to_string(at) + " ");
  };
  // Row indices: a 1-d x, one block along the last dimension, several, rows of 4.
  const Tensor row_idx = big(n, 3, {{n - 5, 7}, {200001, -2}, {250000, 3}}, Shape{n});
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{3}), 0, row_idx), named(-2, 200001));
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{2, 3}), 1, row_idx), named(-2, 200001));
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{3, 4}), 0, row_idx), named(-2, 200001));
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{2, 3, 4}, TensorOptions{DType::bf16}), 1, row_idx),
                      named(-2, 200001));
  REQUIRE_THROWS_WITH(index_add(Tensor::zeros(Shape{3, 4}), 0, row_idx, Tensor::ones(Shape{n, 4})),
                      named(-2, 200001));
  REQUIRE_THROWS_WITH(index_add(Tensor::zeros(Shape{3}), 0, row_idx, Tensor::ones(Shape{n})), named(-2, 200001));
  // An index per element: 1-d, along the last dimension of several blocks, along dimension 0.
  const Tensor each = big(2 * n, 3, {{2 * n - 1, 3}, {n + 7, 9}, {n + 8, -1}}, Shape{2, n});
  REQUIRE_THROWS_WITH(gather(Tensor::zeros(Shape{3}), 0, each.reshape(Shape{2 * n})), named(9, n + 7));
  REQUIRE_THROWS_WITH(gather(Tensor::zeros(Shape{2, 3}), 1, each), named(9, n + 7));
  REQUIRE_THROWS_WITH(gather(Tensor::zeros(Shape{3, n}), 0, each), named(9, n + 7));
  REQUIRE_THROWS_WITH(scatter_add(Tensor::zeros(Shape{2, 3}), 1, each, Tensor::ones(Shape{2, n})), named(9, n + 7));
  REQUIRE_THROWS_WITH(scatter_add(Tensor::zeros(Shape{3, n}), 0, each, Tensor::ones(Shape{2, n})), named(9, n + 7));
  // No entry to index: every index is outside, the first named.
  const Tensor one = Tensor::from_vector(std::vector<int64_t>{0, 0}, Shape{2});
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{2, 0}), 1, one), named(0, 0) && Contains("[0, 0)"));
  REQUIRE_THROWS_WITH(index_add(Tensor::zeros(Shape{0, 2}), 0, one, Tensor::ones(Shape{2, 2})), named(0, 0));
  // An empty result runs no kernel; its indices are checked all the same.
  REQUIRE_THROWS_WITH(index_select(Tensor::zeros(Shape{0, 3}), 1, Tensor::from_vector(std::vector<int64_t>{1, 5},
                                                                                       Shape{2})),
                      named(5, 1) && Contains("outside dimension 1 of float32[0, 3]"));
  const Tensor three = Tensor::from_vector(std::vector<int64_t>{3}, Shape{1}).to(DType::i32);
  REQUIRE_THROWS_WITH(index_add(Tensor::zeros(Shape{3, 0}), 0, three, Tensor::zeros(Shape{1, 0})), named(3, 0));
}

TEST_CASE("sort and topk put NaN last ascending and first descending and keep ties in order", "[ops]") {
  const float nan = std::nanf("");
  const Tensor x = Tensor::from_vector(std::vector<float>{1.0f, nan, -0.0f, 2.0f, 0.0f, 1.0f, -3.0f}, Shape{7});
  CHECK(argsort(x).to_vector<int64_t>() == std::vector<int64_t>{6, 2, 4, 0, 5, 3, 1});  // -0 and 0 tie
  CHECK(argsort(x, 0, true).to_vector<int64_t>() == std::vector<int64_t>{1, 3, 0, 5, 2, 4, 6});
  const ValuesIndices top = topk(x, 3);
  CHECK(top.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 3, 0});
  CHECK(std::isnan(top.values.to_vector<float>()[0]));
  CHECK(topk(x, 2, 0, false).values.to_vector<float>() == std::vector<float>{-3.0f, -0.0f});
  CHECK(std::signbit(topk(x, 2, 0, false).values.to_vector<float>()[1]));  // values are x's own entries
  // A 0-d x is its own sort; k = 0 and an empty dimension give empty results.
  const ValuesIndices one = sort(Tensor::from_vector(std::vector<float>{4.0f}, Shape{}));
  CHECK((one.values.shape() == Shape{} && one.indices.to_vector<int64_t>() == std::vector<int64_t>{0}));
  CHECK(topk(Tensor::zeros(Shape{3, 4}), 0).values.shape() == Shape{3, 0});
  CHECK(sort(Tensor::zeros(Shape{0, 5}), 0).indices.shape() == Shape{0, 5});
  // Long rows shared out between threads (and bf16) give std::stable_sort's order.
  Generator g(7);
  const Tensor big = Tensor::normal(Shape{3, 20000}, 0.0f, 1.0f, g).to(DType::bf16);  // bf16: many ties
  const std::vector<float> v = big.to(DType::f32).to_vector<float>();
  const std::vector<int64_t> got = argsort(big, 1, true).to_vector<int64_t>();
  const std::vector<int64_t> few = topk(big, 7, 1).indices.to_vector<int64_t>();  // the heap path
  for (int64_t r = 0; r < 3; ++r) {
    std::vector<int64_t> want(20000);
    std::iota(want.begin(), want.end(), 0);
    const float* row = v.data() + r * 20000;
    std::stable_sort(want.begin(), want.end(), [&](int64_t a, int64_t b) { return row[a] > row[b]; });
    CHECK(std::equal(want.begin(), want.end(), got.begin() + r * 20000));
    // A few of many, ties among them: the sort's first k.
    CHECK(std::equal(want.begin(), want.begin() + 7, few.begin() + r * 7));
  }
}

TEST_CASE("sort and argsort and topk name what is wrong", "[ops][errors]") {
  const Tensor x = Tensor::zeros(Shape{3, 5});
  REQUIRE_THROWS_WITH(topk(x, 6),
                      Contains("topk: k = 6 is outside 0 to 5") && Contains("dimension 1 of float32[3, 5]"));
  REQUIRE_THROWS_WITH(topk(x, -1, 0), Contains("topk: k = -1 is outside 0 to 3"));
  REQUIRE_THROWS_WITH(topk(Tensor::zeros(Shape{}), 0), Contains("topk: k = 0 is outside 1 to 1") &&
                                                           Contains("a 0-d tensor holds one entry"));
  REQUIRE_THROWS_WITH(sort(x, 2), Contains("sort: dimension 2 is out of range for float32[3, 5]"));
  REQUIRE_THROWS_WITH(argsort(x.to(DType::i64)), Contains("argsort") && Contains("int64"));
  REQUIRE_THROWS_WITH(sort(Tensor()), Contains("sort") && Contains("x"));
}

TEST_CASE("cumsum rounds a running double sum once per output and names what is wrong", "[ops][errors]") {
  // 1 + 2^-24 + 2^-24: a float running sum loses both halves, a double one keeps them (torch's CPU).
  const float tiny = std::ldexp(1.0f, -24);
  const Tensor x = Tensor::from_vector(std::vector<float>{1.0f, tiny, tiny, -1.0f}, Shape{4});
  CHECK(cumsum(x, 0).to_vector<float>() == std::vector<float>{1.0f, 1.0f, 1.0f + 2 * tiny, 2 * tiny});
  // Lines along the last dimension, and along the first in chunks of 256 and 44 (a task each):
  // the same bits as a double running sum written here.
  Generator g(3);
  const Tensor big = Tensor::normal(Shape{300, 300}, 0.0f, 1.0f, g);
  const std::vector<float> v = big.to_vector<float>();
  for (const int64_t dim : {0, 1}) {
    std::vector<float> want(v.size());
    for (int64_t line = 0; line < 300; ++line) {
      double acc = 0;
      for (int64_t k = 0; k < 300; ++k) {
        const size_t at = static_cast<size_t>(dim == 1 ? line * 300 + k : k * 300 + line);
        acc += v[at];
        want[at] = static_cast<float>(acc);
      }
    }
    CHECK(cumsum(big, dim).to_vector<float>() == want);
  }
  CHECK(cumsum(Tensor::full(Shape{}, 2.5f), -1).to_vector<float>() == std::vector<float>{2.5f});
  // torch's zeros: a 0-d -0 and, through lines of one, a gradient of -0 keep their sign.
  CHECK(std::signbit(cumsum(Tensor::full(Shape{}, -0.0), 0).to_vector<float>()[0]));
  Tensor column = Tensor::ones(Shape{3, 1}).set_requires_grad(true);
  cumsum(column, 1).backward(Tensor::full(Shape{3, 1}, -0.0));
  CHECK(std::signbit(column.grad().to_vector<float>()[2]));
  CHECK(cumsum(Tensor::zeros(Shape{0, 3}), 0).shape() == Shape{0, 3});
  REQUIRE_THROWS_WITH(cumsum(Tensor::zeros(Shape{2, 3}), 2), Contains("cumsum: dimension 2 is out of range"));
  REQUIRE_THROWS_WITH(cumsum(Tensor::zeros(Shape{2}, TensorOptions{DType::i64}), 0),
                      Contains("cumsum: x must be float32 or bfloat16, got int64[2]"));
}

TEST_CASE("selections follow torch at NaN and ties and at the clamp bounds", "[ops]") {
  const float nan = std::nanf("");
  const Tensor a = Tensor::from_vector(std::vector<float>{1.0f, nan, 2.0f, -1.0f}, Shape{4});
  const Tensor b = Tensor::from_vector(std::vector<float>{nan, 0.0f, 2.0f, 3.0f}, Shape{4});
  const std::vector<float> mx = maximum(a, b).to_vector<float>(), mn = minimum(a, b).to_vector<float>();
  CHECK((std::isnan(mx[0]) && std::isnan(mx[1]) && mx[2] == 2.0f && mx[3] == 3.0f));
  CHECK((std::isnan(mn[0]) && std::isnan(mn[1]) && mn[2] == 2.0f && mn[3] == -1.0f));
  CHECK(eq(a, b).to_vector<float>() == std::vector<float>{0, 0, 1, 0});
  CHECK(ne(a, b).to_vector<float>() == std::vector<float>{1, 1, 0, 1});
  CHECK(ge(a, 1.0f).to_vector<float>() == std::vector<float>{1, 0, 1, 0});
  Tensor ta = a.clone(), tb = b.clone();
  ta.set_requires_grad(true);
  tb.set_requires_grad(true);
  sum(maximum(ta, tb)).backward();
  // torch's formula: the whole gradient to both where a NaN is involved, half each on the tie.
  CHECK(ta.grad().to_vector<float>() == std::vector<float>{1, 1, 0.5f, 0});
  CHECK(tb.grad().to_vector<float>() == std::vector<float>{1, 1, 0.5f, 1});
  CHECK_FALSE(gt(ta, tb).requires_grad());
  Tensor x = Tensor::from_vector(std::vector<float>{-2.0f, -1.0f, 0.0f, 1.0f, 2.0f, nan}, Shape{6});
  x.set_requires_grad(true);
  const Tensor y = clamp(x, -1.0f, 1.0f);
  const std::vector<float> yv = y.to_vector<float>();
  CHECK((yv[0] == -1.0f && yv[4] == 1.0f && std::isnan(yv[5])));
  sum(y).backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{0, 1, 1, 1, 0, 0});
  // A result over extents of 1 is a new tensor, not x itself (sum_to would return x).
  Tensor col = Tensor::zeros(Shape{3, 1});
  CHECK(sum(col, 1, true).raw_data() != col.raw_data());
  CHECK(amax(a, 0).item() != amax(a, 0).item());  // NaN wins
  CHECK(amin(Tensor::from_vector(std::vector<float>{3, -2, 5, -2}, Shape{2, 2}), 1).to_vector<float>() ==
        std::vector<float>{-2, -2});
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
  const test::ScopedBackend installed(DeviceType::cuda, &fake);
  Tensor w = Tensor::zeros(Shape{4, 3, 3, 3}, TensorOptions{DType::f32, Device::cuda(0)});
  REQUIRE_THROWS_WITH(conv2d(Tensor::zeros(Shape{1, 5, 5, 3}), w),
                      Contains("conv2d") && Contains("is on cpu") && Contains("cuda:0"));
  REQUIRE_THROWS_WITH(linear(Tensor::zeros(Shape{1, 3}), Tensor::zeros(Shape{2, 3}).to(Device::cuda(0))),
                      Contains("linear") && Contains("cuda:0"));
  REQUIRE_THROWS_WITH(add(Tensor::zeros(Shape{3}), Tensor::zeros(Shape{3}).to(Device::cuda(0))),
                      Contains("add") && Contains("cuda:0"));
}

TEST_CASE("the cuts squeeze unsqueeze flip split chunk and unbind give torch's pieces and name what is wrong",
          "[ops][errors]") {
  const Tensor x = Tensor::arange(12, 0.0, 1.0).reshape(Shape{3, 1, 4});
  CHECK(squeeze(x).shape() == (Shape{3, 4}));
  CHECK(squeeze(x, 0).shape() == x.shape());  // extent 3: kept, as torch's
  CHECK(unsqueeze(x, -1).shape() == (Shape{3, 1, 4, 1}));
  CHECK(flip(x, {0, 2}).to_vector<float>() ==
        std::vector<float>{11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  const std::vector<Tensor> p = split(x, 3, -1);
  REQUIRE(p.size() == 2);
  CHECK((p[0].shape() == Shape{3, 1, 3} && p[1].shape() == Shape{3, 1, 1}));
  CHECK(p[1].to_vector<float>() == std::vector<float>{3, 7, 11});
  CHECK(split_with_sizes(x, {0, 2, 1}, 0)[2].to_vector<float>() == std::vector<float>{8, 9, 10, 11});
  CHECK(chunk(Tensor::zeros(Shape{6}), 4).size() == 3);  // pieces of 2 cover 6 in three
  CHECK(chunk(Tensor::zeros(Shape{0, 2}), 3).size() == 3);
  const std::vector<Tensor> rows = unbind(x, 0);
  REQUIRE(rows.size() == 3);
  CHECK((rows[2].shape() == Shape{1, 4} && rows[2].to_vector<float>() == std::vector<float>{8, 9, 10, 11}));
  // The pieces' gradients meet in one of x's shape; pieces no gradient reached leave zeros.
  Tensor w = Tensor::arange(6, 0.0, 1.0).reshape(Shape{3, 2});
  w.set_requires_grad(true);
  const std::vector<Tensor> cut = unbind(w, 1);
  sum(add(mul(cut[1], 3.0f), cut[1])).backward();
  CHECK(w.grad().to_vector<float>() == std::vector<float>{0, 4, 0, 4, 0, 4});
  REQUIRE_THROWS_WITH(squeeze(x, 3), Contains("squeeze: dimension 3 is out of range for float32[3, 1, 4]"));
  REQUIRE_THROWS_WITH(unsqueeze(x, 4), Contains("unsqueeze: dimension 4 is out of range"));
  REQUIRE_THROWS_WITH(flip(x, {1, -2}), Contains("flip: dimension 1 is named twice"));
  REQUIRE_THROWS_WITH(split(x, 0, 0), Contains("split: pieces of 0 entries cannot cut dimension 0"));
  REQUIRE_THROWS_WITH(split_with_sizes(x, {1, 1}, 0), Contains("split: the sizes given sum to 2, not to 3"));
  REQUIRE_THROWS_WITH(chunk(x, 0), Contains("chunk: 0 chunks"));
  REQUIRE_THROWS_WITH(unbind(Tensor::zeros(Shape{})), Contains("unbind: needs a tensor of rank >= 1"));
}

TEST_CASE("logsumexp and max and min along a dimension give torch's values and gradients", "[ops][errors]") {
  const float inf = INFINITY;
  const Tensor rows = Tensor::from_vector(std::vector<float>{100.0f, 100.0f, -inf, -inf, inf, 0.0f}, Shape{3, 2});
  const std::vector<float> lse = logsumexp(rows, {1}).to_vector<float>();
  CHECK(lse[0] == 100.0f + std::log(2.0f));  // no overflow: shifted by the row's maximum
  CHECK((lse[1] == -inf && lse[2] == inf));
  CHECK(logsumexp(Tensor::zeros(Shape{2, 0}), {1}).to_vector<float>() == std::vector<float>{-inf, -inf});
  Tensor x = Tensor::from_vector(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f, 2.0f, 0.0f}, Shape{2, 3});
  x.set_requires_grad(true);
  const ValuesIndices m = max(x, 1);
  CHECK(m.values.to_vector<float>() == std::vector<float>{3.0f, 2.0f});
  CHECK(m.indices.to_vector<int64_t>() == std::vector<int64_t>{1, 0});  // the first of a tie
  sum(m.values).backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{0, 1, 0, 1, 0, 0});  // to that position only
  const ValuesIndices lo = min(x.detach(), 0, true);
  CHECK((lo.values.shape() == Shape{1, 3} && lo.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 1}));
  REQUIRE_THROWS_WITH(logsumexp(Tensor::zeros(Shape{2}, TensorOptions{DType::i32}), {0}),
                      Contains("logsumexp: input x must be float32 or bfloat16"));
  REQUIRE_THROWS_WITH(max(x, 2), Contains("max: dimension 2 is out of range"));
  REQUIRE_THROWS_WITH(min(Tensor::zeros(Shape{2, 0}), 1),
                      Contains("min: dimension 1 of float32[2, 0] on cpu is empty"));
}
