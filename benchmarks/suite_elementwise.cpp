// kiln_bench --suite elementwise: relu, relu backward, dropout (keep 0.5), add, div, a
// per-channel add and the sum down to channels (a bias and its gradient), the sum over the last
// dimension, the [N H W, C] transpose, the unary math ops (exp, log, sqrt, tanh, sigmoid, gelu,
// silu, abs, softplus), maximum, amax over channels, the channel concat, a permutation, where,
// a ** 2 and a ** 1.5 (pow's exact form and its vector loop) and layer_norm (these at conv3_3's
// size only), and the random fills (uniform, normal: how every model's weights start) at the
// sizes of VGG16's activations at batch 8 (conv1_2, conv3_3, conv5_3 outputs and fc6), through
// the backend into preallocated outputs. Judged against the measured copy bandwidth; the normal
// fill is bound by its logarithms and sines instead, which its low %roof shows. Small sizes fit
// in the last-level cache and may pass 100%.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/backend.h"
#include "core/generator.h"
#include "core/philox.h"

namespace kiln::bench {
namespace {

// Element i of fill_normal's stream in double: Box-Muller on the word pair of Philox block
// i / 4 that holds it, u1 in (0, 1] and the angle 2 pi u2 (kernels/common/normal.h's mapping).
double box_muller_reference(kiln::PhiloxState st, size_t i) {
  const kiln::Philox4 b = kiln::philox_block(st.seed, st.offset + i / 4);
  const size_t pair = (i % 4) / 2;
  const double u1 = (static_cast<double>(b.v[2 * pair] >> 8) + 1.0) / 16777216.0;
  const double u2 = static_cast<double>(b.v[2 * pair + 1] >> 8) / 16777216.0;
  const double r = std::sqrt(-2.0 * std::log(u1)), theta = 6.283185307179586 * u2;
  return i % 2 == 0 ? r * std::cos(theta) : r * std::sin(theta);
}

// div (a / b), a per-channel add (a + bias, bias [C] broadcast: a layer's bias) and the sum
// down to [C] (that bias's gradient) for one size: a, b and out on the bench device, their
// host copies ap, bp; rows named "<op>/<size>".
void broadcast_rows(const std::string& size, const Tensor& a, const Tensor& b, Tensor& out, const float* ap,
                    const float* bp, const Options& opt, const MachineLimits& m, SuiteResult& res) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const int64_t ne = a.numel(), c = a.dim(-1);
  const double el = static_cast<double>(ne);
  Tensor out_host;
  const auto row = [&](const std::string& op_name, double flops, double bytes) {
    return make_row(op_name + "/" + size, "elementwise", shape_str(a.shape()), flops, bytes);
  };
  {  // div: the double quotient rounded once is the correctly rounded float one
    be.binary(kiln::BinaryOp::div, a, b, out);
    const float* op = host_floats(out, out_host);
    Row r = row("div", el, 12.0 * el);
    check_row(
        r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
        [&](size_t i) { return static_cast<double>(static_cast<float>(static_cast<double>(ap[i]) / bp[i])); }, 0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary(kiln::BinaryOp::div, a, b, out); });
  }
  const Tensor bias = b.reshape(Shape{ne / c, c}).slice(0, 1).reshape(Shape{c});  // b's first row
  {  // a + bias per channel: one float rounding
    be.binary(kiln::BinaryOp::add, a, bias, out);
    const float* op = host_floats(out, out_host);
    Row r = row("add_channel", el, 8.0 * el + 4.0 * static_cast<double>(c));
    check_row(
        r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
        [&](size_t i) { return static_cast<double>(ap[i]) + bp[i % static_cast<size_t>(c)]; }, 6e-8);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary(kiln::BinaryOp::add, a, bias, out); });
  }
  {  // sum down to [C]: in double, rounded once
    Tensor sums = bias.clone();
    be.sum_to(a, sums);
    std::vector<double> ref(static_cast<size_t>(c), 0.0);
    for (int64_t i = 0; i < ne; ++i) ref[static_cast<size_t>(i % c)] += ap[i];
    Tensor sums_host;
    const float* sp = host_floats(sums, sums_host);
    Row r = row("sum_channel", el, 4.0 * el + 4.0 * static_cast<double>(c));
    check_row(
        r, static_cast<size_t>(c), [&](size_t i) { return sp[i]; }, [&](size_t i) { return ref[i]; },
        kiln::check::kRtolReduction);
    time_checked_row(std::move(r), opt, m, res, [&] { be.sum_to(a, sums); });
  }
  {  // the sum over the last dimension, [N H W, C] -> [N H W, 1] (a mean or a norm over features):
     // sum_to's runs in double, rounded once
    const int64_t rows = ne / c;
    Tensor sums = empty_on_bench_device(Shape{rows, 1}, opt);
    const Tensor a2 = a.reshape(Shape{rows, c});
    be.sum_to(a2, sums);
    std::vector<double> ref(static_cast<size_t>(rows), 0.0);
    for (int64_t i = 0; i < ne; ++i) ref[static_cast<size_t>(i / c)] += ap[i];
    Tensor sums_host;
    const float* sp = host_floats(sums, sums_host);
    Row r = row("sum_last", el, 4.0 * el + 4.0 * static_cast<double>(rows));
    check_row(
        r, static_cast<size_t>(rows), [&](size_t i) { return sp[i]; }, [&](size_t i) { return ref[i]; },
        kiln::check::kRtolReduction);
    time_checked_row(std::move(r), opt, m, res, [&] { be.sum_to(a2, sums); });
  }
  {  // transpose of the [N H W, C] matrix to [C, N H W] (a layout change): exact
    const int64_t rows = ne / c;
    const Tensor a2 = a.reshape(Shape{rows, c});
    Tensor o2 = out.reshape(Shape{c, rows});
    be.transpose(a2, o2);
    const float* op = host_floats(o2, out_host);
    Row r = row("transpose", 0.0, 8.0 * el);
    check_row(
        r, static_cast<size_t>(ne), [&](size_t k) { return op[k]; },
        [&](size_t k) {
          const size_t j = k / static_cast<size_t>(rows), i = k % static_cast<size_t>(rows);
          return static_cast<double>(ap[i * static_cast<size_t>(c) + j]);
        },
        0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.transpose(a2, o2); });
  }
}

