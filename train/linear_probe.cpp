// The closed-form linear probe (see linear_probe.h). Everything is in double: the Gram
// matrix of a few hundred rows of 4096 features sums millions of products, and Cholesky
// of a nearly singular matrix loses in float what the ridge is there to keep.
#include "train/linear_probe.h"

#include <algorithm>
#include <cmath>

namespace kiln {

namespace detail {

void ridge_solve(std::vector<double> a, double lambda, int64_t n, std::vector<double>& b, int64_t m) {
  KILN_CHECK(static_cast<int64_t>(a.size()) == n * n && static_cast<int64_t>(b.size()) == n * m,
             "ridge_solve: sizes do not match n = ", n, ", m = ", m);
  // a = L L^T, L in the lower triangle of a.
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    double d = rj[j] + lambda;
    for (int64_t k = 0; k < j; ++k) d -= rj[k] * rj[k];
    KILN_CHECK(d > 0 && std::isfinite(d), "ridge_solve: the matrix is not positive definite at row ", j,
               " (lambda ", lambda, " too small for these features?)");
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    for (int64_t i = j + 1; i < n; ++i) {
      double* ri = a.data() + i * n;
      double s = ri[j];
      for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      ri[j] = s / ljj;
    }
  }
  // Forward (L y = b), then backward (L^T x = y), all right-hand sides at once.
  for (int64_t i = 0; i < n; ++i) {
    const double* ri = a.data() + i * n;
    double* bi = b.data() + i * m;
    for (int64_t k = 0; k < i; ++k)
      for (int64_t c = 0; c < m; ++c) bi[c] -= ri[k] * b[static_cast<size_t>(k * m + c)];
    for (int64_t c = 0; c < m; ++c) bi[c] /= ri[i];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double* bi = b.data() + i * m;
    for (int64_t k = i + 1; k < n; ++k) {
      const double lki = a[static_cast<size_t>(k * n + i)];
      for (int64_t c = 0; c < m; ++c) bi[c] -= lki * b[static_cast<size_t>(k * m + c)];
    }
    for (int64_t c = 0; c < m; ++c) bi[c] /= a[static_cast<size_t>(i * n + i)];
  }
}

}  // namespace detail

namespace {

double dot(const double* x, const double* y, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: the loop is latency-bound otherwise
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += x[k] * y[k];
    s1 += x[k + 1] * y[k + 1];
    s2 += x[k + 2] * y[k + 2];
    s3 += x[k + 3] * y[k + 3];
  }
  for (; k < n; ++k) s0 += x[k] * y[k];
  return (s0 + s1) + (s2 + s3);
}

// The rows standardised over all of them: z = (x - mu) / sd, a constant feature with sd 1
// (its z is 0). Cross-validation folds share these statistics: they come from training rows
// only, and a fold's own mean and spread would barely differ.
struct Standardised {
  int64_t n = 0, d = 0;
  std::vector<double> mu, sd, z;  // z: [n, d]
  std::vector<double> gram;       // z z^T [n, n] (lower triangle) when n <= d, else empty
};

Standardised standardise(const std::vector<float>& x, int64_t n, int64_t d) {
  Standardised s;
  s.n = n;
  s.d = d;
  s.mu.assign(static_cast<size_t>(d), 0.0);
  s.sd.assign(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) s.mu[static_cast<size_t>(j)] += x[static_cast<size_t>(i * d + j)];
  for (double& v : s.mu) v /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const double t = x[static_cast<size_t>(i * d + j)] - s.mu[static_cast<size_t>(j)];
      s.sd[static_cast<size_t>(j)] += t * t;
    }
  // A feature that barely varies (a ReLU that is almost never on) would get a weight of its
  // spread's inverse: its sd is floored at a tenth of the typical one, so the folded weights
  // stay of one scale and a later fine-tuning step that moves such a feature a little does
  // not swing the scores (constant features get sd 1: their z is 0).
  double typical = 0;
  int64_t varying = 0;
  for (double& v : s.sd) {
    v = std::sqrt(v / static_cast<double>(n));
    if (v > 1e-12) typical += v * v, ++varying;
  }
  typical = varying > 0 ? std::sqrt(typical / static_cast<double>(varying)) : 1.0;
  for (double& v : s.sd) v = v > 1e-12 ? std::max(v, 0.1 * typical) : 1.0;
  s.z.resize(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j)
      s.z[static_cast<size_t>(i * d + j)] =
          (x[static_cast<size_t>(i * d + j)] - s.mu[static_cast<size_t>(j)]) / s.sd[static_cast<size_t>(j)];
  if (n <= d) {
    s.gram.assign(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j)
        s.gram[static_cast<size_t>(i * n + j)] = dot(s.z.data() + i * d, s.z.data() + j * d, d);
  }
  return s;
}

