// Broadcasting and division beyond the op table's small cases: shapes large enough for the
// CPU's threaded and blocked paths, sum_to's order against the function the GPU runs
// (kernels/common/broadcast.h), IEEE division, the messages for shapes that do not
// broadcast, and the GPU against the CPU bit for bit.
#include <catch2/catch.hpp>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/backend.h"
#include "kernels/common/broadcast.h"
#include "tests/support/gpu.h"

using namespace kiln;

namespace {

// What the GPU's sum_to kernel computes for every output element, run here on the host.
std::vector<float> sum_to_by_element(const Tensor& x, const Shape& shape) {
  const Tensor out = Tensor::empty(shape);
  const common::BroadcastPlan<2> p = common::broadcast_plan<2>(x, {&x, &out});
  int kept[kMaxBroadcastRank];
  const int n_kept = common::kept_dims(p, kept);
  const std::vector<float> xv = x.to(DType::f32).to_vector<float>();
  std::vector<float> r(static_cast<size_t>(shape.numel()));
  for (int64_t j = 0; j < shape.numel(); ++j)
    r[static_cast<size_t>(j)] = static_cast<float>(common::sum_to_element(
        p, kept, n_kept, j, [&](int64_t o) { return static_cast<double>(xv[static_cast<size_t>(o)]); }));
  return r;
}

// Shapes and what they sum to: out keeping the innermost dimension (two column blocks of the
// CPU's), summing it, three alternating groups, a middle one kept, and everything.
const std::vector<std::pair<Shape, Shape>> kSums = {
    {Shape{300, 700}, Shape{700}},          {Shape{700, 300}, Shape{700, 1}}, {Shape{5, 40, 6, 50}, Shape{40, 1, 50}},
    {Shape{8, 9, 10}, Shape{1, 9, 1}},      {Shape{2, 3}, Shape{}},           {Shape{64, 7, 7, 130}, Shape{130}},
    {Shape{1, 33, 1, 5}, Shape{33, 1, 5}}};

}  // namespace

TEST_CASE("sum_to on the CPU adds in the order the GPU's kernel does, bit for bit", "[broadcast]") {
  Generator g(11);
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [big, small] : kSums) {
      INFO(big << " -> " << small << " in " << dtype_name(dt));
      const Tensor x = Tensor::normal(big, 0.0f, 1.0f, g).to(dt);
      const Tensor s = sum_to(x, small);
      REQUIRE(s.shape() == small);
      std::vector<float> want = sum_to_by_element(x, small);
      if (dt == DType::bf16)  // the kernel's result, rounded to bf16 as the store does
        want = Tensor::from_vector(want, small).to(DType::bf16).to(DType::f32).to_vector<float>();
      REQUIRE(s.to(DType::f32).to_vector<float>() == want);
    }
  }
}

