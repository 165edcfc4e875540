// kiln.Phase and kiln.train: the model-agnostic trainer (train/trainer.h) over folder data
// sets, thinly: a recipe's phases as data, the loader's main knobs, checkpoints and resume, a
// per-epoch callback. The GIL is released while it trains and taken back only to call the
// callback and, after every step, to let Python's signal handlers run (Ctrl-C).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "io/dataset.h"
#include "python/src/bindings.h"
#include "train/api.h"
#include "train/audit.h"
#include "train/format.h"
#include "train/linear_probe.h"
#include "train/trainer.h"

namespace kiln::python {
namespace {

// Runs of kiln.train in progress, and whether the interpreter is exiting (atexit): a run in a
// daemon thread then stops after its step and checkpoints, as on Ctrl-C, and the exit waits
// for it, so that no training runs on while the process tears down the libraries it uses (it
// crashed in oneDNN and in PyThreadState_New).
struct RunningTrains {
  std::mutex mu;
  std::condition_variable done;
  int running = 0;
  std::atomic<bool> exiting{false};
};
RunningTrains& running_trains() {
  static auto& r = *new RunningTrains;  // never destroyed: used until the process ends
  return r;
}

// Counts one kiln.train while it runs.
struct TrainInFlight {
  TrainInFlight() {
    const std::lock_guard<std::mutex> lock(running_trains().mu);
    ++running_trains().running;
  }
  ~TrainInFlight() {
    {
      const std::lock_guard<std::mutex> lock(running_trains().mu);
      --running_trains().running;
    }
    running_trains().done.notify_all();
  }
  TrainInFlight(const TrainInFlight&) = delete;
  TrainInFlight& operator=(const TrainInFlight&) = delete;
};

// Registered with Python's atexit: asks every run to stop, then waits for them (up to 120 s:
// a step and a checkpoint), the GIL released so that they can return.
void stop_trains_at_exit() {
  RunningTrains& r = running_trains();
  r.exiting = true;
  nb::gil_scoped_release release;
  std::unique_lock<std::mutex> lock(r.mu);
  r.done.wait_for(lock, std::chrono::seconds(120), [&] { return r.running == 0; });
}

using nb::arg;

nb::dict eval_dict(const EvalResult& r) {
  nb::dict d;
  d["loss"] = r.loss;
  d["acc"] = r.acc;
  d["images"] = r.images;
  return d;
}

nb::dict epoch_dict(const EpochSummary& e) {
  nb::dict d;
  d["phase"] = e.phase;
  d["phase_name"] = e.phase_name;
  d["epoch"] = e.epoch;
  d["global_step"] = e.global_step;
  d["lr"] = as_decimal(static_cast<float>(e.lr));  // the float32 the optimizer ran with, as typed
  d["train_loss"] = e.train_loss;
  d["train_acc"] = e.train_acc;
  d["val"] = eval_dict(e.val);
  return d;
}

// The names of the parameters that train now.
std::vector<std::string> trainable_names(Module& model) {
  std::vector<std::string> names;
  for (const ParameterRef& p : model.trainable_parameters()) names.push_back(p.name);
  return names;
}

// What on_epoch changed in what trains ("unfroze vgg11/fc7/weight, ... and froze ..."), "" when nothing.
std::string training_changes(const std::vector<std::string>& before, const std::vector<std::string>& after) {
  const auto missing_from = [](const std::vector<std::string>& from, const std::vector<std::string>& in) {
    std::vector<std::string> out;
    for (const std::string& n : from)
      if (std::find(in.begin(), in.end(), n) == in.end()) out.push_back(n);
    return out;
  };
  const std::vector<std::string> unfrozen = missing_from(after, before), frozen = missing_from(before, after);
  std::string said;
  if (!unfrozen.empty()) said = "unfroze " + join_names(unfrozen, 4);
  if (!frozen.empty()) said += (said.empty() ? "froze " : " and froze ") + join_names(frozen, 4);
  return said;
}

// The train=[...] of a phase training exactly what trains in `model` now, as Python writes it
// (a layer's scope, "vgg11/fc7/", where all of it trains, else parameter names), or "" when
// nothing trains (train=[] would train everything) or it takes more than four entries.
std::string train_list(Module& model) {
  const auto scope_of = [](const std::string& n) { return n.substr(0, n.rfind('/') + 1); };
  std::vector<std::string> entries;
  const std::vector<ParameterRef> all = model.parameters();
  for (const ParameterRef& p : all) {
    if (!p.trainable) continue;
    const std::string scope = scope_of(p.name);
    const bool whole = std::all_of(all.begin(), all.end(), [&](const ParameterRef& q) {
      return scope_of(q.name) != scope || q.trainable;
    });
    const std::string entry = whole ? scope : p.name;
    if (std::find(entries.begin(), entries.end(), entry) == entries.end()) entries.push_back(entry);
  }
  if (entries.empty() || entries.size() > 4) return "";
  std::string out;
  for (const std::string& e : entries) out += (out.empty() ? "['" : ", '") + e + "'";
  return out + "]";
}

// kiln.train's on_epoch: called with the epoch's dict once its checkpoint is on disk (so
// kiln.load_checkpoint there reads it). What trains is the phase's (the trainer's optimizer
// holds exactly those parameters, and a resume re-applies the phase): a callback that freezes
// or unfreezes ends the run with what to do instead, rather than with the optimizer's refusal
// ("make a new optimizer", which a kiln.train user cannot) or a silent difference from a resume.
std::function<void(const EpochSummary&, const std::string&)> epoch_hook(Sequential& model, nb::object on_epoch) {
  if (!PyCallable_Check(on_epoch.ptr()))
    throw nb::type_error(("kiln.train: on_epoch must be a callable taking the epoch's dict, got " +
                          nb::cast<std::string>(nb::repr(on_epoch))).c_str());
  // The hooks live in the Trainer, which is destroyed while the GIL is released: the callable's
  // reference is dropped by a deleter that takes the GIL (a copied nb::object would Py_DECREF without it).
  std::shared_ptr<nb::object> callback(new nb::object(std::move(on_epoch)), [](nb::object* o) {
    if (python_exiting()) return;  // nothing to hand back to
    nb::gil_scoped_acquire gil;
    delete o;
  });
  return [callback, &model](const EpochSummary& e, const std::string& checkpoint) {
    if (running_trains().exiting) return;  // no Python callbacks while it exits
    park_if_python_exiting();
    nb::gil_scoped_acquire gil;
    const std::vector<std::string> before = trainable_names(model);
    nb::dict d = epoch_dict(e);
    d["checkpoint"] = checkpoint;
    (*callback)(d);
    const std::string changed = training_changes(before, trainable_names(model));
    if (changed.empty()) return;
    const std::string now = train_list(model);
    KILN_FAIL("kiln.train: on_epoch ", changed, " in phase ", e.phase, " '", e.phase_name, "' (epoch ", e.epoch,
              "), but what trains is fixed for each phase by its kiln.Phase(train=[...]) patterns: kiln.train's "
              "optimizer holds exactly those parameters, and a resume sets them again. To change what trains, end "
              "this phase and add a later kiln.Phase whose train lists what should train then",
              now.empty() ? std::string() : " (here: train=" + now + ")", ". The run stopped after epoch ", e.epoch,
              "'s checkpoint (", checkpoint, ")");
  };
}

struct TrainArgs {
  std::string train_dir, val_dir, model_dir, convention;
  int64_t batch_size, image_size;
  int num_workers;
  uint64_t seed;
  bool augment, feature_cache;
  int64_t checkpoint_every;
  int keep;
  bool calibrate_batch_norm, resume;
  std::string precision;   // train/precision.h's name
  std::string cuda_graph;  // train/step_graph.h's mode name
  bool background_checkpoints;
};

// With `resume`: model_dir's newest intact checkpoint, checked against this run and loaded
// into the model (and its generators, when kiln.build_model made it); damaged newer ones are
// set aside as vgg_finetune does. Nothing when there is none (a fresh run).
std::optional<io::CheckpointInfo> resume_point(Sequential& model, const ModelSpec& spec, const TrainArgs& a,
                                               const std::vector<std::string>& classes, const BuiltModelInfo* built) {
  if (!a.resume) return std::nullopt;
  const io::ResumeChoice choice = io::newest_intact_checkpoint(a.model_dir);
  if (!choice.checkpoint) return std::nullopt;
  const io::CheckpointMeta& m = choice.checkpoint->meta;
  KILN_CHECK(m.precision == a.precision, "train(resume=True): ", choice.checkpoint->state_path, " was trained with "
             "precision='", m.precision, "', this run asks for '", a.precision, "'; pass precision='", m.precision,
             "' or use a new model_dir");
  const std::string differs = resume_mismatch(m, spec.name, a.image_size, classes);
  KILN_CHECK(differs.empty(), "train(resume=True): ", choice.checkpoint->state_path, " was trained with ", differs,
             "; use a new model_dir or resume=False");
  io::load_checkpoint_weights(model, *choice.checkpoint);
  if (built) {
    built->init->set_state(m.init_gen);
    built->dropout->set_state(m.dropout_gen);
  }
  for (const io::DamagedCheckpoint& d : choice.damaged) io::set_aside(d);
  return choice.checkpoint;
}

TrainerOptions trainer_options(std::vector<Phase> phases, const TrainArgs& a, const ModelSpec& spec,
                               const io::Dataset& train_ds, const BuiltModelInfo* built) {
  KILN_CHECK(!phases.empty(), "train: no phases given; pass at least one kiln.Phase");
  TrainerOptions t;
  t.phases = std::move(phases);
  t.loader.batch_size = a.batch_size;
  t.loader.num_workers = a.num_workers;
  t.loader.seed = a.seed;
  t.loader.crop = static_cast<int>(a.image_size);
  t.loader.resize_shorter = resize_for_crop(a.image_size);
  t.loader.convention = io::parse_convention(a.convention);
  t.loader.augment = a.augment;
  t.feature_cache = a.feature_cache;
  t.checkpoint_every = a.checkpoint_every;
  t.keep = a.keep;
  t.calibrate_batch_norm = a.calibrate_batch_norm;
  t.precision = parse_precision(a.precision);
  t.cuda_graph = parse_cuda_graph_mode(a.cuda_graph);
  t.background_checkpoints = a.background_checkpoints;
  t.model_dir = a.model_dir;
  t.run.arch = spec.name;
  t.run.image_size = a.image_size;
  t.run.classes = train_ds.classes;
  t.run.convention = t.loader.convention;
  t.run.seed = a.seed;
  if (built) {  // the model's seed and generators, so a resume (here, or by vgg_finetune with
                // --allow-changed-config: no config.txt is written here) rebuilds alike
    t.run.seed = built->seed;
    t.run.head = built->options.head;
    t.run.adaptive_pool = built->options.adaptive_pool;
    t.init_gen = built->init;
    t.dropout_gen = built->dropout;
  }
  return t;
}

// Both folders checked as vgg_finetune train checks them (train/audit.h): labelled by one
// class list, so a class missing from val keeps its number; files that do not decode are
// skipped with a warning; data that cannot be trained on is an error naming why.
AuditReport audit_for_training(const TrainArgs& a) {
  AuditOptions opt;
  opt.threads = a.num_workers;
  AuditReport r;
  {
    nb::gil_scoped_release release;
    r = audit_splits({{"train", a.train_dir}, {"val", a.val_dir}}, opt);
  }
  if (!r.errors.empty()) {
    std::string all;
    for (const std::string& e : r.errors) all += (all.empty() ? "" : "; ") + e;
    KILN_FAIL("train: the data cannot be trained on: ", all);
  }
  std::vector<std::string> said = r.warnings;
  if (!r.skipped.empty())
    said.push_back("skipped " + std::to_string(r.skipped.size()) + " file(s) that cannot be used, e.g. " +
                   r.skipped.front().path + ": " + io::skip_reason(r.skipped.front()));
  for (const std::string& w : said) warn("kiln.train: " + w);
  return r;
}

nb::dict train(Sequential& model, const std::string& arch, std::vector<Phase> phases, const TrainArgs& a,
               nb::object on_epoch) {
  const ModelSpec& spec = find_model_spec(arch);
  const AuditReport audit = audit_for_training(a);
  const io::Dataset& train_ds = audit.splits[0].usable;
  const io::Dataset& val_ds = audit.splits[1].usable;
  const BuiltModelInfo* built = built_model_of(model);
  const int64_t built_size = !built ? 0 : built->options.image_size > 0 ? built->options.image_size
                                                                         : spec.default_image_size;
  if (built && built_size != a.image_size)
    warn("kiln.train: the model was built for image_size=" + std::to_string(built_size) +
         " but train runs at image_size=" + std::to_string(a.image_size) + " (its default is 224); pass image_size=" +
         std::to_string(built_size) + " unless the model takes any size");
  TrainerOptions t = trainer_options(std::move(phases), a, spec, train_ds, built);
  TrainerHooks hooks;
  hooks.on_data_changed = [](int64_t then, int64_t now) {
    park_if_python_exiting();
    nb::gil_scoped_acquire gil;
    warn("kiln.train: the training data changed since the checkpoint (" + std::to_string(then) + " images then, " +
         std::to_string(now) + " now); training goes on with today's, so the result will differ from an "
         "uninterrupted run's");
  };
  if (!on_epoch.is_none()) hooks.on_epoch_saved = epoch_hook(model, std::move(on_epoch));
  // Ctrl-C: while the GIL is released, Python's C-level handler only notes the signal (never
  // inside oneDNN, which holds signals: kernels/cpu/onednn.h); after every step the trainer asks
  // here, the handler runs, and its exception (KeyboardInterrupt) ends the run without a further
  // checkpoint and is raised once the trainer has returned.
  std::optional<nb::python_error> interrupt;
  hooks.should_stop = [&interrupt] {
    if (running_trains().exiting) return true;  // the interpreter is exiting: stop and checkpoint
    park_if_python_exiting();
    nb::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() == 0) return false;
    interrupt.emplace();  // takes the pending exception
    return true;
  };
  TrainResult r;
  std::optional<io::CheckpointInfo> resume;
  // Counted from here to the return, with the GIL held at both ends: an exit waiting for this
  // run (stop_trains_at_exit) goes on only once this thread has the GIL back. Counted inside
  // the release, the exit could finalize first, and CPython ends a daemon thread that then
  // asks for the GIL with pthread_exit, whose unwinding through kiln's frames aborts.
  const TrainInFlight in_flight;
  {
    nb::gil_scoped_release release;
    // The Trainer checks the model against the data first; the resume then loads weights.
    Trainer trainer(model, spec, train_ds, val_ds, std::move(t), std::move(hooks));
    resume = resume_point(model, spec, a, train_ds.classes, built);
    r = trainer.run(resume);
  }
  if (interrupt) throw *interrupt;
  nb::dict d = eval_dict(r.val);
  d["resumed_from"] = resume ? nb::object(nb::str(resume->state_path.c_str())) : nb::none();
  d["finished"] = r.finished;
  // Nothing evaluated (no epoch ran, nothing resumed): no numbers to report.
  if (!resume && r.val.images == 0) d["loss"] = d["acc"] = nb::none();
  d["last_checkpoint"] = r.last_checkpoint.empty() ? nb::object(nb::none()) : nb::str(r.last_checkpoint.c_str());
  nb::dict times;
  times["total"] = r.times.total, times["steps"] = r.times.steps, times["evaluation"] = r.times.evaluation;
  times["checkpoints"] = r.times.checkpoints, times["probe"] = r.times.probe, times["caches"] = r.times.caches;
  times["other"] = r.times.other(), times["conv_plans"] = r.times.conv_plans;
  d["times"] = times;
  return d;
}

// kiln.load_checkpoint: the checkpoint's weights into `model` (built as the one trained), its
// record as a dict. Warnings about checkpoints passed over are said before any error.
nb::dict load_checkpoint(Sequential& model, const std::string& model_dir, bool best) {
  io::CheckpointInfo ck;
  std::vector<std::string> said;
  std::exception_ptr error;
  {
    nb::gil_scoped_release release;
    try {
      // A run writing model_dir may prune the checkpoint chosen before it is loaded: another is chosen.
      ck = io::choose_and_load_checkpoint(
          model_dir, best, "best=True", [&said](const std::string& l) { said.push_back(l); },
          [&model](const io::CheckpointInfo& c) {
            KILN_CHECK(c.meta.arch == model.name(), "kiln.load_checkpoint: ", c.state_path, " holds a ", c.meta.arch,
                       ", and this model is a ", model.name(), "; build it with kiln.build_model(\"", c.meta.arch,
                       "\", num_classes=", c.meta.classes.size(), ", image_size=", c.meta.image_size, ")");
            io::load_checkpoint_weights(model, c);
          });
    } catch (...) {
      error = std::current_exception();
    }
  }
  for (const std::string& l : said) warn("kiln.load_checkpoint: " + l);
  if (error) std::rethrow_exception(error);
  const io::CheckpointMeta& m = ck.meta;
  nb::dict d;
  d["state_path"] = ck.state_path;
  d["arch"] = m.arch;
  d["classes"] = m.classes;
  d["image_size"] = m.image_size;
  d["head"] = m.head;
  d["convention"] = std::string(io::convention_name(m.convention));
  d["precision"] = m.precision;
  d["phase"] = m.phase;
  d["epochs_done"] = m.epochs_done;
  d["batches_done"] = m.batches_done;
  d["global_step"] = m.global_step;
  d["val_acc"] = m.val_acc < 0 ? nb::object(nb::none()) : nb::cast(m.val_acc);
  d["val_loss"] = m.val_acc < 0 ? nb::object(nb::none()) : nb::cast(m.val_loss);
  return d;
}

// kiln.Phase: one phase of a recipe, as the trainer takes it.
void bind_phase(nb::module_& m) {
  nb::class_<Phase>(m, "Phase", "One phase of a recipe: what trains (Module.freeze patterns; everything else is "
                                "frozen; an empty list trains every layer), learning rate, epochs, SGD momentum, "
                                "weight decay, and whether the head starts as a linear probe.")
      .def("__init__",
           [](Phase* self, std::string name, std::vector<std::string> train, std::optional<double> lr, int64_t epochs,
              double momentum, double weight_decay, bool linear_probe, std::shared_ptr<Schedule> schedule) {
             // Both would leave lr unused without a word.
             if (lr && schedule)
               throw nb::value_error("kiln.Phase: give lr or schedule, not both (the schedule sets the rate; "
                                     "kiln.ConstantLR(lr) is a constant one)");
             new (self) Phase{std::move(name), std::move(train), lr.value_or(1e-3), std::move(schedule), epochs,
                              momentum, weight_decay, linear_probe ? HeadInit::linear_probe : HeadInit::as_is};
           },
           arg("name"), arg("train") = std::vector<std::string>{}, arg("lr").none() = nb::none(), arg("epochs") = 1,
           arg("momentum") = 0.0, arg("weight_decay") = 0.0, arg("linear_probe") = false,
           arg("schedule").none() = nb::none())
      .def_rw("name", &Phase::name, "The phase's name in logs and on_epoch.")
      .def_rw("train", &Phase::train_patterns, "Patterns of what trains (empty: every layer).")
      .def_rw("lr", &Phase::lr, "SGD's learning rate (unused while a schedule is set).")
      .def_prop_rw("schedule", [](const Phase& p) { return std::const_pointer_cast<Schedule>(p.schedule); },
                   [](Phase& p, std::shared_ptr<Schedule> s) { p.schedule = std::move(s); }, arg("schedule").none(),
                   "The rate by the phase's optimizer step (kiln.CosineLR, ...), or None: lr throughout.")
      .def_rw("epochs", &Phase::epochs, "Epochs in this phase.")
      .def_rw("momentum", &Phase::momentum, "SGD's momentum.")
      .def_rw("weight_decay", &Phase::weight_decay, "L2 weight decay on weights (not biases).")
      .def_prop_rw("linear_probe", [](const Phase& p) { return p.head_init == HeadInit::linear_probe; },
                   [](Phase& p, bool on) { p.head_init = on ? HeadInit::linear_probe : HeadInit::as_is; },
                   "Whether the head is fitted by ridge regression on its input features when the phase starts.")
      // The constructor's call as it would be written (it was <kiln.Phase object at 0x...>).
      .def("__repr__", [](const Phase& p) {
        const auto py = [](nb::handle h) { return std::string(nb::repr(h).c_str()); };
        std::string r = "kiln.Phase(" + py(nb::str(p.name.c_str())) + ", train=" + py(nb::cast(p.train_patterns)) +
                        (p.schedule ? "" : ", lr=" + py(nb::float_(p.lr))) + ", epochs=" + std::to_string(p.epochs) +
                        ", momentum=" + py(nb::float_(p.momentum)) + ", weight_decay=" + py(nb::float_(p.weight_decay));
        if (p.head_init == HeadInit::linear_probe) r += ", linear_probe=True";
        if (p.schedule) r += ", schedule=" + py(nb::cast(std::const_pointer_cast<Schedule>(p.schedule)));
        return r + ")";
      });
}

}  // namespace

