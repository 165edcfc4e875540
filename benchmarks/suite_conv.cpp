// kiln_bench --suite conv: VGG16's 13 conv layers (3x3, stride 1, pad 1) at batch 1, 8
// and 64 (or --batch's list): forward (with bias), backward-data and backward-filter (with
// the bias gradient), each through the backend directly, as autograd calls them. Every row
// is checked against a double-precision sum at sampled elements before it is timed.
// A forward variant row "<layer>/b<N>/fwd@bf16" runs the same conv with x, w, b and y in
// bfloat16 (fp32 accumulation; the frozen-prefix inference path), same FLOPs, half the bytes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/autograd.h"
#include "core/backend.h"

namespace kiln::cpubench {

namespace {

// Sampled positions (n, y, x): corners, where padding matters, and two inside.
std::vector<std::array<int64_t, 3>> positions(int64_t n, int64_t h) {
  return {{0, 0, 0}, {n - 1, h - 1, h - 1}, {n / 2, h / 2, h / 3}, {n - 1, 0, h - 1}, {0, h - 1, 1 % h}};
}

// Forward and backward-data sum up to 9 * 512 products, the filter gradient N * H * W
// (up to 3.2 million at batch 64): sums, so the op table's reduction class, in its form
// (check/compare.h: rtol * (mean|ref| + |ref|)). float32 rounding of such sums stays well
// inside it, and a wrong index (the errors this check exists for) moves whole sums.
constexpr double kRtol = kiln::check::kRtolReduction;
// bf16 output: one rounding, at most 2^-8 of |y|, on top of the above.
constexpr double kRtolBf16 = 1.0 / 256 + kRtol;

void check_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& y, Row& row,
                   double rtol = kRtol) {
  const int64_t n = x.dim(0), h = x.dim(1), c = x.dim(3), o_n = w.dim(0);
  const float *xp = x.data<float>(), *wp = w.data<float>(), *bp = b.data<float>(), *yp = y.data<float>();
  std::vector<double> got, want;
  for (const auto& [bi, oy, ox] : positions(n, h)) {
    for (int64_t o = 0; o < o_n; ++o) {
      double ref = bp[o];
      for (int64_t ky = 0; ky < 3; ++ky)
        for (int64_t kx = 0; kx < 3; ++kx) {
          const int64_t iy = oy - 1 + ky, ix = ox - 1 + kx;
          if (iy < 0 || iy >= h || ix < 0 || ix >= h) continue;
          const float* xr = xp + ((bi * h + iy) * h + ix) * c;
          const float* wr = wp + ((o * 3 + ky) * 3 + kx) * c;
          for (int64_t ci = 0; ci < c; ++ci) {
            ref += static_cast<double>(xr[ci]) * wr[ci];
          }
        }
      got.push_back(yp[((bi * h + oy) * h + ox) * o_n + o]);
      want.push_back(ref);
    }
  }
  check_row(row, got, want, rtol);
}

void check_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, Row& row) {
  const int64_t n = dy.dim(0), h = dy.dim(1), o_n = dy.dim(3), c = w.dim(3);
  const float *dyp = dy.data<float>(), *wp = w.data<float>(), *dxp = dx.data<float>();
  std::vector<double> got, want;
  for (const auto& [bi, iy, ix] : positions(n, h)) {
    for (int64_t ci = 0; ci < c; ++ci) {
      double ref = 0;
      // dx[iy, ix] gathers dy[oy, ox] for oy = iy + 1 - ky (stride 1, pad 1).
      for (int64_t ky = 0; ky < 3; ++ky)
        for (int64_t kx = 0; kx < 3; ++kx) {
          const int64_t oy = iy + 1 - ky, ox = ix + 1 - kx;
          if (oy < 0 || oy >= h || ox < 0 || ox >= h) continue;
          const float* g = dyp + ((bi * h + oy) * h + ox) * o_n;
          for (int64_t o = 0; o < o_n; ++o) {
            ref += static_cast<double>(g[o]) * wp[((o * 3 + ky) * 3 + kx) * c + ci];
          }
        }
      got.push_back(dxp[((bi * h + iy) * h + ix) * c + ci]);
      want.push_back(ref);
    }
  }
  check_row(row, got, want, kRtol);
}

