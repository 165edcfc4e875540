// Checkpoints prove they are intact (io/checkpoint.h): state
// files carry a format version and a CRC32C per optimizer tensor, restore_optimizer verifies
// them, and the resume picks the newest checkpoint whose files verify. What a phase freezes
// is written once per phase (state format 3); version 2 checkpoints still load; buffers are
// saved with the parameters. A one-layer model
// keeps this fast; the app's end-to-end test covers the real VGG16 files.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/kiln.h"
#include "io/checkpoint.h"
#include "io/hdf5.h"
#include "layers/layers.h"
#include "tests/support/reference.h"
#include "tests/support/files.h"
#include "tests/support/gpu.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;
using Catch::Matchers::Contains;

namespace {

struct TempDir {
  std::string dir = test::make_temp_dir("checkpoint");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// "vgg16/fc8" alone, trained by SGD with momentum (so the state file holds float tensors).
// One SGD step of a [4, 8] -> 2 model on a fresh random batch (both fixtures below train so).
void sgd_step(Module& model, SGD& opt, Generator& gen) {
  const Tensor x = Tensor::normal(Shape{4, 8}, 0, 1, gen);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 1, 0}, Shape{4});
  opt.zero_grad();
  softmax_cross_entropy(model.forward(x), y).backward();
  opt.step();
}

struct Run {
  Generator gen{5};
  std::shared_ptr<Sequential> model = std::make_shared<Sequential>("vgg16");
  std::unique_ptr<SGD> opt;
  Run() {
    model->add(std::make_shared<Linear>("fc8", 8, 2, true, gen));
    opt = std::make_unique<SGD>(*model, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  }
  void step() { sgd_step(*model, *opt, gen); }
  std::string save(const std::string& dir, int64_t epochs) {
    return save_checkpoint(dir, *model, *opt, meta(epochs), 5);
  }
  // What this run's checkpoint after `epochs` epochs records.
  static CheckpointMeta meta(int64_t epochs) {
    CheckpointMeta m;
    m.epochs_done = epochs;
    m.global_step = epochs;
    m.image_size = 32;
    m.classes = {"a", "b"};
    m.convention = io::InputConvention::caffe_bgr;
    return m;
  }
};

// A copy of the optimizer state tensor `name` (undefined when there is none).
Tensor momentum_of(Optimizer& opt, const std::string& name) {
  for (const OptimizerStateRef& s : opt.state())
    if (s.name == name) return s.tensor->clone();
  return Tensor();
}

}  // namespace

TEST_CASE("checkpoint state files carry a CRC32C per optimizer tensor, verified on restore", "[checkpoint][checksum]") {
  TempDir tmp;
  Run run;
  run.step();
  const std::string state1 = run.save(tmp.dir, 1);
  const Tensor weight1 = run.model->find("vgg16/fc8/weight").tensor->clone();
  run.step();
  const std::string state2 = run.save(tmp.dir, 2);
  const std::string momentum = "vgg16/fc8/weight/momentum";
  REQUIRE(momentum_of(*run.opt, momentum).defined());
  {
    const io::h5::File f = io::h5::File::open_read(state2);
    CHECK(f.root().int_attribute("state_format_version") == 3);
    CHECK(f.root().dataset("optimizer/" + momentum).has_attribute(io::kChecksumAttribute));
  }
  Run fresh;
  restore_optimizer(state2, *fresh.opt);
  CHECK(momentum_of(*fresh.opt, momentum).to_vector<float>() == momentum_of(*run.opt, momentum).to_vector<float>());
  ResumeChoice intact = newest_intact_checkpoint(tmp.dir);
  REQUIRE(intact.checkpoint);
  CHECK(intact.checkpoint->state_path == state2);
  CHECK(intact.damaged.empty());

  test::overwrite_first_float(state2, momentum_of(*run.opt, momentum), 3e38f);
  const auto names = [&](const std::string& text) {
    CHECK_THAT(text, Contains("file '" + state2 + "' is corrupt: tensor 'optimizer/" + momentum +
                              "' fails its checksum (stored 0x") &&
                         Contains("the file was changed after kiln wrote it"));
  };
  try {
    restore_optimizer(state2, *fresh.opt);
    FAIL("a corrupt state file was restored");
  } catch (const Error& e) {
    names(e.what());
  }

  // The resume falls back to the older checkpoint and says which file failed and why.
  const ResumeChoice choice = newest_intact_checkpoint(tmp.dir);
  REQUIRE(choice.checkpoint);
  CHECK(choice.checkpoint->state_path == state1);
  REQUIRE(choice.damaged.size() == 1);
  CHECK(choice.damaged[0].state_path == state2);
  names(choice.damaged[0].reason);
  CHECK(choice.damaged[0].reason.find('\n') == std::string::npos);

  // Set aside, not deleted: renamed out of the checkpoint namespace.
  const std::vector<std::string> moved = set_aside(choice.damaged[0]);
  CHECK(moved == std::vector<std::string>{"ckpt-000002.state.h5.corrupt", "ckpt-000002.weights.h5.corrupt"});
  CHECK(fs::exists(state2 + ".corrupt"));
  CHECK(list_checkpoints(tmp.dir).size() == 1);

  // Nothing intact left: an error naming the file and tensor, not a silent fresh start.
  test::overwrite_first_float(choice.checkpoint->weights_path, weight1, 3e38f);
  CHECK_THROWS_WITH(newest_intact_checkpoint(tmp.dir),
                    Contains("holds 1 checkpoint(s) and none is intact") &&
                        Contains("file '" + choice.checkpoint->weights_path + "' is corrupt: tensor 'vgg16/fc8/weight'"));
}

