// vgg_finetune: the classic transfer-learning recipe from one command. VGG16 with fc8
// replaced for the user's classes; fc8 trained alone with conv1..fc7 frozen, then every
// layer at a small learning rate; evaluation, checkpoints and resume, prediction, export.
// Subcommands: train, eval, predict, export, audit, demo. Every error is one line and exit code 1.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "apps/vgg_finetune/args.h"
#include "apps/vgg_finetune/demo_data.h"
#include "apps/vgg_finetune/train.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/hdf5.h"
#include "io/image.h"
#include "io/transforms.h"
#include "io/weights.h"
#include "train/api.h"
#include "train/audit.h"
#include "train/format.h"
#include "train/metrics_log.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::app;

namespace {

// What people see of an error: an engine error's message, with its source location only
// under KILN_VERBOSE=1 (for bug reports).
std::string error_text(const std::exception& e) {
  const auto* ke = dynamic_cast<const kiln::Error*>(&e);
  const char* verbose = std::getenv("KILN_VERBOSE");
  const bool where = verbose && std::string(verbose) == "1";
  return ke && !where ? ke->message() : std::string(e.what());
}

const char* kTopHelp =
    "usage: vgg_finetune COMMAND [flags]   (vgg_finetune COMMAND --help for each)\n"
    "\n"
    "Fine-tunes VGG16 for your own image classes: fc8 is replaced by a layer sized to your\n"
    "classes and trained alone (phase 1, conv1..fc7 frozen), then every layer is trained at a\n"
    "small learning rate (phase 2). Data is a folder per class (train/<class>/*.jpg).\n"
    "train --model resnet50 (or resnet50_v1, vgg11/13/19) runs the same recipe on another network.\n"
    "\n"
    "commands:\n"
    "  demo      make a small generated dataset, then train, eval, predict and export on it\n"
    "  train     train (and evaluate every epoch) into a model directory; resumes when run again\n"
    "  eval      loss, accuracy, per-class accuracy and confusion matrix of a trained model\n"
    "  predict   top-k classes of images or folders of images\n"
    "  export    write the trained weights as an HDF5 file (kiln or Keras layout)\n"
    "  audit     check a dataset as train reads it: usable images, skipped files and why, duplicates\n"
    "\n"
    "start here:  vgg_finetune demo\n"
    "errors name what was wrong; KILN_VERBOSE=1 adds the source location (for bug reports)\n";

// The registered models, for --model and its help.
std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const ModelSpec& s : model_specs()) names.push_back(s.name);
  return names;
}

std::string model_list() {
  std::string list;
  for (const std::string& n : model_names()) list += (list.empty() ? "" : ", ") + n;
  return list;
}

std::string model_help() {
  return "the network: " + model_list() + " (resnet50 is torchvision's ResNet-50 v1.5, resnet50_v1 Keras's ResNet50); "
         "its last layer (fc8, or fc for ResNet-50) is the head replaced for your classes";
}

std::vector<FlagSpec> train_specs() {
  return {
      {"model", "NAME", kDefaultModel, model_help()},
      {"data-dir", "DIR", "", "folder holding train/ and val/, each with a folder per class"},
      {"train-dir", "DIR", "", "training images, a folder per class (instead of --data-dir)"},
      {"val-dir", "DIR", "", "validation images, same classes (instead of --data-dir)"},
      {"model-dir", "DIR", "", "where checkpoints (ckpt-*.h5, and one frozen-*.weights.h5 per phase that freezes "
                               "layers: the frozen weights every checkpoint of that phase needs), classes.txt, "
                               "config.txt, metrics.csv and events/ go (required)"},
      {"weights", "FILE", "", "pretrained weights of --model (kiln or Keras HDF5, or a Keras 3 .keras archive): every "
                               "layer below the head the file has is loaded; layers it lacks (a VGG16 no-top file has "
                               "no fc6, fc7) are initialised and trained from phase 1"},
      {"head", "fc|avg", "fc", "classifier on pool5: fc (fc6, fc7, fc8, as published) or avg (global average pooling, "
                               "then fc8: Keras's pooling='avg')"},
      {"train-from", "LAYER", "auto", "first layer phase 1 trains, e.g. fc6 or conv5_1 (auto: the first layer --weights "
                                      "lacks, else fc8)"},
      {"batch", "N", "32", "batch size"},
      {"phase1-epochs", "N", "10", "epochs training fc8 alone"},
      {"phase1-lr", "X", "1e-3", "learning rate of phase 1"},
      {"phase2-epochs", "N", "10", "epochs training all layers (0 skips phase 2)"},
      {"phase2-lr", "X", "1e-5", "learning rate of phase 2"},
      {"momentum", "X", "0", "SGD momentum"},
      {"weight-decay", "X", "5e-4", "L2 weight decay on weights (not biases)"},
      {"keep-prob", "X", "0.5", "dropout keep probability after fc6 and fc7 (VGG; ResNet-50 has no dropout)"},
      {"seed", "N", "1", "seed of initialisation, dropout and data order"},
      {"device", "auto|cpu|cuda", "auto",
       "where to train; auto takes the GPU when there is one. On a GPU the variables KILN_TF32, KILN_CONV_SEARCH, "
       "KILN_DETERMINISTIC, KILN_CONV_API and KILN_CONV_FUSE choose its math (README); the run's 'GPU math:' line "
       "names those in force"},
      {"image-size", "N", "224", "input crop size, a multiple of 32 (smaller is faster). fc6 follows the size, "
                                 "unless --weights has a published fc6 (made for 224 px): pool5 is then "
                                 "average-pooled to 7x7 so that fc6 loads"},
      {"convention", "NAME", "auto",
       "input preprocessing: auto (from the weights), caffe_bgr, tf_rgb, torchvision_rgb; a resume keeps the run's"},
      {"workers", "N", "2", "image decoding threads (0: one per CPU core)"},
      {"keep", "N", "2", "checkpoints kept (the best by val accuracy is kept too)"},
      {"no-augment", "", "", "central crops, no flips: phase 1 computes pool5 features once, then runs only fc6..fc8 per step"},
      {"no-feature-cache", "", "", "with --no-augment, run the full network each step anyway (to compare)"},
      {"head-init", "random|probe", "random",
       "how fc8 starts: random, or probe: fitted by ridge regression on the frozen layers' features of the training "
       "images before phase 1 (before phase 2 with --phase1-epochs 0; a linear probe, the ridge strength chosen by "
       "cross-validation on them)"},
      {"calibrate-bn", "auto|on|off", "auto",
       "estimate the batch-norm layers' running statistics on the training images before phase 1 (models with "
       "batch norm: resnet50*); auto: only without --weights, when they are still 0 and 1 as initialised"},
      {"stop-after-epochs", "N", "0", "stop once N epochs are done in all (0: run to the end); train again resumes"},
      {"stop-after-steps", "N", "0",
       "stop after N steps in all, with a checkpoint there (mid-epoch if need be); train again resumes"},
      {"eval-every", "N", "0", "also evaluate on the validation set every N steps (0: only after each epoch)"},
      {"checkpoint-every", "N", "0",
       "also write a checkpoint every N steps (0: only after each epoch); a resume from one continues mid-epoch exactly"},
      {"sync-checkpoints", "", "",
       "write each checkpoint before training goes on; by default its files are written on a thread of their own "
       "while the next steps run (the same files; a run ends once the last is on disk)"},
      {"precision", "fp32|bf16-frozen|bf16", "fp32", "which layers compute in bf16 (fp32 accumulation; weights, gradients, optimizer and checkpoints stay fp32): fp32; bf16-frozen: the layers this phase freezes (the boundary moves with the phase); bf16: every layer, from fp32 master weights (docs/precision.md)"},
      {"cuda-graph", "off|on|auto", "off",
       "record phase 1's step (the head alone) once as a CUDA graph and replay it per batch: off; on: in every head-only phase on a GPU; auto: only where phase 1 runs from cached features (--no-augment), where the short step is bound by kernel launches. Partial batches, phase 2, the CPU and a failed capture run eagerly; results are the same either way. Off by default for now: on an H200 it was 8.8% faster and bit-identical (2026-12-04, cuDNN's legacy API), not yet measured through the graph API, the default since"},
      {"allow-changed-config", "", "",
       "resume even though a recipe flag (--phase1-epochs, --phase1-lr, --phase2-epochs, --phase2-lr, "
       "--batch, --momentum, --weight-decay, --keep-prob, --seed, --no-augment, "
       "--head-init, --calibrate-bn, --precision) differs from the run's config.txt, or config.txt is missing or "
       "records no recipe; config.txt then records the change (a switch the run had on is turned off with "
       "--no-augment=0). --phase1-epochs cannot change once a checkpoint is "
       "in phase 2; --model, --image-size, --head and --train-from never change on resume (the checkpoints hold "
       "that model)"},
  };
}