// The unary math ops at one size (`a` in [-1, 1]; log and sqrt on |a| + 0.1, their domain),
// forward, against double-precision math; rows "<op>/<size>". Those past sqrt and abs are
// bound by their arithmetic (kernels/common/exp.h's polynomials), not memory, as %roof shows.
void unary_rows(const std::string& size, const Tensor& a_host, Tensor& out, const Options& opt, const MachineLimits& m,
                SuiteResult& res) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const int64_t ne = a_host.numel();
  const double el = static_cast<double>(ne);
  Tensor pos_host = a_host.clone();
  for (int64_t i = 0; i < ne; ++i) pos_host.data<float>()[i] = std::fabs(pos_host.data<float>()[i]) + 0.1f;
  const Tensor a = to_bench_device(a_host, opt), pos = to_bench_device(pos_host, opt);
  struct U {
    const char* name;
    kiln::UnaryOp op;
    double (*ref)(double);
  };
  const U ops[] = {
      {"exp", kiln::UnaryOp::exp, [](double x) { return std::exp(x); }},
      {"log", kiln::UnaryOp::log, [](double x) { return std::log(x); }},
      {"sqrt", kiln::UnaryOp::sqrt, [](double x) { return std::sqrt(x); }},
      {"tanh", kiln::UnaryOp::tanh, [](double x) { return std::tanh(x); }},
      {"sigmoid", kiln::UnaryOp::sigmoid, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }},
      {"gelu", kiln::UnaryOp::gelu, [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }},
      {"silu", kiln::UnaryOp::silu, [](double x) { return x / (1.0 + std::exp(-x)); }},
      {"abs", kiln::UnaryOp::abs, [](double x) { return std::fabs(x); }},
      {"softplus", kiln::UnaryOp::softplus, [](double x) { return std::log1p(std::exp(x)); }},
  };
  Tensor out_host;
  for (const U& u : ops) {
    const bool positive = u.op == kiln::UnaryOp::log || u.op == kiln::UnaryOp::sqrt;
    const Tensor& x = positive ? pos : a;
    const float* xp = (positive ? pos_host : a_host).data<float>();
    be.unary(u.op, x, out);
    const float* op = host_floats(out, out_host);
    Row r = make_row(std::string(u.name) + "/" + size, "elementwise", shape_str(a.shape()), el, 8.0 * el);
    const auto ref = u.ref;
    check_row(
        r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
        [&](size_t i) { return ref(static_cast<double>(xp[i])); }, kiln::check::kRtolElementwise);
    time_checked_row(std::move(r), opt, m, res, [&] { be.unary(u.op, x, out); });
  }
}

