// The linear probe (train/linear_probe.h) against ridge regression solved here another way
// (the primal normal equations by Gauss-Jordan, in double), in both of its regimes (fewer
// rows than features: the dual system; more: the primal one); and the trainer's
// HeadInit::linear_probe, which fits a head once when its phase starts and not on a resume.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/kiln.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "train/linear_probe.h"
#include "train/model_spec.h"
#include "train/trainer.h"
#include "tests/support/reference.h"

using namespace kiln;

namespace {

// Solves a [n, n] x = b [n, m] by Gauss-Jordan with partial pivoting (a and b row-major).
std::vector<double> gauss_jordan(std::vector<double> a, std::vector<double> b, int n, int m) {
  for (int col = 0; col < n; ++col) {
    int piv = col;
    for (int r = col + 1; r < n; ++r)
      if (std::fabs(a[r * n + col]) > std::fabs(a[piv * n + col])) piv = r;
    for (int k = 0; k < n; ++k) std::swap(a[col * n + k], a[piv * n + k]);
    for (int k = 0; k < m; ++k) std::swap(b[col * m + k], b[piv * m + k]);
    for (int r = 0; r < n; ++r) {
      if (r == col) continue;
      const double f = a[r * n + col] / a[col * n + col];
      for (int k = 0; k < n; ++k) a[r * n + k] -= f * a[col * n + k];
      for (int k = 0; k < m; ++k) b[r * m + k] -= f * b[col * m + k];
    }
  }
  for (int r = 0; r < n; ++r)
    for (int k = 0; k < m; ++k) b[r * m + k] /= a[r * n + r];
  return b;
}

// Ridge to one-hot targets on standardised x [n, d] with an unpenalised intercept, at
// strength lambda: the scores [n, classes] it gives x.
std::vector<double> reference_scores(const std::vector<float>& x, const std::vector<int64_t>& y, int n, int d,
                                     int classes, double lambda) {
  std::vector<double> mu(d, 0), sd(d, 0), z(static_cast<size_t>(n * d));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) mu[j] += x[i * d + j] / static_cast<double>(n);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) sd[j] += (x[i * d + j] - mu[j]) * (x[i * d + j] - mu[j]) / n;
  for (int j = 0; j < d; ++j) sd[j] = std::sqrt(sd[j]);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < d; ++j) z[i * d + j] = (x[i * d + j] - mu[j]) / sd[j];
  std::vector<double> ybar(classes, 0), g(static_cast<size_t>(d * d), 0), zty(static_cast<size_t>(d * classes), 0);
  for (int i = 0; i < n; ++i) ybar[y[i]] += 1.0 / n;
  for (int i = 0; i < n; ++i)
    for (int a = 0; a < d; ++a) {
      for (int b = 0; b < d; ++b) g[a * d + b] += z[i * d + a] * z[i * d + b];
      for (int c = 0; c < classes; ++c) zty[a * classes + c] += z[i * d + a] * ((y[i] == c ? 1.0 : 0.0) - ybar[c]);
    }
  for (int a = 0; a < d; ++a) g[a * d + a] += lambda;
  const std::vector<double> w = gauss_jordan(g, zty, d, classes);
  std::vector<double> s(static_cast<size_t>(n * classes));
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < classes; ++c) {
      double v = ybar[c];
      for (int a = 0; a < d; ++a) v += z[i * d + a] * w[a * classes + c];
      s[i * classes + c] = v;
    }
  return s;
}

// n rows of d features: class c's rows centred on their own point, plus noise.
void make_data(int n, int d, int classes, uint64_t seed, std::vector<float>& x, std::vector<int64_t>& y,
               float noise) {
  Generator g(seed);
  const std::vector<float> centres = Tensor::normal({classes, d}, 0.0f, 1.0f, g).to_vector<float>();
  const std::vector<float> eps = Tensor::normal({n, d}, 0.0f, 1.0f, g).to_vector<float>();
  x.assign(static_cast<size_t>(n * d), 0.0f);
  y.assign(static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    y[i] = i % classes;
    for (int j = 0; j < d; ++j) x[i * d + j] = 3.0f * centres[y[i] * d + j] + 0.5f * j + noise * eps[i * d + j];
  }
}

}  // namespace