// --weights before any work: a file (not a folder), a .keras archive (a zip) or an HDF5
// file that opens (a cut-off download is named with its sizes), so a wrong path never waits
// for the data audit to be refused.
void check_weights_file(const std::string& path, const std::string& model) {
  if (path.empty()) return;
  KILN_CHECK(fs::exists(path), "--weights: file '", path, "' does not exist");
  KILN_CHECK(!fs::is_directory(path), "--weights: '", path, "' is a folder; give the weights file inside it (.h5 or .keras)");
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "--weights: cannot read '", path, "': ", std::strerror(errno));
  char head[4] = {};
  in.read(head, sizeof head);
  if (in.gcount() == 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return;  // a .keras archive (a zip)
  // Anything else must be HDF5: its signature (HDF5 finds it after any user block), then the
  // superblock, so a cut-off download is named here with its sizes.
  std::string file_model;  // the model the file names (kiln files, and Keras files kiln or keras.applications wrote)
  try {
    file_model = io::weights_source_model(io::h5::File::open_read(path).root());
  } catch (const Error& e) {
    KILN_FAIL("--weights: ", e.message(), " (weights are read from HDF5 files and Keras .keras archives)");
  }
  // The import's own refusal ("pass an assignment_map to load across models") names a library
  // option that the app has no flag for.
  KILN_CHECK(file_model.empty() || file_model == model, "--weights '", path, "' holds ", file_model, " weights, not ",
             model, "'s: pass --model ", file_model, " (the default is ", kDefaultModel, "), or weights of ", model);
}

std::string require_dir(const std::string& flag, const std::string& dir) {
  KILN_CHECK(!dir.empty(), "--", flag, " is required");
  KILN_CHECK(fs::is_directory(dir), "--", flag, ": '", dir, "' ",
             fs::exists(dir) ? "is a file, not a folder: give the folder that holds it" : "does not exist");
  return dir;
}

// `path` inside `dir` (both as they resolve), as a relative path; empty when outside.
fs::path inside(const fs::path& path, const std::string& dir) {
  if (dir.empty()) return {};
  const fs::path rel = path.lexically_relative(fs::weakly_canonical(fs::absolute(dir)));
  return rel.empty() || *rel.begin() == ".." || rel == "." ? fs::path() : rel;
}

// --workers of train, eval and audit: 1..64 threads, or 0 for one per CPU core.
int workers_flag(const Flags& f) {
  const auto n = static_cast<int>(f.integer("workers", 0, 64));
  return n > 0 ? n : static_cast<int>(std::min(64u, std::max(1u, std::thread::hardware_concurrency())));
}

TrainConfig train_config(const Flags& f) {
  TrainConfig c;
  c.model = f.choice("model", model_names());
  KILN_CHECK(!f.str("model-dir").empty(), "--model-dir is required (where checkpoints go)");
  c.model_dir = f.str("model-dir");
  if (!f.str("data-dir").empty()) {
    KILN_CHECK(f.str("train-dir").empty() && f.str("val-dir").empty(),
               "give either --data-dir or --train-dir and --val-dir, not both");
    const std::string d = require_dir("data-dir", f.str("data-dir"));
    c.train_dir = (fs::path(d) / "train").string();
    c.val_dir = (fs::path(d) / "val").string();
    KILN_CHECK(fs::is_directory(c.train_dir) && fs::is_directory(c.val_dir), "--data-dir '", d,
               "' must hold train/ and val/ folders");
  } else {
    KILN_CHECK(!f.str("train-dir").empty() && !f.str("val-dir").empty(),
               "give --data-dir DIR (holding train/ and val/) or both --train-dir and --val-dir");
    c.train_dir = require_dir("train-dir", f.str("train-dir"));
    c.val_dir = require_dir("val-dir", f.str("val-dir"));
  }
  // Checkpoints, config.txt and events/ written into a class folder would be read as its files.
  const fs::path model_dir = fs::weakly_canonical(fs::absolute(c.model_dir));
  for (const std::string& d : {c.train_dir, c.val_dir})
    KILN_CHECK(inside(model_dir, d).empty() && model_dir != fs::weakly_canonical(fs::absolute(d)), "--model-dir '",
               c.model_dir, "' is inside the data folder '", d, "', where the run's files would be taken for data: "
               "put it elsewhere");
  c.weights = f.str("weights");
  check_weights_file(c.weights, c.model);
  c.batch = f.integer("batch", 1, 4096);
  c.phase1_epochs = f.integer("phase1-epochs", 0, 100000);
  c.phase1_lr = f.real("phase1-lr", 0, 10);
  c.phase2_epochs = f.integer("phase2-epochs", 0, 100000);
  c.phase2_lr = f.real("phase2-lr", 0, 10);
  c.momentum = f.real("momentum", 0, 0.9999);
  c.weight_decay = f.real("weight-decay", 0, 1);
  c.keep_prob = f.real("keep-prob", 1e-6, 1);
  c.seed = static_cast<uint64_t>(f.integer("seed", 0, INT64_MAX));
  c.device = f.choice("device", {"auto", "cpu", "cuda"});
  c.image_size = f.integer("image-size", 32, 1024);
  KILN_CHECK(c.image_size % 32 == 0, "--image-size must be a multiple of 32, got ", c.image_size);
  c.convention = f.choice("convention", {"auto", "caffe_bgr", "tf_rgb", "torchvision_rgb"});
  c.head = f.choice("head", {"fc", "avg"});
  check_head(find_model_spec(c.model), c.head);  // before any work, as the builder would
  c.train_from = f.str("train-from");
  c.workers = workers_flag(f);
  c.keep = static_cast<int>(f.integer("keep", 1, 1000));
  c.stop_after_epochs = f.integer("stop-after-epochs", 0, 100000);
  c.stop_after_steps = f.integer("stop-after-steps", 0, INT64_MAX);
  c.eval_every = f.integer("eval-every", 0, INT64_MAX);
  c.checkpoint_every = f.integer("checkpoint-every", 0, INT64_MAX);
  c.sync_checkpoints = f.on("sync-checkpoints");
  c.allow_changed_config = f.on("allow-changed-config");
  c.no_augment = f.on("no-augment");
  c.feature_cache = !f.on("no-feature-cache");
  c.probe_head = f.choice("head-init", {"random", "probe"}) == "probe";
  c.calibrate_bn = f.choice("calibrate-bn", {"auto", "on", "off"});
  c.precision = f.choice("precision", {"fp32", "bf16-frozen", "bf16"});
  c.cuda_graph = f.choice("cuda-graph", {"off", "on", "auto"});
  c.config_text = "# vgg_finetune train: the flags of this run\n" + f.dump();
  return c;
}

// A resume continues its run's recipe: each recipe flag left out takes the value config.txt
// records (one given that differs is refused later, unless --allow-changed-config). Says
// which values came from there.
void inherit_saved_recipe(Flags& f) {
  if (f.str("model-dir").empty()) return;
  std::string taken;
  const SavedRecipe saved = saved_recipe(f.str("model-dir"));
  for (const RecipeFlag& r : saved.flags) {
    if (f.given(r.name)) continue;
    // A recipe value is never empty as kiln writes it: the file was cut short or edited.
    KILN_CHECK(r.is_switch || !r.value.empty(), saved.source, ": '", r.name, "' has no value (cut short, or edited?); ",
               "restore it, or give --", r.name, " with --allow-changed-config");
    if (same_recipe_value(r.name, f.str(r.name), r.value)) continue;
    f.set_default(r.name, r.value);
    taken += std::string(" --") + r.name + (r.is_switch ? "" : " " + shell_quote(r.value));
  }
  if (!taken.empty())
    std::printf("resuming the run in %s with its recipe (%s):%s\n", f.str("model-dir").c_str(), saved.source.c_str(),
                taken.c_str());
}