// The row groups run at one size only (conv3_3's), over a: [N, H, W, C] with C = a.dim(-1) and b
// alike, in [-1, 1]: the operands on the bench device and on the host, and rows "<op>/<size>".
struct OneSizeRows {
  OneSizeRows(const std::string& size, const Tensor& a_host, const Tensor& b_host, const Options& opt,
              const MachineLimits& m, SuiteResult& res)
      : size(size), opt(opt), m(m), res(res), be(kiln::backend_for(bench_device(opt))), ne(a_host.numel()),
        c(a_host.dim(-1)), rows(ne / c), el(static_cast<double>(ne)), ap(a_host.data<float>()),
        bp(b_host.data<float>()), a(to_bench_device(a_host, opt)), b(to_bench_device(b_host, opt)) {}
  Row row(const std::string& op_name, double flops, double bytes) const {
    return make_row(op_name + "/" + size, "elementwise", shape_str(a.shape()), flops, bytes);
  }
  // The selections and joins: maximum(a, b), amax over the channels, the channel concat of a and
  // b, and layer_norm over the channels (gamma, beta random). Each against double-precision math.
  void selections();
  // where, a permutation and the powers (the ops research code composes attention of).
  void where_permute_pow();

  const std::string& size;
  const Options& opt;
  const MachineLimits& m;
  SuiteResult& res;
  kiln::Backend& be;
  const kiln::NoGradGuard no_grad;
  const int64_t ne, c, rows;
  const double el;
  const float* ap;
  const float* bp;
  const Tensor a, b;
  Tensor host;  // an output, read where the references are
};

