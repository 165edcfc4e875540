// The training loop (see trainer.h): epochs of steps with resume from any checkpoint,
// mid-epoch included, bit for bit as an uninterrupted run.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <sstream>
#include <utility>

#include "core/conv_api.h"
#include "io/crc32c.h"
#include "layers/loss.h"
#include "layers/optim.h"
#include "train/data_parallel.h"
#include "train/format.h"
#include "train/linear_probe.h"

namespace kiln {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The order the training loader would serve epoch `epoch` in (a loader only asked for it).
std::vector<int64_t> epoch_order_of(const io::Dataset& ds, io::LoaderOptions opt, int64_t epoch) {
  opt.num_workers = 1;
  opt.prefetch_batches = 1;
  opt.batch_size = 1;
  opt.cache_bytes = 0;
  io::Loader l(ds, opt);
  return l.epoch_order(static_cast<uint64_t>(epoch));
}

// The cache advanced to the input of child `to`: children [from.cut, to) run on every cached
// row in evaluation mode, in batches of `batch` rows on `device`.
FeatureCache advance_features(Sequential& model, const FeatureCache& from, size_t to, int64_t batch, Device device) {
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  FeatureCache out;
  out.cut = to;
  out.row = from.row;
  std::vector<int64_t> idx;  // dataset indices in row order
  for (size_t i = 0; i < from.row.size(); ++i)
    if (from.row[i] >= 0) idx.push_back(static_cast<int64_t>(i));
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    return from.row[static_cast<size_t>(a)] < from.row[static_cast<size_t>(b)];
  });
  FeatureRows all;
  for (size_t at = 0; at < idx.size(); at += static_cast<size_t>(batch)) {
    const size_t end = std::min(idx.size(), at + static_cast<size_t>(batch));
    Tensor x, y;
    gather(from, std::vector<int64_t>(idx.begin() + static_cast<std::ptrdiff_t>(at),
                                      idx.begin() + static_cast<std::ptrdiff_t>(end)),
           device, x, y);
    x = model.forward_range(from.cut, to, x);
    all.add(x);
    const std::vector<int64_t> lab = y.to_vector<int64_t>();
    out.labels.insert(out.labels.end(), lab.begin(), lab.end());
  }
  model.train(was_training);
  out.item_shape = all.item_shape();
  out.feats = all.take();
  return out;
}

// What every rank must agree on before training together: model, recipe, data, position.
std::string run_fingerprint(Sequential& model, const ModelSpec& spec, const TrainerOptions& o, const io::Dataset& train,
                            const io::Dataset& val, const std::optional<io::CheckpointInfo>& resume) {
  std::ostringstream f;
  f << "model " << spec.name << "\n";
  for (const ParameterRef& p : model.parameters()) f << "parameter " << p.name << " " << p.tensor->shape().str() << "\n";
  for (const Phase& p : o.phases) {
    f << "phase " << p.name << " lr " << p.lr << " epochs " << p.epochs << " momentum " << p.momentum << " decay "
      << p.weight_decay << " probe " << (p.head_init == HeadInit::linear_probe) << " trains";
    for (const std::string& t : p.train_patterns) f << " " << t;
    f << "\n";
  }
  for_each_module<Dropout>(model, [&](Dropout& d) { f << "dropout " << d.name() << " keep " << d.keep_prob() << "\n"; });
  const io::LoaderOptions& l = o.loader;
  f << "batch " << l.batch_size << " seed " << o.run.seed << " (loader " << l.seed << ") shuffle " << l.shuffle
    << " augment " << l.augment << " crop " << l.crop << " resize " << l.resize_shorter << " drop_last " << l.drop_last
    << "\n";
  // What makes ranks issue other collectives (an evaluation's all-reduce against a step's
  // exchanged each other's numbers; a feature cache against none deadlocked) or compute
  // other things: found by a review starting one rank with another flag.
  f << "precision " << precision_name(o.precision) << " feature_cache " << o.feature_cache << " eval_every "
    << o.eval_every << " checkpoint_every " << o.checkpoint_every << " stop_after " << o.stop_after_epochs
    << " epochs " << o.stop_after_steps << " steps calibrate_bn " << o.calibrate_batch_norm << " phase_eval "
    << o.eval_at_phase_start << " cuda_graph " << static_cast<int>(o.cuda_graph) << "\n";
  // The samples themselves (paths relative to the data folder, labels): counts alone let two
  // images swapped between classes on one rank train on mixed labels.
  f << "train " << train.size() << " images, digest " << samples_digest(train) << ", classes";
  for (const std::string& c : train.classes) f << " " << c;
  f << "\nval " << val.size() << " images, digest " << samples_digest(val) << "\n";
  f << "resume " << (resume ? "from the checkpoint at step " + std::to_string(resume->meta.global_step)
                            : std::string("none (no checkpoint in this rank's model directory)")) << "\n";
  return f.str();
}

// The model's last child with parameters (its head), or children().size() when none has any.
size_t head_child(Sequential& model) {
  const auto& c = model.children();
  for (size_t i = c.size(); i-- > 0;)
    if (!c[i]->parameters().empty()) return i;
  return c.size();
}

// True when the freezing now applied trains the head alone: some parameter is frozen and
// every trained one belongs to the last child with parameters (a recipe's phase 1).
bool trains_only_head(Sequential& model) {
  const auto& c = model.children();
  const size_t h = head_child(model);
  bool frozen = false, trained = false;
  for (size_t i = 0; i < c.size(); ++i)
    for (const ParameterRef& p : c[i]->parameters()) {
      if (p.trainable && i != h) return false;
      frozen = frozen || !p.trainable;
      trained = trained || p.trainable;
    }
  return frozen && trained;
}

// Clears a generator's data-parallel row window however the step is left.
struct RowWindow {
  Generator* gen;
  RowWindow(Generator* g, int64_t first, int64_t local, int64_t global) : gen(g) {
    if (gen) gen->set_row_window(first, local, global);
  }
  ~RowWindow() {
    if (gen) gen->set_row_window(0, 0, 0);
  }
};

// Every phase's train patterns match some parameter of the model: checked when the trainer
// is made, before anything is written, not when the phase starts.
void check_phase_patterns(Module& model, const std::vector<Phase>& phases) {
  const std::vector<ParameterRef> params = model.parameters();
  for (const Phase& ph : phases)
    for (const std::string& p : ph.train_patterns) {
      const bool any =
          std::any_of(params.begin(), params.end(), [&](const ParameterRef& r) { return name_matches(p, r.name); });
      KILN_CHECK(any, "phase '", ph.name, "' trains '", p, "', which matches no parameter of ", model.name(), " (",
                 params.empty() ? std::string("it has no parameters") : "names look like '" + params.front().name + "'",
                 "; a scope ends in '/', a glob uses * and ?)");
    }
}

}  // namespace

void apply_phase(Sequential& model, const Phase& phase) {
  const std::string all = model.name() + "/";
  if (phase.train_patterns.empty()) {
    model.unfreeze(all);
    return;
  }
  model.freeze(all);
  for (const std::string& p : phase.train_patterns) {
    try {
      model.unfreeze(p);
    } catch (const Error& e) {  // the caller wrote a phase, not an unfreeze call
      KILN_FAIL("phase '", phase.name, "' trains '", p, "', which matches nothing: ", e.message());
    }
  }
}

BatchNormUse batch_norm_use(Module& model) {
  BatchNormUse u;
  for_each_module<BatchNorm2d>(model, [&u](BatchNorm2d& bn) {
    ++u.layers;
    u.frozen += bn.weight().requires_grad() ? 0 : 1;
  });
  return u;
}