int cmd_train(int argc, char** argv) {
  Flags f("train", "--model-dir DIR (--data-dir DIR | --train-dir DIR --val-dir DIR) [flags]",
          "Trains VGG16 (or --model) on a folder-per-class dataset: phase 1 trains the head (fc8)\n"
          "alone (the rest frozen; frozen batch-norm layers keep their running statistics), phase 2 all\n"
          "layers. Evaluates on the validation set after every epoch and writes a\n"
          "checkpoint into --model-dir each epoch (and every N steps with --eval-every and\n"
          "--checkpoint-every). Running the same command again on the same --model-dir resumes\n"
          "from its latest checkpoint (the --weights are not loaded again) and gives the same result\n"
          "as an uninterrupted run; recipe flags left out take the run's values (its config.txt), and\n"
          "one given with another value is refused (see --allow-changed-config). Ctrl-C (or SIGTERM)\n"
          "stops after the step in progress, or at the epoch's checkpoint, and checkpoints there (exit\n"
          "code 130; a second Ctrl-C quits at once).\n"
          "A run killed at any moment loses at most the steps since the last checkpoint; temporary\n"
          "files it leaves are removed by the next run. One run at a time per --model-dir: a second\n"
          "is refused. It starts with the checks of vgg_finetune audit: it trains on the images that\n"
          "decode, lists the files it skips (and why) in --model-dir's skipped.txt, and refuses data\n"
          "it cannot train on. Started as N processes (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, or\n"
          "mpirun), it trains one model on all of them: --batch is the global batch, rank 0 prints\n"
          "and writes (docs/data_parallel.md).",
          train_specs(),
          "  vgg_finetune train --data-dir pets --model-dir runs/pets --weights vgg16.h5\n"
          "  vgg_finetune train --train-dir a/train --val-dir a/val --model-dir runs/a --phase2-epochs 0\n");
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(f.positional().empty(), "train takes no positional argument, got '", f.positional()[0], "'");
  inherit_saved_recipe(f);
  // 130: stopped by a signal (Ctrl-C), checkpointed; the shell's convention for SIGINT.
  return run_train(train_config(f)).interrupted ? 130 : 0;
}

// eval/predict's --precision: "" (not given) means the checkpoint's.
std::string precision_flag(const Flags& f) {
  return f.given("precision") ? f.choice("precision", {"fp32", "bf16-frozen", "bf16"}) : "";
}

// "after 1 epoch", "after 3 epochs", "after 1 epoch and 6 batches" (a mid-epoch one): how
// far a checkpoint had trained.
std::string after_epochs(const io::CheckpointInfo& c) {
  const long long n = static_cast<long long>(c.meta.epochs_done), b = static_cast<long long>(c.meta.batches_done);
  return "after " + std::to_string(n) + (n == 1 ? " epoch" : " epochs") +
         (b > 0 ? " and " + std::to_string(b) + (b == 1 ? " batch" : " batches") : "");
}

// A folder per class to evaluate on. One class is enough (a test set of new images of one
// class; the help says "the model's classes, or some of them"): io::image_folder asks for two,
// as training does.
io::Dataset eval_folder(const std::string& dir) {
  io::Dataset ds = io::scan_image_folder(dir).dataset;
  KILN_CHECK(!ds.classes.empty(), "--data-dir '", dir, "' holds no class folder: give the folder that holds a folder "
             "per class (or one holding val/), not the images themselves");
  for (size_t label = 0; label < ds.classes.size(); ++label)
    KILN_CHECK(ds.class_counts[label] > 0, "class folder '", (fs::path(dir) / ds.classes[label]).string(),
               "' holds no image file (expected .jpg, .jpeg, .png or .bmp)");
  return ds;
}

io::Dataset eval_dataset(const std::string& dir) {
  // A data folder with split folders (train/, val/, test/; what else it holds aside) is
  // evaluated on its val/, as train --data-dir reads it; one without them is itself the
  // folder per class.
  const fs::path val = fs::path(dir) / "val";
  if (fs::is_directory(val)) return eval_folder(val.string());
  for (const char* split : {"train", "test"}) {
    const fs::path p = fs::path(dir) / split;
    KILN_CHECK(!fs::is_directory(p), "'", dir, "' holds ", split, "/ but no val/: pass a folder per class itself, e.g. ",
               p.string());
  }
  return eval_folder(dir);
}

// The data labelled by the model's class numbers. Data may lack some of the model's classes
// (a test set without a rare class: those are reported with no images); a class the model
// does not have is refused, naming the difference.
io::Dataset in_model_classes(io::Dataset ds, const std::vector<std::string>& model_classes,
                             const std::string& model_dir) {
  if (ds.classes == model_classes) return ds;
  const auto missing_from = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    std::string out;
    for (const std::string& c : a)
      if (std::find(b.begin(), b.end(), c) == b.end()) out += (out.empty() ? "" : ", ") + c;
    return out;
  };
  const std::string extra = missing_from(ds.classes, model_classes);
  KILN_CHECK(extra.empty(), "the classes of '", ds.root, "' differ from the model's (its checkpoint's, in ", model_dir,
             "): the data has ", extra, " that the model lacks (", join_names(model_classes, 20), ")");
  const std::string lacking = missing_from(model_classes, ds.classes);
  std::vector<int64_t> to_model;
  for (const std::string& c : ds.classes)
    to_model.push_back(std::find(model_classes.begin(), model_classes.end(), c) - model_classes.begin());
  for (io::Sample& sample : ds.samples) sample.label = to_model[static_cast<size_t>(sample.label)];
  std::vector<int64_t> counts(model_classes.size(), 0);
  for (size_t k = 0; k < to_model.size(); ++k) counts[static_cast<size_t>(to_model[k])] = ds.class_counts[k];
  ds.classes = model_classes;
  ds.class_counts = counts;
  std::printf("note: '%s' has no folder for %s, of the model's classes: no image is scored as those, though the "
              "model may predict them\n",
              ds.root.c_str(), lacking.c_str());
  return ds;
}

// eval --compare-precision: the checkpoint's weights in fp32 (t, the reference) against the
// same weights in the given precision, image by image and layer by layer.
void print_precision_comparison(TrainedModel& t, const Flags& f, Device device, io::Loader& loader) {
  const std::string p = f.choice("compare-precision", {"bf16-frozen", "bf16"});
  KILN_CHECK(t.precision.policy == Precision::fp32, "--compare-precision compares against fp32: leave --precision out or "
             "give --precision fp32");
  TrainedModel test = load_trained(f.str("model-dir"), device, f.on("best"), p);
  const PrecisionComparison c = compare_precision(*t.model, *test.model, loader);
  KILN_CHECK(c.images > 0, "no image could be read");
  std::printf("the same weights in fp32 (reference) and %s (%s), %lld images:\n", p.c_str(),
              test.precision.describe().c_str(), static_cast<long long>(c.images));
  std::printf("  relative error ||%s - fp32|| / ||fp32|| of each layer's output:\n", p.c_str());
  for (size_t i = 0; i < c.layers.size(); ++i)
    std::printf("    %-10s %.2e\n", c.layers[i].c_str(), c.rel_error[i]);
  // "n/a" of no images (a model with no clear top-1 anywhere), not 0.00%.
  const auto pct = [](int64_t a, int64_t b) {
    return b > 0 ? format_number("%.2f%%", 100.0 * static_cast<double>(a) / static_cast<double>(b)) : "n/a";
  };
  std::printf("  outputs: mean KL(fp32 || %s) %.2e nats; top-1 agrees on %lld of %lld images with a clear fp32 top-1 "
              "(top-1 probability >= top-2 + %.2f): %s; on all images %s\n",
              p.c_str(), c.kl, static_cast<long long>(c.agree_clear), static_cast<long long>(c.clear), c.margin,
              pct(c.agree_clear, c.clear).c_str(), pct(c.agree_all, c.images).c_str());
  std::printf("  accuracy: fp32 %s, %s %s\n", pct(c.correct_ref, c.images).c_str(), p.c_str(),
              pct(c.correct_test, c.images).c_str());
}