void OneSizeRows::where_permute_pow() {
  {  // where(a > 0, a, b): a blend, exact. kiln's mask is float32 (16 bytes an element in all; torch's
     // bool mask makes its 13)
    const Tensor mask = kiln::gt(a, 0.0f);
    Tensor out = empty_on_bench_device(a.shape(), opt);
    be.where(mask, a, b, out);
    const float* op = host_floats(out, host);
    Row r = row("where", 0.0, 16.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
              [&](size_t i) { return static_cast<double>(ap[i] > 0 ? ap[i] : bp[i]); }, 0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.where(mask, a, b, out); });
  }
  {  // [N, H, W, C] -> [N, W, H, C]: a permutation that keeps the channels' runs (attention's head
     // split has this shape), moved exactly
    const int64_t n = a.dim(0), h = a.dim(1), w = a.dim(2);
    Tensor out = empty_on_bench_device(Shape{n, w, h, c}, opt);
    const std::vector<int64_t> order{0, 2, 1, 3};
    be.permute(a, order, out);
    const float* op = host_floats(out, host);
    Row r = row("permute_0213", 0.0, 8.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t k) { return op[k]; },
              [&](size_t k) {
                const int64_t i = static_cast<int64_t>(k), ch = i % c, y = i / c % h, x = i / (c * h) % w,
                              b = i / (c * h * w);
                return static_cast<double>(ap[((b * h + y) * w + x) * c + ch]);
              },
              0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.permute(a, order, out); });
  }
  {  // a ** 2: pow's exact form x * x, one rounding (the vectorised loop of a fixed exponent)
    Tensor out = empty_on_bench_device(a.shape(), opt);
    be.binary_scalar(kiln::BinaryOp::pow, a, 2.0f, out);
    const float* op = host_floats(out, host);
    Row r = row("pow_square", el, 8.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
              [&](size_t i) { return static_cast<double>(ap[i] * ap[i]); }, 0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary_scalar(kiln::BinaryOp::pow, a, 2.0f, out); });
  }
  {  // (|a| + 0.1) ** 1.5: pow_positive's vector loop (within an ulp of the double power)
    const Tensor pos = kiln::add(kiln::abs(a), 0.1f);
    Tensor pos_host;
    const float* pp = host_floats(pos, pos_host);
    Tensor out = empty_on_bench_device(a.shape(), opt);
    be.binary_scalar(kiln::BinaryOp::pow, pos, 1.5f, out);
    const float* op = host_floats(out, host);
    Row r = row("pow", el, 8.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
              [&](size_t i) { return std::pow(static_cast<double>(pp[i]), 1.5); }, kiln::check::kRtolElementwise);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary_scalar(kiln::BinaryOp::pow, pos, 1.5f, out); });
  }
  {  // (|a| + 0.1) ** e, e [C] in [-2, 2]: a broadcast exponent (each block's operands gathered,
     // then pow's vector loop)
    const Tensor pos = kiln::add(kiln::abs(a), 0.1f);
    const Tensor b_row = kiln::narrow(kiln::reshape(b, kiln::Shape{rows, c}), 0, 0, 1).reshape(kiln::Shape{c});
    const Tensor e = kiln::mul(b_row, 2.0f);
    Tensor pos_host, e_host;
    const float* pp = host_floats(pos, pos_host);
    const float* ep = host_floats(e, e_host);
    Tensor out = empty_on_bench_device(a.shape(), opt);
    be.binary(kiln::BinaryOp::pow, pos, e, out);
    const float* op = host_floats(out, host);
    Row r = row("pow_row", el, 8.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
              [&](size_t i) { return std::pow(static_cast<double>(pp[i]), static_cast<double>(ep[i % c])); },
              kiln::check::kRtolElementwise);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary(kiln::BinaryOp::pow, pos, e, out); });
  }
}


