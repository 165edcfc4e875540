// The training loop of vgg_finetune (see train.h).
#include "apps/vgg_finetune/train.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "io/metrics.h"
#include "io/tensorboard.h"
#include "layers/loss.h"

namespace fs = std::filesystem;

namespace kiln::app {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x + "\n";
  return s;
}

std::string join_comma(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// The model directory must exist (created here) and be writable; checked before any work.
void prepare_model_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  KILN_CHECK(!ec && fs::is_directory(dir), "cannot create model directory '", dir, "': ",
             ec ? ec.message() : "not a directory");
  const std::string probe = (fs::path(dir) / ".write_test").string();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  KILN_CHECK(f != nullptr, "model directory '", dir, "' is not writable");
  std::fclose(f);
  fs::remove(probe, ec);
}

// The shortest text that reads back as the same double.
std::string exact(double v) {
  for (int prec = 6; prec <= 17; ++prec) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) return buf;
  }
  return fmt("%.17g", v);
}

// The recipe flags (what a resume must not change) with their values in this run; a switch
// has "1" when on and "" when off (config.txt then has no line for it, as Flags::dump writes).
struct RecipeFlag {
  const char* name;
  std::string value;
  bool is_switch;
};

std::vector<RecipeFlag> recipe_flags(const TrainConfig& c) {
  return {{"phase1-epochs", std::to_string(c.phase1_epochs), false},
          {"phase1-lr", exact(c.phase1_lr), false},
          {"phase2-epochs", std::to_string(c.phase2_epochs), false},
          {"phase2-lr", exact(c.phase2_lr), false},
          {"batch", std::to_string(c.batch), false},
          {"momentum", exact(c.momentum), false},
          {"weight-decay", exact(c.weight_decay), false},
          {"keep-prob", exact(c.keep_prob), false},
          {"seed", std::to_string(c.seed), false},
          {"image-size", std::to_string(c.image_size), false},
          {"no-augment", c.no_augment ? "1" : "", true}};
}

// "key = value" lines of config.txt ('#' lines are comments).
std::map<std::string, std::string> parse_config(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find(" = ");
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

// The recipe flags of this run that differ from the saved config, as "--flag NEW (was OLD)".
// Numbers compare by value (1e-3 equals 0.001); a flag the saved file does not record is not
// compared (config.txt of an older version), except switches, which are recorded only when on.
std::vector<std::string> recipe_changes(const TrainConfig& cfg, const std::string& saved_text) {
  const std::map<std::string, std::string> saved = parse_config(saved_text);
  std::vector<std::string> changes;
  for (const RecipeFlag& r : recipe_flags(cfg)) {
    const auto it = saved.find(r.name);
    if (r.is_switch) {
      const bool was_on = it != saved.end() && it->second == "1";
      if (was_on != (r.value == "1"))
        changes.push_back(std::string("--") + r.name + " is " + (r.value == "1" ? "on" : "off") + ", the run used " +
                          (was_on ? "on" : "off"));
      continue;
    }
    if (it == saved.end()) continue;
    const char* text = it->second.c_str();
    char* end = nullptr;
    const double was = std::strtod(text, &end);
    const bool same = (end && *end == '\0' && end != text) ? was == std::strtod(r.value.c_str(), nullptr)
                                                            : it->second == r.value;
    if (r.name == std::string("seed") ? it->second != r.value : !same)
      changes.push_back(std::string("--") + r.name + " is " + r.value + ", the run used " + it->second);
  }
  return changes;
}

io::InputConvention to_io(InputConvention c) { return io::parse_convention(convention_name(c)); }

// The confusion matrix as an RGB image for TensorBoard: one 16x16 cell per entry, darker =
// more of the true class's images.
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

// Frees fc8 alone (phase 1) or every layer (phase 2).
void set_phase(Module& model, int phase) {
  if (phase == 1) {
    model.freeze("vgg16/");
    model.unfreeze("vgg16/fc8/");
  } else {
    model.unfreeze("vgg16/");
  }
}

// Pool5 features of a whole data set, computed once (phase 1 with --no-augment): the frozen
// prefix conv1..pool5 gives the same output every epoch when no augmentation varies the input.
struct FeatureCache {
  Tensor feats;                 // [n, F] float32 on the host, one row per readable image
  std::vector<int64_t> row;     // dataset index -> row, -1 when the image could not be read
  std::vector<int64_t> labels;  // per row
};

// Index of the first child after the prefix whose output is cached (fc6: after "flatten").
size_t head_start(Sequential& model) {
  const auto& c = model.children();
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i]->name() == "flatten") return i + 1;
  KILN_FAIL("internal: the VGG model has no 'flatten' layer");
}

