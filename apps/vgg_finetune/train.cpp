// vgg_finetune's train command over train/trainer: flags to phases and options, the model
// directory (checks, resume choice, recipe diffs, config.txt), weights, and lines for people.
#include "apps/vgg_finetune/train.h"

#include <unistd.h>

#include <pthread.h>

#include <csignal>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include "apps/vgg_finetune/args.h"
#include "layers/init.h"
#include "layers/loss.h"
#include "train/api.h"
#include "train/audit.h"
#include "train/communicator.h"
#include "train/format.h"
#ifdef KILN_HAS_DIST
#include "dist/dist.h"
#endif

namespace fs = std::filesystem;

namespace kiln::app {

NewDirGuard::NewDirGuard(const std::string& d) {
  std::error_code ec;
  for (fs::path p = fs::absolute(d, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    made.push_back(p.string());
    if (p == p.parent_path()) break;
  }
}

NewDirGuard::~NewDirGuard() {
  if (std::uncaught_exceptions() == 0) return;
  std::error_code ec;
  for (const std::string& p : made)  // deepest first
    if (fs::is_directory(p, ec) && fs::is_empty(p, ec) && !ec) fs::remove(p, ec);
}

namespace {

// The whole of a small file the run keeps (config.txt, classes.txt).
std::string read_text(const std::string& path) {
  std::error_code ec;
  KILN_CHECK(!fs::is_directory(path, ec), path, " is a folder, where the run keeps a file: move it away");
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "cannot read '", path, "': ", std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x + "\n";
  return s;
}

// The model directory must exist (created here) and be writable; checked before any work.
void prepare_model_dir(const std::string& dir) {
  std::error_code ec;
  KILN_CHECK(!fs::is_symlink(fs::symlink_status(dir, ec)) || fs::exists(dir, ec), "model directory '", dir,
             "' is a symbolic link to '", fs::read_symlink(dir, ec).string(), "', which does not exist: create that "
             "folder, or give another --model-dir");
  fs::create_directories(dir, ec);
  KILN_CHECK(!ec && fs::is_directory(dir), "cannot create model directory '", dir, "': ",
             ec ? ec.message() : "a file of that name is in the way");
  const std::string probe = (fs::path(dir) / ".write_test").string();
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  KILN_CHECK(f != nullptr, "model directory '", dir, "' is not writable: ", std::strerror(errno));
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
  return format_number("%.17g", v);
}

// The recipe flags (what a resume must not change) with their values in this run; a switch
// has "1" when on and "" when off (config.txt then has no line for it, as Flags::dump writes).
std::vector<RecipeFlag> recipe_flags(const TrainConfig& c) {
  return {{"model", c.model, false},
          {"phase1-epochs", std::to_string(c.phase1_epochs), false},
          {"phase1-lr", exact(c.phase1_lr), false},
          {"phase2-epochs", std::to_string(c.phase2_epochs), false},
          {"phase2-lr", exact(c.phase2_lr), false},
          {"batch", std::to_string(c.batch), false},
          {"momentum", exact(c.momentum), false},
          {"weight-decay", exact(c.weight_decay), false},
          {"keep-prob", exact(c.keep_prob), false},
          {"seed", std::to_string(c.seed), false},
          {"image-size", std::to_string(c.image_size), false},
          {"head", c.head, false},
          {"train-from", c.train_from, false},
          {"no-augment", c.no_augment ? "1" : "", true},
          {"head-init", c.probe_head ? "probe" : "random", false},
          {"calibrate-bn", c.calibrate_bn, false},
          {"precision", c.precision, false}};
}

// "key = value" lines of config.txt at `path` ('#' lines are comments; spaces around '=' and
// CR LF endings, as an editor may leave them, are taken). A line of neither kind, or a key
// given twice, is refused with its line: a resume must not guess at the run's recipe.
std::map<std::string, std::string> parse_config(const std::string& text, const std::string& path) {
  std::map<std::string, std::string> out;
  const std::vector<std::string> lines = text_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string line = trimmed(lines[i]);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    KILN_CHECK(eq != std::string::npos && eq > 0, path, ", line ", i + 1, ": '", line, "' is not 'key = value' ",
               "(edited, or cut short?); restore the line, or move the file away and resume with ",
               "--allow-changed-config");
    const std::string key = trimmed(std::string_view(line).substr(0, eq));
    KILN_CHECK(out.emplace(key, trimmed(std::string_view(line).substr(eq + 1))).second, path, ", line ", i + 1,
               ": '", key, "' is given a second time (edited?); keep one of its lines");
  }
  return out;
}

// Whether a saved config.txt records any recipe flag (every version wrote the model's).
bool records_recipe(const std::map<std::string, std::string>& saved) {
  for (const RecipeFlag& r : recipe_flags(TrainConfig{}))
    if (saved.count(r.name)) return true;
  return false;
}

// "--a is 1, the run used 0; --b is off, the run used on": changes hold commas themselves.
std::string join_changes(const std::vector<std::string>& changes) {
  return join_names(changes, changes.size(), "; ");
}

// The recipe flags of this run that differ from the saved config, as "--flag NEW (was OLD)".
// Numbers compare by value (1e-3 equals 0.001); a flag the saved file does not record is not
// compared (config.txt of an older version), except switches, which are recorded only when on.
std::vector<std::string> recipe_changes(const TrainConfig& cfg, const std::map<std::string, std::string>& saved) {
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
    if (!same_recipe_value(r.name, it->second, r.value))
      changes.push_back(std::string("--") + r.name + " is " + r.value + ", the run used " + it->second);
  }
  return changes;
}

}  // namespace

std::vector<std::string> run_file_names() { return {kClassesFile, kConfigFile, kSkippedFile, kMetricsCsvName}; }

Device choose_device(const std::string& flag) {
  if (flag == "cpu") {
    std::printf("device: cpu (asked for with --device cpu)\n");
    return Device::cpu();
  }
  const int gpus = device_count(DeviceType::cuda);
  KILN_CHECK(flag != "cuda" || gpus > 0, "--device cuda: no CUDA GPU is available here (use --device cpu or auto)");
  if (gpus == 0) {
    std::printf("device: cpu (--device auto: no CUDA GPU found)\n");
    return Device::cpu();
  }
  if (flag == "cuda")
    std::printf("device: cuda:0 (asked for with --device cuda)\n");
  else
    std::printf("device: cuda:0 (--device auto: %d GPU%s found)\n", gpus, gpus > 1 ? "s" : "");
  std::printf("GPU math: %s\n", gpu_math_summary().c_str());
  return Device::cuda(0);
}

bool same_recipe_value(const std::string& name, const std::string& a, const std::string& b) {
  if (name == "seed") return a == b;  // a uint64: a double would round it
  char* end = nullptr;
  const double x = std::strtod(a.c_str(), &end);
  return (end && *end == '\0' && end != a.c_str()) ? x == std::strtod(b.c_str(), nullptr) : a == b;
}

