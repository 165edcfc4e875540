// A run's metrics as files: one metrics.csv row per epoch and TensorBoard events (scalars and
// the validation confusion matrix) in events/, both appended so a resumed run continues them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/metrics.h"
#include "io/tensorboard.h"
#include "train/evaluate.h"

namespace kiln {

// One finished epoch.
struct EpochSummary {
  int phase = 1;             // 1-based
  std::string phase_name;
  int64_t epoch = 1;         // over all phases, 1-based
  int64_t epoch_in_phase = 1, phase_epochs = 1;
  int64_t global_step = 0;
  double lr = 0;
  double train_loss = 0, train_acc = 0;  // cross-entropy alone (no weight decay), over the epoch
  double images_per_second = 0;
  EvalResult val;
};

// The files MetricsLog keeps in a model directory (others, e.g. vgg_finetune, keep out of their way).
inline constexpr const char* kMetricsCsvName = "metrics.csv";
inline constexpr const char* kEventsDirName = "events";

// metrics.csv and events/ of a model directory.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& model_dir);
  // One epoch: a CSV row and its scalars and confusion matrix.
  void epoch(const EpochSummary& s);
  // A mid-epoch evaluation: validation scalars at `step`.
  void eval(int64_t step, const EvalResult& r);
  // A run starting after `epochs_done` epochs and `global_step` steps (0, 0: a fresh one):
  // what an interrupted run logged past that point is dropped, for it runs again (CSV rows
  // now, TensorBoard's events when it reads them).
  void start_at(int64_t epochs_done, int64_t global_step);

 private:
  io::MetricsCsv csv_;
  io::TensorBoardWriter tb_;
};

// The confusion matrix as an RGB image: one 16x16 cell per entry, darker = more of the true
// class's images. `side` receives the image's width and height.
std::vector<uint8_t> confusion_image(const EvalResult& r, int64_t& side);

}  // namespace kiln