namespace {

int64_t set_calibrating(Module& m, bool on) {
  int64_t layers = 0;
  for_each_module<BatchNorm2d>(m, [on, &layers](BatchNorm2d& bn) {
    bn.calibrate(on);
    ++layers;
  });
  return layers;
}

// Calibration mode and eval mode for a scope: restored however it is left.
struct CalibrationScope {
  Sequential& model;
  bool was_training;
  int64_t layers;
  explicit CalibrationScope(Sequential& m) : model(m), was_training(m.training()), layers(set_calibrating(m, true)) {
    model.eval();
  }
  ~CalibrationScope() {
    set_calibrating(model, false);
    model.train(was_training);
  }
};

}  // namespace

BatchNormCalibration calibrate_batch_norm(Sequential& model, const io::Dataset& ds, io::LoaderOptions opt) {
  const auto t0 = Clock::now();
  BatchNormCalibration c;
  {
    CalibrationScope scope(model);
    c.layers = scope.layers;
    if (c.layers == 0) return c;
    opt.shuffle = false;
    opt.augment = false;
    opt.start_epoch = 0;
    io::Loader loader(ds, opt);
    NoGradGuard no_grad;
    while (auto b = loader.next()) {
      if (b->images.dim(0) < 2) continue;  // one image: its batch variance is no estimate
      model(b->images);
      ++c.batches;
      c.images += b->images.dim(0);
    }
  }
  KILN_CHECK(c.batches > 0, "batch-norm calibration: '", ds.root,
             "' gave no batch of two or more readable images to estimate statistics from");
  c.seconds = seconds_since(t0);
  return c;
}

// Everything that lives across epochs of one run.
struct Trainer::State {
  std::optional<io::CheckpointInfo> resume;
  int64_t start_epoch = 0, global_step = 0;
  size_t phase = 0;            // index into phases of the epoch running
  int opt_phase = 0;           // 1-based phase the optimizer was built for; 0: none yet
  std::unique_ptr<SGD> optimizer;
  // Data-parallel (TrainerOptions::comm with more than one rank).
  bool dist = false, root = true;
  bool stop_agreed = false;    // some rank's should_stop said yes before the last step's all-reduce
  std::unique_ptr<GradientReducer> reducer;
  io::LoaderOptions elo;       // the evaluation loader's: vlo sharded
  std::unique_ptr<io::Loader> train_loader, val_loader;
  io::LoaderOptions lo, vlo;
  FeatureCache train_cache, val_cache;
  bool cached = false;         // this epoch is served from the caches
  // This epoch's running statistics and data position.
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, step_in_epoch = 0, batches_in_epoch = 0, steps = 0;
  int64_t seen0 = 0, steps0 = 0;  // seen and step_in_epoch when this process took the epoch up (a resume)
  std::vector<int64_t> order;  // cached: the epoch's sample order
  size_t order_at = 0;
  Clock::time_point t0;        // the epoch's start
  TrainResult result;
  std::unique_ptr<io::CheckpointWriter> writer;  // TrainerOptions::background_checkpoints, rank 0
  std::shared_ptr<const io::FrozenImage> frozen_image;  // the last checkpoint's, reused while it holds
  // The phase's recorded step (TrainerOptions::cuda_graph), decided per phase and input.
  struct Graph {
    int phase = 0;               // 1-based phase decided for; 0: none yet
    bool cached = false;         // the input it was decided for: cached features from child `cut`
    size_t cut = 0;
    bool use = false;            // record and replay this phase's full-size steps
    bool warm = false;           // the eager warm-up step has run
    int64_t classes = 0;         // the logits' width, for the host-side label check
    std::unique_ptr<StepGraph> step;
  } graph;
};

namespace {

int64_t total_epochs(const std::vector<Phase>& phases) {
  int64_t total = 0;
  for (const Phase& p : phases) total += p.epochs;
  return total;
}

// The 1-based phase that `phases` put 0-based epoch e in.
int phase_of_epoch(const std::vector<Phase>& phases, int64_t e) {
  size_t i = 0;
  for (int64_t first = 0; i + 1 < phases.size() && e >= first + phases[i].epochs; ++i) first += phases[i].epochs;
  return static_cast<int>(i) + 1;
}

// A checkpoint's phase is the one this run's phases put its epoch in: a resume that changed the
// length of a phase it has run into (a hand-edited config.txt, another recipe from Python)
// would run one phase's epochs after the next one's, or end a phase before what it ran.
void check_resume_phase(const io::CheckpointInfo& c, const std::vector<Phase>& phases) {
  const io::CheckpointMeta& m = c.meta;
  const int64_t e = m.batches_done > 0 ? m.epochs_done : m.epochs_done - 1;  // the epoch its phase is of
  if (e < 0 || e >= total_epochs(phases)) return;  // past the end: nothing trains
  const int now = phase_of_epoch(phases, e);
  KILN_CHECK(now == m.phase, "trainer: checkpoint '", c.state_path, "' is in phase ", m.phase, " at epoch ", e + 1,
             ", but this run's phases put epoch ", e + 1, " in phase ", now, ": a resume cannot change the epochs ",
             "of a phase it has already run into (", now > m.phase ? "that phase would end before the epochs it ran"
                                                                   : "that phase would run again after the next",
             "); give the phases the epochs the run had, or start a new run");
}

// The batch epoch e starts at: a mid-epoch checkpoint's batches_done in the epoch it
// resumes, else 0. It may be all of the epoch's `epoch_batches` (a stop asked for after the
// epoch's last batch: the resume serves none and goes on to the epoch's evaluation and
// checkpoint), never more (a checkpoint too old to record its batch size, resumed in
// larger batches).
int64_t resume_batch(int64_t e, const std::optional<io::CheckpointInfo>& resume, int64_t start_epoch,
                     int64_t epoch_batches) {
  if (!resume || e != start_epoch || resume->meta.batches_done == 0) return 0;
  const io::CheckpointMeta& m = resume->meta;
  KILN_CHECK(m.batches_done > 0 && m.batches_done <= epoch_batches, "trainer: checkpoint '", resume->state_path,
             "' stopped ", m.batches_done, " batches into epoch ", e + 1, ", but this run's epoch has ",
             epoch_batches, " batches (was the batch size changed?): resume with the run's batch size, or move that "
             "checkpoint's files aside to resume from the last epoch's end");
  return m.batches_done;
}

// The options' numbers, before anything runs: a negative count or rate would be taken in
// silence (a phase of -2 epochs trains nothing, keep=-1 wraps to keeping everything).
void check_options(const TrainerOptions& o) {
  KILN_CHECK(!o.phases.empty(), "trainer: no phase to run");
  KILN_CHECK(o.loader.batch_size > 0, "trainer: the batch size must be positive, got ", o.loader.batch_size);
  KILN_CHECK(o.keep >= 1, "trainer: keep must be 1 or more (the checkpoints kept besides the best; the newest is "
             "what a resume starts from), got ", o.keep);
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"checkpoint_every", o.checkpoint_every},
                                {"eval_every", o.eval_every},
                                {"stop_after_epochs", o.stop_after_epochs},
                                {"stop_after_steps", o.stop_after_steps}})
    KILN_CHECK(v >= 0, "trainer: ", name, " must be 0 (off) or positive, got ", v);
  KILN_CHECK(o.bucket_bytes > 0, "trainer: bucket_bytes must be positive, got ", o.bucket_bytes);
  // What checkpoints record is what the loader feeds: a resume and load_model read it back.
  KILN_CHECK(o.run.image_size == o.loader.crop, "trainer: run.image_size is ", o.run.image_size,
             " but the loader crops ", o.loader.crop, " px inputs; checkpoints record run.image_size as the model's "
             "input size: set both alike");
  KILN_CHECK(o.run.convention == io::InputConvention::unknown || o.run.convention == o.loader.convention,
             "trainer: run.convention is ", io::convention_name(o.run.convention), " but the loader normalises as ",
             io::convention_name(o.loader.convention), "; checkpoints record run.convention as the inputs' "
             "preprocessing: set both alike, or leave run.convention unknown (the loader's is recorded)");
  for (const Phase& p : o.phases) {
    KILN_CHECK(p.epochs >= 0, "trainer: phase '", p.name, "' has ", p.epochs, " epochs; 0 or more");
    KILN_CHECK(std::isfinite(p.lr) && p.lr >= 0, "trainer: phase '", p.name, "' has learning rate ", p.lr,
               "; a finite rate of 0 or more");
    KILN_CHECK(std::isfinite(p.momentum) && p.momentum >= 0 && p.momentum < 1, "trainer: phase '", p.name,
               "' has momentum ", p.momentum, "; 0 <= momentum < 1");
    KILN_CHECK(std::isfinite(p.weight_decay) && p.weight_decay >= 0, "trainer: phase '", p.name,
               "' has weight decay ", p.weight_decay, "; a finite decay of 0 or more");
  }
}

