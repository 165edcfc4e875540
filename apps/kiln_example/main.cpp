// kiln_example: a small convnet trained on the CPU directly against the op API (conv2d, relu,
// max_pool2d, linear, softmax_cross_entropy, sgd_update on tensors it holds itself), on
// generated images (four classes of oriented stripes under noise); it prints the loss
// falling. Nothing is downloaded. The same with modules and an optimizer (layers/) is the
// README's "Using kiln from another CMake project".
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/kiln.h"

using namespace kiln;

namespace {

constexpr int64_t kSize = 16, kClasses = 4;

// Class k draws stripes at angle k*45 degrees with a random phase, plus Gaussian noise.
void make_batch(Generator& gen, int64_t n, Tensor& images, Tensor& labels) {
  Tensor noise = Tensor::normal(Shape{n, kSize, kSize, 3}, 0.0f, 1.5f, gen);
  Tensor phase = Tensor::uniform(Shape{n}, 0.0f, 6.2831853f, gen);
  Tensor pick = Tensor::uniform(Shape{n}, 0.0f, static_cast<float>(kClasses), gen);
  std::vector<float> px = noise.to_vector<float>();
  std::vector<float> ph = phase.to_vector<float>();
  std::vector<float> pk = pick.to_vector<float>();
  std::vector<int64_t> lab(static_cast<size_t>(n));
  const float dirs[4][2] = {{1, 0}, {0.7071f, 0.7071f}, {0, 1}, {-0.7071f, 0.7071f}};
  for (int64_t b = 0; b < n; ++b) {
    const int64_t k = static_cast<int64_t>(pk[static_cast<size_t>(b)]) % kClasses;
    lab[static_cast<size_t>(b)] = k;
    for (int64_t y = 0; y < kSize; ++y)
      for (int64_t x = 0; x < kSize; ++x) {
        const float v = 0.5f * std::sin(1.2f * (dirs[k][0] * x + dirs[k][1] * y) + ph[static_cast<size_t>(b)]);
        for (int64_t c = 0; c < 3; ++c) px[static_cast<size_t>(((b * kSize + y) * kSize + x) * 3 + c)] += v;
      }
  }
  images = Tensor::from_vector(px, Shape{n, kSize, kSize, 3});
  labels = Tensor::from_vector(lab, Shape{n});
}

void usage() {
  std::printf(
      "usage: kiln_example [--steps N] [--batch N] [--lr X] [--seed N]\n"
      "Trains a small convnet (conv-relu-pool x2, linear) on generated 16x16 images of\n"
      "oriented stripes, 4 classes, and prints the loss and accuracy as it falls.\n");
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 300, batch = 32;
  float lr = 0.01f;
  uint64_t seed = 1;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&](const char* flag) -> std::string {
        KILN_CHECK(i + 1 < argc, flag, " needs a value");
        return argv[++i];
      };
      // The whole text must be the number: std::sto* alone takes "5x" and throws "stoll" at "abc".
      auto number = [&](const char* flag, auto parse) {
        const std::string v = value(flag);
        size_t used = 0;
        try {
          const auto x = parse(v, &used);
          if (used == v.size()) return x;
        } catch (const std::logic_error&) {
        }
        KILN_FAIL(flag, " takes a number, got '", v, "'");
      };
      if (a == "--help" || a == "-h") {
        usage();
        return 0;
      } else if (a == "--steps") {
        steps = number("--steps", [](const std::string& v, size_t* n) { return std::stoll(v, n); });
      } else if (a == "--batch") {
        batch = number("--batch", [](const std::string& v, size_t* n) { return std::stoll(v, n); });
      } else if (a == "--lr") {
        lr = number("--lr", [](const std::string& v, size_t* n) { return std::stof(v, n); });
      } else if (a == "--seed") {
        const long long s = number("--seed", [](const std::string& v, size_t* n) { return std::stoll(v, n); });
        KILN_CHECK(s >= 0, "--seed takes a number >= 0, got ", s);  // std::stoull would wrap -1
        seed = static_cast<uint64_t>(s);
      } else {
        KILN_FAIL("unknown argument '", a, "' (see --help)");
      }
    }
    KILN_CHECK(steps >= 1 && batch >= 1 && lr > 0, "--steps and --batch must be >= 1 and --lr > 0");

    Generator init(seed), data(seed + 1000);
    auto param = [&](Shape s, float fan_in) {
      const float bound = std::sqrt(3.0f / fan_in);  // LeCun-uniform: logits start near zero
      Tensor t = Tensor::uniform(s, -bound, bound, init);
      t.set_requires_grad(true);
      return t;
    };
    auto zeros = [](Shape s) { return Tensor::zeros(s).set_requires_grad(true); };
    std::vector<Tensor> params = {param({8, 3, 3, 3}, 27),        zeros({8}),
                                  param({16, 3, 3, 8}, 72),       zeros({16}),
                                  param({kClasses, 4 * 4 * 16}, 256), zeros({kClasses})};
    std::vector<Tensor> momentum;
    for (const Tensor& p : params) momentum.push_back(Tensor::zeros(p.shape()));
    const SgdOptions opt{lr, 0.9f, 0.0f, false};
    const Conv2dParams same{1, 1, 1, 1};

    std::printf("kiln_example: training a 2-conv convnet on generated stripes (%lld classes, batch %lld, %lld steps)\n",
                static_cast<long long>(kClasses), static_cast<long long>(batch), static_cast<long long>(steps));
    const auto t0 = std::chrono::steady_clock::now();
    double first = 0, window = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t step = 1; step <= steps; ++step) {
      Tensor x, y;
      make_batch(data, batch, x, y);
      Tensor h = max_pool2d(relu(conv2d(x, params[0], params[1], same)));
      h = max_pool2d(relu(conv2d(h, params[2], params[3], same)));
      Tensor logits = linear(flatten(h), params[4], params[5]);
      Tensor loss = softmax_cross_entropy(logits, y);
      for (Tensor& p : params) p.zero_grad();
      loss.backward();
      std::vector<SgdParamRef> refs;
      for (size_t i = 0; i < params.size(); ++i) refs.push_back({params[i], params[i].grad(), momentum[i]});
      sgd_update(refs, opt);

      const double l = loss.item();
      if (step == 1) first = l;
      window += l;
      const std::vector<int64_t> pred = argmax(logits).to_vector<int64_t>();
      const std::vector<int64_t> truth = y.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == truth[i];
      seen += batch;
      if (step % 30 == 0 || step == steps) {
        std::printf("step %4lld  loss %.4f  accuracy %5.1f%%\n", static_cast<long long>(step),
                    window / static_cast<double>(step % 30 == 0 ? 30 : step % 30),
                    100.0 * static_cast<double>(correct) / static_cast<double>(seen));
        window = 0;
        correct = seen = 0;
      }
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("first loss %.4f (chance is ln %lld = %.4f); %.1f s, %.0f images/s on cpu\n", first,
                static_cast<long long>(kClasses), std::log(static_cast<double>(kClasses)), secs,
                static_cast<double>(steps * batch) / secs);
    return 0;
  } catch (const Error& e) {  // the message alone: the source location is for kiln's developers
    std::fprintf(stderr, "kiln_example: error: %s\n", e.message().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_example: error: %s\n", e.what());
    return 1;
  }
}