namespace {

// What the newest checkpoint of `model_dir` records of the recipe (config.txt gone); none
// when no checkpoint can be read (the resume then says why).
SavedRecipe recipe_of_checkpoint(const std::string& model_dir) {
  std::vector<io::CheckpointInfo> all;
  try {
    all = io::list_checkpoints(model_dir);
  } catch (const Error&) {
    return {};
  }
  if (all.empty()) return {};
  const io::CheckpointMeta& m = all.back().meta;
  SavedRecipe out{all.back().state_path, {{"model", m.arch, false},
                                          {"image-size", std::to_string(m.image_size), false},
                                          {"head", m.head.empty() ? "fc" : m.head, false},
                                          {"seed", std::to_string(m.seed), false},
                                          {"precision", m.precision, false}}};
  if (m.batch_size > 0) out.flags.push_back({"batch", std::to_string(m.batch_size), false});
  return out;
}

}  // namespace

SavedRecipe saved_recipe(const std::string& model_dir) {
  std::error_code ec;
  bool resumable = false;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    const std::string n = e.path().filename().string();
    resumable = resumable || io::is_checkpoint_state_name(n);
  }
  const fs::path config = fs::path(model_dir) / kConfigFile;
  if (!resumable) return {};
  if (!fs::exists(config, ec)) return recipe_of_checkpoint(model_dir);
  if (!fs::is_regular_file(config, ec)) return {};
  const std::map<std::string, std::string> saved = parse_config(read_text(config.string()), config.string());
  SavedRecipe out{config.string(), {}};
  for (const RecipeFlag& r : recipe_flags(TrainConfig{})) {
    const auto it = saved.find(r.name);
    if (it != saved.end()) out.flags.push_back({r.name, it->second, r.is_switch});
  }
  return out;
}

std::string recipe_flags_changed(const TrainConfig& cfg) {
  const std::vector<RecipeFlag> now = recipe_flags(cfg), defaults = recipe_flags(TrainConfig{});
  std::string out;
  for (size_t i = 0; i < now.size(); ++i) {
    if (now[i].value == defaults[i].value) continue;
    out += std::string(" --") + now[i].name;
    if (!now[i].is_switch) out += " " + shell_quote(now[i].value);
  }
  return out;
}

std::string recipe_config_text(const TrainConfig& cfg) {
  std::string out;
  for (const RecipeFlag& r : recipe_flags(cfg))
    if (!r.is_switch || r.value == "1") out += std::string(r.name) + " = " + (r.is_switch ? "1" : r.value) + "\n";
  return out;
}