// Runs children [from, end) of the model on x.
Tensor run_from(Sequential& model, size_t from, Tensor x) {
  const auto& c = model.children();
  for (size_t i = from; i < c.size(); ++i) x = (*c[i])(x);
  return x;
}

FeatureCache pool5_features(Sequential& model, size_t head, const io::Dataset& ds, io::LoaderOptions opt) {
  opt.shuffle = false;
  opt.augment = false;
  opt.start_epoch = 0;
  io::Loader loader(ds, opt);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  FeatureCache fc;
  fc.row.assign(ds.size(), -1);
  std::vector<float> all;
  int64_t width = 0, rows = 0;
  while (auto b = loader.next()) {
    if (b->images.dim(0) == 0) continue;
    Tensor x = b->images;
    const auto& c = model.children();
    for (size_t i = 0; i < head; ++i) x = (*c[i])(x);
    width = x.dim(1);
    const std::vector<float> v = x.to_vector<float>();
    all.insert(all.end(), v.begin(), v.end());
    const std::vector<int64_t> lab = b->labels.to_vector<int64_t>();
    for (size_t i = 0; i < b->indices.size(); ++i) {
      fc.row[static_cast<size_t>(b->indices[i])] = rows++;
      fc.labels.push_back(lab[i]);
    }
  }
  model.train(was_training);
  KILN_CHECK(rows > 0, "no image of '", ds.root, "' could be read");
  fc.feats = Tensor::from_vector(all, Shape{rows, width});
  return fc;
}

// The batch of dataset indices `idx` from the cache (unreadable images left out).
void gather(const FeatureCache& fc, const std::vector<int64_t>& idx, Device device, Tensor& x, Tensor& y) {
  const int64_t width = fc.feats.dim(1);
  const float* src = fc.feats.data<float>();
  std::vector<float> v;
  std::vector<int64_t> lab;
  for (int64_t i : idx) {
    const int64_t r = fc.row[static_cast<size_t>(i)];
    if (r < 0) continue;
    v.insert(v.end(), src + r * width, src + (r + 1) * width);
    lab.push_back(fc.labels[static_cast<size_t>(r)]);
  }
  if (lab.empty()) return;
  const auto n = static_cast<int64_t>(lab.size());
  x = Tensor::from_vector(v, Shape{n, width}).to(device);
  y = Tensor::from_vector(lab, Shape{n}).to(device);
}

// The order the training loader would serve epoch `epoch` in (a loader only asked for it).
std::vector<int64_t> epoch_order_of(const io::Dataset& ds, io::LoaderOptions opt, int64_t epoch) {
  opt.num_workers = 1;
  opt.prefetch_batches = 1;
  opt.batch_size = 1;
  opt.cache_bytes = 0;
  io::Loader l(ds, opt);
  return l.epoch_order(static_cast<uint64_t>(epoch));
}

// Loss, accuracy and the confusion matrix over evaluation batches: both evaluation paths
// (full forward, cached features) feed one tally.
class EvalTally {
 public:
  explicit EvalTally(int64_t num_classes) {
    r_.confusion.assign(static_cast<size_t>(num_classes), std::vector<int64_t>(static_cast<size_t>(num_classes), 0));
  }
  void add(const Tensor& logits, const Tensor& labels) {
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
  int64_t images() const { return r_.images; }
  EvalResult finish() {
    r_.loss = loss_sum_ / static_cast<double>(r_.images);
    r_.acc = static_cast<double>(correct_) / static_cast<double>(r_.images);
    return r_;
  }

 private:
  EvalResult r_;
  double loss_sum_ = 0;
  int64_t correct_ = 0;
};

EvalResult evaluate_cached(Sequential& model, size_t head, const FeatureCache& fc, int64_t batch, Device device,
                           int64_t num_classes) {
  EvalTally tally(num_classes);
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  std::vector<int64_t> all;
  for (size_t i = 0; i < fc.row.size(); ++i) all.push_back(static_cast<int64_t>(i));
  for (size_t at = 0; at < all.size(); at += static_cast<size_t>(batch)) {
    Tensor x, y;
    const size_t end = std::min(all.size(), at + static_cast<size_t>(batch));
    gather(fc, std::vector<int64_t>(all.begin() + static_cast<std::ptrdiff_t>(at),
                                    all.begin() + static_cast<std::ptrdiff_t>(end)), device, x, y);
    if (!x.defined()) continue;
    tally.add(run_from(model, head, x), y);
  }
  model.train(was_training);
  return tally.finish();
}

}  // namespace

