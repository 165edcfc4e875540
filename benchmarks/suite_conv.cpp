// kiln_bench --suite conv: VGG16's 13 conv layers (3x3, stride 1, pad 1) at batch 1, 8
// and 64 (or --batch's list): forward (with bias), backward-data and backward-filter (with
// the bias gradient), each through the backend directly, as autograd calls them. Every row
// is checked against a double-precision sum at sampled elements before it is timed.
// A forward variant row "<layer>/b<N>/fwd@bf16" runs the same conv with x, w, b and y in
// bfloat16 (fp32 accumulation; the frozen-prefix inference path), same FLOPs, half the bytes;
// a device without bf16 convolution skips it. On a GPU (--device cuda) each pass also has
// a variant row with cuDNN's other algorithm choice ("@find" or "@heuristic"), and one
// with cuDNN's other API ("@graph", or "@legacy" when KILN_CONV_API=graph), whose check
// text ends with the API that served the pass ("served by the graph API", or "... legacy
// API (graph fallback)" when the graph API had no plan for the shape; core/conv_api.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/autograd.h"
#include "core/backend.h"
#include "core/conv_api.h"

namespace kiln::bench {

namespace {

// Sampled positions (n, y, x): corners, where padding matters, and two inside.
std::vector<std::array<int64_t, 3>> positions(int64_t n, int64_t h) {
  return {{0, 0, 0}, {n - 1, h - 1, h - 1}, {n / 2, h / 2, h / 3}, {n - 1, 0, h - 1}, {0, h - 1, 1 % h}};
}

// Forward and backward-data sum up to 9 * 512 products: sums, so the op table's reduction
// class, in its form (check/compare.h: rtol * (mean|ref| + |ref|)). The filter gradient
// sums N * H * W products (3.2 million for conv1_1 at batch 64, which used 94% of the
// reduction class's budget): float32 error grows with the count, so 10x that. A wrong
// index (the errors these checks exist for) moves whole sums, far beyond either.
constexpr double kRtol = kiln::check::kRtolReduction;
constexpr double kRtolFilter = 10 * kiln::check::kRtolReduction;
// bf16 output: cuDNN rounds the convolution to bf16, adds the bias and rounds again (two
// roundings, each at most 2^-8 of |y|: one rounding's bound was passed 1.1-1.2x on an H200),
// on top of the above.
constexpr double kRtolBf16 = kiln::check::kRtolBf16 + kRtol;
// Under TF32 (GPU convolutions unless KILN_TF32=none) the inputs' rounding dominates.
double rtol_for(const Options& opt, double fp32_rtol) {
  const bool tf32 = !bench_device(opt).is_cpu() && kiln::compute_options().conv_tf32;
  return tf32 ? std::max(fp32_rtol, kiln::check::kRtolTf32) : fp32_rtol;
}

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

void check_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, Row& row, double rtol) {
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
  check_row(row, got, want, rtol);
}

void check_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Tensor& db, Row& row,
                           double rtol) {
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
  check_row(row, got, want, rtol, "dw");
  // The bias gradient's column sums, judged on their own: their scale is not dw's.
  std::vector<double> got_b, want_b;
  for (const int64_t o : {int64_t{0}, o_n - 1}) {
    double ref = 0;
    for (int64_t p = 0; p < n * h * h; ++p) ref += dyp[p * o_n + o];
    got_b.push_back(dbp[o]);
    want_b.push_back(ref);
  }
  check_row(row, got_b, want_b, rtol, "db");
}

}  // namespace