namespace {

// What run_train found in the model directory before any work: the checkpoint to resume
// from and the saved recipe.
struct RunStart {
  std::optional<io::DirLock> lock;  // rank 0's: no other run writes the directory meanwhile
  io::ResumeChoice choice;
  std::string classes_path, config_path, saved_config;
  std::vector<std::string> changes;  // recipe flags changed since the saved run
};

// Once a checkpoint is in phase 2, phase 1 is over: another --phase1-epochs (even with
// --allow-changed-config) would run phase-1 epochs after phase-2 ones.
void check_phase1_over(const TrainConfig& cfg, const io::CheckpointInfo& resume,
                       const std::map<std::string, std::string>& saved) {
  if (resume.meta.phase != 2) return;
  const auto it = saved.find("phase1-epochs");
  KILN_CHECK(it == saved.end() || it->second == std::to_string(cfg.phase1_epochs), "--phase1-epochs ",
             cfg.phase1_epochs, ": phase 1 of the run in '", cfg.model_dir, "' is over (", resume.state_path,
             " is in phase 2) after ", it->second, " epoch(s); another length would run phase 1 again after phase 2. "
             "Keep --phase1-epochs ", it->second, " (phase 2's flags may change with --allow-changed-config)");
}

// The recipe values a checkpoint records itself (seed, batch, precision) against this run's:
// config.txt changed after the checkpoint was written (edited by hand, or a resume with
// --allow-changed-config that wrote no checkpoint yet) would otherwise change them unsaid.
// Flags `changes` already names are not named twice.
void add_checkpoint_changes(const TrainConfig& cfg, const io::CheckpointInfo& c, std::vector<std::string>& changes) {
  std::vector<std::array<std::string, 3>> values = {{"seed", std::to_string(cfg.seed), std::to_string(c.meta.seed)},
                                                     {"precision", cfg.precision, c.meta.precision}};
  if (c.meta.batch_size > 0) values.push_back({"batch", std::to_string(cfg.batch), std::to_string(c.meta.batch_size)});
  for (const auto& [name, now, then] : values) {
    const std::string flag = "--" + name + " ";
    const bool named =
        std::any_of(changes.begin(), changes.end(), [&](const std::string& x) { return x.rfind(flag, 0) == 0; });
    if (now != then && !named)
      changes.push_back(flag + "is " + now + ", the checkpoint " + fs::path(c.state_path).filename().string() +
                        " was trained with " + then + " (config.txt changed since it was written?)");
  }
}

// classes.txt names the run's classes in label order (CR LF endings and a last empty line
// taken). When the checkpoints were trained on the training folder's classes, the file is
// what changed, and the message says so.
void check_classes_file(const std::string& model_dir, const std::string& path, const std::vector<std::string>& classes,
                        const std::optional<io::CheckpointInfo>& resume) {
  if (!fs::exists(path)) return;
  std::vector<std::string> have = text_lines(read_text(path));
  while (!have.empty() && have.back().empty()) have.pop_back();
  if (have == classes) return;
  const std::string fix = resume && resume->meta.classes == classes
                              ? "; its checkpoints were trained on the training folder's classes, so " + path +
                                    " was changed since: restore it (one class per line, in that order), or remove "
                                    "it and it is written again"
                              : "; use a new --model-dir";
  KILN_FAIL("model directory '", model_dir, "' was made for other classes: ", path, " lists (", join_names(have, 20),
            "), the training folder has (", join_names(classes, 20), ")", fix);
}

// Everything that can be refused about the model directory, checked before any write.
RunStart check_model_dir(const TrainConfig& cfg, const ModelSpec& spec, const std::vector<std::string>& classes,
                         bool root) {
  RunStart s;
  prepare_model_dir(cfg.model_dir);
  if (root) s.lock.emplace(cfg.model_dir);
  s.classes_path = (fs::path(cfg.model_dir) / kClassesFile).string();
  // The newest checkpoint whose files verify (a damaged newer one is reported later).
  s.choice = io::newest_intact_checkpoint(cfg.model_dir);
  const std::optional<io::CheckpointInfo>& resume = s.choice.checkpoint;
  check_classes_file(cfg.model_dir, s.classes_path, classes, resume);
  if (resume) {
    const std::string differs = resume_mismatch(resume->meta, spec.name, cfg.image_size, classes);
    KILN_CHECK(differs.empty(), "model directory '", cfg.model_dir, "' holds a checkpoint trained with ", differs, " (",
               resume->state_path, "); use a new --model-dir");
    // The head and phase 1's first layer are the run's too: its checkpoints hold that model (the
    // avg head has no fc6, fc7) and a resume takes train_from from the checkpoint, so another
    // value would be recorded as a change (--allow-changed-config) and not happen.
    const std::string head = resume->meta.head.empty() ? "fc" : resume->meta.head;
    KILN_CHECK(cfg.head == head, "--head ", cfg.head, ": the run in '", cfg.model_dir, "' was built with --head ", head,
               " (", resume->state_path, "), which its resume keeps, even with --allow-changed-config; give --head ",
               head, ", or use a new --model-dir");
    const std::string from =
        resume->meta.train_from.empty() ? layer_of(spec, spec.head_scope) : resume->meta.train_from;
    KILN_CHECK(cfg.train_from == "auto" || cfg.train_from == from, "--train-from ", cfg.train_from,
               ": phase 1 of the run in '", cfg.model_dir, "' trains from ", from, " (", resume->state_path,
               "), which its resume keeps, even with --allow-changed-config; leave --train-from out, or use a new "
               "--model-dir");
  }
  // A resume continues the saved recipe: changed training flags are refused (unless allowed).
  s.config_path = (fs::path(cfg.model_dir) / kConfigFile).string();
  if (resume) {
    const bool have_file = fs::exists(s.config_path);
    s.saved_config = have_file ? read_text(s.config_path) : std::string();
    const std::map<std::string, std::string> saved = parse_config(s.saved_config, s.config_path);
    s.changes = recipe_changes(cfg, saved);
    add_checkpoint_changes(cfg, *resume, s.changes);
    // A config.txt gone, or overwritten by something else, would let any recipe resume.
    if (!records_recipe(saved)) {
      KILN_CHECK(cfg.allow_changed_config, "model directory '", cfg.model_dir,
                 "' holds checkpoints, but its config.txt ", have_file ? "records no recipe" : "is missing (a run of kiln.train writes none)",
                 ", so this resume cannot be checked against the run's recipe: restore ", s.config_path,
                 ", use a new --model-dir, or pass --allow-changed-config");
      s.changes.push_back(std::string("the run's recipe was unknown (") +
                          (have_file ? "config.txt recorded none" : "no config.txt") + ")");
    }
    check_phase1_over(cfg, *resume, saved);
  }
  KILN_CHECK(s.changes.empty() || cfg.allow_changed_config, "model directory '", cfg.model_dir,
             "' holds a run with another recipe: ", join_changes(s.changes), " (", s.config_path,
             "); resume with the run's values, use a new --model-dir, or pass --allow-changed-config");
  KILN_CHECK(cfg.phase1_epochs + cfg.phase2_epochs >= 1,
             "nothing to train: --phase1-epochs and --phase2-epochs are both 0");
  return s;
}

// The index in `scopes` of the first weight layer `layer` names: the layer itself ("fc6",
// "layer4/0/conv1") or the group it opens ("layer4": ResNet's stage 4); scopes.size() when none.
size_t first_scope_of(const ModelSpec& spec, const std::vector<std::string>& scopes, const std::string& layer) {
  for (size_t i = 0; i < scopes.size(); ++i) {
    const std::string l = layer_of(spec, scopes[i]);
    if (l == layer || l.rfind(layer + "/", 0) == 0) return i;
  }
  return scopes.size();
}

// What the model is built with, and the layers phase 1 trains (from train_from to the head).
struct ModelChoice {
  ModelOptions options;
  std::vector<std::string> scopes;  // weight layers of the model, in order
  std::string train_from;           // a layer name; "" before it is known
  std::optional<io::ImportReport> weights;  // what --weights loaded (build_from_weights)
};

// Phase 1's first trained layer after --weights (m.weights): layers the file lacks (a no-top
// file's fc6, fc7) keep their initialisation, so phase 1 trains from the first of them.
// Sets m.train_from.
void choose_train_from(const TrainConfig& cfg, const ModelSpec& spec, ModelChoice& m) {
  const io::ImportReport& report = *m.weights;
  std::string first_new;  // the first layer below the head the file lacks
  for (const std::string& scope : m.scopes) {
    if (scope == spec.head_scope) break;
    const bool lacks = std::any_of(report.missing.begin(), report.missing.end(),
                                   [&](const std::string& n) { return n.rfind(scope, 0) == 0; });
    if (lacks && first_new.empty()) first_new = layer_of(spec, scope);
  }
  const std::string head = layer_of(spec, spec.head_scope);
  m.train_from = cfg.train_from == "auto" ? (first_new.empty() ? head : first_new) : cfg.train_from;
  const auto pos = [&](const std::string& layer) { return first_scope_of(spec, m.scopes, layer); };
  if (!first_new.empty())
    KILN_CHECK(pos(first_new) >= pos(m.train_from), "--train-from ", m.train_from, " would leave ", first_new,
               " frozen at its random initialisation: --weights '", cfg.weights, "' lacks it; use --train-from ",
               first_new, " (or auto)");
}

// "conv1_1..conv5_3 (13 layers)" of the layers in `scopes` for which `pick` holds.
std::string layer_span(const ModelSpec& spec, const std::vector<std::string>& scopes,
                       const std::function<bool(const std::string&)>& pick) {
  std::vector<std::string> names;
  for (const std::string& s : scopes)
    if (pick(s)) names.push_back(layer_of(spec, s));
  if (names.empty()) return "none";
  if (names.size() <= 3) return join_names(names);
  return names.front() + ".." + names.back() + " (" + std::to_string(names.size()) + " layers)";
}

// Loads the starting weights (the checkpoint's, --weights' or none) and says where the input
// convention comes from. Returns the convention.
io::InputConvention load_start_weights(const TrainConfig& cfg, const ModelSpec& spec, const RunStart& s,
                                       Sequential& model, Generator& init_gen, Generator& dropout_gen,
                                       int64_t num_classes, ModelChoice& m) {
  const std::optional<io::CheckpointInfo>& resume = s.choice.checkpoint;
  io::InputConvention convention = io::InputConvention::torchvision_rgb;
  std::string source = "the default, no weights file says otherwise";
  if (resume) {
    // The preprocessing is the run's: a resume keeps it (it was silently ignored).
    KILN_CHECK(cfg.convention == "auto" || io::parse_convention(cfg.convention) == resume->meta.convention,
               "--convention ", cfg.convention, ": the run in '", cfg.model_dir, "' trained on ",
               io::convention_name(resume->meta.convention), " inputs, which its resume keeps; leave --convention out, "
               "or use a new --model-dir");
    io::load_checkpoint_weights(model, *resume);
    // The run goes ahead: damaged checkpoints are moved out of its way (a retrained epoch
    // would overwrite them, pruning would count them), not deleted.
    std::fflush(stdout);
    for (const io::DamagedCheckpoint& d : s.choice.damaged)
      std::fprintf(stderr, "warning: checkpoint '%s' is damaged, not resuming from it: %s; its files are kept as %s\n",
                   d.state_path.c_str(), d.reason.c_str(), join_names(io::set_aside(d)).c_str());
    const io::CheckpointMeta& m = resume->meta;
    init_gen.set_state(m.init_gen);
    dropout_gen.set_state(m.dropout_gen);
    convention = m.convention;
    source = "from the checkpoint";
    const std::string mid = m.batches_done > 0 ? " and " + std::to_string(m.batches_done) + " batch(es) of epoch " +
                                                     std::to_string(m.epochs_done + 1)
                                               : std::string();
    const std::string acc = m.val_acc < 0 ? std::string("not evaluated at this checkpoint")
                                          : format_number("val acc %.1f%%", 100.0 * m.val_acc);
    std::printf("resuming from %s%s: %lld epoch(s)%s done, step %lld, %s%s\n", resume->state_path.c_str(),
                s.choice.damaged.empty() ? "" : " (the newest intact checkpoint)", static_cast<long long>(m.epochs_done),
                mid.c_str(), static_cast<long long>(m.global_step), acc.c_str(),
                cfg.weights.empty() ? "" : " (--weights is not loaded again)");
  } else if (!cfg.weights.empty()) {
    choose_train_from(cfg, spec, m);
    const io::ImportReport& report = *m.weights;
    const auto loaded = [&](const std::string& scope) {
      return std::any_of(report.loaded.begin(), report.loaded.end(),
                         [&](const std::string& n) { return n.rfind(scope, 0) == 0; });
    };
    const std::string head = layer_of(spec, spec.head_scope);
    std::printf("weights: %s loaded from %s; new (initialised here): %s; %s sized for %lld classes\n%s\n",
                layer_span(spec, m.scopes, loaded).c_str(), cfg.weights.c_str(),
                layer_span(spec, m.scopes, [&](const std::string& sc) { return !loaded(sc); }).c_str(), head.c_str(),
                static_cast<long long>(num_classes), report.to_string().c_str());
    if (m.options.adaptive_pool)
      std::printf("fc6: the file's fc6 expects pool5 at 7x7 (224 px); at %lld px pool5 is %lldx%lld, so it is "
                  "average-pooled adaptively to 7x7 first (as torchvision's VGG) and the pretrained fc6 is used\n",
                  static_cast<long long>(cfg.image_size), static_cast<long long>(cfg.image_size / 32),
                  static_cast<long long>(cfg.image_size / 32));
    if (report.convention != io::InputConvention::unknown) {
      convention = report.convention;
      source = "recorded by the weights file";
    } else {
      source = "the default: the weights file records none";
    }
  } else {
    std::printf("weights: none given (--weights): the backbone is RANDOMLY INITIALISED (torchvision's "
                "initialisation of %s), not pretrained\n", spec.name.c_str());
    if (!cfg.probe_head)  // what docs/demo.md measured: SGD on a random head over random features stays near chance
      std::printf("hint: over frozen random features a randomly started head learns little (near chance on the "
                  "demo's data); this recipe is meant for pretrained --weights. Without them, --head-init probe starts "
                  "the head as a ridge fit on those features, and vgg_finetune demo prints recipes that learn from "
                  "random weights (docs/demo.md)\n");
  }
  if (cfg.convention != "auto" && !resume) {
    convention = io::parse_convention(cfg.convention);
    source = "set by --convention";
  }
  std::printf("input: %lldx%lld, resize shorter side to %d, %s preprocessing (%s)\n",
              static_cast<long long>(cfg.image_size), static_cast<long long>(cfg.image_size), resize_for_crop(cfg.image_size),
              io::convention_name(convention), source.c_str());
  return convention;
}

// classes.txt and config.txt, written only once the weights fit (a refused run leaves the
// directory as it was), and the temporaries an interrupted run left removed.
void write_run_files(const TrainConfig& cfg, const RunStart& s, const std::vector<std::string>& classes) {
  if (const std::vector<std::string> stale = io::remove_stale_temporaries(cfg.model_dir, run_file_names());
      !stale.empty())
    std::printf("model dir: removed %zu stale temporary file(s) left by an interrupted run: %s\n", stale.size(),
                join_names(stale).c_str());
  if (!fs::exists(s.classes_path)) io::write_file_atomic(s.classes_path, join_lines(classes));
  if (!s.choice.checkpoint) {
    io::write_file_atomic(s.config_path, cfg.config_text);
  } else if (!s.changes.empty()) {
    // --allow-changed-config: the new values become the run's, the change is recorded.
    std::string history;
    std::istringstream in(s.saved_config);
    for (std::string line; std::getline(in, line);)
      if (line.rfind("# changed on resume", 0) == 0) history += line + "\n";
    history += "# changed on resume at step " + std::to_string(s.choice.checkpoint->meta.global_step) +
               " (--allow-changed-config): " + join_changes(s.changes) + "\n";
    io::write_file_atomic(s.config_path, history + cfg.config_text);
    std::printf("recipe changed on resume (--allow-changed-config): %s; the result will differ from an uninterrupted run\n",
                join_changes(s.changes).c_str());
  }  // else: the same recipe, config.txt is kept as the run wrote it
}

// The seed recipe as phases: the layers from train_from to the head over a frozen rest (the
// head alone when the weights file covers everything below it), then every layer.
std::vector<Phase> recipe_phases(const TrainConfig& cfg, const ModelSpec& spec, const ModelChoice& m) {
  const size_t from = first_scope_of(spec, m.scopes, m.train_from);
  KILN_CHECK(from < m.scopes.size(), "--train-from: ", spec.name, " has no layer '", m.train_from,
             "' with weights (layers: ", layer_span(spec, m.scopes, [](const std::string&) { return true; }), ")");
  const std::vector<std::string> trains(m.scopes.begin() + static_cast<std::ptrdiff_t>(from), m.scopes.end());
  const std::string name = trains.size() == 1 ? layer_of(spec, trains[0]) + " only"
                                              : layer_of(spec, trains.front()) + ".." + layer_of(spec, trains.back());
  Phase head{name, trains, cfg.phase1_lr, nullptr, cfg.phase1_epochs, cfg.momentum, cfg.weight_decay};
  Phase all{"all layers", {}, cfg.phase2_lr, nullptr, cfg.phase2_epochs, cfg.momentum, cfg.weight_decay};
  // The probe fits the head before the first phase that trains (phase 2 when phase 1 has no epochs).
  (cfg.phase1_epochs > 0 ? head : all).head_init = cfg.probe_head ? HeadInit::linear_probe : HeadInit::as_is;
  return {head, all};
}

// The lines for people that come before the first epoch.
void print_plan(const TrainConfig& cfg, int64_t start_epoch, const std::string& phase1, Module& model) {
  const std::string dropout =
      holds<Dropout>(model) ? format_number("dropout keep %g", cfg.keep_prob) : std::string("no dropout in the model");
  const std::string every_steps =
      cfg.checkpoint_every > 0 ? " and every " + std::to_string(cfg.checkpoint_every) + " steps" : std::string();
  std::printf("model dir: %s (checkpoints every epoch%s, last %d kept plus the best; metrics.csv; TensorBoard events in events/)\n",
              cfg.model_dir.c_str(), every_steps.c_str(), cfg.keep);
  if (cfg.eval_every > 0)
    std::printf("evaluation: every epoch and every %lld steps\n", static_cast<long long>(cfg.eval_every));
  const std::string phase2 = cfg.phase2_epochs == 0
                                 ? std::string("phase 2 (all layers) skipped (--phase2-epochs 0)")
                                 : "phase 2 (all layers) " + std::to_string(cfg.phase2_epochs) + " epoch(s) at lr " +
                                       format_number("%g", cfg.phase2_lr);
  std::printf("recipe: phase 1 (%s) %lld epoch(s) at lr %g, %s; SGD momentum %g, weight decay %g on weights (not "
              "biases or batch-norm gamma/beta), %s, batch %lld, seed %llu\n",
              phase1.c_str(), static_cast<long long>(cfg.phase1_epochs), cfg.phase1_lr, phase2.c_str(), cfg.momentum,
              cfg.weight_decay, dropout.c_str(), static_cast<long long>(cfg.batch),
              static_cast<unsigned long long>(cfg.seed));
  const int64_t total = cfg.phase1_epochs + cfg.phase2_epochs;
  if (start_epoch >= total) {
    const std::string done = total == 1 ? "its 1 epoch is" : "all " + plural(total, "epoch", "epochs") + " are";
    std::printf("nothing left to train: %s done\n", done.c_str());
  }
  // Flags that cannot act on this run, said rather than taken in silence.
  if (!cfg.feature_cache && !cfg.no_augment)
    std::printf("note: --no-feature-cache changes nothing here: with augmentation on no features are cached\n");
  if (cfg.calibrate_bn == "on" && !holds<BatchNorm2d>(model))
    std::printf("note: --calibrate-bn on changes nothing here: %s has no batch-norm layer\n", cfg.model.c_str());
  for (const auto& [phase, epochs, lr] : {std::tuple{1, cfg.phase1_epochs, cfg.phase1_lr},
                                          std::tuple{2, cfg.phase2_epochs, cfg.phase2_lr}})
    if (epochs > 0 && lr == 0)
      std::printf("note: --phase%d-lr 0: phase %d changes no weight%s; its epochs only evaluate\n", phase, phase,
                  phase == 1 && cfg.probe_head ? " after the probe fits the head" : "");
}

// What a phase does with batch norm (nothing for models without it): the classic
// fine-tuning trap is a "frozen" layer that still normalises with each batch's statistics.
void print_batch_norm_use(const BatchNormUse& u, bool decay) {
  if (u.layers == 0) return;
  const char* frozen = "normalise with their running statistics (the inference form) in training steps too, and keep "
                       "them as they are";
  const char* trains = "normalise with each batch's statistics in training steps and update their running ones "
                       "(momentum 0.1); evaluation uses the running ones";
  const std::string gamma = decay ? "; gamma and beta get no weight decay" : "";
  if (u.frozen == u.layers)
    std::printf("  batch norm: all %lld layers are frozen: they %s\n", static_cast<long long>(u.layers), frozen);
  else if (u.frozen == 0)
    std::printf("  batch norm: all %lld layers train: they %s%s\n", static_cast<long long>(u.layers), trains,
                gamma.c_str());
  else
    std::printf("  batch norm: %lld of %lld layers are frozen: they %s; the %lld that train %s%s\n",
                static_cast<long long>(u.frozen), static_cast<long long>(u.layers), frozen,
                static_cast<long long>(u.layers - u.frozen), trains, gamma.c_str());
}

// An epoch's losses and accuracies as its line shows them: one format for the line and for
// telling two lines apart.
std::string epoch_numbers(const EpochSummary& e) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "train loss %.3f acc %.1f%%  val loss %.3f acc %.1f%%", e.train_loss,
                100.0 * e.train_acc, e.val.loss, 100.0 * e.val.acc);
  return buf;
}