TEST_CASE("ridge_solve: Cholesky solves (A + lambda I) X = B", "[linear_probe]") {
  const int n = 5, m = 2;
  Generator g(4);
  const std::vector<float> r = Tensor::normal({n, n}, 0.0f, 1.0f, g).to_vector<float>();
  std::vector<double> a(n * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < n; ++k) a[i * n + j] += static_cast<double>(r[i * n + k]) * r[j * n + k];  // R R^T
  const std::vector<double> x_true = {1, -2, 0.5, 3, -1, 2, 0, 4, -0.25, 1.5};
  const double lambda = 0.3;
  std::vector<double> b(n * m, 0.0);
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < m; ++c)
      for (int k = 0; k < n; ++k) b[i * m + c] += (a[i * n + k] + (i == k ? lambda : 0.0)) * x_true[k * m + c];
  detail::ridge_solve(a, lambda, n, b, m);
  for (int i = 0; i < n * m; ++i) CHECK(b[i] == Approx(x_true[i]).margin(1e-9));
  // Not positive definite: refused, not a silent NaN.
  std::vector<double> neg(n * n, 0.0), rhs(n * m, 1.0);
  for (int i = 0; i < n; ++i) neg[i * n + i] = -1.0;
  CHECK_THROWS_AS(detail::ridge_solve(neg, 0.5, n, rhs, m), Error);
}

TEST_CASE("linear probe: the exact ridge solution, fewer rows than features and more", "[linear_probe]") {
  for (const auto& [n, d] : {std::pair<int, int>{7, 12}, std::pair<int, int>{30, 6}}) {
    INFO("rows " << n << ", features " << d);
    const int classes = 3;
    std::vector<float> x;
    std::vector<int64_t> y;
    make_data(n, d, classes, 10 + n, x, y, 1.0f);
    LinearProbeOptions one;
    one.lambdas = {0.7};  // one strength: no held-out selection, every row fits
    const Tensor feats = Tensor::from_vector(x, Shape{n, d});
    const LinearProbe p = fit_linear_probe(feats, y, classes, one);
    CHECK(p.holdout_acc == -1);
    CHECK(p.lambda == Approx(0.7 * d));
    const std::vector<float> got = probe_scores(p, feats);
    const std::vector<double> want = reference_scores(x, y, n, d, classes, 0.7 * d);
    REQUIRE(got.size() == want.size());
    // float32 weights and bias (the standardisation folded in) against a double reference.
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).margin(2e-5).epsilon(1e-4));
  }
}

TEST_CASE("linear probe: lambda chosen on held-out training rows, bad input refused", "[linear_probe]") {
  const int n = 60, d = 40, classes = 4;
  std::vector<float> x;
  std::vector<int64_t> y;
  make_data(n, d, classes, 3, x, y, 0.3f);
  const LinearProbe p = fit_linear_probe(Tensor::from_vector(x, Shape{n, d}), y, classes);
  CHECK(p.holdout_acc == 1.0);  // well separated: every held-out row right
  CHECK(p.train_acc == 1.0);
  // New rows from the same classes.
  std::vector<float> x2;
  std::vector<int64_t> y2;
  make_data(n, d, classes, 3, x2, y2, 0.3f);  // same centres (same seed), then other noise below
  Generator g(77);
  const std::vector<float> eps = Tensor::normal({n, d}, 0.0f, 0.3f, g).to_vector<float>();
  for (size_t i = 0; i < x2.size(); ++i) x2[i] += eps[i];
  CHECK(probe_accuracy(p, Tensor::from_vector(x2, Shape{n, d}), y2) >= 0.95);
  // Labels that carry no signal: the held-out accuracy says so.
  std::vector<int64_t> shuffled(y.size());
  for (size_t i = 0; i < y.size(); ++i) shuffled[i] = static_cast<int64_t>((i * 7 / 3) % classes);
  CHECK(fit_linear_probe(Tensor::from_vector(x, Shape{n, d}), shuffled, classes).holdout_acc < 0.7);

  const Tensor f = Tensor::from_vector(x, Shape{n, d});
  std::vector<int64_t> bad = y;
  bad[3] = classes;
  CHECK_THROWS_AS(fit_linear_probe(f, bad, classes), Error);
  CHECK_THROWS_AS(fit_linear_probe(f, std::vector<int64_t>(y.begin(), y.end() - 1), classes), Error);
  LinearProbeOptions none;
  none.lambdas = {};
  CHECK_THROWS_AS(fit_linear_probe(f, y, classes, none), Error);
  std::vector<float> with_nan = x;
  with_nan[5 * d + 7] = std::nanf("");  // named, rather than blamed on the ridge strength
  CHECK_THROWS_WITH(fit_linear_probe(Tensor::from_vector(with_nan, Shape{n, d}), y, classes),
                    Catch::Contains("feature 7 of row 5 is nan") && Catch::Contains("must be finite"));
}