TEST_CASE("sum_to's order shows in its bits: the CPU keeps the GPU's, not another", "[broadcast]") {
  // Each output's first term (in x's order) is 1e15 and its last -1e15: the running sums in
  // double are then too coarse (ulp 0.125) for the normal terms added while they are large,
  // so the result depends on the order, unlike sums of terms alike (where rounding to float
  // hides it).
  Generator g(16);
  // A column sum, runs within a larger sum, and runs that are each an output (the last dimension's).
  for (const auto& [big, small] : std::vector<std::pair<Shape, Shape>>{{Shape{3000, 70}, Shape{70}},
                                                                       {Shape{7, 400, 9}, Shape{1, 400, 1}},
                                                                       {Shape{40, 3000}, Shape{40, 1}}}) {
    INFO(big << " -> " << small);
    std::vector<float> v = Tensor::normal(big, 0.0f, 1.0f, g).to_vector<float>();
    const Tensor shape_only = Tensor::empty(big), out = Tensor::empty(small);
    const common::BroadcastPlan<2> p = common::broadcast_plan<2>(shape_only, {&shape_only, &out});
    std::vector<int64_t> first(static_cast<size_t>(small.numel()), -1), last(first.size(), -1);
    for (int64_t i = 0; i < big.numel(); ++i) {
      int64_t off[2];
      common::broadcast_offsets(p, i, off);
      if (first[static_cast<size_t>(off[1])] < 0) first[static_cast<size_t>(off[1])] = off[0];
      last[static_cast<size_t>(off[1])] = off[0];
    }
    for (size_t j = 0; j < first.size(); ++j) {
      v[static_cast<size_t>(first[j])] = 1e15f;
      v[static_cast<size_t>(last[j])] = -1e15f;
    }
    const Tensor x = Tensor::from_vector(v, big);
    const std::vector<float> got = sum_to(x, small).to_vector<float>(), want = sum_to_by_element(x, small);
    REQUIRE(got == want);
    // The same values summed in x's order, one running sum per output, differ somewhere: the
    // comparison above tells groupings apart (which terms are summed before they meet a large
    // running sum; 7 lanes instead of 8 fails it).
    std::vector<double> in_order(static_cast<size_t>(small.numel()), 0.0);
    for (int64_t i = 0; i < big.numel(); ++i) {
      int64_t off[2];
      common::broadcast_offsets(p, i, off);
      in_order[static_cast<size_t>(off[1])] += v[static_cast<size_t>(off[0])];
    }
    size_t differ = 0;
    for (size_t j = 0; j < got.size(); ++j) differ += got[j] != static_cast<float>(in_order[j]);
    CHECK(differ > 0);
  }
}

TEST_CASE("linear's bias gradient is sum_to's column order, bit for bit, fp32 and bf16", "[broadcast]") {
  // dy with 1e15 and -1e15 at each column's first and last row, as above: the bits show the
  // grouping. The bias gradient took the rows in plain order until 2026-12-05; now the
  // GPU's chunked column order (the CUDA bias-gradient kernel's), so both backends agree.
  Generator g(17);
  const int64_t rows = 3000, out = 70, in = 5;
  std::vector<float> v = Tensor::normal(Shape{rows, out}, 0.0f, 1.0f, g).to_vector<float>();
  for (int64_t o = 0; o < out; ++o) {
    v[static_cast<size_t>(o)] = 1e15f;
    v[static_cast<size_t>((rows - 1) * out + o)] = -1e15f;
  }
  for (const DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    const Tensor dy = Tensor::from_vector(v, Shape{rows, out}).to(dt);
    const Tensor x = Tensor::normal(Shape{rows, in}, 0.0f, 1.0f, g).to(dt);
    const Tensor w = Tensor::normal(Shape{out, in}, 0.0f, 1.0f, g).to(dt);
    Tensor b = Tensor::zeros(Shape{out}, TensorOptions{dt, Device::cpu()}).set_requires_grad(true);
    linear(x, w, b).backward(dy);
    CHECK(b.grad().to(DType::f32).to_vector<float>() == sum_to(dy, Shape{out}).to(DType::f32).to_vector<float>());
  }
}

TEST_CASE("broadcast ops equal the same op on operands repeated to full size, bit for bit", "[broadcast]") {
  Generator g(12);
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {Shape{64, 7, 7, 130}, Shape{130}}, {Shape{33, 1, 257}, Shape{1, 65, 1}}, {Shape{1}, Shape{9, 300, 40}},
      {Shape{}, Shape{70000}}, {Shape{5, 1, 3, 1, 7}, Shape{4, 1, 6, 1}},
      // Rows longer than the CPU's pieces of 16384, split at offsets inside each operand's row.
      {Shape{3, 40000}, Shape{2, 1, 40000}}, {Shape{5, 1}, Shape{1, 50000}}};
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [sa, sb] : pairs) {
      INFO(sa << " and " << sb << " in " << dtype_name(dt));
      const Tensor a = Tensor::normal(sa, 0.0f, 1.0f, g).to(dt);
      const Tensor b = Tensor::uniform(sb, 0.5f, 2.0f, g).to(dt);
      const Tensor ab = add(a, b);
      const Shape full = ab.shape();
      const Tensor fa = broadcast_to(a, full), fb = broadcast_to(b, full);
      REQUIRE(fa.shape() == full);
      CHECK(ab.to(DType::f32).to_vector<float>() == add(fa, fb).to(DType::f32).to_vector<float>());
      CHECK(sub(a, b).to(DType::f32).to_vector<float>() == sub(fa, fb).to(DType::f32).to_vector<float>());
      CHECK(mul(b, a).to(DType::f32).to_vector<float>() == mul(fb, fa).to(DType::f32).to_vector<float>());
      CHECK(div(a, b).to(DType::f32).to_vector<float>() == div(fa, fb).to(DType::f32).to_vector<float>());
    }
  }
}