void clear_progress(bool tty) {
  if (tty) std::printf("\r%120s\r", "");
}

// The line per epoch. Two with the same numbers read as a stalled run (the demo's phase 1
// after its linear probe, where the training set is already fitted): say once per phase how
// far it did move.
std::function<void(const EpochSummary&)> epoch_lines(bool tty) {
  struct Seen {
    std::optional<EpochSummary> previous;
    int noted_phase = 0;
  };
  auto seen = std::make_shared<Seen>();
  return [tty, seen](const EpochSummary& e) {
    clear_progress(tty);
    std::printf("epoch %lld/%lld (phase %d: %s)  %s  %.1f img/s\n", static_cast<long long>(e.epoch_in_phase),
                static_cast<long long>(e.phase_epochs), e.phase, e.phase_name.c_str(), epoch_numbers(e).c_str(),
                e.images_per_second);
    const std::optional<EpochSummary>& p = seen->previous;
    if (p && p->phase == e.phase && seen->noted_phase != e.phase && epoch_numbers(*p) == epoch_numbers(e)) {
      std::printf("  (the same as epoch %lld to the digits shown: val loss moved by %+.1e, train loss by %+.1e; %s)\n",
                  static_cast<long long>(p->epoch_in_phase), e.val.loss - p->val.loss, e.train_loss - p->train_loss,
                  e.train_acc >= 0.995 ? "the training images are already fitted, so steps at this learning rate "
                                         "have little left to change"
                                       : "steps at this learning rate change little");
      seen->noted_phase = e.phase;
    }
    seen->previous = e;
    std::fflush(stdout);
  };
}