// The flags eval, predict and export share, spelled once.
const FlagSpec kModelDirFlag{"model-dir", "DIR", "", "a model directory made by train (required)"};
const FlagSpec kBestFlag{"best", "", "", "use the best checkpoint by val accuracy instead of the latest"};
const FlagSpec kDeviceFlag{"device", "auto|cpu|cuda", "auto", "where to run"};
const FlagSpec kInferencePrecisionFlag{
    "precision", "fp32|bf16-frozen|bf16", "",
    "compute precision (default: the one the checkpoint was trained with): fp32; bf16-frozen: every layer but the "
    "head in bf16, phase 1's boundary; bf16: every layer"};

int cmd_eval(int argc, char** argv) {
  Flags f("eval", "--model-dir DIR --data-dir DIR [flags]",
          "Evaluates the model in --model-dir (its latest checkpoint, or --best) on a folder-per-class\n"
          "dataset (a folder of splits -- train/, val/, test/ -- is evaluated on its val/): loss,\n"
          "accuracy, per-class accuracy, confusion matrix. Its classes are the model's, or some of them.",
          {kModelDirFlag,
           {"data-dir", "DIR", "", "folder per class, or a folder holding val/ (required)"},
           kBestFlag,
           {"batch", "N", "32", "batch size"},
           kDeviceFlag,
           kInferencePrecisionFlag,
           {"compare-precision", "bf16-frozen|bf16", "", "instead: run the weights in fp32 and in this precision on the same images and report how far each layer's output, the output distribution (KL) and the top-1 move"},
           {"workers", "N", "2", "image decoding threads (0: one per CPU core)"}},
          "  vgg_finetune eval --model-dir runs/pets --data-dir pets\n");
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(!f.str("model-dir").empty(), "--model-dir is required");
  const std::string data = require_dir("data-dir", f.str("data-dir"));
  const int64_t batch = f.integer("batch", 1, 4096);
  const int workers = workers_flag(f);
  const std::string dev = f.choice("device", {"auto", "cpu", "cuda"});
  io::Dataset ds = eval_dataset(data);
  const Device device = choose_device(dev);
  const bool compare = f.given("compare-precision");  // the reference is fp32 unless --precision says otherwise
  TrainedModel t = load_trained(f.str("model-dir"), device, f.on("best"),
                                compare && !f.given("precision") ? "fp32" : precision_flag(f));
  ds = in_model_classes(std::move(ds), t.checkpoint.meta.classes, f.str("model-dir"));
  io::LoaderOptions lo;
  lo.batch_size = batch;
  lo.num_workers = workers;
  lo.shuffle = false;
  lo.augment = false;
  lo.resize_shorter = resize_for_crop(t.checkpoint.meta.image_size);
  lo.crop = static_cast<int>(t.checkpoint.meta.image_size);
  lo.convention = t.convention;
  lo.device = device;
  io::Loader loader(ds, lo);
  std::printf("model: %s (%s)\nprecision: %s\ndata: %s: %s\n", t.checkpoint.state_path.c_str(),
              after_epochs(t.checkpoint).c_str(), t.precision.describe().c_str(), ds.root.c_str(),
              ds.summary().c_str());
  if (compare) {
    print_precision_comparison(t, f, device, loader);
    return 0;
  }
  const EvalResult r = evaluate(*t.model, loader, static_cast<int64_t>(ds.classes.size()));
  std::printf("loss %.4f  accuracy %.2f%%  (%lld images)\n%s", r.loss, 100.0 * r.acc, static_cast<long long>(r.images),
              eval_details(r, ds.classes).c_str());
  return 0;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return o;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

struct Prediction {
  std::string path;
  std::string error;  // non-empty: the image could not be read
  std::vector<std::pair<int64_t, double>> top;  // class index, probability
};

std::vector<Prediction> predict_images(TrainedModel& t, const std::vector<std::string>& paths, int64_t top_k,
                                       int64_t batch, Device device) {
  const int64_t size = t.checkpoint.meta.image_size;
  std::vector<Prediction> out(paths.size());
  std::vector<size_t> pending;
  std::vector<float> buf;
  auto flush = [&]() {
    if (pending.empty()) return;
    const auto n = static_cast<int64_t>(pending.size());
    Tensor x = Tensor::from_vector(buf, Shape{n, size, size, 3}).to(device);
    NoGradGuard no_grad;
    const std::vector<float> p = softmax((*t.model)(x)).to_vector<float>();
    const auto k = static_cast<int64_t>(t.checkpoint.meta.classes.size());
    for (int64_t i = 0; i < n; ++i) {
      std::vector<std::pair<int64_t, double>>& row = out[pending[static_cast<size_t>(i)]].top;
      for (const kiln::Prediction& c : top_classes(p.data() + i * k, k, top_k)) row.push_back({c.index, c.probability});
    }
    pending.clear();
    buf.clear();
  };
  for (size_t i = 0; i < paths.size(); ++i) {
    out[i].path = paths[i];
    try {
      const io::Image img = io::decode_image(paths[i]);
      const size_t at = buf.size();
      buf.resize(at + static_cast<size_t>(size * size * 3));
      image_to_input(img, size, t.convention, buf.data() + at);  // as kiln::Model::logits prepares it
      pending.push_back(i);
    } catch (const Error& e) {
      std::string msg = error_text(e);
      if (const size_t nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
      // The decoder names the file; the report names it already.
      if (msg.rfind(paths[i] + ": ", 0) == 0) msg = msg.substr(paths[i].size() + 2);
      out[i].error = msg;
    }
    if (static_cast<int64_t>(pending.size()) == batch) flush();
  }
  flush();
  return out;
}

// What a command reads, which its output file must not overwrite.
struct Reads {
  std::string model_dir;               // its run's files (checkpoints, classes.txt, ...); others may be written
  std::vector<std::string> data_dirs;  // data folders: any file written inside becomes one of their files
  std::vector<std::string> files;      // input files given one by one
};

// A file a training run keeps in its model directory (train.h, io/checkpoint.h, train/metrics_log.h).
bool run_file(const fs::path& rel) {
  const std::string first = rel.begin()->string();
  return io::is_checkpoint_store_name(first) || first == kClassesFile || first == kConfigFile ||
         first == kSkippedFile || first == kMetricsCsvName || first == kEventsDirName;
}

// Refuses an output file that is one of `reads`' files, inside its data folders, or one of
// its model directory's run files.
void refuse_overwriting_inputs(const std::string& flag, const std::string& file, const Reads& reads) {
  const fs::path out = fs::weakly_canonical(fs::absolute(file));
  for (const std::string& f : reads.files)
    KILN_CHECK(out != fs::weakly_canonical(fs::absolute(f)), flag, " '", file,
               "' is one of the files this command reads: write it elsewhere");
  for (const std::string& d : reads.data_dirs)
    KILN_CHECK(inside(out, d).empty(), flag, " '", file, "' is inside the data folder '", d,
               "', where it would become one of its files: write it elsewhere");
  const fs::path rel = inside(out, reads.model_dir);
  KILN_CHECK(rel.empty() || !run_file(rel), flag, " '", file, "' would overwrite a file of the run in '",
             reads.model_dir, "' (", rel.string(), "): write it elsewhere");
}

// An output file named by `flag` (audit --out, predict --csv/--json, export --out), checked
// before any work is done: not a folder, not what the command reads, and its folder made
// when missing (and said: a typo in a path should not make a folder tree unseen), so a long
// run never ends on "cannot write". The guard removes the folders made if the command fails.
std::unique_ptr<NewDirGuard> prepare_output_file(const std::string& flag, const std::string& file,
                                                 const Reads& reads = {}) {
  if (file.empty()) return nullptr;
  KILN_CHECK(!fs::is_directory(file), flag, " '", file, "' is a folder: give a file name, e.g. ",
             (fs::path(file) / "out").string());
  refuse_overwriting_inputs(flag, file, reads);
  if (!fs::path(file).has_parent_path()) return nullptr;
  const fs::path dir = fs::path(file).parent_path();
  auto guard = std::make_unique<NewDirGuard>(dir.string());
  std::error_code ec;
  fs::create_directories(dir, ec);
  KILN_CHECK(!ec, flag, ": cannot create the folder '", dir.string(), "' for '", file, "': ", ec.message());
  if (!guard->made.empty()) std::printf("%s: created the folder '%s'\n", flag.c_str(), dir.string().c_str());
  return guard;
}

std::vector<std::string> collect_images(const std::vector<std::string>& args) {
  std::vector<std::string> paths;
  for (const std::string& a : args) {
    if (fs::is_directory(a)) {
      // A folder's image files as train reads a class folder: hidden ones (macOS's "._" files,
      // metadata beside each copied file) are passed over, and counted.
      std::vector<std::string> files;
      int64_t hidden = 0;
      for (const auto& e : fs::recursive_directory_iterator(a)) {
        const std::string name = e.path().filename().string();
        if (!e.is_regular_file() || !io::has_image_extension(name)) continue;
        if (name[0] == '.') ++hidden;
        else files.push_back(e.path().string());
      }
      if (hidden > 0)
        std::printf("note: %s in '%s' passed over (names starting with '.', such as macOS's ._ files)\n",
                    plural(hidden, "hidden image file", "hidden image files").c_str(), a.c_str());
      std::sort(files.begin(), files.end());
      KILN_CHECK(!files.empty(), "folder '", a, "' holds no image (.jpg, .jpeg, .png, .bmp)");
      paths.insert(paths.end(), files.begin(), files.end());
    } else {
      paths.push_back(a);  // a missing or bad file is reported per image, not fatal
    }
  }
  return paths;
}

// Prints predictions and writes CSV/JSON when asked; returns the number of unreadable images.
int64_t report_predictions(const std::vector<Prediction>& preds, const std::vector<std::string>& classes,
                           const std::string& csv, const std::string& json) {
  int64_t bad = 0;
  for (const Prediction& p : preds) {
    if (!p.error.empty()) {
      ++bad;
      std::printf("%s: cannot read: %s\n", p.path.c_str(), p.error.c_str());
      continue;
    }
    std::printf("%s:", p.path.c_str());
    for (const auto& [c, prob] : p.top) std::printf("  %s %.3f", classes[static_cast<size_t>(c)].c_str(), prob);
    std::printf("\n");
  }
  if (!csv.empty()) {
    std::string s = "path,rank,class,probability,error\n";
    for (const Prediction& p : preds) {
      if (!p.error.empty()) s += csv_field(p.path) + ",,,," + csv_field(p.error) + "\n";
      for (size_t r = 0; r < p.top.size(); ++r) {
        char pr[32];
        std::snprintf(pr, sizeof pr, "%.6f", p.top[r].second);
        s += csv_field(p.path) + "," + std::to_string(r + 1) + "," +
             csv_field(classes[static_cast<size_t>(p.top[r].first)]) + "," + pr + ",\n";
      }
    }
    io::write_file_atomic(csv, s);
  }
  if (!json.empty()) {
    std::string s = "[\n";
    for (size_t i = 0; i < preds.size(); ++i) {
      const Prediction& p = preds[i];
      s += "  {\"path\": \"" + json_escape(p.path) + "\"";
      if (!p.error.empty()) s += ", \"error\": \"" + json_escape(p.error) + "\"";
      else {
        s += ", \"top\": [";
        for (size_t r = 0; r < p.top.size(); ++r) {
          char pr[32];
          std::snprintf(pr, sizeof pr, "%.6f", p.top[r].second);
          s += std::string(r ? ", " : "") + "{\"class\": \"" +
               json_escape(classes[static_cast<size_t>(p.top[r].first)]) + "\", \"probability\": " + pr + "}";
        }
        s += "]";
      }
      s += i + 1 < preds.size() ? "},\n" : "}\n";
    }
    io::write_file_atomic(json, s + "]\n");
  }
  return bad;
}

int cmd_predict(int argc, char** argv) {
  Flags f("predict", "--model-dir DIR IMAGE_OR_FOLDER... [flags]",
          "Prints the top-k classes with probabilities for each image (folders are searched for\n"
          ".jpg/.jpeg/.png/.bmp files). Unreadable images are reported and skipped, not fatal.",
          {kModelDirFlag,
           {"top-k", "N", "3", "classes printed per image"},
           {"csv", "FILE", "", "also write the predictions as CSV (path,rank,class,probability,error)"},
           {"json", "FILE", "", "also write the predictions as JSON"},
           kBestFlag,
           {"batch", "N", "32", "images per forward pass"},
           kDeviceFlag,
           kInferencePrecisionFlag},
          "  vgg_finetune predict --model-dir runs/pets photo.jpg more_photos/ --top-k 2 --json out.json\n");
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(!f.str("model-dir").empty(), "--model-dir is required");
  KILN_CHECK(!f.positional().empty(), "predict needs at least one image or folder");
  const int64_t top_k = f.integer("top-k", 1, 1000);
  const int64_t batch = f.integer("batch", 1, 4096);
  const std::string dev = f.choice("device", {"auto", "cpu", "cuda"});
  const std::vector<std::string> paths = collect_images(f.positional());
  const Reads reads{f.str("model-dir"), {}, paths};  // beside the images is fine: not a training data set
  const auto csv_dir = prepare_output_file("--csv", f.str("csv"), reads);
  const auto json_dir = prepare_output_file("--json", f.str("json"), reads);
  // One file for both: the JSON, written second, replaced the CSV without a word.
  KILN_CHECK(f.str("csv").empty() || f.str("json").empty() ||
                 fs::weakly_canonical(fs::absolute(f.str("csv"))) != fs::weakly_canonical(fs::absolute(f.str("json"))),
             "--csv and --json name the same file '", f.str("json"),
             "': the JSON would replace the CSV; give each its own");
  const Device device = choose_device(dev);
  TrainedModel t = load_trained(f.str("model-dir"), device, f.on("best"), precision_flag(f));
  std::printf("model: %s (%s)\nprecision: %s\n", t.checkpoint.state_path.c_str(), after_epochs(t.checkpoint).c_str(),
              t.precision.describe().c_str());
  const auto preds = predict_images(t, paths, top_k, batch, device);
  const int64_t bad = report_predictions(preds, t.checkpoint.meta.classes, f.str("csv"), f.str("json"));
  if (bad) std::printf("%lld of %zu image(s) could not be read (listed above)\n", static_cast<long long>(bad), preds.size());
  KILN_CHECK(bad < static_cast<int64_t>(preds.size()), "no image could be read");
  return 0;
}

void export_model(const std::string& model_dir, const std::string& out, const std::string& format, bool best) {
  // Keras 3 opens a .keras name as a ZIP archive (model.save's format); this is HDF5.
  KILN_CHECK(fs::path(out).extension() != ".keras", "--out '", out, "': Keras opens .keras files as ZIP archives "
             "(model.save's format), and export writes HDF5 weights; name it .h5 (Keras: model.load_weights('",
             fs::path(out).replace_extension(".h5").filename().string(), "'))");
  const auto out_dir = prepare_output_file("--out", out, Reads{model_dir, {}, {}});  // never the run's own files
  TrainedModel t = load_trained(model_dir, Device::cpu(), best);
  io::ExportOptions eo;
  eo.format = format == "keras" ? io::WeightsFormat::keras : io::WeightsFormat::kiln;
  eo.convention = t.checkpoint.meta.convention;
  io::export_weights(*t.model, out, eo);
  const double acc = t.checkpoint.meta.val_acc;  // < 0: a mid-epoch checkpoint not evaluated
  // A checkpoint whose phase froze layers is two files: name both, or the small one looks like all of it.
  const std::string from = t.checkpoint.frozen_path.empty()
                               ? t.checkpoint.weights_path
                               : t.checkpoint.weights_path + " + " + fs::path(t.checkpoint.frozen_path).filename().string();
  std::printf("exported %s (%s, %s) to %s in %s layout, input convention %s\n", from.c_str(),
              after_epochs(t.checkpoint).c_str(),
              acc < 0 ? "not evaluated" : format_number("val acc %.1f%%", 100.0 * acc).c_str(), out.c_str(),
              format.c_str(), io::convention_name(t.checkpoint.meta.convention));
}

int cmd_export(int argc, char** argv) {
  Flags f("export", "--model-dir DIR --out FILE [--format kiln|keras]",
          "Writes the trained weights of --model-dir (latest checkpoint, or --best) to an HDF5 file,\n"
          "atomically: kiln's layout (vgg16/<layer>/weight|bias) or Keras's, the input convention recorded in either.",
          {kModelDirFlag,
           {"out", "FILE", "", "the file to write (required)"},
           {"format", "kiln|keras", "kiln", "layout of the file"},
           {"best", "", "", "export the best checkpoint by val accuracy instead of the latest"}},
          "  vgg_finetune export --model-dir runs/pets --out pets_vgg16.h5 --format keras\n");
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(!f.str("model-dir").empty(), "--model-dir is required");
  KILN_CHECK(!f.str("out").empty(), "--out is required");
  export_model(f.str("model-dir"), f.str("out"), f.choice("format", {"kiln", "keras"}), f.on("best"));
  return 0;
}

int cmd_audit(int argc, char** argv) {
  Flags f("audit", "DATA [flags]  (or --data-dir DATA)",
          "Checks a dataset the way train reads it, changing nothing. DATA holds train/ and val/ (and\n"
          "test/) folders of class folders, or is itself a folder of class folders. Every image is read\n"
          "and decoded. Prints the usable images per split and class; every file train would skip and\n"
          "why (unsupported format such as .webp or .heic, macOS '._' file or other hidden file, empty\n"
          "file, fails to decode: the decoder's message); exact duplicate images within a split and\n"
          "across splits (same size and CRC32C, then compared byte for byte); classes missing from a\n"
          "split; classes with under 1/4 of the median class's images. train runs the same checks when\n"
          "it starts and writes the skipped files to skipped.txt in the model directory. Exit code 1\n"
          "when train would refuse the data (a class with no usable train image, a val class train\n"
          "lacks, fewer than two classes, no usable val image).",
          {{"data-dir", "DIR", "", "the data folder, as train's --data-dir (instead of DATA)"},
           {"out", "FILE", "", "also write the skipped files to FILE, one 'path<TAB>reason' line each"},
           {"workers", "N", "0", "files read and decoded in parallel (0: one per CPU core)"},
           {"structure-only", "", "",
            "walk each file's structure (segments, chunks, checksums, end marker) without decoding pixels: faster"},
           {"max-pairs", "N", "10", "duplicate pairs named per kind (the rest are counted)"}},
          "  vgg_finetune audit pets\n  vgg_finetune audit pets --out pets_skipped.txt\n");
  if (!f.parse(argc, argv, 2)) return 0;
  std::vector<std::string> data = f.positional();
  if (!f.str("data-dir").empty()) data.push_back(f.str("data-dir"));
  KILN_CHECK(data.size() == 1, "audit takes one data folder (DATA or --data-dir DIR: holding train/ and val/, or class "
             "folders), got ", data.size());
  AuditOptions opt;
  opt.full_decode = !f.on("structure-only");
  opt.threads = workers_flag(f);
  opt.max_pairs = static_cast<size_t>(f.integer("max-pairs", 0, 1000000));
  const std::string out = f.str("out");
  const auto out_dir = prepare_output_file("--out", out, Reads{"", {data[0]}, {}});
  const AuditReport r = audit_data_dir(data[0], opt);
  std::printf("%s", r.summary(r.skipped.size(), out).c_str());
  if (!out.empty()) {
    io::write_file_atomic(out, r.skipped_text());
    std::printf("wrote %s: %zu line(s), 'path<TAB>reason'\n", out.c_str(), r.skipped.size());
  }
  KILN_CHECK(r.errors.empty(), "train would refuse this data: ", r.errors.front(),
             r.errors.size() > 1 ? " (and " + std::to_string(r.errors.size() - 1) + " more error(s) above)" : "");
  const bool split = r.split("train") || r.split("val");
  std::printf("%s%s\n",
              split ? "train can use this data" : "train can use this folder of classes as --train-dir or --val-dir",
              r.warnings.empty() && r.duplicates.empty() ? "" : " (read the warnings above)");
  return 0;
}

// One validation image per class (the first by name), for the demo's predictions.
std::vector<std::string> one_val_image_per_class(const std::string& val_dir, const std::vector<std::string>& classes) {
  std::vector<std::string> some;
  for (const std::string& cls : classes) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(fs::path(val_dir) / cls)) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (!files.empty()) some.push_back(files.front());
  }
  return some;
}