namespace {

// x permuted by order, element by element on the host: the reference for the kernels' blocks.
std::vector<float> permuted_by_index(const Tensor& x, const std::vector<int64_t>& order) {
  const std::vector<float> xv = x.to(DType::f32).to_vector<float>();
  const auto rank = static_cast<int64_t>(order.size());
  std::vector<int64_t> stride(static_cast<size_t>(rank), 1);
  for (int64_t d = rank - 2; d >= 0; --d) stride[static_cast<size_t>(d)] = stride[static_cast<size_t>(d + 1)] * x.dim(d + 1);
  std::vector<float> out(xv.size());
  for (int64_t o = 0; o < x.numel(); ++o) {
    int64_t rest = o, src = 0;
    for (int64_t i = rank - 1; i >= 0; --i) {
      const int64_t d = order[static_cast<size_t>(i)];
      src += (rest % x.dim(d)) * stride[static_cast<size_t>(d)];
      rest /= x.dim(d);
    }
    out[static_cast<size_t>(o)] = xv[static_cast<size_t>(src)];
  }
  return out;
}

}  // namespace

TEST_CASE("transpose and permute put every element where its index says, fp32 and bf16", "[broadcast]") {
  // Batched transposes over the CPU's 8 x 8 blocks and their edges (threaded past 65536
  // elements), group swaps that become one (NCHW to NHWC, a dimension moved first or last) and
  // permutations that stay strided gathers.
  Generator g(18);
  const std::vector<std::pair<Shape, std::vector<int64_t>>> moves = {
      {Shape{3, 37, 45}, {0, 2, 1}},     {Shape{4, 300, 257}, {0, 2, 1}},      {Shape{40, 24}, {1, 0}},
      {Shape{2, 17, 6, 5}, {0, 2, 3, 1}}, {Shape{2, 5, 6, 17}, {0, 3, 1, 2}}, {Shape{20, 9, 11}, {2, 0, 1}},
      {Shape{20, 9, 11}, {1, 2, 0}},     {Shape{9, 10, 11}, {2, 1, 0}},        {Shape{3, 4, 5, 6}, {1, 0, 3, 2}}};
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [shape, order] : moves) {
      INFO(shape << " permuted " << Shape(order) << " in " << dtype_name(dt));
      const Tensor x = Tensor::normal(shape, 0.0f, 1.0f, g).to(dt);
      const Tensor y = permute(x, order);
      REQUIRE(y.dtype() == dt);
      CHECK(y.to(DType::f32).to_vector<float>() == permuted_by_index(x, order));
    }
  }
}

namespace {

// Integer operands for the comparisons: neighbours past 2^24 (and near int64's ends) that a float
// would round together, so that only an exact comparison tells them apart.
Tensor integers(const std::vector<int64_t>& v, const Shape& shape, DType dt) {
  return Tensor::from_vector(v, shape).to(dt);
}

// Whether x (op) y holds, written out by hand (the kernels' compare_apply is what is tested), as
// the 0/1 of a comparison's mask.
template <typename T>
float holds_by_hand(BinaryOp op, T x, T y) {
  const bool holds = op == BinaryOp::gt ? x > y : op == BinaryOp::ge ? x >= y : op == BinaryOp::lt ? x < y
                   : op == BinaryOp::le ? x <= y : op == BinaryOp::eq ? x == y : x != y;
  return holds ? 1.0f : 0.0f;
}

// What a comparison of a [rows, cols] with b [cols] must give, element by element.
std::vector<float> compared_by_hand(BinaryOp op, const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<float> out;
  for (size_t i = 0; i < a.size(); ++i) out.push_back(holds_by_hand(op, a[i], b[i % b.size()]));
  return out;
}

const BinaryOp kComparisons[] = {BinaryOp::gt, BinaryOp::ge, BinaryOp::lt, BinaryOp::le, BinaryOp::eq, BinaryOp::ne};

const char* comparison_name(BinaryOp op) {
  const char* names[] = {"gt", "ge", "lt", "le", "eq", "ne"};
  return names[static_cast<int>(op) - static_cast<int>(BinaryOp::gt)];
}

Tensor compared(BinaryOp op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case BinaryOp::gt: return gt(a, b);
    case BinaryOp::ge: return ge(a, b);
    case BinaryOp::lt: return lt(a, b);
    case BinaryOp::le: return le(a, b);
    case BinaryOp::eq: return eq(a, b);
    default: return ne(a, b);
  }
}