// "phase 2 epoch 9 of 100" for the run's epoch `done` (1-based): the numbering of the
// epoch lines, beside the run-wide one that metrics.csv and checkpoints use.
std::string phase_epoch(const TrainConfig& cfg, int64_t done) {
  const bool two = done > cfg.phase1_epochs;
  return "phase " + std::to_string(two ? 2 : 1) + " epoch " + std::to_string(two ? done - cfg.phase1_epochs : done) +
         " of " + std::to_string(two ? cfg.phase2_epochs : cfg.phase1_epochs);
}

// Ctrl-C (SIGINT) and SIGTERM while one process trains: the first asks the trainer to stop
// after the step in progress and checkpoint there, so the same command resumes with nothing
// lost; a second one ends the process at once, as the signal would. A signal the process
// was started ignoring (`cmd &` in a script ignores SIGINT) stays ignored, as in CPython.
// SIGPIPE is ignored meanwhile: Ctrl-C on `train ... | tee log` ends tee too, and a write to
// its pipe must fail, not end the run before its checkpoint. Data-parallel, a signal to any
// rank stops all of them after one step (TrainerHooks::should_stop), checkpointed by rank 0.
// No handler runs at all: start_stop_signal_relay blocks both signals before any thread
// exists, so every thread inherits the block, and its own thread takes them with sigwait, as
// ordinary code (a handler on a thread inside oneDNN corrupted the heap: kernels/cpu/onednn.h).
std::atomic<int> g_stop_signal{0};
std::atomic<bool> g_training{false};  // a StopSignals lives: a signal asks to stop