namespace {

// One layer at batch n, on the bench device: the host tensors the references read, their
// device copies, and the outputs.
struct ConvLayer {
  Tensor x, w, b, dy;              // host
  Tensor xd, wd, bd, dyd;          // on the bench device
  Tensor y, dx, dw, db;            // on the bench device
  double flops = 0, xb = 0, yb = 0, wb = 0, ob = 0;  // FLOPs; bytes of x, y, w and b
};

ConvLayer make_layer(const kiln::LayerPlan& l, int64_t n, const Options& opt) {
  const int64_t h = l.in_size, c = l.in_channels, o = l.out_channels;
  kiln::Generator gen(static_cast<uint64_t>(1000 * n + h + c));
  const float std = static_cast<float>(std::sqrt(2.0 / (9.0 * static_cast<double>(c))));
  ConvLayer t;
  t.x = Tensor::uniform(Shape{n, h, h, c}, -1.0f, 1.0f, gen);
  t.w = Tensor::normal(Shape{o, l.kernel, l.kernel, c}, 0.0f, std, gen);
  t.b = Tensor::uniform(Shape{o}, -0.1f, 0.1f, gen);
  t.dy = Tensor::uniform(Shape{n, h, h, o}, -1.0f, 1.0f, gen);
  t.xd = to_bench_device(t.x, opt), t.wd = to_bench_device(t.w, opt);
  t.bd = to_bench_device(t.b, opt), t.dyd = to_bench_device(t.dy, opt);
  t.y = empty_on_bench_device(t.dy.shape(), opt), t.dx = empty_on_bench_device(t.x.shape(), opt);
  t.dw = empty_on_bench_device(t.w.shape(), opt), t.db = empty_on_bench_device(t.b.shape(), opt);
  t.flops = 2.0 * n * h * h * o * 9.0 * c;
  t.xb = 4.0 * n * h * h * c, t.yb = 4.0 * n * h * h * o, t.wb = 4.0 * o * 9 * c, t.ob = 4.0 * o;
  return t;
}

const kiln::Conv2dParams kSame{1, 1, 1, 1};

// Which cuDNN API served the call made since `before` (the API rows' check text).
std::string api_served(const kiln::ConvApiCounts& before) {
  return kiln::conv_api_counts().graph_runs > before.graph_runs ? "; served by the graph API"
         : kiln::conv_api() == kiln::ConvApi::graph          ? "; served by the legacy API (graph fallback)"
                                                             : "; served by the legacy API";
}

// The three passes of one layer, rows made by row(pass + tag, bytes), each checked, then
// timed. tag "" is this run's way; "@find"/"@heuristic" the other cuDNN algorithm choice,
// "@graph"/"@legacy" the other cuDNN API (say_api: the check text says which one served).
void time_passes(ConvLayer& t, const std::string& tag,
                 const std::function<Row(const std::string&, double)>& row, const Options& opt,
                 const MachineLimits& m, SuiteResult& res, bool say_api = false) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  Row f = row("fwd" + tag, t.xb + t.wb + t.ob + t.yb);
  kiln::ConvApiCounts before = kiln::conv_api_counts();
  be.conv2d_forward(t.xd, t.wd, t.bd, kSame, t.y);
  check_forward(t.x, t.w, t.b, t.y.cpu(), f, rtol_for(opt, kRtol));
  if (say_api) f.check += api_served(before);
  time_checked_row(std::move(f), opt, m, res, [&] { be.conv2d_forward(t.xd, t.wd, t.bd, kSame, t.y); });

  Row d = row("bwd_data" + tag, t.yb + t.wb + t.xb);
  before = kiln::conv_api_counts();
  be.conv2d_backward_data(t.dyd, t.wd, kSame, t.dx);
  check_backward_data(t.dy, t.w, t.dx.cpu(), d, rtol_for(opt, kRtol));
  if (say_api) d.check += api_served(before);
  time_checked_row(std::move(d), opt, m, res, [&] { be.conv2d_backward_data(t.dyd, t.wd, kSame, t.dx); });

  Row g = row("bwd_filter" + tag, t.xb + t.yb + t.wb + t.ob);
  before = kiln::conv_api_counts();
  be.conv2d_backward_filter(t.xd, t.dyd, kSame, t.dw, t.db);
  check_backward_filter(t.x, t.dy, t.dw.cpu(), t.db.cpu(), g, rtol_for(opt, kRtolFilter));
  if (say_api) g.check += api_served(before);
  time_checked_row(std::move(g), opt, m, res, [&] { be.conv2d_backward_filter(t.xd, t.dyd, kSame, t.dw, t.db); });
}

// The bf16 forward variant, checked against double sums of the bf16-rounded inputs. A
// device without bf16 convolution skips it (said once, in `skipped`). Returns its median.
double time_bf16(ConvLayer& t, const std::function<Row(const std::string&, double)>& row, const Options& opt,
                 const MachineLimits& m, SuiteResult& res, std::string& skipped) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const Tensor xh = t.xd.to(kiln::DType::bf16), wh = t.wd.to(kiln::DType::bf16), bh = t.bd.to(kiln::DType::bf16);
  Tensor yh = empty_on_bench_device(t.dy.shape(), opt, kiln::DType::bf16);
  try {
    be.conv2d_forward(xh, wh, bh, kSame, yh);
  } catch (const kiln::Error& e) {
    if (skipped.empty()) skipped = e.what();
    return 0;
  }
  Row h = row("fwd@bf16", (t.xb + t.wb + t.ob + t.yb) / 2);
  h.math = Math::bf16;  // judged against the bf16 GEMM: on AMX an fp32 roof is passed 2-10x
  check_forward(xh.to(kiln::DType::f32).cpu(), wh.to(kiln::DType::f32).cpu(), bh.to(kiln::DType::f32).cpu(),
                yh.to(kiln::DType::f32).cpu(), h, kRtolBf16);
  time_checked_row(std::move(h), opt, m, res, [&] { be.conv2d_forward(xh, wh, bh, kSame, yh); });
  return res.rows.back().t.median_ms;
}

}  // namespace