void OneSizeRows::selections() {
  {  // maximum: one of the operands, exact
    Tensor out = empty_on_bench_device(a.shape(), opt);
    be.binary(kiln::BinaryOp::maximum, a, b, out);
    const float* op = host_floats(out, host);
    Row r = row("maximum", el, 12.0 * el);
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
              [&](size_t i) { return static_cast<double>(std::max(ap[i], bp[i])); }, 0);
    time_checked_row(std::move(r), opt, m, res, [&] { be.binary(kiln::BinaryOp::maximum, a, b, out); });
  }
  {  // amax over the channels: exact
    Tensor out = empty_on_bench_device(Shape{rows, 1}, opt);
    be.reduce_extreme(kiln::BinaryOp::maximum, a, rows, c, 1, out);
    const float* op = host_floats(out, host);
    Row r = row("amax_channel", el, 4.0 * el + 4.0 * static_cast<double>(rows));
    check_row(r, static_cast<size_t>(rows), [&](size_t i) { return op[i]; },
              [&](size_t i) { return static_cast<double>(*std::max_element(ap + i * c, ap + (i + 1) * c)); }, 0);
    time_checked_row(std::move(r), opt, m, res,
                     [&] { be.reduce_extreme(kiln::BinaryOp::maximum, a, rows, c, 1, out); });
  }
  {  // concat of a and b along the channels: moved, exact
    Tensor out = empty_on_bench_device(Shape{rows, 2 * c}, opt);
    const auto join = [&] {
      be.copy_block(a, 0, out, 0, rows, c);
      be.copy_block(b, 0, out, c, rows, c);
    };
    join();
    const float* op = host_floats(out, host);
    Row r = row("concat_channel", 0.0, 16.0 * el);
    check_row(r, static_cast<size_t>(2 * ne), [&](size_t k) { return op[k]; },
              [&](size_t k) {
                const size_t i = k / static_cast<size_t>(2 * c), j = k % static_cast<size_t>(2 * c);
                return static_cast<double>(j < static_cast<size_t>(c) ? ap[i * c + j] : bp[i * c + j - c]);
              },
              0);
    time_checked_row(std::move(r), opt, m, res, join);
  }
  {  // layer_norm over the channels: the core op, against the normalisation in double
    kiln::Generator g(7);
    const Tensor gamma_host = Tensor::uniform(Shape{c}, 0.5f, 1.5f, g), beta_host = Tensor::uniform(Shape{c}, -1, 1, g);
    const Tensor gamma = to_bench_device(gamma_host, opt), beta = to_bench_device(beta_host, opt);
    const Tensor x = a.reshape(Shape{rows, c});
    const Tensor y = kiln::layer_norm(x, gamma, beta);
    const float* op = host_floats(y, host);
    std::vector<double> ref(static_cast<size_t>(ne));
    for (int64_t i = 0; i < rows; ++i) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < c; ++j) mean += ap[i * c + j];
      mean /= static_cast<double>(c);
      for (int64_t j = 0; j < c; ++j) var += (ap[i * c + j] - mean) * (ap[i * c + j] - mean);
      const double inv = 1.0 / std::sqrt(var / static_cast<double>(c) + 1e-5);
      for (int64_t j = 0; j < c; ++j)
        ref[static_cast<size_t>(i * c + j)] =
            (ap[i * c + j] - mean) * inv * gamma_host.data<float>()[j] + beta_host.data<float>()[j];
    }
    Row r = row("layer_norm", 8.0 * el, 8.0 * el);  // the least it must move: x in, y out
    check_row(r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; }, [&](size_t i) { return ref[i]; },
              kiln::check::kRtolReduction);
    time_checked_row(std::move(r), opt, m, res, [&] { (void)kiln::layer_norm(x, gamma, beta); });
  }
}

}  // namespace

