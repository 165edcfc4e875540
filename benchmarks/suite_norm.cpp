// kiln_bench --suite norm: batch_norm2d at ResNet-50's shapes (batch 8: conv2_x's 56x56x256
// output, conv4_x's 14x14x1024, conv5_x's 7x7x2048): the training form's forward (two-pass
// statistics, running update, normalisation) and backward (dx through the batch
// statistics, dgamma, dbeta), and the inference form's forward, through the backend
// directly so only the kernels are timed. Each is checked first against statistics and
// gradients computed here in double, independently of kernels/common/batch_norm.h.
// Memory-bound: judged against the measured copy bandwidth.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "check/op_cases.h"
#include "core/backend.h"

namespace kiln::bench {
namespace {

constexpr float kEps = 1e-5f, kMomentum = 0.1f;

// Per-channel double statistics of [rows, c] floats: mean, biased variance.
void stats(const float* x, int64_t rows, int64_t c, std::vector<double>& mean, std::vector<double>& var) {
  mean.assign(static_cast<size_t>(c), 0.0);
  var.assign(static_cast<size_t>(c), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) mean[static_cast<size_t>(j)] += x[r * c + j];
  for (double& m : mean) m /= static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const double d = x[r * c + j] - mean[static_cast<size_t>(j)];
      var[static_cast<size_t>(j)] += d * d;
    }
  for (double& v : var) v /= static_cast<double>(rows);
}

void norm_rows(const std::string& name, int64_t n, int64_t h, int64_t c, const Options& opt, const MachineLimits& m,
               SuiteResult& res, kiln::Generator& gen) {
  kiln::Backend& be = kiln::backend_for(bench_device(opt));
  const Shape xs{n, h, h, c};
  const int64_t rows = n * h * h;
  // Off-centre activations (mean 2, std 3), as after a conv; gamma around 1.
  const Tensor x_host = Tensor::uniform(xs, -3.2f, 7.2f, gen), dy_host = Tensor::uniform(xs, -1.0f, 1.0f, gen);
  const Tensor g_host = Tensor::uniform(Shape{c}, 0.5f, 1.5f, gen), b_host = Tensor::uniform(Shape{c}, -1.0f, 1.0f, gen);
  const Tensor x = to_bench_device(x_host, opt), dy = to_bench_device(dy_host, opt);
  const Tensor gamma = to_bench_device(g_host, opt), beta = to_bench_device(b_host, opt);
  Tensor rm = to_bench_device(Tensor::zeros(Shape{c}), opt), rv = to_bench_device(Tensor::ones(Shape{c}), opt);
  Tensor mean = empty_on_bench_device(Shape{c}, opt), var = empty_on_bench_device(Shape{c}, opt);
  Tensor y = empty_on_bench_device(xs, opt), dx = empty_on_bench_device(xs, opt);
  Tensor dg = empty_on_bench_device(Shape{c}, opt), db = empty_on_bench_device(Shape{c}, opt);

  be.batch_norm_stats(x, kMomentum, mean, var, rm, rv);
  be.batch_norm_forward(x, mean, var, gamma, beta, kEps, y);
  be.batch_norm_backward(dy, x, mean, var, gamma, kEps, true, dx, dg, db);
  const Tensor y_h = y.cpu(), dx_h = dx.cpu(), dg_h = dg.cpu(), db_h = db.cpu(), rv_h = rv.cpu();
  const float *xp = x_host.data<float>(), *dyp = dy_host.data<float>(), *gp = g_host.data<float>(),
              *bp = b_host.data<float>();
  std::vector<double> mu, var_d;
  stats(xp, rows, c, mu, var_d);
  // Reference gradients: dbeta = sum dy, dgamma = sum dy * xhat, then
  // dx = gamma * invstd * (dy - dbeta / M - xhat * dgamma / M).
  std::vector<double> sdy(static_cast<size_t>(c), 0.0), sdyx(static_cast<size_t>(c), 0.0), inv(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; ++j) inv[static_cast<size_t>(j)] = 1.0 / std::sqrt(var_d[static_cast<size_t>(j)] + kEps);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) {
      const size_t u = static_cast<size_t>(j);
      const double xh = (xp[r * c + j] - mu[u]) * inv[u];
      sdy[u] += dyp[r * c + j];
      sdyx[u] += dyp[r * c + j] * xh;
    }
  // Statistics are sums over the rows: the op table's reduction class for every quantity,
  // each judged against its own scale (check_row's mean|ref|).
  constexpr double kRtol = kiln::check::kRtolReduction;
  const float *yp = y_h.data<float>(), *dxp = dx_h.data<float>();
  const size_t ne = static_cast<size_t>(rows * c), nc = static_cast<size_t>(c);
  const auto ch = [c](size_t e) { return static_cast<size_t>(static_cast<int64_t>(e) % c); };
  const auto x_hat = [&](size_t e) { return (xp[e] - mu[ch(e)]) * inv[ch(e)]; };