// The demo's recipe for `model` on this run: scaled down on a CPU unless --full, the
// classic recipe with --weights, else a probe-started head (from random weights the classic
// recipe stays at chance). Sets c and prints what it chose; a model with batch norm
// (ResNet-50) gets a recipe of its own.
void choose_demo_recipe(TrainConfig& c, const std::string& model, bool full, bool with_weights) {
  bool batch_norm = false;  // ResNet-50: its random features probe poorly (below)
  {
    Generator g1(1), g2(2);
    batch_norm = holds<BatchNorm2d>(*find_model_spec(model).build(ModelOptions{8, 64}, g1, g2));
  }
  if (!full && batch_norm) {
    // Measured on the 2-core CPU (docs/resnet50.md): a linear probe on a random ResNet-50's
    // globally pooled features reaches ~28% (VGG16's flattened pool5: 84-88%), so learning
    // has to come from phase 2, which trains every layer (from scratch, in effect) at a
    // higher rate: 8 epochs at lr 0.01, momentum 0.9 reach 67-80% on val for seeds 1-3.
    c.image_size = 64;
    c.no_augment = true;
    c.probe_head = true;
    c.phase1_epochs = 1;
    c.phase2_epochs = 8;
    c.phase1_lr = 1e-3;
    c.phase2_lr = 1e-2;
    c.momentum = 0.9;
    std::printf("demo on a CPU, SCALED to finish in minutes: images %d px (not 224), %lld + %lld epochs, no "
                "augmentation, %s's fc started by a linear probe, then every layer trained at lr %g, momentum %g "
                "(its random features are too weak for a probe alone; docs/resnet50.md). --full runs the full recipe.\n",
                static_cast<int>(c.image_size), static_cast<long long>(c.phase1_epochs),
                static_cast<long long>(c.phase2_epochs), model.c_str(), c.phase2_lr, c.momentum);
  } else if (!full) {
    // Measured on the 2-core CPU (docs/demo.md): pool5 features of the 1000 images are
    // computed once (--no-augment), fc8 starts as a ridge fit on fc7's features (--head-init
    // probe: 84-88% on val for seeds 1-3, where SGD from a random fc8 stayed near chance),
    // phase 1 then runs only fc6..fc8 per step; phase 2 trains all layers for one epoch.
    c.image_size = 64;
    c.no_augment = true;
    c.probe_head = true;
    c.keep_prob = 1.0;  // the probe is fitted on fc7 without dropout; dropout's noise would swamp it
    c.phase1_epochs = 2;
    c.phase2_epochs = 1;
    c.phase1_lr = 1e-3;
    c.phase2_lr = 1e-5;
    std::printf("demo on a CPU, SCALED to finish in minutes: images %d px (not 224), %lld + %lld epochs (not 10 + 10), "
                "no augmentation, no dropout, fc8 started by a linear probe. --full runs the full recipe.\n",
                static_cast<int>(c.image_size), static_cast<long long>(c.phase1_epochs),
                static_cast<long long>(c.phase2_epochs));
  } else if (with_weights) {
    std::printf("demo at full size: 224 px, 10 + 10 epochs, augmentation and dropout on, the head from random\n");
  } else if (batch_norm) {
    // From random weights the classic recipe (a random head trained over frozen random
    // features, then lr 1e-5) stays at chance; ResNet-50's recipe as on the CPU, full size.
    c.probe_head = true;
    c.phase2_lr = 1e-2;
    c.momentum = 0.9;
    std::printf("demo at full size: 224 px, 10 + 10 epochs, augmentation on; from RANDOM weights %s's fc starts as "
                "a linear probe and phase 2 trains every layer at lr %g, momentum %g (the classic recipe, for "
                "pretrained weights, stays at chance from random ones: --weights runs it)\n",
                model.c_str(), c.phase2_lr, c.momentum);
  } else {
    // Measured on the CPU at 224 px with augmentation (docs/demo.md): fc8 from the probe
    // gave 88.0% on val after one phase-1 epoch, where fc8 from random stays at chance.
    c.probe_head = true;
    c.keep_prob = 1.0;  // the probe is fitted on fc7 without dropout
    std::printf("demo at full size: 224 px, 10 + 10 epochs, augmentation on; from RANDOM weights fc8 starts as a "
                "linear probe, dropout off (the classic recipe, for pretrained weights, stays at chance from random "
                "ones: --weights runs it)\n");
  }
}