namespace {

std::shared_ptr<Sequential> probe_net(Generator& gen) {
  auto net = std::make_shared<Sequential>("net");
  net->add(std::make_shared<Flatten>("flatten"));
  net->add(std::make_shared<Linear>("fc1", 16 * 16 * 3, 32, true, gen));
  net->add(std::make_shared<ReLU>("relu1"));
  net->add(std::make_shared<Linear>("fc2", 32, 2, true, gen));
  return net;
}

TrainerOptions probe_options(const std::string& dir) {
  TrainerOptions t;
  Phase head{"head", {"net/fc2/"}, 0.01, nullptr, 2, 0.9, 1e-4, HeadInit::linear_probe};
  t.phases = {head};
  t.loader.batch_size = 3;
  t.loader.num_workers = 1;
  t.loader.seed = 11;
  t.loader.resize_shorter = 18;
  t.loader.crop = 16;
  t.loader.augment = false;
  t.loader.warn = false;
  t.checkpoint_every = 1;
  t.eval_at_phase_start = true;
  t.model_dir = dir;
  t.run.image_size = 16;  // the crop, as checkpoints record it
  t.run.convention = io::InputConvention::torchvision_rgb;
  return t;
}

}  // namespace

TEST_CASE("trainer: a linear-probe head is fitted when its phase starts, not again on resume", "[linear_probe]") {
  const std::string root = test::make_temp_dir("linear_probe");
  app::make_demo_dataset(root + "/data", 2, 6, 2, 3);
  const io::Dataset train = io::image_folder(root + "/data/train"), val = io::image_folder(root + "/data/val");
  const ModelSpec& spec = find_model_spec("vgg16");  // only its name is recorded
  Generator g1(5);
  auto a = probe_net(g1);
  const std::vector<float> before = a->find("net/fc2/weight").tensor->to_vector<float>();
  TrainerOptions ta = probe_options(root + "/a");
  ta.run.classes = train.classes;
  std::vector<HeadInitInfo> fits;
  std::vector<std::string> evals;
  TrainerHooks hooks;
  hooks.on_head_init = [&](const HeadInitInfo& i) { fits.push_back(i); };
  hooks.on_phase_eval = [&](int phase, const std::string& when, const EvalResult& r) {
    CHECK(phase == 1);
    CHECK(r.images == 4);
    evals.push_back(when);
  };
  const TrainResult ra = Trainer(*a, spec, train, val, ta, hooks).run(std::nullopt);
  CHECK(ra.finished);
  REQUIRE(fits.size() == 1);
  CHECK(fits[0].layer == "fc2");
  CHECK(fits[0].rows == 12);
  CHECK(fits[0].features == 32);  // fc1's ReLU output: the head's input
  CHECK(fits[0].train_acc >= 0.75);  // 2 classes: well above chance on the rows it was fitted on
  CHECK(evals == std::vector<std::string>{"before", "after the linear probe"});
  CHECK(a->find("net/fc2/weight").tensor->to_vector<float>() != before);

  // Stopped mid-phase, resumed in a new model: no second fit, the same weights at the end.
  Generator g2(5);
  auto b = probe_net(g2);
  TrainerOptions tb = probe_options(root + "/b");
  tb.run.classes = train.classes;
  tb.stop_after_steps = 3;
  fits.clear();
  CHECK_FALSE(Trainer(*b, spec, train, val, tb, hooks).run(std::nullopt).finished);
  CHECK(fits.size() == 1);
  const io::ResumeChoice choice = io::newest_intact_checkpoint(tb.model_dir);
  REQUIRE(choice.checkpoint);
  Generator g3(99);
  auto c = probe_net(g3);
  io::load_checkpoint_weights(*c, *choice.checkpoint);
  tb.stop_after_steps = 0;
  fits.clear();
  CHECK(Trainer(*c, spec, train, val, tb, hooks).run(choice.checkpoint).finished);
  CHECK(fits.empty());
  for (const ParameterRef& p : a->parameters())
    CHECK(c->find(p.name).tensor->to_vector<float>() == p.tensor->to_vector<float>());

  // A phase that does not train the head cannot start it with a probe.
  Generator g4(5);
  auto d = probe_net(g4);
  TrainerOptions td = probe_options(root + "/d");
  td.phases[0].train_patterns = {"net/fc1/"};
  CHECK_THROWS_AS(Trainer(*d, spec, train, val, td).run(std::nullopt), Error);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}