  const double el = static_cast<double>(rows * c);
  const std::string shape = shape_str(xs);
  // Training forward: x read twice at least (statistics, then normalisation), y written.
  Row tf = make_row(name + "/train_fwd", "norm", shape, 7.0 * el, 4.0 * (2.0 * el + el));
  check_row(
      tf, ne, [&](size_t e) { return yp[e]; }, [&](size_t e) { return gp[ch(e)] * x_hat(e) + bp[ch(e)]; }, kRtol,
      "y");
  check_row(
      tf, nc, [&](size_t j) { return rv_h.data<float>()[j]; },
      [&](size_t j) { return (1.0 - kMomentum) + kMomentum * var_d[j] * rows / (rows - 1.0); }, kRtol,
      "running_var");
  time_checked_row(std::move(tf), opt, m, res, [&] {
    be.batch_norm_stats(x, kMomentum, mean, var, rm, rv);
    be.batch_norm_forward(x, mean, var, gamma, beta, kEps, y);
  });
  // Training backward: dy and x read twice (the sums, then dx), dx written.
  Row tb = make_row(name + "/train_bwd", "norm", shape, 9.0 * el, 4.0 * (4.0 * el + el));
  check_row(
      tb, ne, [&](size_t e) { return dxp[e]; },
      [&](size_t e) {
        const size_t u = ch(e);
        return gp[u] * inv[u] * (dyp[e] - sdy[u] / rows - x_hat(e) * sdyx[u] / rows);
      },
      kRtol, "dx");
  check_row(
      tb, nc, [&](size_t j) { return db_h.data<float>()[j]; }, [&](size_t j) { return sdy[j]; }, kRtol, "dbeta");
  check_row(
      tb, nc, [&](size_t j) { return dg_h.data<float>()[j]; }, [&](size_t j) { return sdyx[j]; }, kRtol, "dgamma");
  time_checked_row(std::move(tb), opt, m, res, [&] { be.batch_norm_backward(dy, x, mean, var, gamma, kEps, true, dx, dg, db); });
  // Inference forward with the running statistics (as the timed training steps left them):
  // one read, one write.
  be.batch_norm_forward(x, rm, rv, gamma, beta, kEps, y);
  const Tensor ye_h = y.cpu(), rm_h = rm.cpu(), rv_now = rv.cpu();
  Row ef = make_row(name + "/eval_fwd", "norm", shape, 4.0 * el, 4.0 * 2.0 * el);
  check_row(
      ef, ne, [&](size_t e) { return ye_h.data<float>()[e]; },
      [&](size_t e) {
        const size_t j = ch(e);
        const double xh = (xp[e] - static_cast<double>(rm_h.data<float>()[j])) /
                          std::sqrt(static_cast<double>(rv_now.data<float>()[j]) + kEps);
        return gp[j] * xh + bp[j];
      },
      kRtol, "y");
  time_checked_row(std::move(ef), opt, m, res, [&] { be.batch_norm_forward(x, rm, rv, gamma, beta, kEps, y); });
}

}  // namespace

SuiteResult run_norm(const Options& opt, const MachineLimits& m) {
  SuiteResult res;
  set_table_widths(28, 22);
  print_table_header();
  kiln::Generator gen(1616);
  const int64_t n = 8;
  // Bottleneck outputs: 4 x the stage's width (64, 256, 512), as ResNet-50 expands them.
  norm_rows("bn_conv2_56x56x256", n, 56, 4 * 64, opt, m, res, gen);
  norm_rows("bn_conv4_14x14x1024", n, 14, 4 * 256, opt, m, res, gen);
  norm_rows("bn_conv5_7x7x2048", n, 7, 4 * 512, opt, m, res, gen);
  return res;
}

}  // namespace kiln::bench