// The model, its spec and the data must agree before anything runs: a registered model run
// under another's name would be checkpointed as that one (and refuse every resume), a head
// sized for other classes trains outputs no data has, and splits labelled by different
// class lists score val against the wrong numbers. (Any other Sequential may run under a
// spec's name: the spec then names its checkpoints only.)
void check_model_fits(Sequential& model, const ModelSpec& spec, const io::Dataset& train, const io::Dataset& val) {
  const std::vector<ParameterRef> params = model.parameters();
  const std::string root = params.empty() ? "" : params.front().name.substr(0, params.front().name.find('/'));
  for (const ModelSpec& other : model_specs())
    KILN_CHECK(root != other.name || root == spec.name, "trainer: the model is a ", root, " (its parameters are named '",
               root, "/...') but the run names it ", spec.name, "; pass '", root, "' as the model's name");
  const ParameterRef head = model.find(spec.head_scope + "weight");
  const int64_t classes = static_cast<int64_t>(train.classes.size());
  KILN_CHECK(head.tensor == nullptr || head.tensor->dim(0) == classes, "trainer: the model's head ", spec.head_scope,
             " has ", head.tensor ? head.tensor->dim(0) : 0, " outputs but the training data ('", train.root,
             "') has ", classes, " classes (", join_names(train.classes, 8), "); build the model with num_classes=",
             classes);
  KILN_CHECK(val.classes == train.classes, "trainer: the validation data ('", val.root, "') is labelled by other "
             "classes (", join_names(val.classes, 8), ") than the training data (", join_names(train.classes, 8), "), so a "
             "label would mean another class in each; audit both together (train/audit.h's audit_splits), which "
             "labels both by one list");
}

}  // namespace

uint32_t samples_digest(const io::Dataset& ds) {
  uint32_t crc = 0;
  const std::string root = ds.root.empty() || ds.root.back() == '/' ? ds.root : ds.root + "/";
  for (const io::Sample& smp : ds.samples) {
    const std::string rel = smp.path.rfind(root, 0) == 0 ? smp.path.substr(root.size()) : smp.path;
    const std::string line = rel + '\t' + std::to_string(smp.label) + '\n';
    crc = io::crc32c_extend(crc, line.data(), line.size());
  }
  return crc;
}

std::string resume_mismatch(const io::CheckpointMeta& saved, const std::string& arch, int64_t image_size,
                            const std::vector<std::string>& classes) {
  if (saved.arch != arch) return "model " + saved.arch + ", not this run's " + arch;
  if (saved.image_size != image_size)
    return "image size " + std::to_string(saved.image_size) + ", not this run's " + std::to_string(image_size);
  if (saved.classes != classes)
    return "classes " + join_names(saved.classes, 8) + " (not this run's " + join_names(classes, 8) + ")";
  return "";
}

Trainer::Trainer(Sequential& model, const ModelSpec& spec, const io::Dataset& train, const io::Dataset& val,
                 TrainerOptions options, TrainerHooks hooks)
    : model_(model), spec_(spec), train_(train), val_(val), opt_(std::move(options)), hooks_(std::move(hooks)) {
  check_options(opt_);
  // The loader's refusal, for the cached path too (which builds no loader).
  KILN_CHECK(io::epoch_batches(static_cast<int64_t>(train.size()), opt_.loader) > 0, "trainer: drop_last with batch "
             "size ", opt_.loader.batch_size, " > the ", train.size(), " training images leaves no batch");
  check_model_fits(model_, spec_, train_, val_);
  check_phase_patterns(model_, opt_.phases);  // after the model is known to be the spec's
  data_digest_ = samples_digest(train_);
  // Locked now when it exists, so that a caller loading a checkpoint before run() (kiln.train)
  // reads one no other run is writing.
  if (is_root() && std::filesystem::is_directory(opt_.model_dir))
    dir_lock_.emplace(opt_.model_dir, "model directory", io::DirLock::Role::writer);
}

Trainer::~Trainer() = default;

TrainResult Trainer::run(const std::optional<io::CheckpointInfo>& resume) {
  const auto t0 = Clock::now();
  const double plans0 = conv_api_counts().plan_seconds;
  TrainResult r = run_all(resume);
  r.times.total = seconds_since(t0);
  r.times.conv_plans = conv_api_counts().plan_seconds - plans0;
  return r;
}

TrainResult Trainer::run_all(const std::optional<io::CheckpointInfo>& resume) {
  if (!resume && is_root()) {
    // A fresh run would write its ckpt-000001 over another run's and prune the rest.
    std::vector<io::DamagedCheckpoint> damaged;
    const std::vector<io::CheckpointInfo> there = io::list_checkpoints(opt_.model_dir, &damaged);
    KILN_CHECK(there.empty() && damaged.empty(), "trainer: model directory '", opt_.model_dir, "' already holds ",
               there.size() + damaged.size(), " checkpoint(s) (", there.empty() ? damaged.back().state_path
                                                                         : there.back().state_path,
               ") and this run starts fresh, so its checkpoints would replace them: resume from them "
               "(kiln.train(..., resume=True); in C++, run(io::newest_intact_checkpoint(dir).checkpoint)), or give "
               "a new model directory");
  }
  std::error_code ec;
  std::filesystem::create_directories(opt_.model_dir, ec);
  KILN_CHECK(!ec && std::filesystem::is_directory(opt_.model_dir), "trainer: cannot create the model directory '",
             opt_.model_dir, "': ", ec ? ec.message() : "not a directory");
  if (!dir_lock_ && is_root()) dir_lock_.emplace(opt_.model_dir, "model directory", io::DirLock::Role::writer);
  State s;
  s.resume = resume;
  s.lo = opt_.loader;
  s.vlo = opt_.loader;
  s.vlo.shuffle = false;
  s.vlo.augment = false;
  s.vlo.drop_last = false;  // drop_last is for training: evaluation and feature caches see every image
  s.lo.start_batch = s.vlo.start_batch = 0;  // the resume's, set on the loader built for it
  s.elo = s.vlo;
  s.dist = opt_.comm != nullptr && opt_.comm->size() > 1;
  s.root = is_root();
  if (s.dist) {
    // Same model, recipe and data everywhere, then rank 0's weights everywhere. The feature
    // cache, calibration and the linear probe read the whole data set on every rank (the
    // same rows, the same results); training and uncached evaluation read shards.
    check_ranks_agree(model_, spec_, opt_, train_, val_, resume);
    broadcast_model(model_, *opt_.comm);
    s.lo.shard_rank = s.elo.shard_rank = opt_.comm->rank();
    s.lo.shard_count = s.elo.shard_count = opt_.comm->size();
  }
  if (resume) {
    const io::CheckpointMeta now = meta_at(0, 0, nullptr, s);  // what this run's checkpoints record
    const std::string differs = resume_mismatch(resume->meta, now.arch, now.image_size, now.classes);
    KILN_CHECK(differs.empty(), "trainer: checkpoint '", resume->state_path, "' was trained with ", differs,
               ", so it cannot resume this run");
    check_resume_data(*resume);
    check_resume_phase(*resume, opt_.phases);
    s.start_epoch = resume->meta.epochs_done;
    s.global_step = resume->meta.global_step;
    s.result.val = EvalResult{resume->meta.val_loss, resume->meta.val_acc, 0, {}};
    s.result.last_checkpoint = resume->state_path;
    // A stop asked for at or before where the checkpoint stands: nothing to train (a step
    // or an epoch more would be past it).
    const io::CheckpointMeta& m = resume->meta;
    const int64_t total = total_epochs(opt_.phases);
    if (m.epochs_done < total && ((opt_.stop_after_steps > 0 && m.global_step >= opt_.stop_after_steps) ||
                                  (opt_.stop_after_epochs > 0 && m.epochs_done >= opt_.stop_after_epochs))) {
      report_stop(s, StopInfo{StopInfo::Kind::already_past, m.global_step, m.epochs_done, total, resume->state_path});
      return s.result;
    }
  }
  if (opt_.metrics && s.root)
    opt_.metrics->start_at(resume ? resume->meta.epochs_done : 0, resume ? resume->meta.global_step : 0);
  if (!resume && opt_.calibrate_batch_norm) {
    const BatchNormCalibration c = calibrate_batch_norm(model_, train_, s.vlo);
    if (c.layers > 0 && hooks_.on_batch_norm_calibrated) hooks_.on_batch_norm_calibrated(c);
  }
  const int64_t total = total_epochs(opt_.phases);
  for (int64_t e = s.start_epoch; e < total; ++e)
    if (!run_epoch(e, s)) return finish(s);
  s.result.finished = true;
  return finish(s);
}