// Where the demo's files stay and how large they are; rm -rf is suggested for the whole
// work folder only when the demo made it (`own_dir`), else for its data/, model/, export/.
void print_demo_kept(const std::string& work, bool own_dir) {
  std::uintmax_t bytes = 0;
  std::error_code ec;
  std::string parts;
  for (const char* part : {"data", "model", "export"}) {
    parts += (parts.empty() ? "" : " ") + shell_quote((fs::path(work) / part).string());
    for (const auto& e : fs::recursive_directory_iterator(fs::path(work) / part, ec))
      if (e.is_regular_file(ec)) bytes += e.file_size(ec);
  }
  std::printf("its files (%.0f MB: data, checkpoints, export) are kept in %s; rm -rf %s removes them\n",
              static_cast<double>(bytes) / 1e6, work.c_str(), own_dir ? shell_quote(work).c_str() : parts.c_str());
}

// The train command the demo runs, printed so that it can be rerun as is (a resume after
// Ctrl-C): the recipe flags the demo set apart from train's defaults, paths quoted.
void print_demo_train_line(const TrainConfig& c) {
  std::printf("\n== vgg_finetune train --train-dir %s --val-dir %s --model-dir %s%s%s%s\n",
              shell_quote(c.train_dir).c_str(), shell_quote(c.val_dir).c_str(), shell_quote(c.model_dir).c_str(),
              c.weights.empty() ? "" : " --weights ", c.weights.empty() ? "" : shell_quote(c.weights).c_str(),
              recipe_flags_changed(c).c_str());
}

