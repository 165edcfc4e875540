// kiln_bench --suite vgg16_forward: VGG16 inference layer by layer, then whole.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace kiln::bench {
namespace {

// ---------------------------------------------------------------- vgg16_forward

// VGG16 at inference, layer by layer as its plan lists them: 13 conv3x3 (+bias, +relu),
// 5 max-pools 2x2/2, 3 fc layers.
struct VggLayer {
  kiln::LayerPlan plan;
  enum class Kind { conv, pool, fc } kind;
  std::string name;
  int64_t h = 0, w = 0, c_in = 0, c_out = 0;  // conv/pool: input map; fc: in -> out
  bool relu = true;
  Tensor weight, bias;  // conv: [O, 3, 3, C] OHWI; fc: [out, in]
};

std::vector<VggLayer> make_vgg16(kiln::Generator& gen) {
  std::vector<VggLayer> layers;
  for (const kiln::LayerPlan& p : vgg16_plan()) {
    VggLayer l;
    l.plan = p;
    l.name = p.name;
    l.c_in = p.in_channels;
    l.c_out = p.out_channels;
    if (p.kind == kiln::LayerPlan::Kind::fc) {
      l.kind = VggLayer::Kind::fc;
      l.relu = p.relu;
      const float std = static_cast<float>(std::sqrt(2.0 / static_cast<double>(l.c_in)));
      l.weight = Tensor::normal(Shape{l.c_out, l.c_in}, 0.0f, std, gen);
      l.bias = Tensor::uniform(Shape{l.c_out}, -0.1f, 0.1f, gen);
    } else {
      l.h = l.w = p.in_size;
      if (p.kind == kiln::LayerPlan::Kind::pool) {
        l.kind = VggLayer::Kind::pool;
      } else {
        l.kind = VggLayer::Kind::conv;
        // He-normal weights keep activations O(1) through the stack, so checks and the
        // final logits are meaningful numbers rather than under- or overflow.
        const float std = static_cast<float>(std::sqrt(2.0 / (9.0 * static_cast<double>(l.c_in))));
        l.weight = Tensor::normal(Shape{l.c_out, p.kernel, p.kernel, l.c_in}, 0.0f, std, gen);
        l.bias = Tensor::uniform(Shape{l.c_out}, -0.1f, 0.1f, gen);
      }
    }
    layers.push_back(std::move(l));
  }
  return layers;
}

Tensor vgg_apply(const VggLayer& l, const Tensor& x) {
  switch (l.kind) {
    case VggLayer::Kind::conv:
      return kiln::relu(kiln::conv2d(x, l.weight, l.bias,
                                     kiln::Conv2dParams{l.plan.stride, l.plan.stride, l.plan.pad, l.plan.pad}));
    case VggLayer::Kind::pool:
      return kiln::max_pool2d(x, kiln::Pool2dParams{l.plan.kernel, l.plan.kernel, l.plan.stride, l.plan.stride,
                                                    l.plan.pad, l.plan.pad});
    case VggLayer::Kind::fc: {
      Tensor y = kiln::linear(x.rank() == 2 ? x : kiln::flatten(x), l.weight, l.bias);
      return l.relu ? kiln::relu(y) : y;
    }
  }
  return Tensor();
}

Shape vgg_input_shape(const VggLayer& l, int64_t n) {
  return l.kind == VggLayer::Kind::fc ? Shape{n, l.c_in} : Shape{n, l.h, l.w, l.c_in};
}

// Positions (n, oh, ow) to check: the corners (where padding matters) and two inside.
std::vector<std::array<int64_t, 3>> check_positions(int64_t n, int64_t oh, int64_t ow) {
  return {{0, 0, 0}, {n - 1, oh - 1, ow - 1}, {n / 2, oh / 2, ow / 3}, {n - 1, 0, ow - 1}, {0, oh - 1, 1 % ow}};
}

// Float32 sums of up to 25088 products: the op table's reduction class, in its form
// (check/compare.h). The rounding error stays near eps * sqrt(K) of |y|, while one wrong
// or missing term moves y by about |y| / sqrt(K) (>= 6e-3 for K = 25088).
constexpr double kRtol = kiln::check::kRtolReduction;

void check_vgg_layer(const VggLayer& l, const Tensor& x_dev, const Tensor& y_dev, Row& row) {
  Tensor xk, yk, wk, bk;
  const float* x = host_floats(x_dev, xk);
  const float* y = host_floats(y_dev, yk);
  std::vector<double> got, want;
  double rtol = kRtol;
  const int64_t n = x_dev.dim(0);
  if (l.kind == VggLayer::Kind::conv) {
    const float* w = host_floats(l.weight, wk);
    const float* b = host_floats(l.bias, bk);
    const int64_t h = l.h, wd = l.w, c = l.c_in, o_n = l.c_out;
    for (const auto& [b_i, oh, ow] : check_positions(n, h, wd)) {
      for (int64_t o = 0; o < o_n; ++o) {
        double ref = b[o];
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t ih = oh - 1 + kh;
          if (ih < 0 || ih >= h) continue;
          for (int64_t kw = 0; kw < 3; ++kw) {
            const int64_t iw = ow - 1 + kw;
            if (iw < 0 || iw >= wd) continue;
            const float* xp = x + ((b_i * h + ih) * wd + iw) * c;
            const float* wp = w + ((o * 3 + kh) * 3 + kw) * c;
            for (int64_t ci = 0; ci < c; ++ci) ref += static_cast<double>(xp[ci]) * wp[ci];
          }
        }
        got.push_back(y[((b_i * h + oh) * wd + ow) * o_n + o]);
        want.push_back(std::max(ref, 0.0));
      }
    }
  } else if (l.kind == VggLayer::Kind::pool) {
    rtol = 0;  // a max is exact
    const int64_t h = l.h, wd = l.w, c = l.c_in, oh_n = h / 2, ow_n = wd / 2;
    for (const auto& [b_i, oh, ow] : check_positions(n, oh_n, ow_n)) {
      for (int64_t ci = 0; ci < c; ++ci) {
        double ref = -INFINITY;
        for (int64_t kh = 0; kh < 2; ++kh)
          for (int64_t kw = 0; kw < 2; ++kw)
            ref = std::max(ref, static_cast<double>(x[((b_i * h + 2 * oh + kh) * wd + 2 * ow + kw) * c + ci]));
        got.push_back(y[((b_i * oh_n + oh) * ow_n + ow) * c + ci]);
        want.push_back(ref);
      }
    }
  } else {
    const float* w = host_floats(l.weight, wk);
    const float* b = host_floats(l.bias, bk);
    const int64_t in = l.c_in, out = l.c_out;
    for (const int64_t r : {int64_t{0}, n - 1}) {
      for (int64_t o = 0; o < out; ++o) {
        double ref = b[o];
        for (int64_t i = 0; i < in; ++i) ref += static_cast<double>(x[r * in + i]) * w[o * in + i];
        got.push_back(y[r * out + o]);
        want.push_back(l.relu ? std::max(ref, 0.0) : ref);
      }
    }
  }
  check_row(row, got, want, rtol);
}