void Trainer::begin_phase(int64_t e, State& s) {
  const Phase& ph = opt_.phases[s.phase];
  const int number = static_cast<int>(s.phase) + 1;
  bool fresh = false;  // the phase starts here, not from a checkpoint inside it
  if (s.opt_phase != number) {
    apply_phase(model_, ph);
    const PrecisionUse pu = apply_precision(model_, opt_.precision);
    SgdOptions so;
    so.lr = static_cast<float>(ph.lr);
    so.momentum = static_cast<float>(ph.momentum);
    s.optimizer = std::make_unique<SGD>(model_, so);
    if (s.resume && e == s.start_epoch && s.resume->meta.phase == number)
      io::restore_optimizer(s.resume->state_path, *s.optimizer, opt_.allow_changed_optimizer_settings);
    else
      fresh = true;
    s.opt_phase = number;
    if (s.dist) s.reducer = std::make_unique<GradientReducer>(model_.trainable_parameters(), *opt_.comm, opt_.bucket_bytes);
    if (hooks_.on_phase_start) hooks_.on_phase_start(number, ph, model_);
    if (hooks_.on_precision) hooks_.on_precision(number, pu);
  }
  const size_t cut = feature_cut(model_);
  s.cached = cut > 0 && !s.lo.augment && opt_.feature_cache;
  if (s.cached && (!s.train_cache.feats.defined() || s.train_cache.cut != cut)) {
    const auto tc = Clock::now();
    // Data-parallel: each rank computes its share of the rows, then all ranks hold all rows.
    s.train_cache = s.dist ? compute_features_sharded(model_, cut, train_, s.vlo, *opt_.comm)
                           : compute_features(model_, cut, train_, s.vlo);
    s.val_cache = s.dist ? compute_features_sharded(model_, cut, val_, s.vlo, *opt_.comm)
                         : compute_features(model_, cut, val_, s.vlo);
    FeatureMode m{number, true, cut, s.train_cache.feats.dim(0), s.val_cache.feats.dim(0), seconds_since(tc),
                  static_cast<double>(s.train_cache.feats.nbytes() + s.val_cache.feats.nbytes()) / (1 << 20)};
    s.result.times.caches += m.seconds;
    if (hooks_.on_feature_mode) hooks_.on_feature_mode(m);
  } else if (!s.cached && cut > 0 && e == s.start_epoch) {
    if (hooks_.on_feature_mode) hooks_.on_feature_mode(FeatureMode{number, false, cut, 0, 0, 0, 0});
  }
  if (!s.cached) {
    // Built when first needed: a phase served from cached features reads no batch of them,
    // and the training loader must start at the epoch it first serves.
    if (!s.train_loader) {
      s.lo.start_epoch = static_cast<uint64_t>(e);
      io::LoaderOptions first = s.lo;
      const int64_t batches = io::epoch_batches(static_cast<int64_t>(train_.size()), s.lo);
      first.start_batch = resume_batch(e, s.resume, s.start_epoch, batches);
      s.train_loader = std::make_unique<io::Loader>(train_, first);
    }
    if (!s.val_loader) s.val_loader = std::make_unique<io::Loader>(val_, s.elo);
  }
  if (fresh) start_phase(number, s);
}

void Trainer::start_phase(int number, State& s) {
  const Phase& ph = opt_.phases[static_cast<size_t>(number - 1)];
  if (opt_.eval_at_phase_start && hooks_.on_phase_eval) hooks_.on_phase_eval(number, "before", evaluate_now(s));
  if (ph.head_init != HeadInit::linear_probe) return;
  const HeadInitInfo info = fit_head(number, s);
  s.result.times.probe += info.seconds;
  if (hooks_.on_head_init) hooks_.on_head_init(info);
  if (opt_.eval_at_phase_start && hooks_.on_phase_eval)
    hooks_.on_phase_eval(number, "after the linear probe", evaluate_now(s));
}

HeadInitInfo Trainer::fit_head(int number, State& s) {
  const auto t0 = Clock::now();
  const auto& c = model_.children();
  const size_t h = head_child(model_);
  auto* head = h < c.size() ? dynamic_cast<Linear*>(c[h].get()) : nullptr;
  KILN_CHECK(head != nullptr && head->parameters().size() == 2, "trainer: phase ", number,
             " starts its head with a linear probe, but the model's last layer with parameters is not a Linear with a "
             "bias");
  for (const ParameterRef& p : head->parameters())
    KILN_CHECK(p.trainable, "trainer: phase ", number, " starts its head ", head->name(),
               " with a linear probe but does not train it (", p.name, " is frozen)");
  // The features at the head's input: from the cache when it reaches that far, else computed.
  const FeatureCache f = s.cached && s.train_cache.cut <= h
                             ? advance_features(model_, s.train_cache, h, s.lo.batch_size, s.lo.device)
                             : compute_features(model_, h, train_, s.vlo);
  const auto classes = static_cast<int64_t>(train_.classes.size());
  const LinearProbe probe = fit_linear_probe(f.feats.to(DType::f32), f.labels, classes);
  Tensor& w = head->weight();
  KILN_CHECK(w.rank() == 2 && w.dim(0) == classes && w.dim(1) == probe.dim, "trainer: the head ", head->name(),
             " is ", w.shape().str(), ", the probe fitted [", classes, ", ", probe.dim, "]");
  w.copy_from(Tensor::from_vector(probe.weight, w.shape()).to(w.device()));
  Tensor& b = head->bias();
  b.copy_from(Tensor::from_vector(probe.bias, b.shape()).to(b.device()));
  return HeadInitInfo{number, head->name(), f.feats.dim(0), probe.dim, probe.lambda, probe.holdout_acc,
                      probe.train_acc, seconds_since(t0)};
}

