// kiln's training loop for any Sequential classifier: phases described as data (what trains,
// learning rate, epochs), the frozen-prefix feature cache derived from each phase's freezing,
// evaluation (train/evaluate.h), checkpoints and resume (io/checkpoint.h) and metrics
// (train/metrics_log.h) as separate pieces, and hooks through which a program prints its own
// words. apps/vgg_finetune's `train` is a thin command over it.
//
// With a model of your own: the model is a Sequential whose last weight layer is the head;
// the spec (train/model_spec.h) needs only a name (recorded in checkpoints as the arch) and
// head_scope (the head's parameter scope, "net/fc2/"), its builder is not called; the data
// are image folders (io::Dataset, io/dataset.h: a folder per class), read through the loader
// (no in-memory tensors). TrainerOptions::run.image_size must equal loader.crop, and
// run.convention the loader's (or stay unknown). run(std::nullopt) starts fresh and refuses a
// model directory that holds checkpoints; run(io::newest_intact_checkpoint(dir).checkpoint)
// resumes. tests/train/test_trainer.cpp's tiny_net runs so.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/dataset.h"
#include "io/loader.h"
#include "layers/layers.h"
#include "layers/schedule.h"
#include "train/communicator.h"
#include "train/evaluate.h"
#include "train/metrics_log.h"
#include "train/model_spec.h"
#include "train/precision.h"
#include "train/step_graph.h"