// Ridge weights w [d, classes] on z from rows `rows` at strength lambda, to one-hot targets
// centred on those rows' class frequencies (returned in ybar: the unpenalised intercept).
std::vector<double> ridge_weights(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                                  const std::vector<int64_t>& rows, double lambda, std::vector<double>& ybar) {
  const auto n = static_cast<int64_t>(rows.size());
  const int64_t d = s.d;
  ybar.assign(static_cast<size_t>(classes), 0.0);
  for (int64_t r : rows) ybar[static_cast<size_t>(labels[static_cast<size_t>(r)])] += 1.0 / static_cast<double>(n);
  std::vector<double> y(static_cast<size_t>(n * classes));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < classes; ++c)
      y[static_cast<size_t>(i * classes + c)] =
          (labels[static_cast<size_t>(rows[static_cast<size_t>(i)])] == c ? 1.0 : 0.0) - ybar[static_cast<size_t>(c)];
  std::vector<double> w(static_cast<size_t>(d * classes), 0.0);
  if (!s.gram.empty()) {
    // Dual: w = Z^T (Z Z^T + lambda I)^-1 Y, an n x n system cut from the Gram matrix.
    std::vector<double> k(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t a = std::max(rows[static_cast<size_t>(i)], rows[static_cast<size_t>(j)]);
        const int64_t b = std::min(rows[static_cast<size_t>(i)], rows[static_cast<size_t>(j)]);
        k[static_cast<size_t>(i * n + j)] = s.gram[static_cast<size_t>(a * s.n + b)];
      }
    detail::ridge_solve(std::move(k), lambda, n, y, classes);
    for (int64_t i = 0; i < n; ++i) {
      const double* zi = s.z.data() + rows[static_cast<size_t>(i)] * d;
      for (int64_t j = 0; j < d; ++j)
        for (int64_t c = 0; c < classes; ++c)
          w[static_cast<size_t>(j * classes + c)] += zi[j] * y[static_cast<size_t>(i * classes + c)];
    }
  } else {
    // Primal: w = (Z^T Z + lambda I)^-1 Z^T Y, a d x d system.
    std::vector<double> g(static_cast<size_t>(d * d), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* zi = s.z.data() + rows[static_cast<size_t>(i)] * d;
      for (int64_t a = 0; a < d; ++a) {
        for (int64_t b = 0; b <= a; ++b) g[static_cast<size_t>(a * d + b)] += zi[a] * zi[b];
        for (int64_t c = 0; c < classes; ++c)
          w[static_cast<size_t>(a * classes + c)] += zi[a] * y[static_cast<size_t>(i * classes + c)];
      }
    }
    detail::ridge_solve(std::move(g), lambda, d, w, classes);
  }
  return w;
}

// Held-out tallies of w on rows `rows`: correct predictions and the squared error of the
// scores against one-hot targets; the scores go to their rows of `scores` [n, classes].
void score_rows(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                const std::vector<int64_t>& rows, const std::vector<double>& w, const std::vector<double>& ybar,
                int64_t& correct, double& sq_err, std::vector<double>& scores) {
  for (int64_t r : rows) {
    const double* zr = s.z.data() + r * s.d;
    int64_t best = 0;
    double best_s = -1e300;
    for (int64_t c = 0; c < classes; ++c) {
      double v = ybar[static_cast<size_t>(c)];
      for (int64_t j = 0; j < s.d; ++j) v += zr[j] * w[static_cast<size_t>(j * classes + c)];
      scores[static_cast<size_t>(r * classes + c)] = v;
      const double t = v - (labels[static_cast<size_t>(r)] == c ? 1.0 : 0.0);
      sq_err += t * t;
      if (v > best_s) best_s = v, best = c;
    }
    correct += best == labels[static_cast<size_t>(r)];
  }
}

