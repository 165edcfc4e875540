// The seed recipe as a command over train/trainer: VGG16 (or another registered model, by
// its model spec) with the head (fc8) sized to the classes, the head alone (phase 1) then
// every layer (phase 2), evaluating after
// each epoch and checkpointing into the model directory; and the pieces eval/predict/export
// share (loading a trained model).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/loader.h"
#include "train/evaluate.h"
#include "train/model_spec.h"
#include "train/trainer.h"

namespace kiln::app {

// The folders a command will create (a directory and any missing parents), removed again,
// deepest first, if the command fails while they are still empty: a refused command leaves
// nothing behind, and a folder that existed is never touched.
struct NewDirGuard {
  explicit NewDirGuard(const std::string& dir);
  ~NewDirGuard();
  NewDirGuard(const NewDirGuard&) = delete;
  NewDirGuard& operator=(const NewDirGuard&) = delete;
  std::vector<std::string> made;  // absolute, deepest first
};

// The model vgg_finetune trains unless --model names another of train/model_spec's registry.
inline constexpr const char* kDefaultModel = "vgg16";

// The files a training run keeps in its model directory beside the checkpoints (io/checkpoint.h)
// and the metrics (train/metrics_log.h): the class names, the recipe, the images it skipped.
inline constexpr const char* kClassesFile = "classes.txt";
inline constexpr const char* kConfigFile = "config.txt";
inline constexpr const char* kSkippedFile = "skipped.txt";
// Every file the run writes there besides checkpoints: a temporary of one of them is the run's
// to remove (io::remove_stale_temporaries), any other *.tmp file the user's.
std::vector<std::string> run_file_names();

// The train command's flags.
struct TrainConfig {
  std::string model = kDefaultModel;  // a registered model spec: vgg16, resnet50, resnet50_v1, ...
  std::string train_dir, val_dir, model_dir, weights;
  int64_t batch = 32;
  int64_t phase1_epochs = 10, phase2_epochs = 10;
  double phase1_lr = 1e-3, phase2_lr = 1e-5;
  double momentum = 0, weight_decay = 5e-4, keep_prob = 0.5;
  uint64_t seed = 1;
  std::string device = "auto";
  int64_t image_size = 224;
  std::string head = "fc";           // a head of the model spec (fc: fc6, fc7, fc8; avg: global pool, fc8)
  std::string train_from = "auto";   // first layer phase 1 trains; auto: the first the weights lack, else the head
  int workers = 2;
  int keep = 2;
  std::string convention = "auto";  // or an io convention name, overriding the weights'
  bool no_augment = false;          // central crops, no flips; phase 1 then reuses pool5 features
  bool sync_checkpoints = false;    // each checkpoint on disk before training goes on (not in the background)
  bool feature_cache = true;        // false: with no_augment, still run the full forward (for checks)
  bool probe_head = false;          // --head-init probe: fc8 starts as a ridge fit on the frozen layers' features
  bool eval_at_phase_start = false; // also evaluate when a phase starts (the demo's before/after lines)
  // Batch-norm running statistics estimated on the training images before phase 1: on, off,
  // or auto (on when no --weights gives them, i.e. they are still 0 and 1 as initialised).
  std::string calibrate_bn = "auto";
  int64_t stop_after_epochs = 0;    // > 0: stop once this many epochs are done (resume later)
  int64_t stop_after_steps = 0;     // > 0: stop after this many steps, checkpointing there (resume later)
  int64_t eval_every = 0;           // > 0: also evaluate every this many (global) steps
  int64_t checkpoint_every = 0;     // > 0: also checkpoint every this many (global) steps
  std::string precision = "fp32";    // train/precision.h: fp32, bf16-frozen, bf16
  std::string cuda_graph = "off";    // train/step_graph.h: off, on, auto (not a recipe flag: same results)
  bool allow_changed_config = false;  // resume even when the recipe flags differ from config.txt
  std::string config_text;          // the run's flags, written to config.txt
};

// "key = value" lines of the recipe flags (those a resume must not change), for config.txt.
std::string recipe_config_text(const TrainConfig& cfg);
// A recipe flag (one a resume must not change) and its value as config.txt writes it.
struct RecipeFlag {
  const char* name;  // without "--"
  std::string value;
  bool is_switch;  // a flag without a value, recorded as "1" only when on
};
// The recipe of the run in a model directory, and where it was read.
struct SavedRecipe {
  std::string source;             // config.txt's path, or the newest state file's when config.txt is gone
  std::vector<RecipeFlag> flags;  // none for a new run
};
// The recipe flags config.txt records for the run in `model_dir` when it holds a checkpoint
// to resume (a state file); without config.txt, those the newest checkpoint records itself
// (model, image size, head, seed, batch, precision). A resume's flags left out take these
// values, so "train again on the same --model-dir" needs no flag but the paths.
SavedRecipe saved_recipe(const std::string& model_dir);
// Whether two values of recipe flag `name` are the same: numbers by value (1e-3 equals 0.001).
bool same_recipe_value(const std::string& name, const std::string& a, const std::string& b);
// The recipe flags whose values differ from train's defaults, as " --flag value" for a
// command line to print (the demo's train line, which a resume reruns as is).
std::string recipe_flags_changed(const TrainConfig& cfg);

// "auto" takes cuda:0 when a GPU is present; prints which device it took and why.
Device choose_device(const std::string& flag);

// main()'s first call, before any thread exists: blocks SIGINT and SIGTERM in every thread
// and takes them on a thread of its own, so no handler runs anywhere (kernels/cpu/onednn.h).
// While run_train trains the first asks it to stop at a checkpoint; otherwise they end the
// process as their default action would. One the process started ignoring stays ignored.
void start_stop_signal_relay();

// Checks the data and the model directory, then trains (or resumes) the recipe, printing
// for people. finished is false when a --stop-after-* flag stopped it.
TrainResult run_train(const TrainConfig& cfg);

// A model restored from a model directory's latest (or best) checkpoint.
struct TrainedModel {
  std::unique_ptr<Generator> init, dropout;  // outlive the model
  std::shared_ptr<Sequential> model;
  io::CheckpointInfo checkpoint;
  io::InputConvention convention = io::InputConvention::torchvision_rgb;
  PrecisionUse precision;  // as applied: bf16-frozen has phase 1's boundary (the head in fp32)
};
// precision: a policy name, or "" for the one the checkpoint was trained with.
TrainedModel load_trained(const std::string& model_dir, Device device, bool best = false,
                          const std::string& precision = "");

}  // namespace kiln::app