Row vgg_row(const VggLayer& l, int64_t n) {
  Row r;
  r.name = l.name;
  const double f = 4.0;  // bytes per float
  if (l.kind == VggLayer::Kind::conv) {
    r.kind = "conv";
    // conv FLOPs = 2 * N * OH * OW * O * KH * KW * C (stride 1, pad 1: OH = H).
    r.flops = 2.0 * n * l.h * l.w * l.c_out * 9.0 * l.c_in;
    r.bytes = f * (n * l.h * l.w * l.c_in + l.c_out * 9.0 * l.c_in + l.c_out + n * l.h * l.w * l.c_out);
    r.shape = shape_str(Shape{n, l.h, l.w, l.c_in}) + "->" + std::to_string(l.c_out);
  } else if (l.kind == VggLayer::Kind::pool) {
    r.kind = "pool";
    r.flops = 1.0 * n * (l.h / 2) * (l.w / 2) * l.c_in * 4.0;  // comparisons
    r.bytes = f * (n * l.h * l.w * l.c_in + n * (l.h / 2) * (l.w / 2) * l.c_in);
    r.shape = shape_str(Shape{n, l.h, l.w, l.c_in}) + "->" + shape_str(Shape{n, l.h / 2, l.w / 2, l.c_in});
  } else {
    r.kind = "fc";
    r.flops = 2.0 * n * l.c_in * l.c_out;
    r.bytes = f * (n * l.c_in + l.c_in * static_cast<double>(l.c_out) + l.c_out + n * l.c_out);
    r.shape = shape_str(Shape{n, l.c_in}) + "->" + std::to_string(l.c_out);
  }
  if (l.relu && l.kind != VggLayer::Kind::pool) r.shape += "+relu";
  return r;
}

}  // namespace