// The factor on held-out scores [n, classes] that minimises their softmax cross-entropy
// (ridge scores live on the one-hot scale, so their softmax is nearly flat): 2^(k/4), k in
// [0, 40].
double best_scale(const std::vector<double>& scores, const std::vector<int64_t>& labels, int64_t classes) {
  double best = 1, best_ce = 1e300;
  for (int k = 0; k <= 40; ++k) {
    const double t = std::pow(2.0, k / 4.0);
    double ce = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      const double* si = scores.data() + static_cast<int64_t>(i) * classes;
      double mx = -1e300, sum = 0;
      for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, t * si[c]);
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(t * si[c] - mx);
      ce += mx + std::log(sum) - t * si[labels[i]];
    }
    if (ce < best_ce) best_ce = ce, best = t;
  }
  return best;
}

// The lambda multiple with the best k-fold accuracy (ties: lower squared error); its accuracy
// and the scale that calibrates its held-out scores.
double choose_lambda(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                     const LinearProbeOptions& options, double* cv_acc, double* scale) {
  std::vector<std::vector<int64_t>> fold(static_cast<size_t>(options.folds));
  std::vector<int64_t> seen(static_cast<size_t>(classes), 0);
  for (int64_t i = 0; i < s.n; ++i)
    fold[static_cast<size_t>(seen[static_cast<size_t>(labels[static_cast<size_t>(i)])]++ % options.folds)].push_back(i);
  double best_mult = options.lambdas.front(), best_err = 0;
  int64_t best_correct = -1;
  std::vector<double> best_scores;
  for (double mult : options.lambdas) {
    int64_t correct = 0;
    double err = 0;
    std::vector<double> scores(static_cast<size_t>(s.n * classes), 0.0);
    for (size_t f = 0; f < fold.size(); ++f) {
      std::vector<int64_t> fit;
      for (size_t g = 0; g < fold.size(); ++g)
        if (g != f) fit.insert(fit.end(), fold[g].begin(), fold[g].end());
      if (fold[f].empty() || fit.size() < 2) continue;
      std::sort(fit.begin(), fit.end());
      std::vector<double> ybar;
      const std::vector<double> w = ridge_weights(s, labels, classes, fit, mult * static_cast<double>(s.d), ybar);
      score_rows(s, labels, classes, fold[f], w, ybar, correct, err, scores);
    }
    if (correct > best_correct || (correct == best_correct && err < best_err))
      best_correct = correct, best_err = err, best_mult = mult, best_scores = std::move(scores);
  }
  *cv_acc = static_cast<double>(best_correct) / static_cast<double>(s.n);
  *scale = best_scale(best_scores, labels, classes);
  return best_mult;
}

// Accuracy of p on every row of x [n, d].
double rows_accuracy(const LinearProbe& p, const std::vector<float>& x, const std::vector<int64_t>& labels) {
  const auto n = static_cast<int64_t>(labels.size());
  if (n == 0) return 0;
  int64_t correct = 0;
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x.data() + r * p.dim;
    int64_t best = 0;
    double best_s = -1e300;
    for (int64_t c = 0; c < p.classes; ++c) {
      double v = p.bias[static_cast<size_t>(c)];
      const float* wc = p.weight.data() + c * p.dim;
      for (int64_t j = 0; j < p.dim; ++j) v += static_cast<double>(wc[j]) * xr[j];
      if (v > best_s) best_s = v, best = c;
    }
    correct += best == labels[static_cast<size_t>(r)];
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

std::vector<float> host_rows(const Tensor& feats, int64_t* n, int64_t* d) {
  KILN_CHECK(feats.defined() && feats.rank() == 2, "linear probe: features must be a [rows, features] tensor");
  *n = feats.dim(0);
  *d = feats.dim(1);
  return feats.to(Device::cpu()).to_vector<float>();
}

}  // namespace