Device choose_device(const std::string& flag) {
  const int gpus = device_count(DeviceType::cuda);
  if (flag == "cpu") {
    std::printf("device: cpu (asked for with --device cpu)\n");
    return Device::cpu();
  }
  if (flag == "cuda") {
    KILN_CHECK(gpus > 0, "--device cuda: no CUDA GPU is available here (use --device cpu or auto)");
    std::printf("device: cuda:0 (asked for with --device cuda)\n");
    return Device::cuda(0);
  }
  if (gpus > 0) {
    std::printf("device: cuda:0 (--device auto: %d GPU%s found)\n", gpus, gpus > 1 ? "s" : "");
    return Device::cuda(0);
  }
  std::printf("device: cpu (--device auto: no CUDA GPU found)\n");
  return Device::cpu();
}

std::string recipe_config_text(const TrainConfig& cfg) {
  std::string out;
  for (const RecipeFlag& r : recipe_flags(cfg))
    if (!r.is_switch || r.value == "1") out += std::string(r.name) + " = " + (r.is_switch ? "1" : r.value) + "\n";
  return out;
}

int resize_for(int64_t image_size) { return static_cast<int>(image_size * 256 / 224); }

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

std::string eval_details(const EvalResult& r, const std::vector<std::string>& classes) {
  std::string out = "per-class accuracy:\n";
  size_t w = 5;
  for (const std::string& c : classes) w = std::max(w, c.size());
  for (size_t t = 0; t < classes.size(); ++t) {
    int64_t total = 0;
    for (int64_t v : r.confusion[t]) total += v;
    const double acc = total ? 100.0 * static_cast<double>(r.confusion[t][t]) / static_cast<double>(total) : 0.0;
    out += "  " + classes[t] + std::string(w - classes[t].size(), ' ') + fmt("  %5.1f%%", acc) + "  (" +
           std::to_string(r.confusion[t][t]) + "/" + std::to_string(total) + ")\n";
  }
  out += "confusion matrix (rows: true class, columns: predicted, in the order above):\n";
  for (size_t t = 0; t < classes.size(); ++t) {
    out += "  " + classes[t] + std::string(w - classes[t].size(), ' ');
    for (int64_t v : r.confusion[t]) out += fmt(" %5.0f", static_cast<double>(v));
    out += "\n";
  }
  return out;
}