SuiteResult run_vgg16_forward(const Options& opt, const MachineLimits& m) {
  kiln::NoGradGuard no_grad;
  kiln::Generator gen(20240601);
  std::vector<VggLayer> layers = make_vgg16(gen);
  const int64_t n = opt.batch;
  SuiteResult res;
  print_table_header();

  for (size_t i = 0; i < layers.size(); ++i) {
    const VggLayer& l = layers[i];
    Row row = vgg_row(l, n);
    kiln::Generator xgen(1000 + i);
    const Tensor x = Tensor::uniform(vgg_input_shape(l, n), -1.0f, 1.0f, xgen);
    {
      const Tensor y = vgg_apply(l, x);
      check_vgg_layer(l, x, y, row);
    }
    time_checked_row(std::move(row), opt, m, res, [&] { (void)vgg_apply(l, x); });
  }

  // The whole network, layer after layer, as inference runs it.
  Row net;
  net.name = "forward";
  net.kind = "net";
  const kiln::LayerPlan& first = layers.front().plan;
  const Shape input{n, first.in_size, first.in_size, first.in_channels};
  net.shape = shape_str(input) + "->" + shape_str(Shape{n, layers.back().c_out});
  for (const Row& r : res.rows) {
    net.flops += r.flops;
    net.bytes += r.bytes;
  }
  kiln::Generator xgen(7);
  const Tensor x = Tensor::uniform(input, -1.0f, 1.0f, xgen);
  const auto forward = [&] {
    Tensor h = x;
    for (const VggLayer& l : layers) h = vgg_apply(l, h);
    return h;
  };
  {
    // The layers were each checked above; here only that the chain yields sane logits.
    const std::vector<float> logits = forward().to_vector<float>();
    const bool finite = std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); });
    const auto [lo, hi] = std::minmax_element(logits.begin(), logits.end());
    net.checked = true;
    net.check_ok = finite && *hi > *lo;
    net.check_budget = 0;
    net.check = std::string(finite ? "finite" : "NOT finite") + " logits in [" + std::to_string(*lo) + ", " +
                std::to_string(*hi) + "]";
  }
  if (net.check_ok) {
    net.t = time_it(bench_device(opt), opt.warmup, opt.repeat, [&] { (void)forward(); });
    net.timed = true;
  } else {
    res.all_checks_ok = false;
  }
  print_row(net, m);
  if (net.timed) {
    const double img_s = static_cast<double>(n) / (net.t.median_ms * 1e-3);
    res.summary.emplace_back("forward_img_per_s", img_s);
    double sum_layers = 0;
    for (const Row& r : res.rows) sum_layers += r.t.median_ms;
    std::printf("\nforward: %.2f img/s (batch %lld, median %.1f ms; sum of the per-layer medians %.1f ms)\n", img_s,
                static_cast<long long>(n), net.t.median_ms, sum_layers);
  } else {
    std::printf("  check failed: %s\n", net.check.c_str());
  }
  res.rows.push_back(std::move(net));
  return res;
}

}  // namespace kiln::bench