namespace {

// fc7 (frozen in "phase 1") then fc8, trained by SGD with momentum.
struct FrozenRun {
  Generator gen{11};
  std::shared_ptr<Sequential> model = std::make_shared<Sequential>("vgg16");
  std::unique_ptr<SGD> opt;
  int phase = 1;
  FrozenRun() {
    model->add(std::make_shared<Linear>("fc7", 8, 8, true, gen));
    model->add(std::make_shared<Linear>("fc8", 8, 2, true, gen));
    model->freeze("vgg16/fc7/");
    opt = std::make_unique<SGD>(*model, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  }
  void all_layers() {  // "phase 2": everything trains
    model->unfreeze("vgg16/");
    opt = std::make_unique<SGD>(*model, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
    phase = 2;
  }
  void step() { sgd_step(*model, *opt, gen); }
  std::string save(const std::string& dir, int64_t epochs, int keep, double val_acc = 0) {
    CheckpointMeta m;
    m.epochs_done = epochs;
    m.global_step = epochs;
    m.phase = phase;
    m.val_acc = val_acc;
    m.image_size = 32;
    m.classes = {"a", "b"};
    m.convention = io::InputConvention::caffe_bgr;
    return save_checkpoint(dir, *model, *opt, m, keep);
  }
};

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<float> values_of(Module& m, const std::string& name) { return m.find(name).tensor->to_vector<float>(); }

// Rewrites a checkpoint as kiln wrote it before state format 3: one weights file with every
// parameter (export_weights), a state file with state_format_version 2 and no frozen_* attributes.
void rewrite_as_version2(const CheckpointInfo& c, Module& model) {
  io::export_weights(model, c.weights_path);
  std::vector<std::pair<std::string, std::string>> strings;
  std::vector<std::pair<std::string, int64_t>> ints;
  std::vector<std::string> classes;
  std::vector<std::pair<std::string, std::vector<float>>> tensors;
  std::vector<std::vector<int64_t>> shapes;
  {
    const io::h5::File f = io::h5::File::open_read(c.state_path);
    const io::h5::Group root = f.root();
    for (const std::string& a : root.attribute_names()) {
      // Attributes version 2 did not have (newer optional ones included): a real v2 file lacks them.
      if (a == "frozen_file" || a == "frozen_digest" || a == "weights_digest" || a == "state_format_version" ||
          a == "head" || a == "adaptive_pool" || a == "train_from" || a == "precision" || a.rfind("optimizer_", 0) == 0)
        continue;
      if (a == "classes") classes = root.string_list_attribute(a);
      else if (a == "kind" || a == "epoch_loss_sum" || a == "val_loss" || a == "val_acc" || a == "arch" ||
               a == "convention" || a == "weights_file")
        strings.emplace_back(a, root.string_attribute(a));
      else ints.emplace_back(a, root.int_attribute(a));
    }
    for (const std::string& layer : root.group("optimizer").group("vgg16").children())
      for (const std::string& param : root.group("optimizer").group("vgg16").group(layer).children()) {
        const std::string rel = "optimizer/vgg16/" + layer + "/" + param + "/momentum";
        tensors.emplace_back(rel, io::read_checksummed(root, rel, true));
        shapes.push_back(root.dataset(rel).shape());
      }
  }
  io::h5::File f = io::h5::File::create(c.state_path);
  io::h5::Group root = f.root();
  root.set_int_attribute("state_format_version", 2);
  for (const auto& [k, v] : strings) root.set_string_attribute(k, v);
  for (const auto& [k, v] : ints) root.set_int_attribute(k, v);
  root.set_string_list_attribute("classes", classes);
  for (size_t i = 0; i < tensors.size(); ++i) io::write_checksummed(root, tensors[i].first, shapes[i], tensors[i].second.data());
  f.close();
}

// A test-only module with a buffer (as batch norm's running statistics will be).
class WithBuffer final : public Module {
 public:
  explicit WithBuffer(Generator& gen) : Module("net") {
    register_parameter("weight", Tensor::normal(Shape{3}, 0, 1, gen), true);
    register_parameter("bias", Tensor::normal(Shape{3}, 0, 1, gen), false);
    stats_ = &register_buffer("running_mean", Tensor::normal(Shape{3}, 0, 1, gen));
  }
  Tensor forward(const Tensor& x) override { return x; }
  Tensor& stats() { return *stats_; }

 private:
  Tensor* stats_;
};

}  // namespace

TEST_CASE("a phase's frozen parameters are written once, and checkpoints hold what trains", "[checkpoint]") {
  TempDir tmp;
  FrozenRun run;
  run.step();
  const std::string s1 = run.save(tmp.dir, 1, 1);
  const std::vector<std::string> after1 = files_in(tmp.dir);
  REQUIRE(after1.size() == 3);
  const std::string frozen = after1[2];
  CHECK(frozen.rfind("frozen-phase1-", 0) == 0);
  const auto frozen_time = fs::last_write_time(fs::path(tmp.dir) / frozen);
  run.step();
  const std::string s2 = run.save(tmp.dir, 2, 1, 0.25);
  // ckpt-000001 pruned (keep 1); the frozen file kept, not rewritten, since ckpt-000002 names it.
  CHECK(files_in(tmp.dir) == std::vector<std::string>{"ckpt-000002.state.h5", "ckpt-000002.weights.h5", frozen});
  CHECK(fs::last_write_time(fs::path(tmp.dir) / frozen) == frozen_time);
  {
    const io::h5::File w = io::h5::File::open_read((fs::path(tmp.dir) / "ckpt-000002.weights.h5").string());
    CHECK(w.root().group("vgg16").children() == std::vector<std::string>{"fc8"});
    const io::h5::File z = io::h5::File::open_read((fs::path(tmp.dir) / frozen).string());
    CHECK(z.root().group("vgg16").children() == std::vector<std::string>{"fc7"});
    const io::h5::File st = io::h5::File::open_read(s2);
    CHECK(st.root().string_attribute("frozen_file") == frozen);
  }
  // Loading reads both files: a fresh model ends up equal to the trained one.
  const ResumeChoice choice = newest_intact_checkpoint(tmp.dir);
  REQUIRE(choice.checkpoint);
  CHECK(choice.checkpoint->state_path == s2);
  CHECK(choice.checkpoint->frozen_path == (fs::path(tmp.dir) / frozen).string());
  FrozenRun fresh;
  fresh.step();  // other values everywhere trainable
  {
    Generator g(77);
    auto other = std::make_shared<Sequential>("vgg16");
    other->add(std::make_shared<Linear>("fc7", 8, 8, true, g));
    other->add(std::make_shared<Linear>("fc8", 8, 2, true, g));
    load_checkpoint_weights(*other, *choice.checkpoint);
    for (const char* n : {"vgg16/fc7/weight", "vgg16/fc7/bias", "vgg16/fc8/weight", "vgg16/fc8/bias"})
      CHECK(values_of(*other, n) == values_of(*run.model, n));
    restore_optimizer(choice.checkpoint->state_path, *fresh.opt);
    CHECK(momentum_of(*fresh.opt, "vgg16/fc8/weight/momentum").to_vector<float>() ==
          momentum_of(*run.opt, "vgg16/fc8/weight/momentum").to_vector<float>());
  }

  // Phase 2 trains everything: no frozen file; once no kept checkpoint names phase 1's, it goes.
  run.all_layers();
  run.step();
  run.save(tmp.dir, 3, 1, 0.5);
  CHECK(files_in(tmp.dir) == std::vector<std::string>{"ckpt-000003.state.h5", "ckpt-000003.weights.h5"});
}

TEST_CASE("a checkpoint's state file given as weights says what it is and how to get weights",
          "[checkpoint][weights]") {
  TempDir tmp;
  FrozenRun run;
  run.step();
  const std::string state = run.save(tmp.dir, 1, 1);
  CHECK_THROWS_WITH(io::import_weights(*run.model, state),
                    Contains("is a checkpoint's state file") && Contains("vgg_finetune export --model-dir"));
}

TEST_CASE("a mismatched or corrupt frozen file makes its checkpoints damaged", "[checkpoint][checksum]") {
  TempDir tmp;
  FrozenRun run;
  run.step();
  run.save(tmp.dir, 1, 5);
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  REQUIRE(!c.frozen_path.empty());
  const std::string saved = c.frozen_path + ".saved";
  fs::copy_file(c.frozen_path, saved);

  // Another file under its name (other fc7 values, each tensor intact): refused by identity.
  {
    Generator g(3);
    auto other = std::make_shared<Sequential>("vgg16");
    other->add(std::make_shared<Linear>("fc7", 8, 8, true, g));
    io::export_weights(*other, c.frozen_path);
  }
  CHECK_THROWS_WITH(verify_checkpoint(c), Contains("frozen file '" + c.frozen_path + "' is not the one checkpoint '" +
                                                   c.state_path + "' was written with"));
  Generator g(4);
  auto m = std::make_shared<Sequential>("vgg16");
  m->add(std::make_shared<Linear>("fc7", 8, 8, true, g));
  m->add(std::make_shared<Linear>("fc8", 8, 2, true, g));
  CHECK_THROWS_WITH(load_checkpoint_weights(*m, c), Contains("is not the one checkpoint"));

  // A corrupt tensor in it: none intact, the error names the frozen file and the tensor.
  fs::copy_file(saved, c.frozen_path, fs::copy_options::overwrite_existing);
  fs::remove(saved);
  test::overwrite_first_float(c.frozen_path, run.model->find("vgg16/fc7/weight").tensor->clone(), 3e38f);
  CHECK_THROWS_WITH(newest_intact_checkpoint(tmp.dir),
                    Contains("holds 1 checkpoint(s) and none is intact") &&
                        Contains("file '" + c.frozen_path + "' is corrupt: tensor 'vgg16/fc7/weight'"));
  // Started over as that error advises, with the ckpt-* files moved away: the frozen file of
  // the same name (the same values, the same digest attribute) is damaged, so it is written
  // again, not reused, and the new checkpoint loads.
  for (const std::string& n : files_in(tmp.dir))
    if (n.rfind("ckpt-", 0) == 0) fs::remove(fs::path(tmp.dir) / n);
  run.save(tmp.dir, 1, 5);
  const ResumeChoice again = newest_intact_checkpoint(tmp.dir);
  REQUIRE(again.checkpoint);
  CHECK(again.checkpoint->frozen_path == c.frozen_path);
  load_checkpoint_weights(*m, *again.checkpoint);
  CHECK(values_of(*m, "vgg16/fc7/weight") == values_of(*run.model, "vgg16/fc7/weight"));
  // Missing: the checkpoint is damaged (listed, not resumable).
  fs::remove(c.frozen_path);
  std::vector<DamagedCheckpoint> damaged;
  CHECK(list_checkpoints(tmp.dir, &damaged).empty());
  REQUIRE(damaged.size() == 1);
  CHECK_THAT(damaged[0].reason, Contains("names frozen file") && Contains("which is missing"));
}

TEST_CASE("another run's weights file under a checkpoint's name is refused by identity, and set aside",
          "[checkpoint][checksum]") {
  // Found by review: another run's ckpt-*.weights.h5 (intact, the same tensor names) loaded
  // without a word, and eval, predict, export and a resume all used the other model.
  TempDir tmp, other_dir;
  Run run, other;
  run.step();
  run.save(tmp.dir, 1);
  run.step();
  run.save(tmp.dir, 2);
  for (int i = 0; i < 3; ++i) other.step();  // the same model trained further: other values
  other.save(other_dir.dir, 2);
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  CHECK(c.meta.weights_digest == weights_digest_of(c.weights_path));
  const std::vector<float> before = values_of(*run.model, "vgg16/fc8/weight");
  fs::copy_file(latest_checkpoint(other_dir.dir)->weights_path, c.weights_path, fs::copy_options::overwrite_existing);

  CHECK_THROWS_WITH(verify_checkpoint(c), Contains("weights file '" + c.weights_path + "' is not the one checkpoint '" +
                                                   c.state_path + "' was written with") &&
                                              Contains("another run's file?"));
  CHECK_THROWS_WITH(load_checkpoint_weights(*run.model, c), Contains("is not the one checkpoint"));
  CHECK(values_of(*run.model, "vgg16/fc8/weight") == before);  // nothing loaded
  // The resume passes over it to the checkpoint before, naming the weights file as the cause.
  const ResumeChoice r = newest_intact_checkpoint(tmp.dir);
  REQUIRE(r.checkpoint);
  CHECK(r.checkpoint->meta.epochs_done == 1);
  REQUIRE(r.damaged.size() == 1);
  CHECK_THAT(r.damaged[0].reason, Contains("weights file"));
}

TEST_CASE("checkpoints of state format 2 (one full weights file) still load and resume", "[checkpoint]") {
  TempDir tmp;
  FrozenRun run;
  run.step();
  run.save(tmp.dir, 1, 5);
  rewrite_as_version2(*latest_checkpoint(tmp.dir), *run.model);
  for (const std::string& n : files_in(tmp.dir))
    if (n.rfind("frozen-", 0) == 0) fs::remove(fs::path(tmp.dir) / n);
  const ResumeChoice choice = newest_intact_checkpoint(tmp.dir);
  REQUIRE(choice.checkpoint);
  CHECK(choice.damaged.empty());
  CHECK(choice.checkpoint->frozen_path.empty());
  {
    const io::h5::File f = io::h5::File::open_read(choice.checkpoint->state_path);
    CHECK(f.root().int_attribute("state_format_version") == 2);
  }
  FrozenRun fresh;
  Generator g(8);
  auto other = std::make_shared<Sequential>("vgg16");
  other->add(std::make_shared<Linear>("fc7", 8, 8, true, g));
  other->add(std::make_shared<Linear>("fc8", 8, 2, true, g));
  load_checkpoint_weights(*other, *choice.checkpoint);
  for (const char* n : {"vgg16/fc7/weight", "vgg16/fc8/weight", "vgg16/fc8/bias"})
    CHECK(values_of(*other, n) == values_of(*run.model, n));
  restore_optimizer(choice.checkpoint->state_path, *fresh.opt);
  CHECK(momentum_of(*fresh.opt, "vgg16/fc8/weight/momentum").to_vector<float>() ==
        momentum_of(*run.opt, "vgg16/fc8/weight/momentum").to_vector<float>());
  // Its optimizer's settings were not recorded then: another momentum restores unchecked.
  SGD other_momentum(*fresh.model, SgdOptions{.lr = 0.1f, .momentum = 0.5f});
  restore_optimizer(choice.checkpoint->state_path, other_momentum);
  CHECK(other_momentum.steps() == 1);
  // The run goes on in format 3 beside it.
  run.step();
  run.save(tmp.dir, 2, 5);
  CHECK(list_checkpoints(tmp.dir).size() == 2);
  CHECK(!latest_checkpoint(tmp.dir)->frozen_path.empty());
}

TEST_CASE("buffers are exported, imported and checkpointed with the parameters", "[checkpoint][weights]") {
  TempDir tmp;
  Generator gen(21);
  WithBuffer m(gen);
  REQUIRE(m.buffers().size() == 1);
  CHECK(m.buffers()[0].name == "net/running_mean");
  const std::string path = (fs::path(tmp.dir) / "w.h5").string();
  io::export_weights(m, path);
  {
    const io::h5::File f = io::h5::File::open_read(path);
    CHECK(f.root().group("net").children() == std::vector<std::string>{"bias", "running_mean", "weight"});
  }
  Generator g2(22);
  WithBuffer fresh(g2);
  REQUIRE(fresh.stats().to_vector<float>() != m.stats().to_vector<float>());
  const io::ImportReport rep = io::import_weights(fresh, path);
  CHECK(std::count(rep.loaded.begin(), rep.loaded.end(), "net/running_mean") == 1);
  CHECK(fresh.stats().to_vector<float>() == m.stats().to_vector<float>());

  // In a checkpoint the buffer goes with what trains (it changes every step), never in the frozen file.
  m.freeze("net/weight");
  SGD opt(m, SgdOptions{.lr = 0.1f});
  CheckpointMeta meta;
  meta.epochs_done = 1;
  meta.image_size = 32;
  meta.classes = {"a"};
  meta.convention = io::InputConvention::caffe_bgr;
  save_checkpoint(tmp.dir, m, opt, meta, 2);
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  {
    const io::h5::File w = io::h5::File::open_read(c.weights_path);
    CHECK(w.root().group("net").children() == std::vector<std::string>{"bias", "running_mean"});
  }
  Generator g3(23);
  WithBuffer back(g3);
  load_checkpoint_weights(back, c);
  CHECK(back.stats().to_vector<float>() == m.stats().to_vector<float>());
  CHECK(values_of(back, "net/weight") == values_of(m, "net/weight"));
}

TEST_CASE("save_checkpoint refuses what its loader would refuse, and a missing directory, writing nothing",
          "[checkpoint][errors]") {
  TempDir tmp;
  Generator gen(24);
  WithBuffer m(gen);
  SGD opt(m, SgdOptions{.lr = 0.1f});
  CheckpointMeta meta;  // research code's first try: classes and image size left as they are
  meta.image_size = 32;
  REQUIRE_THROWS_WITH(save_checkpoint(tmp.dir, m, opt, meta, 2),
                      Contains("save_checkpoint: the number of classes is 0") && Contains("loader would refuse"));
  meta.classes = {"a", "b"};
  meta.image_size = 0;
  REQUIRE_THROWS_WITH(save_checkpoint(tmp.dir, m, opt, meta, 2), Contains("image_size is 0, expected 1..16384"));
  CHECK(std::filesystem::is_empty(tmp.dir));
  meta.image_size = 40;  // any crop: research code trains sizes vgg_finetune does not offer
  REQUIRE_THROWS_WITH(save_checkpoint(tmp.dir + "/nope", m, opt, meta, 2),
                      Contains("model directory '" + tmp.dir + "/nope' does not exist"));
  save_checkpoint(tmp.dir, m, opt, meta, 2);
  CHECK(latest_checkpoint(tmp.dir).has_value());
}

TEST_CASE("a checkpoint records its optimizer's kind and settings, and a resume into another is refused",
          "[checkpoint]") {
  TempDir tmp;
  Run run;  // SGD, momentum 0.9
  run.step();
  const std::string state = run.save(tmp.dir, 1);
  const std::string momentum = "vgg16/fc8/weight/momentum";
  const auto model = [](Generator& gen) {
    auto m = std::make_shared<Sequential>("vgg16");
    m->add(std::make_shared<Linear>("fc8", 8, 2, true, gen));
    return m;
  };
  Generator gen{5};

  // Same settings, another lr (schedules move it): restored.
  auto same = model(gen);
  SGD same_opt(*same, SgdOptions{.lr = 0.01f, .momentum = 0.9f});
  restore_optimizer(state, same_opt);
  CHECK(same_opt.steps() == 1);
  CHECK(momentum_of(same_opt, momentum).to_vector<float>() == momentum_of(*run.opt, momentum).to_vector<float>());

  // Another momentum: refused, naming both values; allowed, the state is restored.
  auto other = model(gen);
  SGD other_opt(*other, SgdOptions{.lr = 0.1f, .momentum = 0.5f, .nesterov = true});
  CHECK_THROWS_WITH(restore_optimizer(state, other_opt),
                    Contains("'" + state + "' was saved by SGD with other settings (momentum 0.9 saved, 0.5 here; "
                             "nesterov 0 saved, 1 here)") &&
                        Contains("--allow-changed-config"));
  CHECK(other_opt.steps() == 0);  // nothing copied before the refusal
  restore_optimizer(state, other_opt, /*allow_changed_settings=*/true);
  CHECK(other_opt.steps() == 1);
  CHECK(momentum_of(other_opt, momentum).to_vector<float>() == momentum_of(*run.opt, momentum).to_vector<float>());

  // Another kind: refused even when changed settings are allowed (Adam's moments are no momentum).
  auto adam = model(gen);
  Adam adam_opt(*adam, AdamOptions{});
  CHECK_THROWS_WITH(restore_optimizer(state, adam_opt, true),
                    Contains("holds the state of SGD, but it is being restored into Adam"));

  // Momentum 0 saved (no momentum state), 0.9 now and allowed: the momentum starts at zero.
  auto plain = model(gen);
  SGD plain_opt(*plain, SgdOptions{.lr = 0.1f});
  sgd_step(*plain, plain_opt, gen);
  CheckpointMeta m;
  m.epochs_done = 2;
  m.global_step = 2;
  m.image_size = 32;
  m.classes = {"a", "b"};
  m.convention = io::InputConvention::caffe_bgr;
  fs::create_directories(tmp.dir + "/plain");
  const std::string plain_state = save_checkpoint(tmp.dir + "/plain", *plain, plain_opt, m, 5);
  CHECK_THROWS_WITH(restore_optimizer(plain_state, same_opt), Contains("(momentum 0 saved, 0.9 here)"));
  restore_optimizer(plain_state, same_opt, true);
  CHECK(same_opt.steps() == 1);
  const std::vector<float> zero = momentum_of(same_opt, momentum).to_vector<float>();
  CHECK(std::all_of(zero.begin(), zero.end(), [](float v) { return v == 0.0f; }));
}

// The background writer (io/checkpoint.h CheckpointWriter): a checkpoint is what the model
// and optimizer held when it was taken, whatever they do while its files are written.
TEST_CASE("a checkpoint image holds the values at take_checkpoint, not those trained after it",
          "[checkpoint][background]") {
  TempDir tmp;
  Run run;
  run.step();
  const CheckpointMeta m = Run::meta(1);
  const std::vector<float> w_then = run.model->find("vgg16/fc8/weight").tensor->to_vector<float>();
  const Tensor mom_then = momentum_of(*run.opt, "vgg16/fc8/weight/momentum");
  REQUIRE(mom_then.defined());
  CheckpointImage image = take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5);
  CHECK(std::filesystem::is_empty(tmp.dir));  // nothing written before write_checkpoint
  for (int i = 0; i < 3; ++i) run.step();  // the CPU model's tensors change in place
  REQUIRE(run.model->find("vgg16/fc8/weight").tensor->to_vector<float>() != w_then);