LinearProbe fit_linear_probe(const Tensor& feats, const std::vector<int64_t>& labels, int64_t classes,
                             const LinearProbeOptions& options) {
  int64_t n = 0, d = 0;
  const std::vector<float> x = host_rows(feats, &n, &d);
  KILN_CHECK(static_cast<int64_t>(labels.size()) == n, "linear probe: ", n, " feature rows but ", labels.size(),
             " labels");
  KILN_CHECK(n >= 2 && d >= 1 && classes >= 1, "linear probe: needs at least 2 rows and 1 feature, got ", n, " x ", d);
  KILN_CHECK(!options.lambdas.empty(), "linear probe: no ridge strength to try");
  for (double l : options.lambdas) KILN_CHECK(l > 0, "linear probe: ridge strengths must be positive, got ", l);
  for (int64_t l : labels) KILN_CHECK(l >= 0 && l < classes, "linear probe: label ", l, " outside [0, ", classes, ")");
  // A NaN would surface as a matrix "not positive definite", blaming the ridge strength.
  const auto bad = std::find_if(x.begin(), x.end(), [](float v) { return !std::isfinite(v); });
  KILN_CHECK(bad == x.end(), "linear probe: feature ", (bad - x.begin()) % d, " of row ", (bad - x.begin()) / d, " is ",
             *bad, ": the features must be finite (a layer before the head diverged?)");

  const Standardised s = standardise(x, n, d);
  double cv_acc = -1, mult = options.lambdas.front(), scale = 1;
  if (options.lambdas.size() > 1 && options.folds > 1)
    mult = choose_lambda(s, labels, classes, options, &cv_acc, &scale);
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  std::vector<double> ybar;
  const double lambda = mult * static_cast<double>(d);
  const std::vector<double> w = ridge_weights(s, labels, classes, all, lambda, ybar);
  // Fold the standardisation and the scale in: score_c = scale (sum_j w_jc (x_j - mu_j) / sd_j + ybar_c).
  LinearProbe p;
  p.classes = classes;
  p.dim = d;
  p.lambda = lambda;
  p.holdout_acc = cv_acc;
  p.scale = scale;
  p.weight.resize(static_cast<size_t>(classes * d));
  p.bias.resize(static_cast<size_t>(classes));
  for (int64_t c = 0; c < classes; ++c) {
    double b = ybar[static_cast<size_t>(c)];
    for (int64_t j = 0; j < d; ++j) {
      const double wj = w[static_cast<size_t>(j * classes + c)] / s.sd[static_cast<size_t>(j)];
      p.weight[static_cast<size_t>(c * d + j)] = static_cast<float>(scale * wj);
      b -= wj * s.mu[static_cast<size_t>(j)];
    }
    p.bias[static_cast<size_t>(c)] = static_cast<float>(scale * b);
  }
  p.train_acc = rows_accuracy(p, x, labels);
  return p;
}

std::vector<float> probe_scores(const LinearProbe& probe, const Tensor& feats) {
  int64_t n = 0, d = 0;
  const std::vector<float> x = host_rows(feats, &n, &d);
  KILN_CHECK(d == probe.dim, "linear probe: fitted on ", probe.dim, " features, given ", d);
  std::vector<float> out(static_cast<size_t>(n * probe.classes));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < probe.classes; ++c) {
      double s = probe.bias[static_cast<size_t>(c)];
      for (int64_t j = 0; j < d; ++j)
        s += static_cast<double>(probe.weight[static_cast<size_t>(c * d + j)]) * x[static_cast<size_t>(i * d + j)];
      out[static_cast<size_t>(i * probe.classes + c)] = static_cast<float>(s);
    }
  return out;
}

double probe_accuracy(const LinearProbe& probe, const Tensor& feats, const std::vector<int64_t>& labels) {
  int64_t n = 0, d = 0;
  const std::vector<float> x = host_rows(feats, &n, &d);
  KILN_CHECK(d == probe.dim && static_cast<int64_t>(labels.size()) == n, "linear probe: fitted on ", probe.dim,
             " features, given ", n, " x ", d, " with ", labels.size(), " labels");
  return rows_accuracy(probe, x, labels);
}

}  // namespace kiln