int cmd_demo(int argc, char** argv) {
  Flags f("demo", "[flags]",
          "Runs the whole recipe on data it makes itself, so nothing needs downloading: a generated\n"
          "8-class image dataset (synthetic classes told apart by shape, pattern and texture; colours\n"
          "are shared by all classes), then train (both phases), eval, predict on one validation image\n"
          "per class and export. VGG16 starts from random initialisation, NOT ImageNet-pretrained,\n"
          "unless --weights is given. It prints a colour-histogram baseline on the same split first, and\n"
          "the validation accuracy before and after each phase. On a CPU the run is scaled down to\n"
          "finish in a few minutes (it says what it scaled): fc8 starts as a linear probe (ridge\n"
          "regression on the frozen layers' features); with a GPU, or --full, it runs at full size\n"
          "(224 px, 10 + 10 epochs, augmentation), from random weights still with the probe.\n"
          "docs/demo.md says what the demo shows and what it does not.",
          {{"work-dir", "DIR", "", "where the data, model and export go (default: a new temporary folder, kept)"},
           {"model", "NAME", kDefaultModel, "the network: " + model_list() + " (see train --help)"},
           {"weights", "FILE", "", "pretrained weights of --model to use instead of the random ones"},
           kDeviceFlag,
           {"full", "", "",
            "run at full size (224 px, 10+10 epochs, augmentation) even on a CPU; with --weights the classic recipe "
            "(dropout, fc8 from random), from random weights fc8 from the probe"},
           {"seed", "N", "1", "seed of the data, initialisation, dropout and data order"},
           {"precision", "fp32|bf16-frozen|bf16", "fp32", "compute precision of training (see train --help)"},
           {"cuda-graph", "off|on|auto", "off",
            "record phase 1's step as a CUDA graph and replay it per batch (see train --help for why it is "
            "off by default)"}},
          "  vgg_finetune demo\n  vgg_finetune demo --work-dir /tmp/demo --device cpu\n");
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(f.positional().empty(), "demo takes no positional argument, got '", f.positional()[0], "'");
  const uint64_t seed = static_cast<uint64_t>(f.integer("seed", 0, INT64_MAX));
  const std::string dev = f.choice("device", {"auto", "cpu", "cuda"});
  const std::string model = f.choice("model", model_names());
  check_weights_file(f.str("weights"), model);
  std::string work = f.str("work-dir");
  for (const char* part : {"data", "model"}) {
    std::error_code ec;
    const fs::path p = fs::path(work) / part;
    KILN_CHECK(work.empty() || !fs::exists(p, ec) || fs::is_empty(p, ec), "--work-dir '", work,
               "' already holds a demo run (", p.string(), "): give a new or empty folder, or remove that one");
  }
  // Only a folder the demo makes is its own to suggest removing; in a given one it owns
  // data/, model/ and export/.
  const bool own_dir = work.empty() || !fs::exists(work);
  if (work.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "vgg_finetune_demo_XXXXXX").string();
    KILN_CHECK(::mkdtemp(tmpl.data()) != nullptr, "cannot create a temporary folder in ", fs::temp_directory_path().string());
    work = tmpl;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Device device = choose_device(dev);
  const bool full = device.is_cuda() || f.on("full");
  TrainConfig c;
  c.model = model;
  c.precision = f.choice("precision", {"fp32", "bf16-frozen", "bf16"});
  c.cuda_graph = f.choice("cuda-graph", {"off", "on", "auto"});
  const int train_per_class = 100, val_per_class = 25;
  choose_demo_recipe(c, model, full, !f.str("weights").empty());
  c.eval_at_phase_start = true;
  std::printf("work dir: %s\n", work.c_str());
  const DemoDataset data = make_demo_dataset((fs::path(work) / "data").string(), 8, train_per_class, val_per_class, seed);
  std::printf("data: %lld train and %lld val images in %zu synthetic classes under %s\n",
              static_cast<long long>(data.train_images), static_cast<long long>(data.val_images), data.classes.size(),
              data.root.c_str());
  c.train_dir = (fs::path(data.root) / "train").string();
  c.val_dir = (fs::path(data.root) / "val").string();
  const ColourBaseline base = colour_histogram_baseline(c.train_dir, c.val_dir);
  std::printf("baseline: a classifier on colour alone (ridge regression on %lld-bin RGB histograms, fitted on the %lld "
              "train images) gets %.1f%% on the %lld val images (chance %.1f%%): the classes are not told apart by "
              "colour\n",
              static_cast<long long>(base.bins), static_cast<long long>(base.train_images), 100.0 * base.val_acc,
              static_cast<long long>(base.val_images), 100.0 / static_cast<double>(data.classes.size()));
  c.weights = f.str("weights");
  if (c.weights.empty())
    std::printf("note: %s starts from RANDOM initialisation (convs Kaiming-normal, linear layers N(0, 0.01)), NOT\n"
                "      ImageNet-pretrained: the accuracy below shows that the pipeline learns, not what pretrained\n"
                "      features give (pass --weights for those)\n",
                model.c_str());
  c.model_dir = (fs::path(work) / "model").string();
  c.seed = seed;
  c.device = dev;
  c.config_text = "# vgg_finetune demo\n" + recipe_config_text(c);
  print_demo_train_line(c);
  const TrainResult r = run_train(c);
  if (r.interrupted) {  // Ctrl-C: the run is checkpointed, the rest of the demo skipped
    std::printf("demo stopped: rerun the train line above (after ==) to resume its training; eval, predict and "
                "export then take its --model-dir\n");
    print_demo_kept(work, own_dir);
    return 130;
  }

  std::printf("\n== vgg_finetune predict --model-dir %s (the first validation image of each class)\n",
              shell_quote(c.model_dir).c_str());
  TrainedModel t = load_trained(c.model_dir, device);
  const std::vector<std::string> some = one_val_image_per_class(c.val_dir, data.classes);
  report_predictions(predict_images(t, some, 3, 32, device), t.checkpoint.meta.classes, "", "");

  const std::string out = (fs::path(work) / "export" / (model + "_finetuned.h5")).string();
  std::printf("\n== vgg_finetune export --model-dir %s --out %s\n", shell_quote(c.model_dir).c_str(),
              shell_quote(out).c_str());
  export_model(c.model_dir, out, "kiln", false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\nsummary: val accuracy %.1f%% after training, against %.1f%% for colour alone and %.1f%% by chance; "
              "the backbone was %s\n",
              100.0 * r.val.acc, 100.0 * base.val_acc, 100.0 / static_cast<double>(data.classes.size()),
              f.str("weights").empty() ? "RANDOMLY initialised, not pretrained" : ("loaded from " + f.str("weights")).c_str());
  std::printf("demo done in %.0f s. Try: %s eval --model-dir %s --data-dir %s\n", secs, shell_quote(argv[0]).c_str(),
              shell_quote(c.model_dir).c_str(), shell_quote(data.root).c_str());
  print_demo_kept(work, own_dir);
  return 0;
}