  CheckpointWriter writer;
  const std::string path = writer.submit(std::move(image));
  CHECK(writer.wait() == path);
  CHECK(writer.wait().empty());  // nothing in flight any more
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  CHECK(c.state_path == path);
  CHECK_NOTHROW(verify_checkpoint(c));
  Run back;
  load_checkpoint_weights(*back.model, c);
  CHECK(values_of(*back.model, "vgg16/fc8/weight") == w_then);
  restore_optimizer(c.state_path, *back.opt);
  CHECK(momentum_of(*back.opt, "vgg16/fc8/weight/momentum").to_vector<float>() == mom_then.to_vector<float>());
}

TEST_CASE("the checkpoints of a phase share one copy of its frozen parameters, copied again once they change",
          "[checkpoint][background]") {
  TempDir tmp;
  FrozenRun run;
  run.step();
  CheckpointMeta m = Run::meta(1);
  const CheckpointImage first = take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5);
  REQUIRE(first.frozen);
  CHECK(first.frozen->host().size() == 2);  // fc7's weight and bias
  run.step();  // trains fc8 alone: fc7 is the same memory at the same version
  m = Run::meta(2);
  const CheckpointImage second = take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5, first.frozen);
  CHECK(second.frozen == first.frozen);
  write_checkpoint(first);
  write_checkpoint(second);
  CHECK(latest_checkpoint(tmp.dir)->meta.frozen_digest == first.frozen->digest());

  // A frozen tensor written in place (copy_from counts the write): the next image copies anew,
  // and its checkpoint names another frozen file, holding the new values.
  Tensor& w7 = *run.model->find("vgg16/fc7/weight").tensor;
  w7.copy_from(Tensor::full(w7.shape(), 0.5f));
  m = Run::meta(3);
  const CheckpointImage third = take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5, second.frozen);
  REQUIRE(third.frozen);
  CHECK(third.frozen != second.frozen);
  CHECK(third.frozen->digest() != second.frozen->digest());
  write_checkpoint(third);
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  CHECK_NOTHROW(verify_checkpoint(c));
  FrozenRun back;
  load_checkpoint_weights(*back.model, c);
  CHECK(values_of(*back.model, "vgg16/fc7/weight") == std::vector<float>(64, 0.5f));
  // Memory another library may write (a NumPy or DLPack view handed out) is copied every time.
  run.model->find("vgg16/fc7/bias").tensor->mark_shared_outside();
  m = Run::meta(4);
  const CheckpointImage fourth = take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5, third.frozen);
  CHECK(fourth.frozen != third.frozen);
  CHECK(fourth.frozen->digest() == third.frozen->digest());  // the same values, copied again
  CHECK_FALSE(fourth.frozen->holds({{"vgg16/fc7/weight", run.model->find("vgg16/fc7/weight").tensor},
                                    {"vgg16/fc7/bias", run.model->find("vgg16/fc7/bias").tensor}}));
  // A model with nothing frozen takes no frozen image, whatever it is given.
  run.all_layers();
  m = Run::meta(5);
  m.phase = 2;
  CHECK_FALSE(take_checkpoint(tmp.dir, *run.model, *run.opt, m, 5, third.frozen).frozen);
}

