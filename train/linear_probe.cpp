// The closed-form linear probe (see linear_probe.h). Everything is in double: the Gram
// matrix of a few hundred rows of 4096 features sums millions of products, and Cholesky
// of a nearly singular matrix loses in float what the ridge is there to keep.
#include "train/linear_probe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

#include "core/hd.h"  // KILN_CPU_CLONES

namespace kiln {

namespace {

// Eight doubles as one value: GCC's vector extension, lowered to whatever registers a clone
// has (two ymm, four xmm), lane by lane, so every clone computes the same bits.
using v8d = double __attribute__((vector_size(64)));

// Dot products of R rows with row y over n doubles, row i at m + i * ld: each in eight
// interleaved lanes added in a fixed order (no fused multiply-add: -ffp-contract=off), so
// every ISA clone (KILN_CPU_CLONES, core/hd.h) returns the same bits; the R rows share each
// load of y. Inlined into each clone below.
template <int R>
[[gnu::always_inline]] inline void dots_of(const double* m, int64_t ld, const double* y, int64_t n, double* out) {
  v8d s[R] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    v8d yv, xv;
    std::memcpy(&yv, y + k, sizeof yv);  // unaligned loads
    for (int i = 0; i < R; ++i) {
      std::memcpy(&xv, m + i * ld + k, sizeof xv);
      s[i] += xv * yv;
    }
  }
  for (int i = 0; i < R; ++i) {
    double t = ((s[i][0] + s[i][1]) + (s[i][2] + s[i][3])) + ((s[i][4] + s[i][5]) + (s[i][6] + s[i][7]));
    for (int64_t j = k; j < n; ++j) t += m[i * ld + j] * y[j];
    out[i] = t;
  }
}

// dots_of for the first min(r, 4) rows of the row-major matrix m (row stride ld).
KILN_CPU_CLONES void dots(const double* m, int64_t ld, int64_t r, const double* y, int64_t n, double* out) {
  switch (r) {
    case 1: return dots_of<1>(m, ld, y, n, out);
    case 2: return dots_of<2>(m, ld, y, n, out);
    case 3: return dots_of<3>(m, ld, y, n, out);
    default: return dots_of<4>(m, ld, y, n, out);
  }
}

double dot(const double* x, const double* y, int64_t n) {
  double out = 0;
  dots(x, 0, 1, y, n, &out);
  return out;
}

// Adds the lower triangle of x x^T [n, n] (row-major) for x [n, d] to g: rows in blocks of
// four, each block against every earlier row (one pass over that row serves four products),
// over the features in chunks whose rows stay in cache together; blocks spread over the
// threads, every entry summed the same way whatever their number.
void add_lower_gram(const double* x, int64_t n, int64_t d, double* g) {
  constexpr int64_t kChunk = 512;  // 4 KB of each row: a few thousand rows' chunks fit in L3
  const int64_t blocks = (n + 3) / 4;
  for (int64_t k0 = 0; k0 < d; k0 += kChunk) {
    const int64_t len = std::min(kChunk, d - k0);
#pragma omp parallel for schedule(dynamic, 1) if (n * d > 65536)
    for (int64_t b = blocks - 1; b >= 0; --b) {  // the longest blocks first
      const int64_t i0 = 4 * b, r = std::min<int64_t>(4, n - i0);
      double out[4];
      for (int64_t j = 0; j < i0 + r; ++j) {
        dots(x + i0 * d + k0, d, r, x + j * d + k0, len, out);
        for (int64_t i = 0; i < r; ++i)
          if (j <= i0 + i) g[(i0 + i) * n + j] += out[i];
      }
    }
  }
}

}  // namespace