EvalResult Trainer::evaluate_now(State& s) {
  const auto t0 = Clock::now();
  const auto classes = static_cast<int64_t>(train_.classes.size());
  // Training-mode batch norm updated each rank's running statistics from its shard: one
  // model again before it is evaluated or saved.
  if (s.dist) average_buffers(model_, *opt_.comm);
  EvalResult r = s.cached ? evaluate_cached(model_, s.val_cache, s.lo.batch_size, s.lo.device, classes)
                 : s.dist ? evaluate_sharded(model_, *s.val_loader, classes, *opt_.comm)
                          : evaluate(model_, *s.val_loader, classes);
  s.result.times.evaluation += seconds_since(t0);
  return r;
}

std::string Trainer::save(const io::CheckpointMeta& meta, State& s) {
  const auto t0 = Clock::now();
  check_weights_finite(meta, s);  // on every rank (replicas are equal): all stop together
  // Where rank 0 writes it: every rank's on_epoch_saved gets the same path.
  std::string path = io::checkpoint_state_path(opt_.model_dir, meta.epochs_done, meta.batches_done);
  if (s.root && opt_.background_checkpoints) {
    if (!s.writer) s.writer = std::make_unique<io::CheckpointWriter>();
    s.writer->wait();  // the previous write's error stops the run before another is taken
  }
  if (s.root) {
    io::CheckpointImage image = io::take_checkpoint(opt_.model_dir, model_, *s.optimizer, meta, opt_.keep,
                                                    std::move(s.frozen_image));
    s.frozen_image = image.frozen;
    path = s.writer ? s.writer->submit(std::move(image)) : io::write_checkpoint(image);
  }
  s.result.times.checkpoints += seconds_since(t0);
  return path;
}

void Trainer::flush_checkpoints(State& s) {
  if (!s.writer) return;
  const auto t0 = Clock::now();
  s.writer->wait();
  s.result.times.checkpoints += seconds_since(t0);
}

TrainResult Trainer::finish(State& s) {
  flush_checkpoints(s);
  return s.result;
}

void Trainer::report_stop(State& s, const StopInfo& info) {
  flush_checkpoints(s);
  if (hooks_.on_stop) hooks_.on_stop(info);
}

namespace {

// What a parameter that failed the finite check holds, for its error (read only then): how
// many of its values are NaN and how many infinite, or that none is and its sum overflowed.
std::string non_finite_census(const Tensor& t) {
  const std::vector<float> v = t.to(DType::f32).cpu().to_vector<float>();
  int64_t nan = 0, inf = 0;
  for (const float x : v) {
    nan += std::isnan(x);
    inf += std::isinf(x);
  }
  const std::string of = " of its " + std::to_string(v.size()) + " values";
  if (nan + inf == 0) return "no NaN or infinity" + of + ", but their sum overflows";
  return std::to_string(nan) + " NaN and " + std::to_string(inf) + " infinite" + of;
}

}  // namespace

// A parameter gone NaN or infinite before ReLUs (which map NaN to 0) leaves the loss finite,
// so the loss check alone misses it: each checkpoint first checks what trains (one sum per
// parameter, one read and no temporary: not finite when it holds a NaN or an infinity, or
// values so large their sum overflows, diverged too). The error counts them and names every
// parameter that fails, which tells a divergence (all of a layer, then the layers after it)
// from a few stray values.
void Trainer::check_weights_finite(const io::CheckpointMeta& meta, const State& s) const {
  const NoGradGuard no_grad;
  std::vector<std::string> failed;
  std::string first;
  for (const ParameterRef& p : model_.parameters()) {
    if (!p.trainable || std::isfinite(sum(*p.tensor).item())) continue;
    if (failed.empty()) first = " (" + non_finite_census(*p.tensor) + ")";
    failed.push_back(p.name);
  }
  if (failed.empty()) return;
  KILN_FAIL("parameter '", failed.front(), "' holds NaN or infinity at step ", meta.global_step, first,
            failed.size() > 1 ? ", as do " + join_names({failed.begin() + 1, failed.end()}, 8) : std::string(),
            ": the training diverged inside the network, where ReLU maps NaN to 0 and the loss stays finite "
            "(try a smaller learning rate); not checkpointing it, ",
            s.result.last_checkpoint.empty() ? std::string("no checkpoint was written yet")
                                             : "the last good checkpoint is kept: " + s.result.last_checkpoint);
}

// The loader's order is drawn over the sample list: a mid-epoch checkpoint resumes the same
// epoch only over the same list (else some images would come twice and others never).
void Trainer::check_resume_data(const io::CheckpointInfo& resume) const {
  const io::CheckpointMeta& m = resume.meta;
  // A mid-epoch checkpoint counts batches of its run's size: of another, they are other images.
  const int64_t batch = opt_.loader.batch_size;
  KILN_CHECK(m.batches_done == 0 || m.batch_size == 0 || m.batch_size == batch, "trainer: checkpoint '",
             resume.state_path, "' stopped ", m.batches_done, " batches of ", m.batch_size, " into epoch ",
             m.epochs_done + 1, ", and this run's batches are of ", batch, ": resume with batch size ", m.batch_size,
             ", or move that checkpoint's files aside to resume from the last epoch's end");
  // ... and in its epoch's order: shuffled from the loader's seed, or the data's own. In
  // another order the batches done are other images.
  const io::LoaderOptions& l = opt_.loader;
  if (m.batches_done > 0 && m.loader_seed && m.shuffle) {
    const auto order = [](bool shuffle, uint64_t seed) {
      return shuffle ? "an order shuffled with loader seed " + std::to_string(seed) : std::string("the data's order");
    };
    const bool same = *m.shuffle == l.shuffle && (!l.shuffle || *m.loader_seed == l.seed);
    KILN_CHECK(same, "trainer: checkpoint '", resume.state_path, "' stopped ", m.batches_done, " batches into epoch ",
               m.epochs_done + 1, " of ", order(*m.shuffle, *m.loader_seed), ", and this run's is ",
               order(l.shuffle, l.seed), ": resumed so, that epoch would serve some images twice and others never. "
               "Resume with the checkpoint's ", *m.shuffle != l.shuffle ? "shuffling" : "seed",
               ", or move that checkpoint's files aside to resume from the last epoch's end");
  }
  if (m.data_digest == 0 || m.data_digest == data_digest_) return;  // unknown (older checkpoint) or the same
  const auto now = static_cast<int64_t>(train_.size());
  if (m.epochs_done >= total_epochs(opt_.phases)) return;  // nothing trains: the change acts on nothing
  KILN_CHECK(m.batches_done == 0, "trainer: the training data ('", train_.root, "') changed since checkpoint '",
             resume.state_path, "' (", m.data_size, " images then, ", now, " now), which stopped ", m.batches_done,
             " batches into an epoch: resumed over other images, that epoch would serve some twice and others never. "
             "Restore the data, or move that checkpoint's files aside to resume from the last epoch's end");
  if (hooks_.on_data_changed) hooks_.on_data_changed(m.data_size, now);
}

