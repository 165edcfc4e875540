// kiln_bench --suite pool: max_pool2d 2x2/2 at VGG16's five pool inputs (batch 8) and
// ResNet-50's 3x3/2 stem pool, forward (with the argmax indices training keeps) and backward, and adaptive_avg_pool2d where VGG
// uses it (pool5 to 7x7 at 64 and 320 px, global pooling at 224 px), through the backend
// directly so only the kernel is timed. Memory-bound: judged against the measured copy
// bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/backend.h"
#include "core/ops.h"
#include "layers/models/resnet.h"

namespace kiln::bench {
namespace {

// adaptive_avg_pool2d [n, h, h, c] -> [n, o, o, c], checked against windows computed here in
// double (floor(i*h/o), ceil((i+1)*h/o)), independently of kernels/common/pool.h.
// The bench model's adaptive average pool at `image_size` with `head` ("fc": pool5 to the
// published 7x7; "avg": global), from its plan.
kiln::LayerPlan adaptive_layer(int64_t image_size, const std::string& head) {
  for (kiln::LayerPlan& l : bench_model().plan(kiln::ModelOptions{1000, image_size, 0.5f, head, true}))
    if (l.kind == kiln::LayerPlan::Kind::adaptive_avg_pool) return l;
  KILN_FAIL("kiln_bench: ", bench_model().name, " plans no adaptive pool at ", image_size, " px with head ", head);
}

void adaptive_rows(const std::string& name, int64_t n, int64_t h, int64_t c, int64_t o, const Options& opt,
                   const MachineLimits& m, SuiteResult& res, kiln::Generator& gen) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const Tensor x_host = Tensor::uniform(Shape{n, h, h, c}, -1.0f, 1.0f, gen);
  const Tensor dy_host = Tensor::uniform(Shape{n, o, o, c}, -1.0f, 1.0f, gen);
  const Tensor x = to_bench_device(x_host, opt), dy = to_bench_device(dy_host, opt);
  Tensor y = empty_on_bench_device(Shape{n, o, o, c}, opt), dx = empty_on_bench_device(Shape{n, h, h, c}, opt);
  be.adaptive_avg_pool2d_forward(x, y);
  be.adaptive_avg_pool2d_backward(dy, dx);
  const Tensor y_host = y.cpu(), dx_host = dx.cpu();
  const float *xp = x_host.data<float>(), *yp = y_host.data<float>(), *dyp = dy_host.data<float>(),
              *dxp = dx_host.data<float>();
  const auto lo = [&](int64_t i) { return static_cast<int64_t>(std::floor(static_cast<double>(i * h) / o)); };
  const auto hi = [&](int64_t i) { return static_cast<int64_t>(std::ceil(static_cast<double>((i + 1) * h) / o)); };
  // Means of a few terms: the op table's elementwise class.
  std::vector<double> y_ref(static_cast<size_t>(n * o * o * c)), dx_ref(static_cast<size_t>(n * h * h * c), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < o; ++i)
      for (int64_t j = 0; j < o; ++j)
        for (int64_t k = 0; k < c; ++k) {
          const double area = static_cast<double>((hi(i) - lo(i)) * (hi(j) - lo(j)));
          double sum = 0;
          for (int64_t r = lo(i); r < hi(i); ++r)
            for (int64_t s = lo(j); s < hi(j); ++s) {
              const size_t at = static_cast<size_t>(((b * h + r) * h + s) * c + k);
              sum += xp[at];
              dx_ref[at] += dyp[((b * o + i) * o + j) * c + k] / area;
            }
          y_ref[static_cast<size_t>(((b * o + i) * o + j) * c + k)] = sum / area;
        }
  const double in_el = static_cast<double>(n * h * h * c), out_el = static_cast<double>(n * o * o * c);
  const std::string shape = shape_str(Shape{n, h, h, c}) + "->" + shape_str(Shape{n, o, o, c});
  Row rf;
  rf.name = name + "/fwd";
  rf.kind = "pool";
  rf.shape = shape;
  rf.flops = std::max(in_el, out_el);  // one add per window element read, at least one per output
  rf.bytes = 4.0 * (in_el + out_el);
  check_row(
      rf, y_ref.size(), [&](size_t e) { return yp[e]; }, [&](size_t e) { return y_ref[e]; },
      kiln::check::kRtolElementwise);
  time_checked_row(std::move(rf), opt, m, res, [&] { be.adaptive_avg_pool2d_forward(x, y); });
  Row rb;
  rb.name = name + "/bwd";
  rb.kind = "pool";
  rb.shape = shape;
  rb.flops = std::max(in_el, out_el);
  rb.bytes = 4.0 * (in_el + out_el);
  check_row(
      rb, dx_ref.size(), [&](size_t e) { return dxp[e]; }, [&](size_t e) { return dx_ref[e]; },
      kiln::check::kRtolElementwise);
  time_checked_row(std::move(rb), opt, m, res, [&] { be.adaptive_avg_pool2d_backward(dy, dx); });
}

}  // namespace