namespace detail {

void ridge_solve(std::vector<double> a, double lambda, int64_t n, std::vector<double>& b, int64_t m) {
  KILN_CHECK(static_cast<int64_t>(a.size()) == n * n && static_cast<int64_t>(b.size()) == n * m,
             "ridge_solve: sizes do not match n = ", n, ", m = ", m);
  // a = L L^T, L in the lower triangle of a, left-looking in panels of kPanel columns: first
  // every row below takes the panel's columns' dot products with the earlier panels (four
  // rows per pass over the panel's rows, which stay in cache: the unblocked order reread the
  // whole triangle once per column, and a 2048-feature primal probe ran at memory speed),
  // then the panel is finished column by column over its own few columns.
  constexpr int64_t kPanel = 32;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t j1 = std::min(n, j0 + kPanel);
    if (j0 > 0) {
#pragma omp parallel for schedule(static) if ((n - j0) * j0 * kPanel > (int64_t{1} << 22))
      for (int64_t i0 = j0; i0 < n; i0 += 4) {
        const int64_t r = std::min<int64_t>(4, n - i0);
        double out[4];
        for (int64_t j = j0; j < std::min(j1, i0 + r); ++j) {
          dots(a.data() + i0 * n, n, r, a.data() + j * n, j0, out);
          for (int64_t i = 0; i < r; ++i)
            if (j <= i0 + i) a[static_cast<size_t>((i0 + i) * n + j)] -= out[i];
        }
      }
    }
    for (int64_t j = j0; j < j1; ++j) {
      double* rj = a.data() + j * n;
      const double d = rj[j] + lambda - dot(rj + j0, rj + j0, j - j0);
      KILN_CHECK(d > 0 && std::isfinite(d), "ridge_solve: the matrix is not positive definite at row ", j,
                 " (lambda ", lambda, " too small for these features?)");
      const double ljj = std::sqrt(d);
      rj[j] = ljj;
      for (int64_t i0 = j + 1; i0 < n; i0 += 4) {
        const int64_t r = std::min<int64_t>(4, n - i0);
        double out[4];
        dots(a.data() + i0 * n + j0, n, r, rj + j0, j - j0, out);
        for (int64_t i = 0; i < r; ++i) {
          double& lij = a[static_cast<size_t>((i0 + i) * n + j)];
          lij = (lij - out[i]) / ljj;
        }
      }
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

// The rows standardised over all of them: z = (x - mu) / sd, a constant feature with sd 1
// (its z is 0). Cross-validation folds share these statistics: they come from training rows
// only, and a fold's own mean and spread would barely differ.
struct Standardised {
  int64_t n = 0, d = 0;
  std::vector<double> mu, sd, z;  // z: [n, d]
  std::vector<double> gram;       // z z^T [n, n] (lower triangle) when n <= d, else empty
  // Fewer rows than features: solved in the dual, an [n, n] system cut from the Gram matrix.
  bool dual() const { return !gram.empty(); }
  // Row a's features dotted with row b's (dual only).
  double k(int64_t a, int64_t b) const {
    return a >= b ? gram[static_cast<size_t>(a * n + b)] : gram[static_cast<size_t>(b * n + a)];
  }
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
    add_lower_gram(s.z.data(), n, d, s.gram.data());
  }
  return s;
}

// Adds sign * Z^T Z [d, d] (lower triangle) over rows `rows` of z to g: the primal system's
// matrix (a fold's fit rows: all rows' matrix less the held-out rows', one pass each).
void add_primal_gram(const Standardised& s, const std::vector<int64_t>& rows, double sign, std::vector<double>& g) {
  const auto n = static_cast<int64_t>(rows.size());
  std::vector<double> zt(static_cast<size_t>(s.d * n));  // the rows' features, feature-major
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s.d; ++j)
      zt[static_cast<size_t>(j * n + i)] = s.z[static_cast<size_t>(rows[static_cast<size_t>(i)] * s.d + j)];
  std::vector<double> part(static_cast<size_t>(s.d * s.d), 0.0);
  add_lower_gram(zt.data(), s.d, n, part.data());
  g.resize(part.size(), 0.0);
  for (size_t i = 0; i < g.size(); ++i) g[i] += sign * part[i];
}

// A ridge fit on some rows at one strength: the intercept ybar [classes] (the rows' class
// frequencies, on which the one-hot targets are centred) and the coefficients: dual
// alpha [rows, classes] (w = Z_rows^T alpha) or primal w [d, classes].
struct RidgeFit {
  std::vector<double> ybar, coef;
};

// `gram`: the primal system's matrix over the rows (add_primal_gram); unused in the dual.
RidgeFit ridge_fit(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                   const std::vector<int64_t>& rows, double lambda, const std::vector<double>& gram) {
  const auto n = static_cast<int64_t>(rows.size());
  RidgeFit f;
  f.ybar.assign(static_cast<size_t>(classes), 0.0);
  for (int64_t r : rows) f.ybar[static_cast<size_t>(labels[static_cast<size_t>(r)])] += 1.0 / static_cast<double>(n);
  std::vector<double> y(static_cast<size_t>(n * classes));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < classes; ++c)
      y[static_cast<size_t>(i * classes + c)] =
          (labels[static_cast<size_t>(rows[static_cast<size_t>(i)])] == c ? 1.0 : 0.0) - f.ybar[static_cast<size_t>(c)];
  if (s.dual()) {
    // alpha = (Z Z^T + lambda I)^-1 Y.
    std::vector<double> k(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) k[static_cast<size_t>(i * n + j)] = s.k(rows[i], rows[j]);
    detail::ridge_solve(std::move(k), lambda, n, y, classes);
    f.coef = std::move(y);
  } else {
    // w = (Z^T Z + lambda I)^-1 Z^T Y.
    f.coef.assign(static_cast<size_t>(s.d * classes), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double* zi = s.z.data() + rows[static_cast<size_t>(i)] * s.d;
      for (int64_t a = 0; a < s.d; ++a)
        for (int64_t c = 0; c < classes; ++c)
          f.coef[static_cast<size_t>(a * classes + c)] += zi[a] * y[static_cast<size_t>(i * classes + c)];
    }
    detail::ridge_solve(gram, lambda, s.d, f.coef, classes);
  }
  return f;
}