Tensor compared(BinaryOp op, const Tensor& a, double s) {
  switch (op) {
    case BinaryOp::gt: return gt(a, s);
    case BinaryOp::ge: return ge(a, s);
    case BinaryOp::lt: return lt(a, s);
    case BinaryOp::le: return le(a, s);
    case BinaryOp::eq: return eq(a, s);
    default: return ne(a, s);
  }
}

}  // namespace

TEST_CASE("integer tensors compare exactly at any magnitude into a float32 mask, broadcast", "[broadcast]") {
  constexpr int64_t k = int64_t{1} << 40, top = std::numeric_limits<int64_t>::max();
  const std::vector<int64_t> a = {k, k + 1, k - 1, -k, top, top - 1, 0, -1, 5, 7, 16777217, 16777216};
  const std::vector<int64_t> b = {k, k, top, 0, 5, 16777216};
  for (const BinaryOp op : kComparisons) {
    INFO(comparison_name(op));
    // Against a number past 2^24 (a double holds it; a float32 would round it to 16777216).
    CHECK(compared(op, integers(a, Shape{12}, DType::i64), 16777217.0).to_vector<float>() ==
          compared_by_hand(op, a, {16777217}));
    const Tensor out = compared(op, integers(a, Shape{2, 6}, DType::i64), integers(b, Shape{6}, DType::i64));
    REQUIRE(out.dtype() == DType::f32);
    REQUIRE(out.shape() == Shape({2, 6}));
    CHECK(out.to_vector<float>() == compared_by_hand(op, a, b));
    // int32 beside int64 (widened), and int32 with int32, through the threaded rows.
    const std::vector<int64_t> small = {16777217, 16777216, -3, 2147483647, -2147483646, 9};  // in int32 after - i % 3
    std::vector<int64_t> many;
    for (int64_t i = 0; i < 200004; ++i) many.push_back(small[static_cast<size_t>(i) % small.size()] - i % 3);
    const Tensor m32 = integers(many, Shape{200004 / 6, 6}, DType::i32);
    CHECK(compared(op, m32, integers(small, Shape{6}, DType::i64)).to_vector<float>() ==
          compared_by_hand(op, many, small));
    CHECK(compared(op, m32, integers(small, Shape{6}, DType::i32)).to_vector<float>() ==
          compared_by_hand(op, many, small));
  }
}

TEST_CASE("an integer tensor against a number compares exactly, also past its range and at NaN", "[broadcast]") {
  const std::vector<int64_t> a = {-3, -2, -1, 0, 1, 2, 3, 2147483647};
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const DType dt : {DType::i32, DType::i64}) {
    const Tensor x = integers(a, Shape{8}, dt);
    for (const BinaryOp op : kComparisons) {
      for (const double s : {2.0, 2.5, -2.5, 0.0, -0.0, 1e30, -1e30, 3e9, -3e9, 2147483647.0, 2147483646.5,
                             3.5 - 0x1p31, -2147483648.0, double{inf}, double{-inf}, double{nan}}) {
        INFO(comparison_name(op) << " with " << s << " on " << dtype_name(dt));
        std::vector<float> want;
        // exact as doubles: every int32 is one
        for (const int64_t v : a) want.push_back(holds_by_hand(op, static_cast<double>(v), s));
        const Tensor out = compared(op, x, s);
        REQUIRE(out.dtype() == DType::f32);
        CHECK(out.to_vector<float>() == want);
      }
    }
  }
}