TEST_CASE("a checkpoint of a model on the GPU copies its values into pinned host memory before training goes on",
          "[checkpoint][background][cuda]") {
  KILN_SKIP_WITHOUT_GPU();
  TempDir tmp;
  const Device gpu = Device::cuda(0);
  FrozenRun run;  // fc7 frozen, fc8 trained
  run.model->to(gpu);
  run.opt = std::make_unique<SGD>(*run.model, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 1, 0}, Shape{4}).to(gpu);
  const auto step = [&] {
    run.opt->zero_grad();
    softmax_cross_entropy(run.model->forward(Tensor::normal(Shape{4, 8}, 0, 1, run.gen).to(gpu)), y).backward();
    run.opt->step();
  };
  step();
  const std::vector<float> w8 = values_of(*run.model, "vgg16/fc8/weight");
  const std::vector<float> w7 = values_of(*run.model, "vgg16/fc7/weight");
  const std::vector<float> mom = momentum_of(*run.opt, "vgg16/fc8/weight/momentum").to_vector<float>();
  const CheckpointImage image = take_checkpoint(tmp.dir, *run.model, *run.opt, Run::meta(1), 5);
  step();  // queued right after: the image must not see it
  REQUIRE(values_of(*run.model, "vgg16/fc8/weight") != w8);
  REQUIRE(image.frozen);
  for (const auto& [name, t] : image.weights) CHECK(t.is_pinned());
  for (const auto& [name, t] : image.frozen->host()) CHECK(t.is_pinned());
  write_checkpoint(image);
  const CheckpointInfo c = *latest_checkpoint(tmp.dir);
  CHECK_NOTHROW(verify_checkpoint(c));
  FrozenRun back;  // on the CPU
  load_checkpoint_weights(*back.model, c);
  CHECK(values_of(*back.model, "vgg16/fc8/weight") == w8);
  CHECK(values_of(*back.model, "vgg16/fc7/weight") == w7);
  restore_optimizer(c.state_path, *back.opt);
  CHECK(momentum_of(*back.opt, "vgg16/fc8/weight/momentum").to_vector<float>() == mom);
}