namespace kiln {

// How a phase's head (the last layer with parameters, a Linear) starts when the phase begins.
enum class HeadInit {
  as_is,         // the weights it has (as built, loaded, or left by the previous phase)
  linear_probe,  // fitted in closed form on the features its frozen inputs give (train/linear_probe.h)
};

// One phase of a recipe.
struct Phase {
  std::string name;  // for people: "head only", "all layers"
  // Module::freeze patterns of the parameters that train ("net/head/"); every other
  // parameter is frozen. Empty: every parameter trains.
  std::vector<std::string> train_patterns;
  double lr = 1e-3;
  // The rate by optimizer step (counted over the phase's optimizer); null: lr throughout.
  std::shared_ptr<const Schedule> schedule;
  int64_t epochs = 1;
  double momentum = 0;      // SGD momentum
  double weight_decay = 0;  // L2 on the trainable weights, in the loss (classification_loss)
  // linear_probe: when the phase starts (not on a resume into it), the head is refitted by
  // ridge regression on the training set's features at its input (the layers before it as
  // they are then, in evaluation mode); the phase must train the head.
  HeadInit head_init = HeadInit::as_is;
};

// A CRC32C of `ds`'s samples, paths relative to its root and labels, in order: what the
// loader's epoch order is drawn over, so a mid-epoch resume can tell the data changed.
uint32_t samples_digest(const io::Dataset& ds);

// Why a checkpoint cannot resume a run of model `arch` at `image_size` on `classes`: ""
// when it can, else the first difference in the checkpoint's words ("model resnet50, not
// this run's vgg16"), for each caller's own advice. These make the model another one; the
// recipe (rates, precision) is each caller's to compare.
std::string resume_mismatch(const io::CheckpointMeta& saved, const std::string& arch, int64_t image_size,
                            const std::vector<std::string>& classes);

// Freezes `model` as `phase` says: its train_patterns train, everything else is frozen.
void apply_phase(Sequential& model, const Phase& phase);

// What the freezing now applied does to a model's batch-norm layers. A frozen BatchNorm2d
// normalises with its running statistics even in training mode and leaves them as they are
// (layers/layers.h), so a frozen backbone computes the same features as at evaluation.
struct BatchNormUse {
  int64_t layers = 0;  // BatchNorm2d modules in the model
  int64_t frozen = 0;  // of them, frozen: running statistics, not updated
};
BatchNormUse batch_norm_use(Module& model);

// What calibrate_batch_norm did.
struct BatchNormCalibration {
  int64_t layers = 0, batches = 0, images = 0;
  double seconds = 0;
};
// Re-estimates every BatchNorm2d's running statistics on `ds` (in order, no augmentation, no
// graph, dropout off): each layer normalises with batch statistics and its running ones become
// their average over the batches (those of one image are left out). For a model whose
// statistics do not describe this data, e.g. randomly initialised: evaluation, a frozen
// backbone and a linear probe then see what training-mode batch norm sees.
BatchNormCalibration calibrate_batch_norm(Sequential& model, const io::Dataset& ds, io::LoaderOptions opt);

// What a run is and where it writes. A field that changes which collectives a data-parallel
// rank runs, or what it computes, belongs in run_fingerprint (trainer.cpp) too: ranks that
// differ there are refused at the start rather than exchanging each other's numbers.
struct TrainerOptions {
  std::vector<Phase> phases;
  // The training loader (batch size, workers, seed, crops, convention, device, augment);
  // validation uses the same without shuffling, augmentation or drop_last. Where it starts
  // (start_epoch, start_batch) is the Trainer's: from the checkpoint it resumes, else 0.
  io::LoaderOptions loader;
  // Serve a phase from cached features of its frozen prefix when the loader does not augment.
  bool feature_cache = true;
  int64_t eval_every = 0;         // > 0: also evaluate every this many global steps
  int64_t checkpoint_every = 0;   // > 0: also checkpoint every this many global steps
  int64_t stop_after_epochs = 0;  // > 0: stop once this many epochs are done
  int64_t stop_after_steps = 0;   // > 0: stop after this many steps, checkpointing there
  // A stop TrainerHooks::should_stop asks for first checkpoints where it is (vgg_finetune's
  // Ctrl-C), so a resume loses nothing; false: it leaves the last checkpoint (kiln.train's).
  bool checkpoint_on_stop = false;
  bool eval_at_phase_start = false;  // also evaluate when a phase starts (not on a resume into it)
  // Before the first phase of a fresh run (not on a resume), calibrate_batch_norm on the
  // training set; a model without batch norm is left as it is.
  bool calibrate_batch_norm = false;
  // A resume into a phase whose optimizer settings (momentum) differ from the checkpoint's is
  // refused unless this is set (vgg_finetune's --allow-changed-config); io::restore_optimizer.
  bool allow_changed_optimizer_settings = false;
  // Which layers compute in bf16, applied at each phase's start (train/precision.h); recorded
  // in checkpoints.
  Precision precision = Precision::fp32;
  std::string model_dir;          // checkpoints go here (created when missing)
  int keep = 2;                   // checkpoints kept besides the best (1 or more)
  // Checkpoint files are written on a thread of their own (io::CheckpointWriter) while the
  // next steps run; the training thread only copies the tensors to the host. A run ends, and
  // a stop is reported, once the last write is on disk; a failed write stops the run at the
  // next checkpoint or its end. false: each checkpoint is written before training goes on.
  bool background_checkpoints = true;
  // Copied into every checkpoint (image_size, classes, convention, seed); arch is the spec's
  // name, classes default to the training set's. image_size must be loader.crop; convention
  // the loader's, or unknown (then the loader's is recorded).
  io::CheckpointMeta run;
  Generator* init_gen = nullptr;     // their states go into checkpoints (may be null)
  Generator* dropout_gen = nullptr;
  MetricsLog* metrics = nullptr;     // CSV and TensorBoard, when given
  // Data-parallel training (docs/data_parallel.md): this process is one rank of comm's group
  // (null or a group of one: a single process). loader.batch_size is then the global batch;
  // each rank trains on its shard of every batch, gradients are summed over the ranks in
  // buckets of bucket_bytes, and only rank 0 writes checkpoints and metrics.
  Communicator* comm = nullptr;
  int64_t bucket_bytes = int64_t{25} << 20;
  bool check_replicas = false;  // after every step, fail unless all ranks hold identical weights (tests)
  // Head-only phases on a CUDA device record their step once as a CUDA graph and replay it
  // per full-size batch (train/step_graph.h: choose_step_graph says where); partial batches,
  // other phases, the CPU and a failed capture run the eager step. Same results either way.
  CudaGraphMode cuda_graph = CudaGraphMode::off;
};

// Where the loop is, for progress lines and hooks.
struct StepInfo {
  int phase = 1;  // 1-based
  int64_t epoch_in_phase = 1, phase_epochs = 1;
  int64_t step_in_epoch = 0, steps = 0, batches_in_epoch = 0, global_step = 0;
  double loss_sum = 0, seconds = 0;  // over this epoch so far (seconds: in this process)
  int64_t correct = 0, seen = 0;
  // Of them, the images and steps this process trained in `seconds`: all of them, but after a
  // mid-epoch resume only those since (img/s and ETA are computed from these).
  int64_t timed_seen = 0, timed_steps = 0;
};

// How a phase's batches are served.
struct FeatureMode {
  int phase = 1;
  bool cached = false;  // true: the cache was just computed; false: full forward with a frozen prefix
  size_t cut = 0;       // the first child run per step
  int64_t train_rows = 0, val_rows = 0;
  double seconds = 0, mib = 0;
};

// How a phase's steps run, reported once per phase when TrainerOptions::cuda_graph is not off:
// recorded and replayed, or eager and why.
struct StepModeInfo {
  int phase = 1;
  bool graph = false;
  std::string why;
};

// A head fitted by a linear probe (HeadInit::linear_probe) at a phase's start.
struct HeadInitInfo {
  int phase = 1;
  std::string layer;        // the head's name
  int64_t rows = 0, features = 0;
  double lambda = 0;        // the ridge strength chosen on held-out training rows
  double holdout_acc = -1;  // accuracy on those rows at that strength
  double train_acc = 0;     // of the final fit, on every training row
  double seconds = 0;       // features and fit
};

// Why a run stopped early.
struct StopInfo {
  // requested: TrainerHooks::should_stop said so after a step; `checkpoint` is the one
  // written there (TrainerOptions::checkpoint_on_stop) or else the last one, which a resume
  // starts from.
  // already_past: the checkpoint resumed stands at or past the stop asked for; nothing ran.
  enum class Kind { steps_mid_epoch, steps_epoch_end, epochs, requested, already_past } kind;
  int64_t global_step = 0, epochs_done = 0, total_epochs = 0;
  std::string checkpoint;  // steps_mid_epoch: the one written there; requested: the last one; already_past: resumed
};

// Callbacks; each may be empty. The trainer prints nothing itself.
struct TrainerHooks {
  std::function<void(int phase, const Phase&, Sequential& model)> on_phase_start;
  std::function<void(const FeatureMode&)> on_feature_mode;
  std::function<void(const StepModeInfo&)> on_step_mode;
  std::function<void(int phase, const PrecisionUse&)> on_precision;  // after on_phase_start's freezing
  // eval_at_phase_start: the evaluation before the phase's first step ("before"), and after
  // its head was fitted ("after the linear probe") when it has HeadInit::linear_probe.
  std::function<void(int phase, const std::string& when, const EvalResult&)> on_phase_eval;
  std::function<void(const HeadInitInfo&)> on_head_init;
  std::function<void(const BatchNormCalibration&)> on_batch_norm_calibrated;
  std::function<void(int64_t batches, int64_t epoch)> on_resume_skip;  // epoch 1-based
  // A resume at an epoch's end over training data other than the checkpoint's (`then` and
  // `now` samples): it goes on with today's data (a mid-epoch resume is refused instead).
  std::function<void(int64_t then, int64_t now)> on_data_changed;
  std::function<void(const StepInfo&)> on_step;
  std::function<void(const StepInfo&, const EvalResult&)> on_eval;  // every eval_every steps
  // Before the epoch's checkpoint; what it throws ends the run once that checkpoint is written.
  std::function<void(const EpochSummary&)> on_epoch;
  // After the epoch's checkpoint is on disk (a background write is waited for first, so a
  // reader of model_dir here sees it), with its state file; after on_epoch, and not called
  // when on_epoch threw. What it throws ends the run, that checkpoint kept (kiln.train's on_epoch).
  // Data-parallel, every rank's runs after rank 0 has written it, with the same path.
  std::function<void(const EpochSummary&, const std::string& checkpoint)> on_epoch_saved;
  std::function<void(const StopInfo&)> on_stop;
  // Asked after every training step (and its checkpoint, if one was due) and after each
  // epoch's checkpoint but the last; true ends the run there, unfinished (checkpointed there
  // with TrainerOptions::checkpoint_on_stop): a caller's interrupt (Ctrl-C) stops within one
  // step or one evaluation. Data-parallel, it is asked on every rank before each step's
  // all-reduce, and all ranks stop after the step where any said true (and likewise at an
  // epoch's end), so a signal to one rank stops them all at one place.
  std::function<bool()> should_stop;
};

// Where a run's wall time went, in seconds: the training steps (waits for data included),
// evaluations, checkpoints (the finiteness check and the write), linear probes, feature
// caches (a frozen backbone's features computed once for a phase), and the rest (phase
// set-up, batch-norm calibration). The recipe's end-to-end time is what users wait for;
// this says which part to make faster.
struct RunTimes {
  double total = 0, steps = 0, evaluation = 0, checkpoints = 0, probe = 0, caches = 0;
  // Within the parts above (a GPU run's first steps, evaluations and probes), the time spent
  // choosing convolution plans (ConvApiCounts::plan_seconds); 0 on the CPU.
  double conv_plans = 0;
  double other() const { return total - steps - evaluation - checkpoints - probe - caches; }
};

// What a run ended with.
struct TrainResult {
  RunTimes times;              // this process's share of the run (a resume counts from its start)
  EvalResult val;              // the last evaluation (from the checkpoint when nothing ran)
  bool finished = false;       // false: stopped early
  bool interrupted = false;    // stopped because TrainerHooks::should_stop asked
  std::string last_checkpoint;  // state file of the last checkpoint ("" when none was written or resumed from)
};

// Runs a recipe's phases over `model` (built by `spec`; labels are the data sets' class
// indices). The model is on the loader's device; the data sets outlive the trainer.
class Trainer {
 public:
  Trainer(Sequential& model, const ModelSpec& spec, const io::Dataset& train, const io::Dataset& val,
          TrainerOptions options, TrainerHooks hooks = {});
  ~Trainer();
  // Trains from the start, or from `resume`: the caller has imported its weights into the
  // model and set the generators to its init_gen/dropout_gen; the optimizer state, the
  // epoch, step and data position and the epoch's running statistics are restored here.
  TrainResult run(const std::optional<io::CheckpointInfo>& resume);