// For tests: a tiny learnable dataset (class k: its own colour plus noise), PNG files.
int cmd_toy_data(int argc, char** argv) {
  Flags f("_toy-data", "DIR [flags]", "Writes DIR/train/cK/*.png and DIR/val/cK/*.png (for tests).",
          {{"classes", "N", "2", "classes"}, {"train", "N", "4", "train images per class"},
           {"val", "N", "2", "val images per class"}, {"size", "N", "40", "image side"}, {"seed", "N", "1", "seed"}});
  if (!f.parse(argc, argv, 2)) return 0;
  KILN_CHECK(f.positional().size() == 1, "_toy-data needs one folder");
  const int64_t k = f.integer("classes", 1, 16), ntr = f.integer("train", 1, 1000), nva = f.integer("val", 1, 1000);
  const int size = static_cast<int>(f.integer("size", 8, 1024));
  uint64_t s = static_cast<uint64_t>(f.integer("seed", 0, INT64_MAX)) * 2654435761u + 1;
  auto rnd = [&]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % 64);
  };
  for (const char* split : {"train", "val"}) {
    const int64_t n = std::string(split) == "train" ? ntr : nva;
    for (int64_t c = 0; c < k; ++c) {
      const fs::path dir = fs::path(f.positional()[0]) / split / ("c" + std::to_string(c));
      fs::create_directories(dir);
      for (int64_t i = 0; i < n; ++i) {
        io::Image img;
        img.width = img.height = size;
        img.pixels.resize(static_cast<size_t>(size * size * 3));
        for (size_t p = 0; p < img.pixels.size(); ++p)
          img.pixels[p] = static_cast<uint8_t>(((c * 97 + static_cast<int64_t>(p % 3) * 61 * (c + 1)) % 192) + rnd());
        io::write_png((dir / ("img" + std::to_string(i) + ".png")).string(), img);
      }
    }
  }
  return 0;
}

// For tests: an FNV-1a digest of the latest checkpoint's weights and buffers, bit for bit.
int cmd_digest(int argc, char** argv) {
  Flags f("_digest", "--model-dir DIR", "Prints a digest of the latest checkpoint's weights (for tests).",
          {{"model-dir", "DIR", "", "model directory"}});
  if (!f.parse(argc, argv, 2)) return 0;
  TrainedModel t = load_trained(f.str("model-dir"), Device::cpu());
  uint64_t h = 1469598103934665603ull;
  std::vector<const Tensor*> tensors;  // parameters, then buffers (batch-norm statistics)
  for (const ParameterRef& p : t.model->parameters()) tensors.push_back(p.tensor);
  for (const BufferRef& b : t.model->buffers()) tensors.push_back(b.tensor);
  for (const Tensor* x : tensors) {
    const std::vector<float> v = x->to_vector<float>();
    const auto* b = reinterpret_cast<const unsigned char*>(v.data());
    for (size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  std::printf("%016llx epochs %lld\n", static_cast<unsigned long long>(h),
              static_cast<long long>(t.checkpoint.meta.epochs_done));
  return 0;
}

// For tests: every ckpt-*.h5 file of a model directory opens (state files read as checkpoints,
// weights files import into the model a state file names, sized by classes.txt and --image-size); *.tmp files are
// listed (a killed run may leave them; they are never read as checkpoints). Exit 1 if any is bad.
int cmd_check_dir(int argc, char** argv) {
  Flags f("_check-dir", "--model-dir DIR --image-size N", "Opens every checkpoint file of DIR (for tests).",
          {{"model-dir", "DIR", "", "model directory"}, {"image-size", "N", "224", "the run's --image-size"}});
  if (!f.parse(argc, argv, 2)) return 0;
  const std::string dir = f.str("model-dir");
  KILN_CHECK(fs::is_directory(dir), "model directory '", dir, "' does not exist");
  std::ifstream cin_classes(fs::path(dir) / kClassesFile);
  int64_t num_classes = 0;
  for (std::string line; std::getline(cin_classes, line);) num_classes += !line.empty();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  auto ends = [](const std::string& n, const std::string& suf) {
    return n.size() > suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
  };
  // The model the weights files are for: what a state file names (VGG16 when none opens).
  std::string arch = kDefaultModel;
  for (const std::string& n : names)
    if (n.rfind("ckpt-", 0) == 0 && ends(n, ".state.h5")) {
      try {
        arch = io::read_checkpoint_meta((fs::path(dir) / n).string()).arch;
        break;
      } catch (const std::exception&) {  // a damaged one is reported below
      }
    }
  int64_t good = 0, bad = 0, tmp = 0;
  for (const std::string& n : names) {
    const std::string path = (fs::path(dir) / n).string();
    if (io::is_run_temporary(n, run_file_names())) {
      ++tmp;
      std::printf("tmp  %s (not a checkpoint; the next run removes it)\n", n.c_str());
      continue;
    }
    // Checkpoint files and the frozen files that complete them (io/checkpoint.h).
    if (!io::is_checkpoint_store_name(n) || !ends(n, ".h5")) continue;
    try {
      if (ends(n, ".state.h5")) {
        io::read_checkpoint_meta(path);
      } else {
        KILN_CHECK(num_classes > 0, "no classes.txt to size fc8 by");
        Generator g1(1), g2(2);
        auto model = find_model_spec(arch).build(ModelOptions{num_classes, f.integer("image-size", 32, 1024)},
                                                       g1, g2);
        io::ImportOptions part;
        part.allow_missing = true;  // a checkpoint's weights file holds what trains, a frozen file the rest
        io::import_weights(*model, path, part);
      }
      ++good;
      std::printf("ok   %s\n", n.c_str());
    } catch (const std::exception& e) {
      ++bad;
      std::string msg = e.what();
      if (const size_t nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
      std::printf("BAD  %s: %s\n", n.c_str(), msg.c_str());
    }
  }
  std::printf("%lld checkpoint file(s) open, %lld bad, %lld temporary\n", static_cast<long long>(good),
              static_cast<long long>(bad), static_cast<long long>(tmp));
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  start_stop_signal_relay();
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd.empty() || cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(kTopHelp, stdout);
      return cmd.empty() ? 2 : 0;
    }
    if (cmd == "train") return cmd_train(argc, argv);
    if (cmd == "eval") return cmd_eval(argc, argv);
    if (cmd == "predict") return cmd_predict(argc, argv);
    if (cmd == "export") return cmd_export(argc, argv);
    if (cmd == "audit") return cmd_audit(argc, argv);
    if (cmd == "demo") return cmd_demo(argc, argv);
    if (cmd == "_toy-data") return cmd_toy_data(argc, argv);
    if (cmd == "_digest") return cmd_digest(argc, argv);
    if (cmd == "_check-dir") return cmd_check_dir(argc, argv);
    KILN_FAIL("unknown command '", cmd, "' (commands: demo, train, eval, predict, export, audit; see vgg_finetune --help)");
  } catch (const std::exception& e) {
    // One line for people: a multi-line message (e.g. an import's list of problems) is joined,
    // and the engine's source location is shown only with KILN_VERBOSE=1 (for bug reports).
    const std::string text = error_text(e);
    std::string msg;
    bool space = false;
    for (const char ch : text) {
      if (ch == '\n') {
        msg += ";";
        space = true;
      } else if (ch == ' ' && space) {
        continue;
      } else {
        if (space) msg += ' ';
        space = false;
        msg += ch;
      }
    }
    std::fflush(stdout);
    std::fprintf(stderr, "vgg_finetune %s: error: %s\n", cmd.c_str(), msg.c_str());
    return 1;
  }
}