TrainOutcome run_train(const TrainConfig& cfg) {
  // Everything that can be refused is checked before any work or any write.
  const io::Dataset train_ds = io::image_folder(cfg.train_dir);
  const io::Dataset val_ds = io::image_folder(cfg.val_dir);
  KILN_CHECK(val_ds.classes == train_ds.classes, "the validation classes (", join_comma(val_ds.classes),
             ") differ from the training classes (", join_comma(train_ds.classes), ")");
  const std::vector<std::string>& classes = train_ds.classes;
  const auto num_classes = static_cast<int64_t>(classes.size());
  prepare_model_dir(cfg.model_dir);
  const std::string classes_path = (fs::path(cfg.model_dir) / "classes.txt").string();
  if (fs::exists(classes_path)) {
    const std::string have = read_text(classes_path);
    KILN_CHECK(have == join_lines(classes), "model directory '", cfg.model_dir, "' was made for other classes (",
               classes_path, ") than the training folder has (", join_comma(classes),
               "); use a new --model-dir");
  }
  // The newest checkpoint whose files verify (a damaged newer one is reported below).
  const io::ResumeChoice choice = io::newest_intact_checkpoint(cfg.model_dir);
  const std::optional<io::CheckpointInfo>& resume = choice.checkpoint;
  if (resume) {
    const io::CheckpointMeta& m = resume->meta;
    KILN_CHECK(m.arch == "vgg16" && m.image_size == cfg.image_size, "model directory '", cfg.model_dir,
               "' holds a ", m.arch, " at image size ", m.image_size, ", not vgg16 at --image-size ", cfg.image_size,
               "; use a new --model-dir");
    KILN_CHECK(m.classes == classes, "model directory '", cfg.model_dir, "' holds a model for classes (",
               join_comma(m.classes), "), not (", join_comma(classes), "); use a new --model-dir");
  }
  // A resume continues the saved recipe: changed training flags are refused (unless allowed).
  const std::string config_path = (fs::path(cfg.model_dir) / "config.txt").string();
  const std::string saved_config = resume && fs::exists(config_path) ? read_text(config_path) : std::string();
  const std::vector<std::string> changes = resume ? recipe_changes(cfg, saved_config) : std::vector<std::string>{};
  KILN_CHECK(changes.empty() || cfg.allow_changed_config, "model directory '", cfg.model_dir,
             "' holds a run with another recipe: ", join_comma(changes), " (", config_path,
             "); resume with the run's values, use a new --model-dir, or pass --allow-changed-config");
  const int64_t total_epochs = cfg.phase1_epochs + cfg.phase2_epochs;
  KILN_CHECK(total_epochs >= 1, "nothing to train: --phase1-epochs and --phase2-epochs are both 0");
  const Device device = choose_device(cfg.device);

  std::printf("data: train %s\n      val   %s\n", train_ds.summary().c_str(), val_ds.summary().c_str());

  Generator init_gen(cfg.seed), dropout_gen(cfg.seed + 1);
  const uint64_t loader_seed = cfg.seed + 2;
  VggOptions vo;
  vo.depth = 16;
  vo.num_classes = num_classes;
  vo.keep_prob = static_cast<float>(cfg.keep_prob);
  vo.image_size = cfg.image_size;
  std::shared_ptr<Sequential> model = make_vgg(vo, init_gen, dropout_gen);

  io::InputConvention convention = io::InputConvention::torchvision_rgb;
  std::string convention_source = "the default, no weights file says otherwise";
  int64_t start_epoch = 0, global_step = 0;
  if (resume) {
    import_weights(*model, resume->weights_path);
    // The run goes ahead: damaged checkpoints are moved out of its way (a retrained epoch
    // would overwrite them, pruning would count them), not deleted.
    std::fflush(stdout);
    for (const io::DamagedCheckpoint& d : choice.damaged)
      std::fprintf(stderr, "warning: checkpoint '%s' is damaged, not resuming from it: %s; its files are kept as %s\n",
                   d.state_path.c_str(), d.reason.c_str(), join_comma(io::set_aside(d)).c_str());
    init_gen.set_state(resume->meta.init_gen);
    dropout_gen.set_state(resume->meta.dropout_gen);
    start_epoch = resume->meta.epochs_done;
    global_step = resume->meta.global_step;
    convention = io::parse_convention(resume->meta.convention);
    convention_source = "from the checkpoint";
    const std::string mid = resume->meta.batches_done > 0
                                ? " and " + std::to_string(resume->meta.batches_done) + " batch(es) of epoch " +
                                      std::to_string(start_epoch + 1)
                                : std::string();
    const std::string acc = resume->meta.val_acc < 0 ? std::string("not evaluated at this checkpoint")
                                                     : fmt("val acc %.1f%%", 100.0 * resume->meta.val_acc);
    std::printf("resuming from %s%s: %lld epoch(s)%s done, step %lld, %s (--weights is not loaded again)\n",
                resume->state_path.c_str(), choice.damaged.empty() ? "" : " (the newest intact checkpoint)",
                static_cast<long long>(start_epoch), mid.c_str(),
                static_cast<long long>(global_step), acc.c_str());
  } else if (!cfg.weights.empty()) {
    ImportOptions io_opt;
    io_opt.skip = {"vgg16/fc8/"};
    const ImportReport report = import_weights(*model, cfg.weights, io_opt);
    std::printf("weights: conv1..fc7 from %s; fc8 freshly initialised for %lld classes\n%s\n", cfg.weights.c_str(),
                static_cast<long long>(num_classes), report.to_string().c_str());
    if (report.convention != InputConvention::unknown) {
      convention = to_io(report.convention);
      convention_source = "recorded by the weights file";
    } else {
      convention_source = "the default: the weights file records none";
    }
  } else {
    std::printf("weights: none given (--weights): the backbone conv1..fc7 is RANDOMLY INITIALISED, not pretrained\n");
  }
  if (cfg.convention != "auto" && !resume) {
    convention = io::parse_convention(cfg.convention);
    convention_source = "set by --convention";
  }
  std::printf("input: %lldx%lld, resize shorter side to %d, %s preprocessing (%s)\n",
              static_cast<long long>(cfg.image_size), static_cast<long long>(cfg.image_size), resize_for(cfg.image_size),
              io::convention_name(convention), convention_source.c_str());
  // Written only once the weights fit, so a refused run leaves the directory as it was.
  if (const std::vector<std::string> stale = io::remove_stale_temporaries(cfg.model_dir); !stale.empty())
    std::printf("model dir: removed %zu stale temporary file(s) left by an interrupted run: %s\n", stale.size(),
                join_comma(stale).c_str());
  if (!fs::exists(classes_path)) io::write_file_atomic(classes_path, join_lines(classes));
  if (!resume || saved_config.empty()) {
    io::write_file_atomic(config_path, cfg.config_text);
  } else if (!changes.empty()) {
    // --allow-changed-config: the new values become the run's, the change is recorded.
    std::string history;
    std::istringstream in(saved_config);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("# changed on resume", 0) == 0) history += line + "\n";
    history += "# changed on resume at step " + std::to_string(resume->meta.global_step) +
               " (--allow-changed-config): " + join_comma(changes) + "\n";
    io::write_file_atomic(config_path, history + cfg.config_text);
    std::printf("recipe changed on resume (--allow-changed-config): %s; the result will differ from an uninterrupted run\n",
                join_comma(changes).c_str());
  }  // else: the same recipe, config.txt is kept as the run wrote it
  model->to(device);

  io::LoaderOptions lo;
  lo.batch_size = cfg.batch;
  lo.num_workers = cfg.workers;
  lo.seed = loader_seed;
  lo.resize_shorter = resize_for(cfg.image_size);
  lo.crop = static_cast<int>(cfg.image_size);
  lo.convention = convention;
  lo.device = device;
  lo.augment = !cfg.no_augment;
  io::LoaderOptions vlo = lo;
  vlo.shuffle = false;
  vlo.augment = false;
  // Built when first needed: a phase 1 served from cached features reads no batch of them,
  // and the training loader must start at the epoch it first serves.
  std::unique_ptr<io::Loader> train_loader, val_loader;
  auto need_loaders = [&](int64_t epoch) {
    if (!train_loader) {
      lo.start_epoch = static_cast<uint64_t>(epoch);
      train_loader = std::make_unique<io::Loader>(train_ds, lo);
    }
    if (!val_loader) val_loader = std::make_unique<io::Loader>(val_ds, vlo);
  };
  FeatureCache train_cache, val_cache;
  const size_t head = head_start(*model);

  io::MetricsCsv csv((fs::path(cfg.model_dir) / "metrics.csv").string(),
                     {"epoch", "phase", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "img_per_s"});
  io::TensorBoardWriter tb((fs::path(cfg.model_dir) / "events").string());
  const std::string every_steps =
      cfg.checkpoint_every > 0 ? " and every " + std::to_string(cfg.checkpoint_every) + " steps" : std::string();
  std::printf("model dir: %s (checkpoints every epoch%s, last %d kept plus the best; metrics.csv; TensorBoard events in events/)\n",
              cfg.model_dir.c_str(), every_steps.c_str(), cfg.keep);
  if (cfg.eval_every > 0)
    std::printf("evaluation: every epoch and every %lld steps\n", static_cast<long long>(cfg.eval_every));
  std::printf("recipe: phase 1 (fc8 only) %lld epoch(s) at lr %g, phase 2 (all layers) %lld epoch(s) at lr %g; "
              "SGD momentum %g, weight decay %g on weights, dropout keep %g, batch %lld, seed %llu\n",
              static_cast<long long>(cfg.phase1_epochs), cfg.phase1_lr, static_cast<long long>(cfg.phase2_epochs),
              cfg.phase2_lr, cfg.momentum, cfg.weight_decay, cfg.keep_prob, static_cast<long long>(cfg.batch),
              static_cast<unsigned long long>(cfg.seed));
  if (start_epoch >= total_epochs) std::printf("nothing left to train: all %lld epochs are done\n",
                                               static_cast<long long>(total_epochs));

  const bool tty = ::isatty(fileno(stdout)) != 0;
  std::unique_ptr<SGD> opt;
  int opt_phase = 0;
  TrainOutcome outcome;
  outcome.val = resume ? EvalResult{resume->meta.val_loss, resume->meta.val_acc, 0, {}} : EvalResult{};
  std::string last_good = resume ? resume->state_path : std::string("(none yet)");
  for (int64_t e = start_epoch; e < total_epochs; ++e) {
    const int phase = e < cfg.phase1_epochs ? 1 : 2;
    const double lr = phase == 1 ? cfg.phase1_lr : cfg.phase2_lr;
    const int64_t phase_epochs = phase == 1 ? cfg.phase1_epochs : cfg.phase2_epochs;
    const int64_t epoch_in_phase = phase == 1 ? e + 1 : e - cfg.phase1_epochs + 1;
    if (opt_phase != phase) {
      set_phase(*model, phase);
      SgdOptions so;
      so.lr = static_cast<float>(lr);
      so.momentum = static_cast<float>(cfg.momentum);
      opt = std::make_unique<SGD>(*model, so);
      if (resume && e == start_epoch && resume->meta.phase == phase) io::restore_optimizer(resume->state_path, *opt);
      opt_phase = phase;
      std::printf("phase %d: %s, %lld epoch(s) at lr %g\n", phase,
                  phase == 1 ? "fc8 only (conv1..fc7 frozen: run as pure inference)" : "all layers",
                  static_cast<long long>(phase_epochs), lr);
      if (cfg.weight_decay > 0) {
        const std::vector<Tensor> decayed = decayed_weights(*model);
        if (!decayed.empty()) {
          NoGradGuard no_grad;
          std::printf("  weight decay: the L2 penalty on this phase's %zu trainable weight tensor(s) is %.4g now; it is "
                      "trained on but not part of the reported train loss (cross-entropy, as val loss)\n",
                      decayed.size(), l2_penalty(decayed, static_cast<float>(cfg.weight_decay)).item());
        }
      }
    }
    const bool cached = phase == 1 && cfg.no_augment && cfg.feature_cache;
    if (cached && !train_cache.feats.defined()) {
      const auto tc = std::chrono::steady_clock::now();
      train_cache = pool5_features(*model, head, train_ds, vlo);
      val_cache = pool5_features(*model, head, val_ds, vlo);
      std::printf("phase 1 mode: pool5 features of %lld train and %lld val images computed once (%.1f s, %.0f MiB) and "
                  "reused every epoch (--no-augment); per step only fc6, fc7 (with dropout) and fc8 run\n",
                  static_cast<long long>(train_cache.feats.dim(0)), static_cast<long long>(val_cache.feats.dim(0)),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count(),
                  static_cast<double>(train_cache.feats.nbytes() + val_cache.feats.nbytes()) / (1 << 20));
    } else if (phase == 1 && e == start_epoch) {
      std::printf("phase 1 mode: full forward each step (%s); conv1..fc7 run as inference, no graph kept\n",
                  cfg.no_augment ? "--no-feature-cache" : "augmentation on: random crops and flips change the features");
    }
    if (!cached) need_loaders(e);
    model->train();
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, step_in_epoch = 0;
    // The batches of this epoch: from the loader, or (cached) the same order from the cache.
    std::vector<int64_t> order;
    size_t order_at = 0;
    if (cached) order = epoch_order_of(train_ds, lo, e);
    const int64_t steps = cached ? (static_cast<int64_t>(order.size()) + cfg.batch - 1) / cfg.batch
                                 : train_loader->batches_per_epoch();
    int64_t batches_in_epoch = 0;  // batches taken this epoch (empty ones included): the data position
    if (resume && e == start_epoch && resume->meta.batches_done > 0) {
      // A mid-epoch checkpoint: skip the batches it already trained on. Batch contents depend
      // only on (seed, epoch, index), so the rest of the epoch is what the full run saw.
      const io::CheckpointMeta& m = resume->meta;
      if (cached) {
        order_at = std::min(order.size(), static_cast<size_t>(m.batches_done * cfg.batch));
      } else {
        for (int64_t k = 0; k < m.batches_done; ++k)
          KILN_CHECK(train_loader->next().has_value(), "checkpoint '", resume->state_path, "' is ", m.batches_done,
                     " batches into epoch ", e + 1, " but the epoch has only ", k, " (was the training data changed?)");
      }
      batches_in_epoch = m.batches_done;
      loss_sum = m.epoch_loss_sum;
      correct = m.epoch_correct;
      seen = m.epoch_seen;
      step_in_epoch = m.epoch_steps;
      std::printf("skipped the first %lld batch(es) of epoch %lld: trained before the checkpoint\n",
                  static_cast<long long>(m.batches_done), static_cast<long long>(e + 1));
    }
    // The checkpoint state at this point (mid-epoch when batches_in_epoch > 0).
    auto make_meta = [&](int64_t epochs_done, int64_t batches_done, const EvalResult* val) {
      io::CheckpointMeta meta;
      meta.epochs_done = epochs_done;
      meta.batches_done = batches_done;
      meta.global_step = global_step;
      meta.phase = phase;
      meta.val_loss = val ? val->loss : 0.0;
      meta.val_acc = val ? val->acc : -1.0;
      if (batches_done > 0) {
        meta.epoch_loss_sum = loss_sum;
        meta.epoch_correct = correct;
        meta.epoch_seen = seen;
        meta.epoch_steps = step_in_epoch;
      }
      meta.arch = "vgg16";
      meta.image_size = cfg.image_size;
      meta.classes = classes;
      meta.convention = io::convention_name(convention);
      meta.seed = cfg.seed;
      meta.init_gen = init_gen.state();
      meta.dropout_gen = dropout_gen.state();
      return meta;
    };
    for (;;) {
      Tensor x, y;
      if (cached) {
        if (order_at >= order.size()) break;
        const size_t end = std::min(order.size(), order_at + static_cast<size_t>(cfg.batch));
        gather(train_cache, std::vector<int64_t>(order.begin() + static_cast<std::ptrdiff_t>(order_at),
                                                 order.begin() + static_cast<std::ptrdiff_t>(end)),
               device, x, y);
        order_at = end;
      } else {
        std::optional<io::Batch> b = train_loader->next();
        if (!b) break;
        x = b->images;
        y = b->labels;
      }
      ++batches_in_epoch;
      const int64_t n = x.defined() ? x.dim(0) : 0;
      if (n == 0) continue;
      Tensor logits = cached ? run_from(*model, head, x) : (*model)(x);
      Tensor data_loss;
      Tensor loss = classification_loss(logits, y, *model, static_cast<float>(cfg.weight_decay), &data_loss);
      // Reported: the cross-entropy alone, comparable with the validation loss and across
      // phases (weight decay's penalty grows with the number of trainable layers).
      const double l = data_loss.item();
      if (const double total = loss.item(); !std::isfinite(total))
        KILN_FAIL("the loss became ", total, " in phase ", phase, " epoch ", epoch_in_phase, "/", phase_epochs, " step ",
                  step_in_epoch + 1,
                  ": training stopped (try a smaller learning rate); the last good checkpoint is kept: ", last_good);
      opt->zero_grad();
      loss.backward();
      opt->set_lr(static_cast<float>(lr));
      opt->step();
      ++global_step;
      ++step_in_epoch;
      loss_sum += l * static_cast<double>(n);
      const std::vector<int64_t> pred = argmax(logits).to_vector<int64_t>();
      const std::vector<int64_t> truth = y.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) correct += pred[i] == truth[i];
      seen += n;
      if (tty) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double ips = seen / std::max(secs, 1e-9);
        const double eta = (steps - step_in_epoch) * (secs / static_cast<double>(step_in_epoch));
        std::printf("\r  phase %d epoch %lld/%lld step %lld/%lld  loss %.3f acc %.1f%%  %.1f img/s  ETA %d:%02d   ", phase,
                    static_cast<long long>(epoch_in_phase), static_cast<long long>(phase_epochs),
                    static_cast<long long>(step_in_epoch), static_cast<long long>(steps), loss_sum / seen,
                    100.0 * correct / seen, ips, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
        std::fflush(stdout);
      }
      // Every N steps (the epoch's last batch is left to the per-epoch evaluation and checkpoint).
      const bool mid_epoch = batches_in_epoch < steps;
      EvalResult mid;
      bool evaluated = false;
      if (cfg.eval_every > 0 && global_step % cfg.eval_every == 0 && mid_epoch) {
        mid = cached ? evaluate_cached(*model, head, val_cache, cfg.batch, device, num_classes)
                     : evaluate(*model, *val_loader, num_classes);
        evaluated = true;
        if (tty) std::printf("\r%120s\r", "");
        std::printf("  step %lld (phase %d epoch %lld/%lld, batch %lld/%lld)  train loss %.3f acc %.1f%%  val loss %.3f acc %.1f%%\n",
                    static_cast<long long>(global_step), phase, static_cast<long long>(epoch_in_phase),
                    static_cast<long long>(phase_epochs), static_cast<long long>(batches_in_epoch),
                    static_cast<long long>(steps), loss_sum / seen, 100.0 * correct / seen, mid.loss, 100.0 * mid.acc);
        std::fflush(stdout);
        tb.add_scalar("val/loss", mid.loss, global_step);
        tb.add_scalar("val/accuracy", mid.acc, global_step);
        tb.flush();
      }
      const bool stop_here = cfg.stop_after_steps > 0 && global_step >= cfg.stop_after_steps && mid_epoch;
      if ((cfg.checkpoint_every > 0 && global_step % cfg.checkpoint_every == 0 && mid_epoch) || stop_here)
        last_good = io::save_checkpoint(cfg.model_dir, *model, *opt, make_meta(e, batches_in_epoch, evaluated ? &mid : nullptr),
                                    cfg.keep);
      if (stop_here) {
        if (tty) std::printf("\r%120s\r", "");
        std::printf("stopping after step %lld (mid-epoch checkpoint %s) as --stop-after-steps asks; run the same train "
                    "command again to resume\n", static_cast<long long>(global_step), last_good.c_str());
        return outcome;
      }
    }
    KILN_CHECK(seen > 0, "no training image of '", cfg.train_dir, "' could be read");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ips = seen / std::max(secs, 1e-9);
    const double train_loss = loss_sum / seen, train_acc = static_cast<double>(correct) / seen;
    const EvalResult val = cached ? evaluate_cached(*model, head, val_cache, cfg.batch, device, num_classes)
                                  : evaluate(*model, *val_loader, num_classes);
    if (tty) std::printf("\r%120s\r", "");
    std::printf("epoch %lld/%lld (phase %d: %s)  train loss %.3f acc %.1f%%  val loss %.3f acc %.1f%%  %.1f img/s\n",
                static_cast<long long>(epoch_in_phase), static_cast<long long>(phase_epochs), phase,
                phase == 1 ? "fc8 only" : "all layers", train_loss, 100.0 * train_acc, val.loss, 100.0 * val.acc, ips);
    std::fflush(stdout);

    last_good = io::save_checkpoint(cfg.model_dir, *model, *opt, make_meta(e + 1, 0, &val), cfg.keep);

    csv.append({std::to_string(e + 1), std::to_string(phase), std::to_string(global_step), fmt("%g", lr),
                fmt("%.6f", train_loss), fmt("%.6f", train_acc), fmt("%.6f", val.loss), fmt("%.6f", val.acc),
                fmt("%.2f", ips)});
    tb.add_scalar("train/loss", train_loss, global_step);
    tb.add_scalar("train/accuracy", train_acc, global_step);
    tb.add_scalar("val/loss", val.loss, global_step);
    tb.add_scalar("val/accuracy", val.acc, global_step);
    tb.add_scalar("learning_rate", lr, global_step);
    tb.add_scalar("images_per_second", ips, global_step);
    int64_t side = 0;
    const std::vector<uint8_t> img = confusion_image(val, side);
    tb.add_image_rgb("val/confusion_matrix", img, side, side, global_step);
    tb.flush();
    outcome.val = val;

    if (cfg.stop_after_steps > 0 && global_step >= cfg.stop_after_steps && e + 1 < total_epochs) {
      std::printf("stopping after step %lld (end of epoch %lld) as --stop-after-steps asks; run the same train command "
                  "again to resume\n", static_cast<long long>(global_step), static_cast<long long>(e + 1));
      return outcome;
    }
    if (cfg.stop_after_epochs > 0 && e + 1 >= cfg.stop_after_epochs && e + 1 < total_epochs) {
      std::printf("stopping after epoch %lld of %lld as --stop-after-epochs asks; run the same train command again to resume\n",
                  static_cast<long long>(e + 1), static_cast<long long>(total_epochs));
      return outcome;
    }
  }
  outcome.finished = true;
  if (!outcome.val.confusion.empty()) {
    std::printf("final validation: loss %.3f, accuracy %.1f%% on %lld images\n%s", outcome.val.loss,
                100.0 * outcome.val.acc, static_cast<long long>(outcome.val.images),
                eval_details(outcome.val, classes).c_str());
  }
  std::printf("checkpoint: %s\n", last_good.c_str());
  return outcome;
}

TrainedModel load_trained(const std::string& model_dir, Device device, bool best) {
  KILN_CHECK(fs::is_directory(model_dir), "model directory '", model_dir, "' does not exist");
  const std::optional<io::CheckpointInfo> ck = best ? io::best_checkpoint(model_dir) : io::latest_checkpoint(model_dir);
  KILN_CHECK(ck.has_value(), "model directory '", model_dir, "' holds no checkpoint (run vgg_finetune train first)");
  TrainedModel t;
  t.checkpoint = *ck;
  t.init = std::make_unique<Generator>(ck->meta.seed);
  t.dropout = std::make_unique<Generator>(ck->meta.seed + 1);
  KILN_CHECK(ck->meta.arch == "vgg16", "checkpoint '", ck->state_path, "' holds a ", ck->meta.arch, ", expected vgg16");
  VggOptions vo;
  vo.num_classes = static_cast<int64_t>(ck->meta.classes.size());
  vo.image_size = ck->meta.image_size;
  t.model = make_vgg(vo, *t.init, *t.dropout);
  import_weights(*t.model, ck->weights_path);
  t.model->to(device);
  t.model->eval();
  t.convention = io::parse_convention(ck->meta.convention);
  return t;
}

}  // namespace kiln::app