 private:
  struct State;
  TrainResult run_all(const std::optional<io::CheckpointInfo>& resume);
  bool run_epoch(int64_t e, State& s);
  bool train_steps(int64_t e, State& s);
  bool train_step(const Tensor& x, const Tensor& y, int64_t row_first, int64_t rows_global, int64_t e, State& s);
  // The global index of the current phase's first epoch.
  int64_t phase_first_epoch(const State& s) const;
  // "trainer: phase P epoch E/N, batch B of S": where a step's error happened, in the data's terms.
  std::string batch_context(int64_t e, const State& s) const;
  bool graph_step(const Tensor& x, const Tensor& y, double& loss, double& total, int64_t& correct, State& s);
  void choose_step_mode(State& s);
  std::string save(const io::CheckpointMeta& meta, State& s);
  // Waits for the checkpoint being written (TrainerOptions::background_checkpoints), counted
  // as checkpoint time; throws when it failed. Before a run ends or reports a stop.
  void flush_checkpoints(State& s);
  // flush_checkpoints, then the result.
  TrainResult finish(State& s);
  // flush_checkpoints, then hooks' on_stop: a stop is reported with its checkpoint on disk.
  void report_stop(State& s, const StopInfo& info);
  void begin_phase(int64_t e, State& s);
  void start_phase(int number, State& s);
  HeadInitInfo fit_head(int number, State& s);
  EvalResult evaluate_now(State& s);
  // Rank 0, or the only process: the one that writes the model directory.
  bool is_root() const { return opt_.comm == nullptr || opt_.comm->rank() == 0; }
  // A stop should_stop asked for, `epochs_done` epochs in: reported, and false (the run ends).
  bool stopped_on_request(State& s, int64_t epochs_done);
  // should_stop's answer outside a step; data-parallel, true on every rank when any asks.
  bool stop_asked(State& s);
  // Data-parallel: after an epoch's checkpoint, every rank learns whether any failed (`what`
  // failed there: "their on_epoch hook or metrics log threw"), and a rank that did not fail
  // throws, naming those that did. Returns whether any rank wants_saved (has an
  // on_epoch_saved hook); alone, wants_saved itself.
  bool agree_on_epoch_errors(bool failed_here, bool wants_saved, int64_t epoch, const char* what, State& s);
  // After the epoch's checkpoint: on_epoch_saved with that checkpoint on disk (rank 0's, on
  // every rank), unless on_epoch threw (hook_error, then set to what on_epoch_saved throws);
  // data-parallel, the ranks agree on every failure first and after.
  void after_epoch_saved(const EpochSummary& sum, std::exception_ptr& hook_error, bool log_failed, int64_t epoch,
                         State& s);
  void check_weights_finite(const io::CheckpointMeta& meta, const State& s) const;
  void check_resume_data(const io::CheckpointInfo& resume) const;
  io::CheckpointMeta meta_at(int64_t epochs_done, int64_t batches_done, const EvalResult* val, const State& s) const;

  Sequential& model_;
  const ModelSpec& spec_;
  const io::Dataset& train_;
  const io::Dataset& val_;
  TrainerOptions opt_;
  TrainerHooks hooks_;
  uint32_t data_digest_ = 0;  // samples_digest(train_)
  std::optional<io::DirLock> dir_lock_;  // model_dir, held by rank 0 from construction (when it exists) or run
};

// Data-parallel (o.comm over 2+ ranks): refuses on every rank, naming the first difference, a
// start whose model, recipe, data or resume point differ from rank 0's; nothing otherwise.
// Trainer::run checks this first; a program calls it itself to check before it writes files
// of its own (vgg_finetune's classes.txt and config.txt), so a refused start writes nothing.
void check_ranks_agree(Sequential& model, const ModelSpec& spec, const TrainerOptions& o, const io::Dataset& train,
                       const io::Dataset& val, const std::optional<io::CheckpointInfo>& resume);

}  // namespace kiln