TEST_CASE("div rounds correctly and follows IEEE at zero", "[broadcast]") {
  Generator g(13);
  const Tensor a = Tensor::normal(Shape{4096}, 0.0f, 3.0f, g), b = Tensor::normal(Shape{4096}, 0.0f, 0.5f, g);
  const std::vector<float> q = div(a, b).to_vector<float>(), av = a.to_vector<float>(), bv = b.to_vector<float>();
  // A double quotient rounded to float is the correctly rounded float quotient (53 >= 2 * 24 + 2 bits).
  for (size_t i = 0; i < q.size(); ++i) REQUIRE(q[i] == static_cast<float>(double(av[i]) / double(bv[i])));
  const std::vector<float> s = div(a, 3.0f).to_vector<float>();
  for (size_t i = 0; i < s.size(); ++i) REQUIRE(s[i] == static_cast<float>(double(av[i]) / 3.0));
  const std::vector<float> z = div(Tensor::from_vector(std::vector<float>{1, -1, 0}, Shape{3}), Tensor::zeros(Shape{1}))
                                   .to_vector<float>();
  CHECK(z[0] == std::numeric_limits<float>::infinity());
  CHECK(z[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(z[2]));
}

TEST_CASE("a broadcast operand's gradient is summed back to its shape", "[broadcast][autograd]") {
  // y = x * w + b per channel; dL/dw = sum over pixels of x * g, dL/db = sum of g.
  Generator g(14);
  Tensor x = Tensor::normal(Shape{2, 3, 3, 4}, 0.0f, 1.0f, g);
  Tensor w = Tensor::normal(Shape{4}, 0.0f, 1.0f, g), b = Tensor::normal(Shape{4}, 0.0f, 1.0f, g);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor y = add(mul(x, w), b);
  REQUIRE(y.shape() == Shape{2, 3, 3, 4});
  sum(y).backward();
  const std::vector<float> xv = x.to_vector<float>();
  std::vector<double> dw(4, 0.0);
  for (size_t i = 0; i < xv.size(); ++i) dw[i % 4] += xv[i];
  const std::vector<float> gw = w.grad().to_vector<float>(), gb = b.grad().to_vector<float>();
  for (size_t c = 0; c < 4; ++c) {
    CHECK(gw[c] == Approx(dw[c]).epsilon(1e-6));
    CHECK(gb[c] == 18.0f);
  }
}

TEST_CASE("shapes that do not broadcast are refused, naming both and the dimension", "[broadcast][errors]") {
  const Tensor a = Tensor::zeros(Shape{2, 3}), b = Tensor::zeros(Shape{4});
  CHECK_THROWS_WITH(add(a, b), Catch::Contains("add: shapes [2, 3] and [4] do not broadcast: dimension -1 is 3 "
                                               "against 4"));
  CHECK_THROWS_WITH(div(b, a), Catch::Contains("div: shapes [4] and [2, 3]"));
  CHECK_THROWS_WITH(sum_to(a, Shape{2}), Catch::Contains("sum_to: x's shape [2, 3] is not a broadcast of shape [2]"));
  CHECK_THROWS_WITH(sum_to(b, Shape{2, 4}), Catch::Contains("is not a broadcast of"));
  CHECK_THROWS_WITH(broadcast_to(a, Shape{3, 3}), Catch::Contains("broadcast_to: shape [3, 3] is not a broadcast of "
                                                                  "x's shape [2, 3]"));
  CHECK_THROWS_WITH(sum_to(b, Shape{1, 1, 4}), Catch::Contains("[1, 1, 4] may not have more dimensions"));
  CHECK_THROWS_WITH(broadcast_to(b, Shape{-1, 4}), Catch::Contains("broadcast_to: the shape [-1, 4] has a negative"));
  const Tensor deep = Tensor::zeros(Shape{1, 1, 1, 1, 1, 1, 1, 1, 2});
  CHECK_THROWS_WITH(add(deep, Tensor::zeros(Shape{2})), Catch::Contains("more than 8 dimensions"));
  CHECK(sum_to(deep, deep.shape()).raw_data() == deep.raw_data());  // equal shapes: x itself, at any rank
  CHECK_THROWS_WITH(sum_to(deep, Shape{2}), Catch::Contains("more than 8 dimensions"));
  CHECK_THROWS_WITH(add(a, Tensor::zeros(Shape{2, 3}, TensorOptions{DType::bf16})),
                    Catch::Contains("add: a is float32 but b is bfloat16"));
}

TEST_CASE("broadcast ops, sum_to and broadcast_to on the GPU equal the CPU's bit for bit", "[cuda][broadcast]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(15);
  for (const DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [big, small] : kSums) {
      INFO(big << " -> " << small << " in " << dtype_name(dt));
      const Tensor x = Tensor::normal(big, 0.0f, 1.0f, g).to(dt), y = Tensor::normal(small, 0.0f, 1.0f, g).to(dt);
      const Tensor xg = x.to(Device::cuda()), yg = y.to(Device::cuda());
      const auto host = [](const Tensor& t) {  // the bits, so that -0 differs from +0 and NaN matches itself
        std::vector<uint32_t> bits;
        for (float f : t.to(Device::cpu()).to(DType::f32).to_vector<float>())
          bits.push_back(std::bit_cast<uint32_t>(f));
        return bits;
      };
      CHECK(host(sum_to(xg, small)) == host(sum_to(x, small)));
      CHECK(host(broadcast_to(yg, big)) == host(broadcast_to(y, big)));
      CHECK(host(add(xg, yg)) == host(add(x, y)));
      CHECK(host(div(yg, xg)) == host(div(y, x)));
    }
  }
}