SuiteResult run_pool(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(22, 34);
  print_table_header();
  struct PoolCase {
    std::string name;
    int64_t h, c;
    kiln::Pool2dParams p;
  };
  std::vector<PoolCase> cases;
  for (const kiln::LayerPlan& l : vgg16_layers(kiln::LayerPlan::Kind::pool))
    cases.push_back({l.name, l.in_size, l.in_channels, kiln::Pool2dParams{}});
  // ResNet-50's stem pool at 224 px: its 3x3/2 windows overlap, so the GPU's backward
  // gathers per input instead of scattering.
  const kiln::ResNetStemPool stem = kiln::resnet50_stem_pool(224);
  cases.push_back({"resnet50.maxpool", stem.side, stem.channels, stem.p});
  const int64_t n = 8;
  kiln::Generator gen(777);
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  for (const PoolCase& c : cases) {
    const kiln::Pool2dParams& p = c.p;
    const int64_t h = c.h, w = c.h, ch = c.c;
    const int64_t oh = kiln::window_out_size(h, p.kernel_h, p.stride_h, p.pad_h);
    const int64_t ow = kiln::window_out_size(w, p.kernel_w, p.stride_w, p.pad_w);
    const Tensor x_host = Tensor::uniform(Shape{n, h, w, ch}, -1.0f, 1.0f, gen);
    const Tensor dy_host = Tensor::uniform(Shape{n, oh, ow, ch}, -1.0f, 1.0f, gen);
    const Tensor x = to_bench_device(x_host, opt), dy = to_bench_device(dy_host, opt);
    Tensor y = empty_on_bench_device(Shape{n, oh, ow, ch}, opt);
    Tensor argmax = empty_on_bench_device(Shape{n, oh, ow, ch}, opt, kiln::DType::i32);
    Tensor dx = empty_on_bench_device(Shape{n, h, w, ch}, opt);
    const double in_el = static_cast<double>(n * h * w * ch), out_el = static_cast<double>(n * oh * ow * ch);

    // Reference: every output, its first-maximum index, and the routed gradient.
    be.max_pool2d_forward(x, p, y, argmax);
    be.max_pool2d_backward(dy, argmax, p, dx);
    const Tensor y_host = y.cpu(), argmax_host = argmax.cpu(), dx_host = dx.cpu();
    const float* xp = x_host.data<float>();
    const float* yp = y_host.data<float>();
    const int32_t* ap = argmax_host.data<int32_t>();
    const float* dyp = dy_host.data<float>();
    const float* dxp = dx_host.data<float>();
    // A max and a routed copy are exact (rtol 0).
    std::vector<double> y_ref(static_cast<size_t>(out_el)), dx_ref(static_cast<size_t>(in_el), 0.0);
    int64_t bad_index = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j)
          for (int64_t k = 0; k < ch; ++k) {
            double best = -INFINITY;
            int64_t best_at = 0;
            for (int64_t kh = 0; kh < p.kernel_h; ++kh)
              for (int64_t kw = 0; kw < p.kernel_w; ++kw) {
                const int64_t hh = p.stride_h * i - p.pad_h + kh, ww = p.stride_w * j - p.pad_w + kw;
                if (hh < 0 || hh >= h || ww < 0 || ww >= w) continue;  // padding: never the maximum
                const double v = xp[((b * h + hh) * w + ww) * ch + k];
                if (v > best) best = v, best_at = hh * w + ww;
              }
            const int64_t o = ((b * oh + i) * ow + j) * ch + k;
            y_ref[static_cast<size_t>(o)] = best;
            if (ap[o] != best_at) ++bad_index;
            dx_ref[static_cast<size_t>((b * h * w + best_at) * ch + k)] += dyp[o];
          }

    const std::string shape = shape_str(Shape{n, h, w, ch}) + "->" + shape_str(Shape{n, oh, ow, ch});
    Row rf;
    rf.name = std::string(c.name) + "/fwd";
    rf.kind = "pool";
    rf.shape = shape;
    rf.flops = static_cast<double>(p.kernel_h * p.kernel_w) * out_el;  // comparisons
    rf.bytes = 4.0 * in_el + (4.0 + 4.0) * out_el;  // x in; y and int32 argmax out
    check_row(
        rf, y_ref.size(), [&](size_t e) { return yp[e]; }, [&](size_t e) { return y_ref[e]; }, 0);
    if (bad_index) fail_check(rf, std::to_string(bad_index) + " wrong argmax indices");
    time_checked_row(std::move(rf), opt, m, res, [&] { be.max_pool2d_forward(x, p, y, argmax); });

    Row rb;
    rb.name = std::string(c.name) + "/bwd";
    rb.kind = "pool";
    rb.shape = shape;
    rb.flops = 0;
    rb.bytes = (4.0 + 4.0) * out_el + 4.0 * in_el;  // dy and argmax in; dx out
    // Without overlap each dx is one routed value (exact); with it, a sum of up to four in
    // fp32 against double.
    const bool overlap = p.stride_h < p.kernel_h || p.stride_w < p.kernel_w;
    check_row(
        rb, dx_ref.size(), [&](size_t e) { return dxp[e]; }, [&](size_t e) { return dx_ref[e]; },
        overlap ? kiln::check::kRtolElementwise : 0);
    time_checked_row(std::move(rb), opt, m, res, [&] { be.max_pool2d_backward(dy, argmax, p, dx); });
  }
  // VGG's adaptive pooling, as the model spec plans it: pool5 to 7x7 at 64 px (2x2,
  // repeated) and 320 px (10x10, overlapping windows); global average pooling (--head avg)
  // at 224 px. Rows "<layer>@<size>px".
  for (const auto& [size, head] : {std::pair<int64_t, const char*>{64, "fc"}, {320, "fc"}, {224, "avg"}}) {
    const kiln::LayerPlan l = adaptive_layer(size, head);
    adaptive_rows(l.name + "@" + std::to_string(size) + "px", n, l.in_size, l.in_channels, l.out_size, opt, m, res,
                  gen);
  }
  return res;
}

}  // namespace kiln::bench