io::CheckpointMeta Trainer::meta_at(int64_t epochs_done, int64_t batches_done, const EvalResult* val,
                                    const State& s) const {
  io::CheckpointMeta meta = opt_.run;
  if (meta.convention == io::InputConvention::unknown) meta.convention = opt_.loader.convention;
  meta.arch = spec_.name;
  meta.precision = precision_name(opt_.precision);
  if (meta.classes.empty()) meta.classes = train_.classes;
  meta.data_size = static_cast<int64_t>(train_.size());
  meta.data_digest = data_digest_;
  meta.batch_size = s.lo.batch_size;
  meta.loader_seed = s.lo.seed;
  meta.shuffle = s.lo.shuffle;
  meta.epochs_done = epochs_done;
  meta.batches_done = batches_done;
  meta.global_step = s.global_step;
  meta.phase = static_cast<int>(s.phase) + 1;
  meta.val_loss = val ? val->loss : 0.0;
  meta.val_acc = val ? val->acc : -1.0;
  meta.epoch_loss_sum = 0;
  meta.epoch_correct = meta.epoch_seen = meta.epoch_steps = 0;
  if (batches_done > 0) {
    meta.epoch_loss_sum = s.loss_sum;
    meta.epoch_correct = s.correct;
    meta.epoch_seen = s.seen;
    meta.epoch_steps = s.step_in_epoch;
  }
  if (opt_.init_gen) meta.init_gen = opt_.init_gen->state();
  if (opt_.dropout_gen) meta.dropout_gen = opt_.dropout_gen->state();
  return meta;
}

bool Trainer::run_epoch(int64_t e, State& s) {
  s.phase = static_cast<size_t>(phase_of_epoch(opt_.phases, e) - 1);
  const Phase& ph = opt_.phases[s.phase];
  begin_phase(e, s);
  choose_step_mode(s);
  model_.train();
  s.t0 = Clock::now();
  s.loss_sum = 0;
  s.correct = s.seen = s.step_in_epoch = s.batches_in_epoch = s.seen0 = s.steps0 = 0;
  // The batches of this epoch: from the loader, or (cached) the same order from the cache.
  s.order.clear();
  s.order_at = 0;
  const int64_t batch = s.lo.batch_size;
  if (s.cached) s.order = epoch_order_of(train_, s.lo, e);
  s.steps = s.cached ? io::epoch_batches(static_cast<int64_t>(s.order.size()), s.lo)
                     : s.train_loader->batches_per_epoch();
  if (resume_batch(e, s.resume, s.start_epoch, s.steps) > 0) {
    // A mid-epoch checkpoint: skip the batches it already trained on (the loader was built
    // to start after them). Batch contents depend only on (seed, epoch, index), so the rest
    // of the epoch is what the full run saw.
    const io::CheckpointMeta& m = s.resume->meta;
    if (s.cached) s.order_at = static_cast<size_t>(m.batches_done * batch);
    s.batches_in_epoch = m.batches_done;
    s.loss_sum = m.epoch_loss_sum;
    s.correct = m.epoch_correct;
    s.seen = m.epoch_seen;
    s.step_in_epoch = m.epoch_steps;
    s.seen0 = s.seen;  // trained before the checkpoint: not in this process's img/s
    s.steps0 = s.step_in_epoch;
    if (hooks_.on_resume_skip) hooks_.on_resume_skip(m.batches_done, e + 1);
  }
  // The steps' time, less the evaluations and checkpoints made between them (--eval-every,
  // --checkpoint-every, a stop), which count as themselves.
  RunTimes& times = s.result.times;
  const double others_before = times.evaluation + times.checkpoints;
  const auto ts = Clock::now();
  const bool go_on = train_steps(e, s);
  times.steps += seconds_since(ts) - (times.evaluation + times.checkpoints - others_before);
  if (!go_on) return false;
  KILN_CHECK(s.seen > 0, "no training image of '", train_.root, "' could be read");
  EpochSummary sum;
  sum.phase = static_cast<int>(s.phase) + 1;
  sum.phase_name = ph.name;
  sum.epoch = e + 1;
  sum.epoch_in_phase = e - phase_first_epoch(s) + 1;
  sum.phase_epochs = ph.epochs;
  sum.images_per_second = static_cast<double>(s.seen - s.seen0) / std::max(seconds_since(s.t0), 1e-9);
  sum.train_loss = s.loss_sum / static_cast<double>(s.seen);
  sum.train_acc = static_cast<double>(s.correct) / static_cast<double>(s.seen);
  sum.val = evaluate_now(s);
  sum.global_step = s.global_step;
  sum.lr = ph.schedule ? s.optimizer->lr() : ph.lr;
  // A caller's hook that throws (a bug in a Python callback, Ctrl-C inside it) stops the run,
  // but after the epoch is checkpointed, as a log that cannot be written (disk full) does.
  std::exception_ptr hook_error, log_error;
  if (hooks_.on_epoch) {
    try {
      hooks_.on_epoch(sum);
    } catch (...) {
      hook_error = std::current_exception();
    }
  }
  // The row before the checkpoint: a kill between them repeats the epoch, whose row the
  // resume drops (MetricsLog::start_at), instead of losing the row for good.
  if (opt_.metrics && s.root) {
    try {
      opt_.metrics->epoch(sum);
    } catch (const std::exception&) {
      log_error = std::current_exception();
    }
  }
  s.result.last_checkpoint = save(meta_at(e + 1, 0, &sum.val, s), s);
  after_epoch_saved(sum, hook_error, log_error != nullptr, e + 1, s);
  if (hook_error) std::rethrow_exception(hook_error);
  if (log_error) std::rethrow_exception(log_error);
  s.result.val = sum.val;

  const int64_t total = total_epochs(opt_.phases);
  if (opt_.stop_after_steps > 0 && s.global_step >= opt_.stop_after_steps && e + 1 < total) {
    report_stop(s, StopInfo{StopInfo::Kind::steps_epoch_end, s.global_step, e + 1, total, ""});
    return false;
  }
  if (opt_.stop_after_epochs > 0 && e + 1 >= opt_.stop_after_epochs && e + 1 < total) {
    report_stop(s, StopInfo{StopInfo::Kind::epochs, s.global_step, e + 1, total, ""});
    return false;
  }
  // A stop asked for during the epoch's evaluation or checkpoint: the epoch's checkpoint is
  // where it stops, before the next epoch's start (a feature cache, a probe) runs.
  if (e + 1 < total && stop_asked(s)) return stopped_on_request(s, e + 1);
  return true;
}

bool Trainer::stop_asked(State& s) {
  const bool here = hooks_.should_stop && hooks_.should_stop();
  if (!s.dist) return here;
  std::vector<double> v{here ? 1.0 : 0.0};  // every rank stops, or none
  opt_.comm->allreduce_sum(v);
  return v[0] > 0;
}