SuiteResult run_conv(const Options& opt, const MachineLimits& m) {
  kiln::NoGradGuard no_grad;
  SuiteResult res;
  set_table_widths(22, 34);
  print_table_header();
  const bool gpu = !bench_device(opt).is_cpu();
  std::string bf16_skipped;
  for (const int64_t n : batches_or(opt, {1, 8, 64})) {
    double fwd_ms = 0, all_ms = 0, bf16_ms = 0;
    int untimed = 0, bf16_untimed = 0;  // rows without a time: a sum over them would be no total
    const std::vector<kiln::LayerPlan> convs = vgg16_convs();
    for (const kiln::LayerPlan& l : convs) {
      ConvLayer t = make_layer(l, n, opt);
      const std::string stem = l.name + "/b" + std::to_string(n) + "/";
      const std::string shape = shape_str(t.x.shape()) + "->" + std::to_string(l.out_channels);
      const auto row = [&](const std::string& pass, double bytes) {
        Row r;
        r.name = stem + pass;
        r.kind = "conv";
        r.shape = shape;
        r.flops = t.flops;
        r.bytes = bytes;
        // fp32 convolutions on a GPU run on TF32 tensor cores unless KILN_TF32=none: their
        // roof is the TF32 GEMM, not the strict fp32 one (~8x lower on an H200).
        r.math = gpu && kiln::compute_options().conv_tf32 ? Math::tf32 : Math::fp32;
        return r;
      };
      const size_t first = res.rows.size();
      time_passes(t, "", row, opt, m, res);
      // float32 forward + both backwards; a row that failed its check has no time.
      fwd_ms += res.rows[first].t.median_ms;
      for (size_t k = first; k < first + 3; ++k) {
        all_ms += res.rows[k].t.median_ms;
        untimed += res.rows[k].t.median_ms > 0 ? 0 : 1;
      }
      const double bf16 = time_bf16(t, row, opt, m, res, bf16_skipped);
      bf16_ms += bf16;
      bf16_untimed += bf16 > 0 ? 0 : 1;
      if (gpu) {
        // The other way of choosing cuDNN's algorithms (Find or heuristics), timed the same
        // way in the same run: rows "@heuristic" or "@find". Plans are cached per mode. Not
        // under KILN_DETERMINISTIC=1, which core refuses with Find (it times anew per process).
        bool& exhaustive = kiln::compute_options().exhaustive_conv_search;
        if (!kiln::compute_options().deterministic) {
          exhaustive = !exhaustive;
          time_passes(t, exhaustive ? "@find" : "@heuristic", row, opt, m, res);
          exhaustive = !exhaustive;
        }
        // The other cuDNN API under this run's algorithm choice: rows "@graph" (or "@legacy").
        const bool graph = kiln::conv_api() == kiln::ConvApi::graph;
        kiln::ScopedConvApi other(graph ? kiln::ConvApi::legacy : kiln::ConvApi::graph);
        time_passes(t, graph ? "@legacy" : "@graph", row, opt, m, res, true);
      }
    }
    if (untimed > 0 || (bf16_skipped.empty() && bf16_untimed > 0)) {
      std::printf("batch %lld: no totals: %d fp32 and %d bf16 rows failed their check\n\n", static_cast<long long>(n),
                  untimed, bf16_untimed);
      continue;
    }
    res.summary.emplace_back("b" + std::to_string(n) + "_fwd_ms", fwd_ms);
    res.summary.emplace_back("b" + std::to_string(n) + "_fwd_bwd_ms", all_ms);
    if (bf16_skipped.empty()) res.summary.emplace_back("b" + std::to_string(n) + "_fwd_bf16_ms", bf16_ms);
    std::printf("batch %lld: the %zu convs take %.1f ms forward, %.1f ms forward + both backwards, %.1f ms forward in "
                "bf16 (sums of medians)\n\n", static_cast<long long>(n), convs.size(), fwd_ms, all_ms, bf16_ms);
  }
  if (!bf16_skipped.empty())
    std::printf("fwd@bf16 rows skipped: this device has no bf16 convolution (%s)\n\n", bf16_skipped.c_str());
  return res;
}

}  // namespace kiln::bench