// The default action of `sig` (end the process, the shell sees 128 + sig), from the relay thread.
[[noreturn]] void end_by_signal(int sig) {
  std::signal(sig, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  std::raise(sig);
  std::_Exit(128 + sig);  // not reached: the default action ends the process
}

sigset_t g_relayed;  // the signals start_stop_signal_relay blocked, read by its thread

void relay_loop() {
  for (;;) {
    int sig = 0;
    if (sigwait(&g_relayed, &sig) != 0) continue;
    if (!g_training || g_stop_signal.exchange(sig) != 0) end_by_signal(sig);
    static const char msg[] =
        "\nstopping after the step in progress and writing a checkpoint (signal again to quit at once)\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  }
}

// While it lives, the relay's signals ask the trainer to stop and SIGPIPE is ignored.
struct StopSignals {
  StopSignals() {
    g_stop_signal = 0;
    g_training = true;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &old_pipe);
  }
  ~StopSignals() {
    g_training = false;
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  struct sigaction old_pipe {};
};

// The line said when a run stops before its end, by kind.
std::function<void(const StopInfo&)> stop_lines(bool tty, const TrainConfig& cfg) {
  return [tty, &cfg](const StopInfo& s) {
    if (s.kind == StopInfo::Kind::steps_mid_epoch) {
      clear_progress(tty);
      std::printf("stopping after step %lld (mid-epoch checkpoint %s) as --stop-after-steps asks; run the train "
                  "command again without it to resume to the end\n", static_cast<long long>(s.global_step),
                  s.checkpoint.c_str());
    } else if (s.kind == StopInfo::Kind::steps_epoch_end) {
      std::printf("stopping after step %lld (end of epoch %lld: %s) as --stop-after-steps asks; run the train "
                  "command again without it to resume to the end\n", static_cast<long long>(s.global_step),
                  static_cast<long long>(s.epochs_done), phase_epoch(cfg, s.epochs_done).c_str());
    } else if (s.kind == StopInfo::Kind::already_past) {
      std::printf("nothing to train: the checkpoint (%s: step %lld, %lld epoch(s) done) is already where "
                  "--stop-after-%s stops; run the train command again without it, or with a later stop, to go on\n",
                  s.checkpoint.c_str(), static_cast<long long>(s.global_step), static_cast<long long>(s.epochs_done),
                  cfg.stop_after_steps > 0 && s.global_step >= cfg.stop_after_steps ? "steps" : "epochs");
    } else if (s.kind == StopInfo::Kind::requested) {
      clear_progress(tty);
      std::printf("stopped by %s after step %lld (checkpoint %s); run the same train command again to resume\n",
                  g_stop_signal == SIGTERM ? "SIGTERM" : g_stop_signal == SIGINT ? "Ctrl-C" : "a signal to another rank",
                  static_cast<long long>(s.global_step),
                  s.checkpoint.empty() ? "none: nothing was trained yet" : s.checkpoint.c_str());
    } else {
      std::printf("stopping after epoch %lld of %lld (%s) as --stop-after-epochs asks; run the train command "
                  "again without it to resume to the end\n", static_cast<long long>(s.epochs_done),
                  static_cast<long long>(s.total_epochs), phase_epoch(cfg, s.epochs_done).c_str());
    }
  };
}

// The trainer's events as vgg_finetune's lines for people.
TrainerHooks people_hooks(const TrainConfig& cfg, bool tty, Sequential& net) {
  TrainerHooks h;
  h.on_phase_start = [&cfg](int phase, const Phase& ph, Sequential& model) {
    std::printf("phase %d: %s%s, %lld epoch(s) at lr %g\n", phase, ph.name.c_str(),
                ph.train_patterns.empty() ? "" : " (every other layer frozen: run as pure inference)",
                static_cast<long long>(ph.epochs), ph.lr);
    print_batch_norm_use(batch_norm_use(model), ph.weight_decay > 0);
    if (ph.weight_decay <= 0) return;
    const std::vector<Tensor> decayed = decayed_weights(model);
    if (decayed.empty()) return;
    NoGradGuard no_grad;
    std::printf("  weight decay: the L2 penalty on this phase's %zu trainable weight tensor(s) is %.4g now; it is "
                "trained on but not part of the reported train loss (cross-entropy, as val loss)\n",
                decayed.size(), l2_penalty(decayed, static_cast<float>(ph.weight_decay)).item());
  };
  h.on_precision = [&net](int, const PrecisionUse& u) {
    std::printf("  precision: %s\n", u.describe().c_str());
    // CPU only: on a GPU bf16's speed and values are measured, its accuracy over a recipe is
    // not (docs/precision.md), so the app does not recommend it there.
    const Device d = net.parameters().front().tensor->device();
    if (u.policy == Precision::fp32 && u.frozen > 0 && d.is_cpu() && native_bf16(d))
      std::printf("  (--precision bf16-frozen would run the %s in bf16 on this CPU: about twice as fast, "
                  "the same accuracy in our measurements; docs/precision.md)\n",
                  u.frozen == 1 ? "frozen layer" : plural(u.frozen, "frozen layer", "frozen layers").c_str());
  };
  h.on_feature_mode = [&cfg, &net](const FeatureMode& m) {
    // The cut's layers by name: the cached output ("flatten" reads as the map it flattens).
    const auto& kids = net.children();
    size_t last = m.cut > 0 ? m.cut - 1 : 0;
    if (last > 0 && kids[last]->name() == "flatten") --last;
    const std::string cached = m.cut > 0 ? kids[last]->name() : "input";
    const std::string runs = m.cut + 1 < kids.size() ? kids[m.cut]->name() + ".." + kids.back()->name()
                             : m.cut < kids.size() ? kids[m.cut]->name()
                                                   : "none";
    // Small caches in KiB: "0 MiB" would hide that a bf16 cache takes half an fp32 one's.
    const std::string size = m.mib >= 1 ? format_number("%.0f MiB", m.mib) : format_number("%.0f KiB", m.mib * 1024);
    if (m.cached)
      std::printf("phase %d mode: %s features of %lld train and %lld val images computed once (%.1f s, %s) and "
                  "reused every epoch (--no-augment); per step only %s run\n",
                  m.phase, cached.c_str(), static_cast<long long>(m.train_rows), static_cast<long long>(m.val_rows),
                  m.seconds, size.c_str(), runs.c_str());
    else
      std::printf("phase %d mode: full forward each step (%s); the frozen layers up to %s run as inference, no graph "
                  "kept\n",
                  m.phase, cfg.no_augment ? "--no-feature-cache" : "augmentation on: random crops and flips change the features",
                  cached.c_str());
  };
  h.on_step_mode = [](const StepModeInfo& m) { std::printf("phase %d steps: %s\n", m.phase, m.why.c_str()); };
  h.on_batch_norm_calibrated = [&cfg](const BatchNormCalibration& c) {
    std::printf("batch norm: running statistics of all %lld layers estimated on %lld train images (%lld batch%s, "
                "%.1f s) before phase 1 (--calibrate-bn %s%s)\n",
                static_cast<long long>(c.layers), static_cast<long long>(c.images), static_cast<long long>(c.batches),
                c.batches == 1 ? "" : "es",
                c.seconds, cfg.calibrate_bn.c_str(),
                cfg.calibrate_bn == "auto" ? ": no --weights, so they held 0 and 1 as initialised" : "");
  };
  h.on_phase_eval = [](int phase, const std::string& when, const EvalResult& r) {
    std::printf("  phase %d, %s: val loss %.3f acc %.1f%%\n", phase, when.c_str(), r.loss, 100.0 * r.acc);
  };
  h.on_head_init = [](const HeadInitInfo& i) {
    std::printf("  %s fitted by ridge regression on the %lld-wide features at its input, %lld train images "
                "(standardised; lambda %.3g chosen by 5-fold cross-validation on them: %.1f%% held out; %.1f%% on all "
                "train; %.1f s)\n",
                i.layer.c_str(), static_cast<long long>(i.features), static_cast<long long>(i.rows), i.lambda,
                100.0 * i.holdout_acc, 100.0 * i.train_acc, i.seconds);
  };
  h.on_resume_skip = [](int64_t batches, int64_t epoch) {
    std::printf("skipped the first %lld batch(es) of epoch %lld: trained before the checkpoint\n",
                static_cast<long long>(batches), static_cast<long long>(epoch));
  };
  if (tty) {
    h.on_step = [](const StepInfo& s) {
      const double ips = static_cast<double>(s.timed_seen) / std::max(s.seconds, 1e-9);
      const double eta = static_cast<double>(s.steps - s.step_in_epoch) *
                         (s.seconds / static_cast<double>(std::max<int64_t>(s.timed_steps, 1)));
      std::printf("\r  phase %d epoch %lld/%lld step %lld/%lld  loss %.3f acc %.1f%%  %.1f img/s  ETA %d:%02d   ", s.phase,
                  static_cast<long long>(s.epoch_in_phase), static_cast<long long>(s.phase_epochs),
                  static_cast<long long>(s.step_in_epoch), static_cast<long long>(s.steps), s.loss_sum / s.seen,
                  100.0 * s.correct / s.seen, ips, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
      std::fflush(stdout);
    };
  }
  h.on_eval = [tty](const StepInfo& s, const EvalResult& r) {
    clear_progress(tty);
    std::printf("  step %lld (phase %d epoch %lld/%lld, batch %lld/%lld)  train loss %.3f acc %.1f%%  val loss %.3f acc %.1f%%\n",
                static_cast<long long>(s.global_step), s.phase, static_cast<long long>(s.epoch_in_phase),
                static_cast<long long>(s.phase_epochs), static_cast<long long>(s.batches_in_epoch),
                static_cast<long long>(s.steps), s.loss_sum / s.seen, 100.0 * s.correct / s.seen, r.loss, 100.0 * r.acc);
    std::fflush(stdout);
  };
  h.on_epoch = epoch_lines(tty);
  h.on_data_changed = [](int64_t then, int64_t now) {
    std::printf("note: the training data changed since the checkpoint (%lld images then, %lld now); training goes "
                "on with today's, so the result will differ from an uninterrupted run's\n",
                static_cast<long long>(then), static_cast<long long>(now));
  };
  h.on_stop = stop_lines(tty, cfg);
  return h;
}

// The data audit train starts with: its lines when it refuses (before the one-line error),
// otherwise the report for run_train to print once the model directory is accepted.
AuditReport audit_training_data(const TrainConfig& cfg) {
  AuditOptions opt;
  opt.threads = cfg.workers;
  AuditReport r = audit_splits({{"train", cfg.train_dir}, {"val", cfg.val_dir}}, opt);
  if (r.errors.empty()) return r;
  std::printf("%s", r.summary(r.skipped.size(), "").c_str());
  std::fflush(stdout);
  KILN_FAIL("the data cannot be trained on: ", r.errors.front(),
            r.errors.size() > 1 ? " (and " + std::to_string(r.errors.size() - 1) + " more error(s) above)" : "");
}

// Launched as several processes (docs/data_parallel.md): this one joins the others before
// any other work, so that an error on one rank later stops the rest at once; ranks other
// than 0 print nothing to stdout (errors still reach stderr).
std::unique_ptr<Communicator> join_ranks(const TrainConfig& cfg) {
  const LaunchEnv env = launch_env();
  if (!env.distributed()) return single_process();
  if (env.rank != 0) {
    std::fflush(stdout);
    KILN_CHECK(std::freopen("/dev/null", "w", stdout) != nullptr, "rank ", env.rank, ": cannot silence stdout");
  }
#ifdef KILN_HAS_DIST
  dist::register_backends();
#endif
  const bool gpu = cfg.device == "cuda" || (cfg.device == "auto" && device_count(DeviceType::cuda) > 0);
  KILN_CHECK(gpu || env.backend != "nccl", "launch: KILN_DIST_BACKEND=nccl reduces GPU memory, but this run trains "
             "on the CPU (--device ", cfg.device, "): unset KILN_DIST_BACKEND (gloo is the CPU's), or train on a GPU");
  std::unique_ptr<Communicator> comm = make_communicator(env, gpu ? Device::cuda(env.local_rank) : Device::cpu());
  // The variables say how the ranks were described, not who started them (a shell loop can set RANK too).
  const char* vars = env.launcher == "torchrun" ? "torchrun-style RANK/WORLD_SIZE"
                     : env.launcher == "mpirun" ? "Open MPI's OMPI_COMM_WORLD_*"
                                                : env.launcher.c_str();
  std::printf("data-parallel: %d ranks (%s, ranks from %s, rendezvous %s, timeout %g s); global batch %lld, "
              "%lld-%lld per rank\n",
              comm->size(), comm->backend().c_str(), vars, env.rendezvous.c_str(), env.timeout_s,
              static_cast<long long>(cfg.batch), static_cast<long long>(cfg.batch / comm->size()),
              static_cast<long long>((cfg.batch + comm->size() - 1) / comm->size()));
  return comm;
}

// The model a run starts from. A resume's is built under SkipDraws (its checkpoint sets every
// weight); with --weights it is started from the file (train/model_spec.h build_from_weights:
// only what the file lacks is drawn; a VGG at another size may get adaptive_pool, which
// m.options then records); else drawn from the seed.
std::shared_ptr<Sequential> build_start_model(const TrainConfig& cfg, const ModelSpec& spec, bool resume,
                                              ModelChoice& m, Generator& init_gen, Generator& dropout_gen) {
  if (resume) {
    const init::SkipDraws skip;  // the checkpoint's values replace every draw
    return spec.build(m.options, init_gen, dropout_gen);
  }
  if (cfg.weights.empty()) return spec.build(m.options, init_gen, dropout_gen);
  PretrainedModel p = build_from_weights(spec, m.options, cfg.weights, init_gen, dropout_gen);
  m.options = p.options;
  m.weights = std::move(p.report);
  return p.model;
}

}  // namespace

TrainResult run_train(const TrainConfig& cfg) {
  const auto t_start = std::chrono::steady_clock::now();  // before the rendezvous, the device and the audit
  const std::unique_ptr<Communicator> comm = join_ranks(cfg);
  const bool root = comm->rank() == 0;
  // Everything that can be refused is checked before any work or any write: the device, then
  // the data (train/audit.h): training sees only the files that decode.
  Device device = choose_device(cfg.device);
  if (comm->size() > 1 && !device.is_cpu()) device = Device::cuda(launch_env().local_rank);  // one GPU per rank
  const AuditReport audit = audit_training_data(cfg);
  const io::Dataset& train_ds = audit.splits[0].usable;
  const io::Dataset& val_ds = audit.splits[1].usable;
  const std::vector<std::string>& classes = train_ds.classes;
  const auto num_classes = static_cast<int64_t>(classes.size());
  const ModelSpec& spec = find_model_spec(cfg.model);
  const NewDirGuard new_dir(cfg.model_dir);
  const RunStart start = check_model_dir(cfg, spec, classes, root);
  const std::string skipped_path = (fs::path(cfg.model_dir) / kSkippedFile).string();
  std::printf("%s", audit.summary(0, audit.skipped.empty() ? "" : skipped_path).c_str());

  Generator init_gen(cfg.seed), dropout_gen(cfg.seed + 1);
  const std::optional<io::CheckpointInfo>& resume = start.choice.checkpoint;
  ModelChoice m;
  m.options = ModelOptions{num_classes, cfg.image_size, static_cast<float>(cfg.keep_prob), cfg.head,
                           resume && resume->meta.adaptive_pool};
  std::shared_ptr<Sequential> model = build_start_model(cfg, spec, resume.has_value(), m, init_gen, dropout_gen);
  m.scopes = model->parameter_scopes();
  const std::string head_layer = layer_of(spec, spec.head_scope);
  if (resume) m.train_from = resume->meta.train_from.empty() ? head_layer : resume->meta.train_from;
  else if (cfg.weights.empty()) m.train_from = cfg.train_from == "auto" ? head_layer : cfg.train_from;
  const bool adaptive = m.options.adaptive_pool;
  const io::InputConvention convention =
      load_start_weights(cfg, spec, start, *model, init_gen, dropout_gen, num_classes, m);
  std::vector<Phase> phases = recipe_phases(cfg, spec, m);  // a bad --train-from is refused before any write
  model->to(device);

  TrainerOptions t;
  t.phases = std::move(phases);
  t.loader.batch_size = cfg.batch;
  t.loader.num_workers = cfg.workers;
  t.loader.seed = cfg.seed + 2;
  t.loader.resize_shorter = resize_for_crop(cfg.image_size);
  t.loader.crop = static_cast<int>(cfg.image_size);
  t.loader.convention = convention;
  t.loader.device = device;
  t.loader.augment = !cfg.no_augment;
  t.feature_cache = cfg.feature_cache;
  t.eval_at_phase_start = cfg.eval_at_phase_start;
  t.precision = parse_precision(cfg.precision);
  t.cuda_graph = parse_cuda_graph_mode(cfg.cuda_graph);
  t.calibrate_batch_norm = cfg.calibrate_bn == "on" || (cfg.calibrate_bn == "auto" && cfg.weights.empty());
  t.eval_every = cfg.eval_every;
  t.checkpoint_every = cfg.checkpoint_every;
  t.background_checkpoints = !cfg.sync_checkpoints;
  t.stop_after_epochs = cfg.stop_after_epochs;
  t.stop_after_steps = cfg.stop_after_steps;
  t.model_dir = cfg.model_dir;
  t.keep = cfg.keep;
  t.allow_changed_optimizer_settings = cfg.allow_changed_config;
  t.run.image_size = cfg.image_size;
  t.run.head = cfg.head;
  t.run.adaptive_pool = adaptive;
  t.run.train_from = m.train_from;
  t.run.classes = classes;
  t.run.convention = convention;
  t.run.seed = cfg.seed;
  t.init_gen = &init_gen;
  t.dropout_gen = &dropout_gen;
  t.comm = comm.get();
  // Every rank agrees on the run before rank 0 writes a file: a refused start leaves the
  // model directory as it was (the trainer would check the same, after these writes).
  check_ranks_agree(*model, spec, t, train_ds, val_ds, resume);
  if (root) {  // rank 0 alone writes the model directory
    write_run_files(cfg, start, classes);
    io::write_file_atomic(skipped_path, audit.skipped_text());  // empty when none: no stale list from an earlier run
  }
  std::optional<MetricsLog> metrics;
  if (root) t.metrics = &metrics.emplace(cfg.model_dir);
  if (const char* c = std::getenv("KILN_DIST_CHECK_REPLICAS")) t.check_replicas = std::string(c) == "1";
  print_plan(cfg, resume ? resume->meta.epochs_done : 0, t.phases[0].name, *model);

  TrainerHooks hooks = people_hooks(cfg, ::isatty(fileno(stdout)) != 0, *model);
  // Data-parallel too: the trainer stops every rank after the step where one was signalled.
  const StopSignals signals;
  t.checkpoint_on_stop = true;
  hooks.should_stop = [] { return g_stop_signal != 0; };
  Trainer trainer(*model, spec, train_ds, val_ds, std::move(t), std::move(hooks));
  const TrainResult r = trainer.run(resume);
  if (!r.finished) return r;
  if (!r.val.confusion.empty()) {
    std::printf("final validation: loss %.3f, accuracy %.1f%% on %lld images\n%s", r.val.loss, 100.0 * r.val.acc,
                static_cast<long long>(r.val.images), eval_details(r.val, classes).c_str());
  }
  std::printf("checkpoint: %s\n", r.last_checkpoint.empty() ? "(none yet)" : r.last_checkpoint.c_str());
  const RunTimes& w = r.times;
  const double since_start = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  char plans[96] = "";  // on a GPU: what the first steps spent choosing cuDNN plans
  if (w.conv_plans > 0)
    std::snprintf(plans, sizeof plans, "; within them, choosing GPU convolution plans %.1f s", w.conv_plans);
  std::printf("time: %.1f s since the start, %.1f s of it training: steps %.1f s, evaluation %.1f s, checkpoints "
              "%.1f s, linear probe %.1f s, feature caches %.1f s, other %.1f s (phase set-up, calibration)%s\n",
              since_start, w.total, w.steps, w.evaluation, w.checkpoints, w.probe, w.caches, w.other(), plans);
  return r;
}

namespace {

TrainedModel load_checkpoint_model(const io::CheckpointInfo& ck, Device device, const std::string& precision) {
  TrainedModel t;
  t.checkpoint = ck;
  t.init = std::make_unique<Generator>(ck.meta.seed);
  t.dropout = std::make_unique<Generator>(ck.meta.seed + 1);
  const ModelSpec& spec = find_model_spec(ck.meta.arch);
  {
    const init::SkipDraws skip;  // every weight comes from the checkpoint
    t.model = spec.build(ModelOptions{static_cast<int64_t>(ck.meta.classes.size()), ck.meta.image_size, 0.5f,
                                      ck.meta.head, ck.meta.adaptive_pool},
                         *t.init, *t.dropout);
  }
  io::load_checkpoint_weights(*t.model, ck);
  t.model->to(device);
  t.model->eval();
  // Nothing trains here, but bf16-frozen keeps phase 1's boundary: the head in fp32, the
  // layers phase 1 froze in bf16 (converted once, as frozen weights are).
  const Precision policy = parse_precision(precision.empty() ? ck.meta.precision : precision);
  t.model->freeze(t.model->name() + "/");
  if (policy == Precision::bf16_frozen) t.model->unfreeze(spec.head_scope);
  t.precision = apply_precision(*t.model, policy);
  t.convention = ck.meta.convention;
  return t;
}

}  // namespace

TrainedModel load_trained(const std::string& model_dir, Device device, bool best, const std::string& precision) {
  // eval or predict beside a train writing model_dir: the run may prune the checkpoint chosen
  // before it is loaded, and then another is chosen (it failed as "weights file '...' does not
  // exist", as if the directory were damaged).
  TrainedModel t;
  io::choose_and_load_checkpoint(
      model_dir, best, "--best", [](const std::string& line) { std::fprintf(stderr, "warning: %s\n", line.c_str()); },
      [&](const io::CheckpointInfo& ck) { t = load_checkpoint_model(ck, device, precision); });
  return t;
}

void start_stop_signal_relay() {
  sigemptyset(&g_relayed);
  for (const int sig : {SIGINT, SIGTERM}) {
    struct sigaction old {};
    ::sigaction(sig, nullptr, &old);
    if (old.sa_handler != SIG_IGN) sigaddset(&g_relayed, sig);  // ignored from the start: stays so
  }
  pthread_sigmask(SIG_BLOCK, &g_relayed, nullptr);  // before any thread: all inherit it
  std::thread(relay_loop).detach();
}

}  // namespace kiln::app