TEST_CASE("integer comparisons on the GPU equal the CPU's", "[cuda][broadcast]") {
  KILN_SKIP_WITHOUT_GPU();
  for (const DType dt : {DType::i32, DType::i64}) {
    const int64_t k = dt == DType::i64 ? int64_t{1} << 40 : int64_t{1} << 30;  // within each dtype
    std::vector<int64_t> many;
    for (int64_t i = 0; i < 300000; ++i) many.push_back(k + i % 7 - 3);
    const std::vector<int64_t> row = {k, k + 1, k - 1, k + 3, -k, k - 3};
    const Tensor a = integers(many, Shape{50000, 6}, dt), b = integers(row, Shape{6}, DType::i64);
    for (const BinaryOp op : kComparisons) {
      INFO(comparison_name(op) << " on " << dtype_name(dt));
      CHECK(compared(op, a.to(Device::cuda()), b.to(Device::cuda())).to(Device::cpu()).to_vector<float>() ==
            compared(op, a, b).to_vector<float>());
      CHECK(compared(op, a.to(Device::cuda()), 2.5).to(Device::cpu()).to_vector<float>() ==
            compared(op, a, 2.5).to_vector<float>());
    }
  }
}

TEST_CASE("linear's bias gradient on the GPU equals the CPU's bit for bit", "[cuda][broadcast]") {
  KILN_SKIP_WITHOUT_GPU();
  Generator g(18);
  for (const DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    const Tensor dy = Tensor::normal(Shape{1000, 130}, 0.0f, 1.0f, g).to(dt);
    const Tensor x = Tensor::normal(Shape{1000, 9}, 0.0f, 1.0f, g).to(dt);
    const Tensor w = Tensor::normal(Shape{130, 9}, 0.0f, 1.0f, g).to(dt);
    std::vector<std::vector<float>> grads;
    for (const Device d : {Device::cpu(), Device::cuda()}) {
      Tensor b = Tensor::zeros(Shape{130}, TensorOptions{dt, d}).set_requires_grad(true);
      linear(x.to(d), w.to(d), b).backward(dy.to(d));
      grads.push_back(b.grad().to(Device::cpu()).to(DType::f32).to_vector<float>());
    }
    CHECK(grads[0] == grads[1]);
  }
}