void check_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Tensor& db, Row& row) {
  const int64_t n = x.dim(0), h = x.dim(1), c = x.dim(3), o_n = dy.dim(3);
  const float *xp = x.data<float>(), *dyp = dy.data<float>(), *dwp = dw.data<float>(), *dbp = db.data<float>();
  std::vector<double> got, want;
  // Eight filter elements spread over (o, ky, kx, c), corners included, and two bias entries.
  const std::array<std::array<int64_t, 4>, 8> picks = {{{0, 0, 0, 0},
                                                        {o_n - 1, 2, 2, c - 1},
                                                        {o_n / 2, 1, 1, c / 2},
                                                        {o_n / 3, 0, 2, c - 1},
                                                        {o_n - 1, 2, 0, 0},
                                                        {1 % o_n, 1, 0, c / 3},
                                                        {o_n / 2, 0, 1, (c * 2) / 3},
                                                        {o_n / 4, 2, 1, 1 % c}}};
  for (const auto& [o, ky, kx, ci] : picks) {
    double ref = 0;
    for (int64_t bi = 0; bi < n; ++bi)
      for (int64_t oy = 0; oy < h; ++oy) {
        const int64_t iy = oy - 1 + ky;
        if (iy < 0 || iy >= h) continue;
        for (int64_t ox = 0; ox < h; ++ox) {
          const int64_t ix = ox - 1 + kx;
          if (ix < 0 || ix >= h) continue;
          ref += static_cast<double>(dyp[((bi * h + oy) * h + ox) * o_n + o]) * xp[((bi * h + iy) * h + ix) * c + ci];
        }
      }
    got.push_back(dwp[((o * 3 + ky) * 3 + kx) * c + ci]);
    want.push_back(ref);
  }
  check_row(row, got, want, kRtol, "dw");
  // The bias gradient's column sums, judged on their own: their scale is not dw's.
  std::vector<double> got_b, want_b;
  for (const int64_t o : {int64_t{0}, o_n - 1}) {
    double ref = 0;
    for (int64_t p = 0; p < n * h * h; ++p) ref += dyp[p * o_n + o];
    got_b.push_back(dbp[o]);
    want_b.push_back(ref);
  }
  check_row(row, got_b, want_b, kRtol, "db");
}

}  // namespace

