// metrics.csv and TensorBoard events of a run (see metrics_log.h).
#include "train/metrics_log.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "train/format.h"

namespace kiln {

MetricsLog::MetricsLog(const std::string& model_dir)
    : csv_((std::filesystem::path(model_dir) / kMetricsCsvName).string(),
           {"epoch", "phase", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "img_per_s"}),
      tb_((std::filesystem::path(model_dir) / kEventsDirName).string()) {}

void MetricsLog::epoch(const EpochSummary& s) {
  csv_.append({std::to_string(s.epoch), std::to_string(s.phase), std::to_string(s.global_step), format_number("%g", s.lr),
               format_number("%.6f", s.train_loss), format_number("%.6f", s.train_acc), format_number("%.6f", s.val.loss), format_number("%.6f", s.val.acc),
               format_number("%.2f", s.images_per_second)});
  tb_.add_scalar("train/loss", s.train_loss, s.global_step);
  tb_.add_scalar("train/accuracy", s.train_acc, s.global_step);
  tb_.add_scalar("val/loss", s.val.loss, s.global_step);
  tb_.add_scalar("val/accuracy", s.val.acc, s.global_step);
  tb_.add_scalar("learning_rate", s.lr, s.global_step);
  tb_.add_scalar("images_per_second", s.images_per_second, s.global_step);
  int64_t side = 0;
  const std::vector<uint8_t> img = confusion_image(s.val, side);
  tb_.add_image_rgb("val/confusion_matrix", img, side, side, s.global_step);
  tb_.flush();
}

void MetricsLog::eval(int64_t step, const EvalResult& r) {
  tb_.add_scalar("val/loss", r.loss, step);
  tb_.add_scalar("val/accuracy", r.acc, step);
  tb_.flush();
}

void MetricsLog::start_at(int64_t epochs_done, int64_t global_step) {
  csv_.drop_rows_after(epochs_done);
  tb_.add_session_start(global_step + 1);
  tb_.flush();
}

std::vector<uint8_t> confusion_image(const EvalResult& r, int64_t& side) {
  const int64_t k = static_cast<int64_t>(r.confusion.size()), cell = 16;
  side = k * cell;
  std::vector<uint8_t> rgb(static_cast<size_t>(side * side * 3), 255);
  for (int64_t t = 0; t < k; ++t) {
    int64_t total = 0;
    for (int64_t v : r.confusion[t]) total += v;
    for (int64_t p = 0; p < k; ++p) {
      const double frac = total ? static_cast<double>(r.confusion[t][p]) / total : 0.0;
      const auto shade = static_cast<uint8_t>(255 - std::lround(frac * 255));
      for (int64_t y = t * cell; y < (t + 1) * cell; ++y)
        for (int64_t x = p * cell; x < (p + 1) * cell; ++x) {
          uint8_t* px = &rgb[static_cast<size_t>((y * side + x) * 3)];
          px[0] = shade;
          px[1] = shade;
          px[2] = 255;
        }
    }
  }
  return rgb;
}

}  // namespace kiln