// The fit's weights w [d, classes] on the standardised features (fitted on `rows`).
std::vector<double> ridge_weights(const Standardised& s, const std::vector<int64_t>& rows, const RidgeFit& f,
                                  int64_t classes) {
  if (!s.dual()) return f.coef;
  std::vector<double> w(static_cast<size_t>(s.d * classes), 0.0);
  for (size_t i = 0; i < rows.size(); ++i) {
    const double* zi = s.z.data() + rows[i] * s.d;
    const double* ai = f.coef.data() + static_cast<int64_t>(i) * classes;
    for (int64_t j = 0; j < s.d; ++j)
      for (int64_t c = 0; c < classes; ++c) w[static_cast<size_t>(j * classes + c)] += zi[j] * ai[c];
  }
  return w;
}

// Held-out tallies of a fit (on rows `fit`) over rows `held`: correct predictions and the
// squared error of the scores against one-hot targets; the scores go to their rows of
// `scores` [n, classes]. The dual scores through the Gram matrix (K[held, fit] alpha),
// never forming w.
void score_rows(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                const std::vector<int64_t>& fit, const RidgeFit& f, const std::vector<int64_t>& held,
                int64_t& correct, double& sq_err, std::vector<double>& scores) {
  for (int64_t r : held) {
    double* v = scores.data() + r * classes;
    for (int64_t c = 0; c < classes; ++c) v[c] = f.ybar[static_cast<size_t>(c)];
    if (s.dual()) {
      for (size_t i = 0; i < fit.size(); ++i) {
        const double kri = s.k(r, fit[i]);
        const double* ai = f.coef.data() + static_cast<int64_t>(i) * classes;
        for (int64_t c = 0; c < classes; ++c) v[c] += kri * ai[c];
      }
    } else {
      const double* zr = s.z.data() + r * s.d;
      for (int64_t j = 0; j < s.d; ++j)
        for (int64_t c = 0; c < classes; ++c) v[c] += zr[j] * f.coef[static_cast<size_t>(j * classes + c)];
    }
    int64_t best = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const double t = v[c] - (labels[static_cast<size_t>(r)] == c ? 1.0 : 0.0);
      sq_err += t * t;
      if (v[c] > v[best]) best = c;
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

// The k folds' rows (row i of each class, by order of appearance, in fold i % folds) and
// each fold's complement (the rows its fit uses), sorted.
void make_folds(const std::vector<int64_t>& labels, int64_t classes, int folds, std::vector<std::vector<int64_t>>& held,
                std::vector<std::vector<int64_t>>& fit) {
  held.assign(static_cast<size_t>(folds), {});
  fit.assign(static_cast<size_t>(folds), {});
  std::vector<int64_t> seen(static_cast<size_t>(classes), 0);
  for (size_t i = 0; i < labels.size(); ++i)
    held[static_cast<size_t>(seen[static_cast<size_t>(labels[i])]++ % folds)].push_back(static_cast<int64_t>(i));
  for (size_t f = 0; f < held.size(); ++f) {
    for (size_t g = 0; g < held.size(); ++g)
      if (g != f) fit[f].insert(fit[f].end(), held[g].begin(), held[g].end());
    std::sort(fit[f].begin(), fit[f].end());
  }
}

// The lambda multiple with the best k-fold accuracy (ties: lower squared error); its accuracy
// and the scale that calibrates its held-out scores. Every (lambda, fold) fit is independent:
// they run on the threads, each into its own slots, tallied afterwards in a fixed order.
double choose_lambda(const Standardised& s, const std::vector<int64_t>& labels, int64_t classes,
                     const LinearProbeOptions& options, const std::vector<double>& primal_all, double* cv_acc,
                     double* scale) {
  std::vector<std::vector<int64_t>> held, fit;
  make_folds(labels, classes, options.folds, held, fit);
  const auto folds = static_cast<int64_t>(held.size()), lambdas = static_cast<int64_t>(options.lambdas.size());
  // Primal: each fold's fit rows' Z^T Z, all rows' (primal_all) less the fold's own.
  std::vector<std::vector<double>> grams(static_cast<size_t>(folds));
  for (int64_t f = 0; f < folds && !s.dual(); ++f)
    if (!held[f].empty() && fit[f].size() >= 2) {
      grams[f] = primal_all;
      add_primal_gram(s, held[f], -1.0, grams[f]);
    }
  std::vector<int64_t> correct(static_cast<size_t>(lambdas * folds), 0);
  std::vector<double> err(static_cast<size_t>(lambdas * folds), 0.0);
  std::vector<std::vector<double>> scores(static_cast<size_t>(lambdas),
                                          std::vector<double>(static_cast<size_t>(s.n * classes), 0.0));
  std::vector<std::exception_ptr> failed(static_cast<size_t>(lambdas * folds));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < lambdas * folds; ++t) {
    const int64_t l = t / folds, f = t % folds;
    if (held[f].empty() || fit[f].size() < 2) continue;
    try {
      const RidgeFit r = ridge_fit(s, labels, classes, fit[f], options.lambdas[l] * static_cast<double>(s.d), grams[f]);
      score_rows(s, labels, classes, fit[f], r, held[f], correct[t], err[t], scores[l]);
    } catch (...) {
      failed[t] = std::current_exception();  // nothing may leave an OpenMP region
    }
  }
  for (const std::exception_ptr& e : failed)
    if (e) std::rethrow_exception(e);
  double best_mult = options.lambdas.front(), best_err = 0;
  int64_t best_correct = -1, best_l = 0;
  for (int64_t l = 0; l < lambdas; ++l) {
    int64_t c = 0;
    double e = 0;
    for (int64_t f = 0; f < folds; ++f) c += correct[l * folds + f], e += err[l * folds + f];
    if (c > best_correct || (c == best_correct && e < best_err))
      best_correct = c, best_err = e, best_mult = options.lambdas[l], best_l = l;
  }
  *cv_acc = static_cast<double>(best_correct) / static_cast<double>(s.n);
  *scale = best_scale(scores[best_l], labels, classes);
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
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  std::vector<double> primal_all;  // more rows than features: Z^T Z over every row
  if (!s.dual()) add_primal_gram(s, all, 1.0, primal_all);
  double cv_acc = -1, mult = options.lambdas.front(), scale = 1;
  if (options.lambdas.size() > 1 && options.folds > 1)
    mult = choose_lambda(s, labels, classes, options, primal_all, &cv_acc, &scale);
  const double lambda = mult * static_cast<double>(d);
  const RidgeFit f = ridge_fit(s, labels, classes, all, lambda, primal_all);
  const std::vector<double> w = ridge_weights(s, all, f, classes);
  const std::vector<double>& ybar = f.ybar;
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