void bind_train(nb::module_& m) {
  nb::module_::import_("atexit").attr("register")(nb::cpp_function(&stop_trains_at_exit));
  m.def("load_checkpoint",
        [](Sequential& model, const std::filesystem::path& model_dir, bool best) {
          return load_checkpoint(model, model_dir.string(), best);
        },
        arg("model"), arg("model_dir"), arg("best") = false,
        "Loads into `model` the weights and buffers of model_dir's latest checkpoint (best=True: the best by "
        "validation accuracy) among those whose files verify, as vgg_finetune eval does; checkpoints passed over "
        "are warned about, and best=True refuses while a state file does not read (that checkpoint may be the "
        "best; a damaged weights file of another checkpoint is passed over with a warning). `model` is built as "
        "the one trained "
        "(kiln.build_model with its arch, len(classes) and image_size). Returns the checkpoint's record: "
        "state_path, arch, classes, image_size, head, convention, precision, phase, epochs_done, batches_done, "
        "global_step, val_acc and val_loss (None when it was not evaluated). The model's mode is left as it is: "
        "call model.eval() for inference.");
  // The closed-form linear probe on fixed features: a baseline, or a head's start (the
  // trainer's linear_probe phases use the same function).
  const auto fit_probe = [](const Tensor& feats, const std::vector<int64_t>& labels, int64_t classes) {
    LinearProbe p;
    {
      nb::gil_scoped_release release;
      p = fit_linear_probe(feats, labels, classes);
    }
    nb::dict d;
    d["weight"] = Tensor::from_vector(p.weight, Shape{p.classes, p.dim});
    d["bias"] = Tensor::from_vector(p.bias, Shape{p.classes});
    d["lambda_"] = p.lambda;
    d["holdout_acc"] = p.holdout_acc;
    d["scale"] = p.scale;
    d["train_acc"] = p.train_acc;
    return d;
  };
  m.def("fit_linear_probe", fit_probe, arg("feats"), arg("labels"), arg("classes"),
        "A linear classifier fitted in closed form on feats [N, D] float32 with labels in [0, classes): ridge "
        "regression to one-hot targets on standardised features, the ridge strength chosen by 5-fold "
        "cross-validation, the scores scaled to minimise the held-out cross-entropy (train/linear_probe.h). "
        "Returns a dict: weight [classes, D] and bias [classes] (scores = feats @ weight.T + bias), lambda_ (the "
        "strength), holdout_acc, scale, train_acc.");
  // The labels as a Loader yields them (an int64 kiln.Tensor [N]).
  m.def("fit_linear_probe",
        [fit_probe](const Tensor& feats, const Tensor& labels, int64_t classes) {
          KILN_CHECK(labels.dtype() == DType::i64 || labels.dtype() == DType::i32, "fit_linear_probe: labels must be "
                     "integers (a Loader's int64 labels, a list of ints), got ", labels.description());
          return fit_probe(feats, labels.to_vector<int64_t>(), classes);
        },
        arg("feats"), arg("labels"), arg("classes"));
  // The CPU backend's OpenMP threads (the calling thread's setting, shared with anything else
  // in the process using libgomp: `import torch` may lower it). oneDNN's convolution gradients
  // sum in an order that depends on the count, so bit-identical runs need equal counts.
  m.def("get_num_threads", [] { return omp_get_max_threads(); },
        "Threads the CPU backend's parallel kernels use from this thread (OMP_NUM_THREADS by default).");
  m.def("set_num_threads", [](int n) {
          KILN_CHECK(n >= 1, "set_num_threads: ", n, " threads; pass 1 or more");
          omp_set_num_threads(n);
        }, arg("n"),
        "Sets the CPU backend's thread count for this thread. Results agree bit for bit only between runs "
        "with the same count (oneDNN's convolution gradients depend on it).");
  bind_phase(m);
  m.def("train",
        [](Sequential& model, const std::string& arch, std::vector<Phase> phases,
           const std::filesystem::path& train_dir, const std::filesystem::path& val_dir,
           const std::filesystem::path& model_dir, int64_t batch_size, int64_t image_size, int num_workers,
           uint64_t seed, bool augment, const std::string& convention, bool feature_cache, nb::object on_epoch,
           int64_t checkpoint_every, int keep, bool calibrate_batch_norm, bool resume, const std::string& precision,
           const std::string& cuda_graph, bool background_checkpoints) {
          return train(model, arch, std::move(phases),
                       TrainArgs{train_dir.string(), val_dir.string(), model_dir.string(), convention, batch_size,
                                 image_size, num_workers, seed, augment, feature_cache, checkpoint_every, keep,
                                 calibrate_batch_norm, resume, precision, cuda_graph, background_checkpoints},
                       std::move(on_epoch));
        },
        arg("model"), arg("arch"), arg("phases"), arg("train_dir"), arg("val_dir"), arg("model_dir"),
        arg("batch_size") = 32, arg("image_size") = 224, arg("num_workers") = 2, arg("seed") = 0,
        arg("augment") = true, arg("convention") = "torchvision_rgb", arg("feature_cache") = true,
        arg("on_epoch") = nb::none(), arg("checkpoint_every") = 0, arg("keep") = 2,
        arg("calibrate_batch_norm") = false, arg("resume") = false, arg("precision") = "fp32",
        arg("cuda_graph") = "off", arg("background_checkpoints") = true,
        "Trains `model` (built by kiln.build_model(arch, ...)) through `phases` on folder data sets "
        "(<dir>/<class>/*.jpg), checkpointing into model_dir after every epoch (and every checkpoint_every "
        "steps; the last `keep` kept plus the best); on_epoch(dict) after each epoch, once that epoch's "
        "checkpoint is on disk (the dict: phase, phase_name, epoch, global_step, lr, train_loss, train_acc, val "
        "{loss, acc, images}, and checkpoint, its state file, which kiln.load_checkpoint(model, model_dir) there "
        "loads); it may not freeze or unfreeze the model (a later kiln.Phase does). `seed` is the loader's "
        "(shuffling, crops, flips; vgg_finetune train uses its --seed + 2). resume=True continues from "
        "model_dir's newest intact checkpoint when there is one. precision: 'fp32', 'bf16-frozen' (the layers "
        "each phase freezes compute in bf16) or 'bf16' (docs/precision.md); recorded in checkpoints. cuda_graph: "
        "'off', 'on' or 'auto': record head-only phases' steps as CUDA graphs on a GPU (docs/gpu.md; elsewhere "
        "the step runs eagerly, with the same results). background_checkpoints: checkpoint files are written on a "
        "thread of their own while training goes on (the same files; train returns once the last is on disk); "
        "False writes each before the next step. Ctrl-C stops it after the current step and "
        "raises KeyboardInterrupt; the last checkpoint stays intact. Returns the last validation "
        "{loss, acc, images} with finished, last_checkpoint, resumed_from (a state file or None) and times (seconds: "
        "total, steps, evaluation, checkpoints, probe, caches, other; and conv_plans, the part of them spent "
        "choosing GPU convolution plans, 0 on the CPU); loss and acc are None when nothing was evaluated (no "
        "epoch ran).");
}

}  // namespace kiln::python