bool Trainer::agree_on_epoch_errors(bool failed_here, bool wants_saved, int64_t epoch, const char* what, State& s) {
  if (!s.dist) return wants_saved;
  // Per rank: failed, then wants_saved.
  const size_t n = static_cast<size_t>(opt_.comm->size()), me = static_cast<size_t>(opt_.comm->rank());
  std::vector<double> v(2 * n, 0.0);
  v[me] = failed_here ? 1.0 : 0.0;
  v[n + me] = wants_saved ? 1.0 : 0.0;
  opt_.comm->allreduce_sum(v);
  std::string ranks;
  bool any_wants = false;
  for (size_t r = 0; r < n; ++r) {
    if (v[r] > 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    any_wants = any_wants || v[n + r] > 0;
  }
  KILN_CHECK(ranks.empty() || failed_here, "trainer: rank(s) ", ranks, " failed after epoch ", epoch, " (", what,
             "; the error is on their stderr), so this rank stops too, after the epoch's checkpoint");
  return any_wants;
}

void Trainer::after_epoch_saved(const EpochSummary& sum, std::exception_ptr& hook_error, bool log_failed,
                                int64_t epoch, State& s) {
  // A rank whose hook or log failed stops, and so must the others, not wait for it in the next
  // step's all-reduce until the timeout. Every rank takes the same branches below (the
  // agreement's answers are the same everywhere), so their collectives stay paired.
  const bool any_wants = agree_on_epoch_errors(hook_error || log_failed, hooks_.on_epoch_saved != nullptr, epoch,
                                               "their on_epoch hook or metrics log threw", s);
  // on_epoch threw: no on_epoch_saved. Alone, a log that failed still lets it run first (the
  // log's error is thrown after); data-parallel, the failing ranks stop here (the others threw).
  if (!any_wants || hook_error || (s.dist && log_failed)) return;
  // On disk before the hook, which may read it. Data-parallel, the agreement on rank 0's write
  // is the barrier too: no rank's hook runs before the file is there, and a failed write stops
  // every rank at once instead of leaving them waiting.
  std::exception_ptr write_error;
  try {
    flush_checkpoints(s);
  } catch (...) {
    write_error = std::current_exception();
  }
  agree_on_epoch_errors(write_error != nullptr, false, epoch, "its checkpoint write failed", s);
  if (write_error) std::rethrow_exception(write_error);
  if (hooks_.on_epoch_saved) {
    try {
      hooks_.on_epoch_saved(sum, s.result.last_checkpoint);
    } catch (...) {
      hook_error = std::current_exception();
    }
  }
  agree_on_epoch_errors(hook_error != nullptr, false, epoch, "their on_epoch_saved hook threw", s);
}

int64_t Trainer::phase_first_epoch(const State& s) const {
  int64_t first = 0;
  for (size_t i = 0; i < s.phase; ++i) first += opt_.phases[i].epochs;
  return first;
}

std::string Trainer::batch_context(int64_t e, const State& s) const {
  const int64_t first = phase_first_epoch(s);
  return "trainer: phase " + std::to_string(s.phase + 1) + " epoch " + std::to_string(e - first + 1) + "/" +
         std::to_string(opt_.phases[s.phase].epochs) + ", batch " + std::to_string(s.batches_in_epoch) + " of " +
         std::to_string(s.steps);
}

bool Trainer::train_step(const Tensor& x, const Tensor& y, int64_t row_first, int64_t rows_global, int64_t e,
                         State& s) {
  const Phase& ph = opt_.phases[s.phase];
  const int64_t n = x.defined() ? x.dim(0) : 0;
  if (!s.dist && n == 0) return false;
  Tensor loss;
  double l = 0, total = 0;
  int64_t correct = 0;
  // A replayed graph ran forward and backward at once; the eager step's backward waits for
  // the loss check below.
  const bool replayed = n > 0 && graph_step(x, y, l, total, correct, s);
  if (n > 0 && !replayed) {
    Tensor logits;
    {
      // Dropout masks keyed by the row's place in the global batch, not in this rank's share.
      RowWindow window(s.dist ? opt_.dropout_gen : nullptr, row_first, n, rows_global);
      try {
        logits = s.cached ? run_from(model_, s.train_cache.cut, x) : model_(x);
      } catch (const Error& err) {
        // Which batch, in the data's terms: a layer's complaint ("batch norm needs more than
        // one value per channel") is then traceable to, say, an epoch's last batch of one image.
        throw Error(batch_context(e, s) + " (" + std::to_string(n) + " image(s)" + (s.dist ? " on this rank" : "") +
                        "): " + err.message(),
                    err.location());
      }
    }
    Tensor data_loss;
    loss = classification_loss(logits, y, model_, static_cast<float>(ph.weight_decay), &data_loss);
    // Reported: the cross-entropy alone, comparable with the validation loss and across
    // phases (weight decay's penalty grows with the number of trainable layers).
    l = data_loss.item();
    total = loss.item();
    const std::vector<int64_t> pred = argmax(logits).to_vector<int64_t>();
    const std::vector<int64_t> truth = y.to_vector<int64_t>();
    for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == truth[i];
  }
  double rows = static_cast<double>(n), loss_sum = l * static_cast<double>(n);
  bool finite = std::isfinite(total);
  if (s.dist) {
    // One small all-reduce per step: rows, loss and hits over the ranks, a non-finite loss
    // anywhere, the dropout stream's position (a rank without rows drew nothing), and whether
    // any rank's should_stop asks to stop (all ranks then stop after this step).
    const PhiloxState g = opt_.dropout_gen ? opt_.dropout_gen->state() : PhiloxState{};
    const bool stop = hooks_.should_stop && hooks_.should_stop();
    std::vector<double> v{rows, loss_sum, static_cast<double>(correct), finite ? 0.0 : 1.0,
                          n > 0 ? static_cast<double>(g.offset) : 0.0, n > 0 ? 1.0 : 0.0, stop ? 1.0 : 0.0};
    opt_.comm->allreduce_sum(v);
    s.stop_agreed = v[6] > 0;
    rows = v[0];
    loss_sum = v[1];
    correct = static_cast<int64_t>(v[2]);
    finite = v[3] == 0;
    if (opt_.dropout_gen && v[5] > 0)
      opt_.dropout_gen->set_state(PhiloxState{g.seed, static_cast<uint64_t>(v[4] / v[5])});
    if (rows == 0) return false;
  }
  if (!finite) {
    const int64_t first = phase_first_epoch(s);
    KILN_FAIL("the loss became ", std::isfinite(total) ? std::string("non-finite on another rank") : std::to_string(total),
              " in phase ", s.phase + 1, " epoch ", e - first + 1, "/", ph.epochs, " step ", s.step_in_epoch + 1,
              ": training stopped (try a smaller learning rate); ",
              s.result.last_checkpoint.empty() ? std::string("no checkpoint was written yet")
                                               : "the last good checkpoint is kept: " + s.result.last_checkpoint);
  }
  if (!replayed) s.optimizer->zero_grad();
  // Data-parallel: each rank's mean over its rows, weighted by its share of the global batch,
  // so the summed gradient is the global batch's mean (weight decay's share sums to one).
  if (n > 0 && !replayed) {
    // Buckets start their all-reduce during backward, as soon as their gradients are final.
    std::optional<autograd::GradReadyScope> hook;
    if (s.dist) hook.emplace(s.reducer->hook());
    (s.dist ? mul(loss, static_cast<float>(static_cast<double>(n) / rows)) : loss).backward();
  }
  if (s.dist) s.reducer->reduce();
  s.optimizer->set_lr(ph.schedule ? ph.schedule->lr(s.optimizer->steps()) : static_cast<float>(ph.lr));
  s.optimizer->step();
  ++s.global_step;
  ++s.step_in_epoch;
  if (s.dist && opt_.check_replicas) check_replicas(model_, *opt_.comm, s.global_step);
  s.loss_sum += loss_sum;
  s.correct += correct;
  s.seen += static_cast<int64_t>(rows);
  return true;
}

void Trainer::choose_step_mode(State& s) {
  State::Graph& g = s.graph;
  const int number = static_cast<int>(s.phase) + 1;
  const size_t cut = s.cached ? s.train_cache.cut : 0;
  if (g.phase == number && g.cached == s.cached && g.cut == cut) return;
  g.step.reset();
  g.phase = number;
  g.cached = s.cached;
  g.cut = cut;
  g.warm = false;
  const StepGraphChoice c = choose_step_graph(opt_.cuda_graph, s.lo.device, s.dist, trains_only_head(model_), s.cached);
  g.use = c.use;
  // A phase that records reports once its capture has succeeded or failed.
  if (!c.use && opt_.cuda_graph != CudaGraphMode::off && hooks_.on_step_mode)
    hooks_.on_step_mode(StepModeInfo{number, false, c.why});
}

// The step by replaying the phase's recorded graph: false when this batch runs eagerly (the
// graph is off or failed, a partial batch, the phase's first full batch, which warms up).
bool Trainer::graph_step(const Tensor& x, const Tensor& y, double& loss, double& total, int64_t& correct, State& s) {
  State::Graph& g = s.graph;
  if (!g.use || x.dim(0) != s.lo.batch_size) return false;
  if (!g.warm) {
    g.warm = true;  // this eager step makes what the step creates lazily, before recording
    return false;
  }
  const int number = static_cast<int>(s.phase) + 1;
  if (!g.step) {
    std::vector<Tensor> params;
    for (const ParameterRef& p : model_.trainable_parameters()) params.push_back(*p.tensor);
    const TensorOptions f32{DType::f32, x.device()};
    g.step = std::make_unique<StepGraph>(std::vector<Tensor>{empty_like(x), empty_like(y)},
                                         std::vector<Tensor>{Tensor::empty(Shape{}, f32), Tensor::empty(Shape{}, f32),
                                                             Tensor::empty(Shape{x.dim(0)}, TensorOptions{DType::i64, x.device()})},
                                         std::move(params), opt_.dropout_gen);
    const float decay = static_cast<float>(opt_.phases[s.phase].weight_decay);
    const std::string error = g.step->capture([this, &g, decay](const std::vector<Tensor>& in) {
      Tensor logits = g.cached ? run_from(model_, g.cut, in[0]) : model_(in[0]);
      g.classes = logits.dim(1);
      Tensor data_loss;
      Tensor l = classification_loss(logits, in[1], model_, decay, &data_loss);
      Tensor pred = argmax(logits);
      l.backward();
      return std::vector<Tensor>{data_loss, l, pred};
    });
    if (!error.empty()) {
      g.step.reset();
      g.use = false;
      if (hooks_.on_step_mode)
        hooks_.on_step_mode(StepModeInfo{number, false, "eager (the CUDA graph capture failed: " + error + ")"});
      return false;
    }
    if (hooks_.on_step_mode)
      hooks_.on_step_mode(StepModeInfo{number, true, choose_step_graph(opt_.cuda_graph, x.device(), false, true,
                                                                       g.cached).why});
  }
  // The recorded loss cannot stop on a bad label (no host sync inside a graph): check here,
  // with the eager check's words; the labels are read for the hit count anyway.
  const std::vector<int64_t> truth = y.to_vector<int64_t>();
  for (size_t i = 0; i < truth.size(); ++i)
    KILN_CHECK(truth[i] >= 0 && truth[i] < g.classes, "softmax_cross_entropy: label ", truth[i], " at row ", i,
               " is out of range [0, ", g.classes, ")");
  // A launch the device refuses while nothing ran (out of memory for the graph's own
  // allocations): this batch and the rest of the phase run eagerly, saying why, instead of
  // stopping. Any other failure stops training as an eager step's would.
  std::string why;
  const std::vector<Tensor>* replayed = g.step->try_replay({x, y}, why);
  if (replayed == nullptr) {
    g.step.reset();
    g.use = false;
    if (hooks_.on_step_mode)
      hooks_.on_step_mode(StepModeInfo{number, false, "eager (replaying the CUDA graph failed: " + why + ")"});
    return false;
  }
  const std::vector<Tensor>& out = *replayed;
  loss = out[0].item();
  total = out[1].item();
  const std::vector<int64_t> pred = out[2].to_vector<int64_t>();
  for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == truth[i];
  return true;
}

bool Trainer::train_steps(int64_t e, State& s) {
  const Phase& ph = opt_.phases[s.phase];
  const int number = static_cast<int>(s.phase) + 1;
  const int64_t first = phase_first_epoch(s);
  const int64_t batch = s.lo.batch_size;
  for (;;) {
    Tensor x, y;
    int64_t row_first = 0, rows_global = 0;  // this rank's first row and the global batch's rows
    if (s.cached) {
      if (s.batches_in_epoch >= s.steps) break;  // the loader's count: drop_last leaves a short batch out
      const size_t end = std::min(s.order.size(), s.order_at + static_cast<size_t>(batch));
      const io::ShardRange sh = io::shard_of(static_cast<int64_t>(s.order_at), static_cast<int64_t>(end),
                                             s.lo.shard_rank, s.lo.shard_count);
      if (sh.end > sh.begin)
        gather(s.train_cache, std::vector<int64_t>(s.order.begin() + static_cast<std::ptrdiff_t>(sh.begin),
                                                   s.order.begin() + static_cast<std::ptrdiff_t>(sh.end)),
               s.lo.device, x, y);
      row_first = sh.begin - static_cast<int64_t>(s.order_at);
      rows_global = static_cast<int64_t>(end - s.order_at);
      s.order_at = end;
    } else {
      std::optional<io::Batch> b = s.train_loader->next();
      if (!b) break;
      x = b->images;
      y = b->labels;
      const int64_t gb = b->index * batch, ge = std::min<int64_t>(gb + batch, static_cast<int64_t>(train_.size()));
      row_first = io::shard_of(gb, ge, s.lo.shard_rank, s.lo.shard_count).begin - gb;
      rows_global = ge - gb;
    }
    ++s.batches_in_epoch;  // empty batches included: the data position
    if (!train_step(x, y, row_first, rows_global, e, s)) continue;
    const StepInfo info{number, e - first + 1, ph.epochs, s.step_in_epoch, s.steps, s.batches_in_epoch,
                        s.global_step, s.loss_sum, seconds_since(s.t0), s.correct, s.seen, s.seen - s.seen0,
                        s.step_in_epoch - s.steps0};
    if (hooks_.on_step) hooks_.on_step(info);
    // Every N steps (the epoch's last batch is left to the per-epoch evaluation and checkpoint).
    const bool mid_epoch = s.batches_in_epoch < s.steps;
    EvalResult mid;
    bool evaluated = false;
    if (opt_.eval_every > 0 && s.global_step % opt_.eval_every == 0 && mid_epoch) {
      mid = evaluate_now(s);
      evaluated = true;
      if (hooks_.on_eval) hooks_.on_eval(info, mid);
      if (opt_.metrics && s.root) opt_.metrics->eval(s.global_step, mid);
    }
    const bool stop_here = opt_.stop_after_steps > 0 && s.global_step >= opt_.stop_after_steps && mid_epoch;
    const bool due = (opt_.checkpoint_every > 0 && s.global_step % opt_.checkpoint_every == 0 && mid_epoch) || stop_here;
    if (due) s.result.last_checkpoint = save(meta_at(e, s.batches_in_epoch, evaluated ? &mid : nullptr, s), s);
    if (stop_here) {
      report_stop(s, StopInfo{StopInfo::Kind::steps_mid_epoch, s.global_step, e, total_epochs(opt_.phases),
                              s.result.last_checkpoint});
      return false;
    }
    if (s.dist ? s.stop_agreed : hooks_.should_stop && hooks_.should_stop()) {
      // Also after an epoch's last batch: its resume serves no batch and goes on to the
      // epoch's evaluation and checkpoint, as the full run does.
      if (opt_.checkpoint_on_stop && !due)
        s.result.last_checkpoint = save(meta_at(e, s.batches_in_epoch, evaluated ? &mid : nullptr, s), s);
      return stopped_on_request(s, e);
    }
  }
  return true;
}

bool Trainer::stopped_on_request(State& s, int64_t epochs_done) {
  s.result.interrupted = true;
  report_stop(s, StopInfo{StopInfo::Kind::requested, s.global_step, epochs_done, total_epochs(opt_.phases),
                          s.result.last_checkpoint});
  return false;
}

void check_ranks_agree(Sequential& model, const ModelSpec& spec, const TrainerOptions& o, const io::Dataset& train,
                       const io::Dataset& val, const std::optional<io::CheckpointInfo>& resume) {
  if (o.comm == nullptr || o.comm->size() <= 1) return;
  check_same_run(*o.comm, run_fingerprint(model, spec, o, train, val, resume));
}

}  // namespace kiln
