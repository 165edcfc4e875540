// The seed recipe as functions: build VGG16 with fc8 sized to the classes, train fc8 alone
// (phase 1) then every layer (phase 2), evaluating after each epoch and checkpointing into
// the model directory; and the pieces eval/predict/export share (loading a trained model).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/loader.h"
#include "layers/models/vgg.h"

namespace kiln::app {

struct TrainConfig {
  std::string train_dir, val_dir, model_dir, weights;
  int64_t batch = 32;
  int64_t phase1_epochs = 10, phase2_epochs = 10;
  double phase1_lr = 1e-3, phase2_lr = 1e-5;
  double momentum = 0, weight_decay = 5e-4, keep_prob = 0.5;
  uint64_t seed = 1;
  std::string device = "auto";
  int64_t image_size = 224;
  int workers = 2;
  int keep = 2;
  std::string convention = "auto";  // or an io convention name, overriding the weights'
  bool no_augment = false;          // central crops, no flips; phase 1 then reuses pool5 features
  bool feature_cache = true;        // false: with no_augment, still run the full forward (for checks)
  int64_t stop_after_epochs = 0;    // > 0: stop once this many epochs are done (resume later)
  int64_t stop_after_steps = 0;     // > 0: stop after this many steps, checkpointing there (resume later)
  int64_t eval_every = 0;           // > 0: also evaluate every this many (global) steps
  int64_t checkpoint_every = 0;     // > 0: also checkpoint every this many (global) steps
  bool allow_changed_config = false;  // resume even when the recipe flags differ from config.txt
  std::string config_text;          // the run's flags, written to config.txt
};

// "key = value" lines of the recipe flags (those a resume must not change), for config.txt.
std::string recipe_config_text(const TrainConfig& cfg);

struct EvalResult {
  double loss = 0, acc = 0;
  int64_t images = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
};

struct TrainOutcome {
  EvalResult val;
  bool finished = false;  // false: stopped by --stop-after-epochs
};

// "auto" takes cuda:0 when a GPU is present; prints which device it took and why.
Device choose_device(const std::string& flag);
// The shorter side images are resized to before the crop (256 for 224, scaled alike).
int resize_for(int64_t image_size);

TrainOutcome run_train(const TrainConfig& cfg);

// Loss (cross-entropy, no weight decay), accuracy and confusion over one pass of `loader`.
EvalResult evaluate(Module& model, io::Loader& loader, int64_t num_classes);
// Per-class accuracy and the confusion matrix, for people.
std::string eval_details(const EvalResult& r, const std::vector<std::string>& classes);

// A model restored from a model directory's latest (or best) checkpoint.
struct TrainedModel {
  std::unique_ptr<Generator> init, dropout;  // outlive the model
  std::shared_ptr<Sequential> model;
  io::CheckpointInfo checkpoint;
  io::InputConvention convention = io::InputConvention::torchvision_rgb;
};
TrainedModel load_trained(const std::string& model_dir, Device device, bool best = false);

}  // namespace kiln::app