SuiteResult run_elementwise(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(18, 34);
  print_table_header();
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  kiln::Generator gen(2024);
  struct Size {
    std::string name;
    Shape shape;
  };
  // The outputs of these layers at batch 8, shapes from the plan (NHWC; [8, features] for fc).
  std::vector<Size> sizes;
  for (const char* name : {"conv1_2", "conv3_3", "conv5_3", "fc6"}) {
    const kiln::LayerPlan l = vgg16_layer(name);
    const int64_t side = l.out_size, c = l.out_channels;
    sizes.push_back({name, l.kind == kiln::LayerPlan::Kind::fc ? Shape{8, c} : Shape{8, side, side, c}});
  }
  for (const Size& s : sizes) {
    const Tensor a_host = Tensor::uniform(s.shape, -1.0f, 1.0f, gen);
    const Tensor b_host = Tensor::uniform(s.shape, -1.0f, 1.0f, gen);
    const Tensor a = to_bench_device(a_host, opt), b = to_bench_device(b_host, opt);
    Tensor out = empty_on_bench_device(s.shape, opt);
    const int64_t ne = a.numel();
    const double el = static_cast<double>(ne);
    const float* ap = a_host.data<float>();
    const float* bp = b_host.data<float>();
    Tensor out_host;  // the output, read where the references are
    const float* op = nullptr;
    const std::string shape = shape_str(s.shape);
    const auto row = [&](const std::string& op_name, double flops, double bytes) {
      return make_row(op_name + "/" + s.name, "elementwise", shape, flops, bytes);
    };

    {  // relu: y = max(x, 0), exact
      be.relu(a, out);
      op = host_floats(out, out_host);
      Row r = row("relu", el, 8.0 * el);
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) { return std::max(0.0, static_cast<double>(ap[i])); }, 0);
      time_checked_row(std::move(r), opt, m, res, [&] { be.relu(a, out); });
    }
    {  // relu backward: dx = dy where y > 0 (y: a, dy: b), exact
      be.relu_backward(a, b, out);
      op = host_floats(out, out_host);
      Row r = row("relu_bwd", el, 12.0 * el);
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) { return ap[i] > 0 ? static_cast<double>(bp[i]) : 0.0; }, 0);
      time_checked_row(std::move(r), opt, m, res, [&] { be.relu_backward(a, b, out); });
    }
    {  // dropout, keep 0.5: each output is 0 or x / keep, and about half are kept
      const float keep = 0.5f;
      const kiln::PhiloxState st = gen.reserve(static_cast<uint64_t>(ne));
      be.dropout(a, keep, st, out);
      op = host_floats(out, out_host);
      int64_t kept = 0;
      for (int64_t i = 0; i < ne; ++i) kept += op[i] != 0.0f || ap[i] == 0.0f;
      Row r = row("dropout", 2.0 * el, 8.0 * el);
      // A kept element is x / keep rounded once (elementwise class); a dropped one is 0.
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) {
            return op[i] != 0.0f || ap[i] == 0.0f ? static_cast<double>(ap[i]) / keep : 0.0;
          },
          kiln::check::kRtolElementwise);
      // The kept count is Binomial(ne, keep): more than 6 sigma off means a broken mask.
      const double sigma = std::sqrt(el * keep * (1.0 - keep));
      if (std::fabs(static_cast<double>(kept) - el * keep) > 6.0 * sigma + 1)
        fail_check(r, "kept " + std::to_string(kept) + " of " + std::to_string(ne) + ", expected about half");
      time_checked_row(std::move(r), opt, m, res, [&] { be.dropout(a, keep, st, out); });
    }
    {  // add: exact in double of two floats rounded once
      be.binary(kiln::BinaryOp::add, a, b, out);
      op = host_floats(out, out_host);
      Row r = row("add", el, 12.0 * el);
      // Tighter than the elementwise class: one float32 rounding, 2^-24 of |ref|.
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) { return static_cast<double>(ap[i]) + bp[i]; }, 6e-8);
      time_checked_row(std::move(r), opt, m, res, [&] { be.binary(kiln::BinaryOp::add, a, b, out); });
    }
    broadcast_rows(s.name, a, b, out, ap, bp, opt, m, res);
    if (s.name == "conv3_3") {  // one size only: the unary math, selections, joins, where, permute, powers
      unary_rows(s.name, a_host, out, opt, m, res);
      OneSizeRows one(s.name, a_host, b_host, opt, m, res);
      one.selections();
      one.where_permute_pow();
    }
    // The fills against the stream (core/philox.h), U(0, 1) and N(0, 1) so that a + b * draw adds
    // no rounding: uniform exact against philox_uniform; normal against Box-Muller in double from
    // the same Philox words (kiln's float log, sine and cosine are within a few ulp of it).
    const kiln::PhiloxState st = gen.reserve(static_cast<uint64_t>(ne));
    {
      be.fill_uniform(out, st, 0.0f, 1.0f);
      op = host_floats(out, out_host);
      Row r = row("fill_uniform", el, 4.0 * el);
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) { return static_cast<double>(kiln::philox_uniform(st, i)); }, 0);
      time_checked_row(std::move(r), opt, m, res, [&] { be.fill_uniform(out, st, 0.0f, 1.0f); });
    }
    {
      be.fill_normal(out, st, 0.0f, 1.0f);
      op = host_floats(out, out_host);
      Row r = row("fill_normal", el, 4.0 * el);
      check_row(
          r, static_cast<size_t>(ne), [&](size_t i) { return op[i]; },
          [&](size_t i) { return box_muller_reference(st, i); }, kiln::check::kRtolElementwise);
      time_checked_row(std::move(r), opt, m, res, [&] { be.fill_normal(out, st, 0.0f, 1.0f); });
    }
  }
  return res;
}

}  // namespace kiln::bench