SuiteResult run_conv(const Options& opt, const MachineLimits& m) {
  kiln::NoGradGuard no_grad;
  SuiteResult res;
  set_table_widths(22, 34);
  print_table_header();
  kiln::Backend& be = kiln::backend_for(kiln::Device::cpu());
  const kiln::Conv2dParams same{1, 1, 1, 1};
  for (const int64_t n : batches_or(opt, {1, 8, 64})) {
    double fwd_ms = 0, all_ms = 0, bf16_ms = 0;
    const std::vector<kiln::LayerPlan> convs = vgg16_convs();
    for (const kiln::LayerPlan& l : convs) {
      // Input side, channels in and out (VGG's 3x3 convs keep the side).
      const struct { int64_t h, c, o; } s{l.in_size, l.in_channels, l.out_channels};
      kiln::Generator gen(static_cast<uint64_t>(1000 * n + s.h + s.c));
      const float std = static_cast<float>(std::sqrt(2.0 / (9.0 * static_cast<double>(s.c))));
      Tensor x = Tensor::uniform(Shape{n, s.h, s.h, s.c}, -1.0f, 1.0f, gen);
      Tensor w = Tensor::normal(Shape{s.o, l.kernel, l.kernel, s.c}, 0.0f, std, gen);
      Tensor b = Tensor::uniform(Shape{s.o}, -0.1f, 0.1f, gen);
      Tensor dy = Tensor::uniform(Shape{n, s.h, s.h, s.o}, -1.0f, 1.0f, gen);
      Tensor y = Tensor::empty(dy.shape()), dx = Tensor::empty(x.shape());
      Tensor dw = Tensor::empty(w.shape()), db = Tensor::empty(b.shape());
      const double flops = 2.0 * n * s.h * s.h * s.o * 9.0 * s.c;
      const double xb = 4.0 * n * s.h * s.h * s.c, yb = 4.0 * n * s.h * s.h * s.o, wb = 4.0 * s.o * 9 * s.c;
      const std::string stem = l.name + "/b" + std::to_string(n) + "/";
      const std::string shape = shape_str(x.shape()) + "->" + std::to_string(s.o);
      const auto row = [&](const char* pass, double bytes) {
        Row r;
        r.name = stem + pass;
        r.kind = "conv";
        r.shape = shape;
        r.flops = flops;
        r.bytes = bytes;
        return r;
      };

      Row f = row("fwd", xb + wb + 4.0 * s.o + yb);
      be.conv2d_forward(x, w, b, same, y);
      check_forward(x, w, b, y, f);
      time_checked_row(std::move(f), opt, m, res, [&] { be.conv2d_forward(x, w, b, same, y); });
      const double f32_fwd_ms = res.rows.back().t.median_ms;
      fwd_ms += f32_fwd_ms;

      // The bf16 variant, checked against double sums of the bf16-rounded inputs.
      const Tensor xh = x.to(kiln::DType::bf16), wh = w.to(kiln::DType::bf16), bh = b.to(kiln::DType::bf16);
      Tensor yh = Tensor::empty(dy.shape(), kiln::TensorOptions{kiln::DType::bf16, kiln::Device::cpu()});
      Row h = row("fwd@bf16", (xb + wb + 4.0 * s.o + yb) / 2);
      be.conv2d_forward(xh, wh, bh, same, yh);
      check_forward(xh.to(kiln::DType::f32), wh.to(kiln::DType::f32), bh.to(kiln::DType::f32),
                    yh.to(kiln::DType::f32), h, kRtolBf16);
      time_checked_row(std::move(h), opt, m, res, [&] { be.conv2d_forward(xh, wh, bh, same, yh); });
      bf16_ms += res.rows.back().t.median_ms;

      Row d = row("bwd_data", yb + wb + xb);
      be.conv2d_backward_data(dy, w, same, dx);
      check_backward_data(dy, w, dx, d);
      time_checked_row(std::move(d), opt, m, res, [&] { be.conv2d_backward_data(dy, w, same, dx); });

      Row g = row("bwd_filter", xb + yb + wb + 4.0 * s.o);
      be.conv2d_backward_filter(x, dy, same, dw, db);
      check_backward_filter(x, dy, dw, db, g);
      time_checked_row(std::move(g), opt, m, res, [&] { be.conv2d_backward_filter(x, dy, same, dw, db); });
      // float32 forward + both backwards (the bf16 row, between them, is not part of a step).
      all_ms += f32_fwd_ms;
      for (size_t k = res.rows.size() - 2; k < res.rows.size(); ++k) all_ms += res.rows[k].t.median_ms;
    }
    res.summary.emplace_back("b" + std::to_string(n) + "_fwd_ms", fwd_ms);
    res.summary.emplace_back("b" + std::to_string(n) + "_fwd_bwd_ms", all_ms);
    res.summary.emplace_back("b" + std::to_string(n) + "_fwd_bf16_ms", bf16_ms);
    std::printf("batch %lld: the %zu convs take %.1f ms forward, %.1f ms forward + both backwards, %.1f ms forward in "
                "bf16 (sums of medians)\n\n", static_cast<long long>(n), convs.size(), fwd_ms, all_ms, bf16_ms);
  }
  return res;
}

}  // namespace kiln::cpubench
