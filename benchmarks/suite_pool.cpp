// kiln_bench --suite pool: max_pool2d 2x2/2 at VGG16's five pool inputs (batch 8), forward
// (with the argmax indices training keeps) and backward, through the backend directly so
// only the kernel is timed. Memory-bound: judged against the measured copy bandwidth.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "core/backend.h"

namespace kiln::cpubench {

SuiteResult run_pool(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(12, 34);
  print_table_header();
  struct PoolCase {
    std::string name;
    int64_t h, c;
  };
  std::vector<PoolCase> cases;
  for (const kiln::LayerPlan& l : vgg16_layers(kiln::LayerPlan::Kind::pool))
    cases.push_back({l.name, l.in_size, l.in_channels});
  const int64_t n = 8;
  kiln::Generator gen(777);
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const kiln::Pool2dParams p{};
  for (const PoolCase& c : cases) {
    const int64_t h = c.h, w = c.h, oh = h / 2, ow = w / 2, ch = c.c;
    const Tensor x_host = Tensor::uniform(Shape{n, h, w, ch}, -1.0f, 1.0f, gen);
    const Tensor dy_host = Tensor::uniform(Shape{n, oh, ow, ch}, -1.0f, 1.0f, gen);
    const Tensor x = to_bench_device(x_host, opt), dy = to_bench_device(dy_host, opt);
    Tensor y = empty_on_bench_device(Shape{n, oh, ow, ch}, opt);
    Tensor argmax = empty_on_bench_device(Shape{n, oh, ow, ch}, opt, kiln::DType::i32);
    Tensor dx = empty_on_bench_device(Shape{n, h, w, ch}, opt);
    const double in_el = static_cast<double>(n * h * w * ch), out_el = static_cast<double>(n * oh * ow * ch);

    // Reference: every output, its first-maximum index, and the routed gradient.
    be.max_pool2d_forward(x, p, y, argmax);
    be.max_pool2d_backward(dy, argmax, dx);
    const Tensor y_host = y.cpu(), argmax_host = argmax.cpu(), dx_host = dx.cpu();
    const float* xp = x_host.data<float>();
    const float* yp = y_host.data<float>();
    const int32_t* ap = argmax_host.data<int32_t>();
    const float* dyp = dy_host.data<float>();
    const float* dxp = dx_host.data<float>();
    Checker fwd(1e-12, 0), bwd(1e-12, 0);  // a max and a routed copy are exact
    std::vector<double> dx_ref(static_cast<size_t>(in_el), 0.0);
    int64_t bad_index = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j)
          for (int64_t k = 0; k < ch; ++k) {
            double best = -INFINITY;
            int64_t best_at = 0;
            for (int64_t kh = 0; kh < 2; ++kh)
              for (int64_t kw = 0; kw < 2; ++kw) {
                const int64_t hh = 2 * i + kh, ww = 2 * j + kw;
                const double v = xp[((b * h + hh) * w + ww) * ch + k];
                if (v > best) best = v, best_at = hh * w + ww;
              }
            const int64_t o = ((b * oh + i) * ow + j) * ch + k;
            fwd.compare(yp[o], best, 0, "y", o);
            if (ap[o] != best_at) ++bad_index;
            dx_ref[static_cast<size_t>((b * h * w + best_at) * ch + k)] += dyp[o];
          }
    for (size_t e = 0; e < dx_ref.size(); ++e) bwd.compare(dxp[e], dx_ref[e], 0, "dx", static_cast<int64_t>(e));
    if (bad_index) fwd.failed += bad_index, fwd.worst += "; " + std::to_string(bad_index) + " wrong argmax indices";

    const std::string shape = shape_str(Shape{n, h, w, ch}) + "->" + shape_str(Shape{n, oh, ow, ch});
    Row rf;
    rf.name = std::string(c.name) + "/fwd";
    rf.kind = "pool";
    rf.shape = shape;
    rf.flops = 4.0 * out_el;                      // comparisons
    rf.bytes = 4.0 * in_el + (4.0 + 4.0) * out_el;  // x in; y and int32 argmax out
    fwd.finish(rf);
    time_checked_row(std::move(rf), opt, m, res, [&] { be.max_pool2d_forward(x, p, y, argmax); });

    Row rb;
    rb.name = std::string(c.name) + "/bwd";
    rb.kind = "pool";
    rb.shape = shape;
    rb.flops = 0;
    rb.bytes = (4.0 + 4.0) * out_el + 4.0 * in_el;  // dy and argmax in; dx out
    bwd.finish(rb);
    time_checked_row(std::move(rb), opt, m, res, [&] { be.max_pool2d_backward(dy, argmax, dx); });
  }
  return res;
}

}  // namespace kiln::cpubench