TEST_CASE("a background checkpoint write that fails is reported by the next wait, naming the checkpoint",
          "[checkpoint][background][errors]") {
  TempDir tmp;
  Run run;
  run.step();
  const CheckpointMeta m = Run::meta(2);
  const std::string dir = tmp.dir + "/run";
  fs::create_directories(dir);
  CheckpointImage image = take_checkpoint(dir, *run.model, *run.opt, m, 5);
  fs::remove_all(dir);  // the disk gone from under the writer: its temporary cannot be created
  {
    CheckpointWriter writer;
    writer.submit(std::move(image));
    REQUIRE_THROWS_WITH(writer.wait(), Contains("writing checkpoint '" + dir + "/ckpt-000002.state.h5'") &&
                                           Contains("background writer") && Contains("written before it are kept"));
    CHECK(writer.wait().empty());  // reported once
  }
  // A failure nobody waited for is printed by the destructor, which cannot throw.
  fs::create_directories(dir);
  CheckpointImage again = take_checkpoint(dir, *run.model, *run.opt, m, 5);
  fs::remove_all(dir);
  { CheckpointWriter writer; writer.submit(std::move(again)); }
  CHECK_FALSE(fs::exists(dir));
}

TEST_CASE("HDF5 reads on one thread and a checkpoint written on another do not disturb each other",
          "[checkpoint][background]") {
  // Debian's libhdf5 is not thread-safe by itself: io/hdf5.cpp serialises every call, as
  // HDF5's thread-safe build does. This checks the result (every read right, every checkpoint
  // verifies); it is not a detector for the lock (without it, this passed 3 of 3 runs here):
  // the next case is.
  TempDir tmp;
  Run run;
  run.step();
  const std::string first = run.save(tmp.dir, 1);
  const std::vector<float> w1 = run.model->find("vgg16/fc8/weight").tensor->to_vector<float>();
  // What the writer writes: many tensors, so it calls into HDF5 all the time the reads run.
  Generator gen(31);
  Sequential big("big");
  for (int i = 0; i < 64; ++i) big.add(std::make_shared<Linear>("fc" + std::to_string(i), 64, 64, true, gen));
  SGD big_opt(big, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  const std::string big_dir = tmp.dir + "/big";
  fs::create_directories(big_dir);
  CheckpointWriter writer;
  int reads = 0;
  for (int64_t e = 2; e <= 9; ++e) {
    writer.submit(take_checkpoint(big_dir, big, big_opt, Run::meta(e), 20));
    for (int i = 0; i < 20; ++i, ++reads) {  // meanwhile, on this thread: the first checkpoint, read and verified
      Run back;
      CheckpointInfo c;
      c.state_path = first;
      c.weights_path = tmp.dir + "/ckpt-000001.weights.h5";
      c.meta = read_checkpoint_meta(first);
      load_checkpoint_weights(*back.model, c);
      REQUIRE(values_of(*back.model, "vgg16/fc8/weight") == w1);
    }
  }
  writer.wait();
  CHECK(reads == 160);
  const std::vector<CheckpointInfo> all = list_checkpoints(big_dir);
  REQUIRE(all.size() == 8);
  for (const CheckpointInfo& c : all) CHECK_NOTHROW(verify_checkpoint(c));
}

TEST_CASE("every kind of HDF5 call kiln makes waits while another thread holds io::h5::CallLock",
          "[checkpoint][background]") {
  // The lock's detector: each call below runs on a thread of its own while this one holds the
  // lock, and must not finish until it is released. A wrapper without the lock finishes in
  // well under the 50 ms it is given.
  TempDir tmp;
  const std::string path = tmp.dir + "/a.h5";
  {
    h5::File f = h5::File::create(path);
    h5::Group root = f.root();
    const float v[2] = {1, 2};
    root.write_f32("g/d", {2}, v);
    root.set_int_attribute("n", 3);
    f.close();
  }
  h5::File f = h5::File::open_read(path);
  h5::Group root = f.root();
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"File::open_read", [&] { (void)h5::File::open_read(path); }},
      {"File::create, write_f32, close", [&] {
         h5::File g = h5::File::create(tmp.dir + "/b.h5");
         const float one = 1;
         g.root().write_f32("x", {1}, &one);
         g.close();
       }},
      {"Group::children", [&] { (void)root.children(); }},
      {"Group::int_attribute", [&] { (void)root.int_attribute("n"); }},
      {"Dataset::read_f32", [&] { (void)root.dataset("g/d").read_f32(); }},
      {"closing a file (Handle::reset)", [&] { h5::File::open_read(path); }},
  };
  for (const auto& [what, call] : calls) {
    INFO(what);
    std::atomic<bool> done{false};
    std::string error;
    std::thread t;
    {
      const h5::CallLock held;
      t = std::thread([&, &call = call] {
        try {
          call();
        } catch (const std::exception& e) {
          error = e.what();
        }
        done = true;
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      CHECK_FALSE(done.load());
    }
    t.join();
    CHECK(done.load());
    CHECK(error.empty());
  }
}
