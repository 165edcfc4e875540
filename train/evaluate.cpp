// Evaluation passes (see evaluate.h): both paths end in one EvalTally, so a cached-feature
// evaluation reports exactly what the full forward would.
#include "train/evaluate.h"

#include <algorithm>
#include <cstdio>

#include "layers/loss.h"
#include "train/format.h"

namespace kiln {

EvalTally::EvalTally(int64_t num_classes) {
  KILN_CHECK(num_classes > 0, "evaluation: num_classes must be positive, got ", num_classes);
  r_.confusion.assign(static_cast<size_t>(num_classes), std::vector<int64_t>(static_cast<size_t>(num_classes), 0));
}

void EvalTally::add(const Tensor& logits, const Tensor& labels) {
  // The confusion matrix is num_classes square: a wider head's predictions would land outside it.
  const auto classes = static_cast<int64_t>(r_.confusion.size());
  KILN_CHECK(logits.rank() == 2 && logits.dim(1) == classes, "evaluation: the model gives ", logits.description(),
             " (class scores per image) but num_classes is ", classes, "; pass the model's class count (its head's "
             "output size), not the data's");
  const int64_t n = logits.dim(0);
  loss_sum_ += softmax_cross_entropy(logits, labels).item() * static_cast<double>(n);
  const std::vector<int64_t> pred = argmax(logits).to_vector<int64_t>();
  const std::vector<int64_t> truth = labels.to_vector<int64_t>();
  for (size_t i = 0; i < pred.size(); ++i) {
    correct_ += pred[i] == truth[i];
    ++r_.confusion[static_cast<size_t>(truth[i])][static_cast<size_t>(pred[i])];
  }
  r_.images += n;
}

EvalResult EvalTally::finish() {
  r_.loss = loss_sum_ / static_cast<double>(r_.images);
  r_.acc = static_cast<double>(correct_) / static_cast<double>(r_.images);
  return r_;
}

EvalResult evaluate(Module& model, io::Loader& loader, int64_t num_classes) {
  EvalTally tally(num_classes);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    tally.add(model(b->images), b->labels);
  }
  model.train(was_training);
  KILN_CHECK(tally.images() > 0, "evaluation: no image of '", loader.dataset().root, "' could be read");
  return tally.finish();
}

EvalResult evaluate_cached(Sequential& model, const FeatureCache& cache, int64_t batch, Device device,
                           int64_t num_classes) {
  EvalTally tally(num_classes);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  std::vector<int64_t> all;
  for (size_t i = 0; i < cache.row.size(); ++i) all.push_back(static_cast<int64_t>(i));
  for (size_t at = 0; at < all.size(); at += static_cast<size_t>(batch)) {
    Tensor x, y;
    const size_t end = std::min(all.size(), at + static_cast<size_t>(batch));
    gather(cache, std::vector<int64_t>(all.begin() + static_cast<std::ptrdiff_t>(at),
                                       all.begin() + static_cast<std::ptrdiff_t>(end)), device, x, y);
    if (!x.defined()) continue;
    tally.add(run_from(model, cache.cut, x), y);
  }
  model.train(was_training);
  return tally.finish();
}

namespace {

// The columns a class name takes in a terminal, counted in code points (UTF-8 continuation
// bytes take none): a name such as "café" padded by its bytes pushed its row's numbers left.
size_t columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::string eval_details(const EvalResult& r, const std::vector<std::string>& classes) {
  std::string out = "per-class accuracy:\n";
  size_t w = 5;
  for (const std::string& c : classes) w = std::max(w, columns(c));
  const auto padded = [&](size_t t) { return "  " + classes[t] + std::string(w - columns(classes[t]), ' '); };
  for (size_t t = 0; t < classes.size(); ++t) {
    int64_t total = 0;
    for (int64_t v : r.confusion[t]) total += v;
    const std::string name = padded(t);
    if (total == 0) {  // not 0.0%: nothing was measured
      out += name + "      -   (no images of this class here)\n";
      continue;
    }
    const double acc = 100.0 * static_cast<double>(r.confusion[t][t]) / static_cast<double>(total);
    out += name + format_number("  %5.1f%%", acc) + "  (" + std::to_string(r.confusion[t][t]) + "/" +
           std::to_string(total) + ")\n";
  }
  out += "confusion matrix (rows: true class, columns: predicted, in the order above):\n";
  for (size_t t = 0; t < classes.size(); ++t) {
    out += padded(t);
    for (int64_t v : r.confusion[t]) out += format_number(" %5.0f", static_cast<double>(v));
    out += "\n";
  }
  return out;
}

}  // namespace kiln
