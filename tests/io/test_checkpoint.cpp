// Checkpoints prove they are intact (io/checkpoint.h): state
// files carry a format version and a CRC32C per optimizer tensor, restore_optimizer verifies
// them, and the resume picks the newest checkpoint whose two files verify. A one-layer model
// keeps this fast; the app's end-to-end test covers the real VGG16 files.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "core/kiln.h"
#include "io/checkpoint.h"
#include "io/hdf5.h"
#include "layers/layers.h"
#include "tests/support/reference.h"

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
struct Run {
  Generator gen{5};
  std::shared_ptr<Sequential> model = std::make_shared<Sequential>("vgg16");
  std::unique_ptr<SGD> opt;
  Run() {
    model->add(std::make_shared<Linear>("fc8", 8, 2, true, gen));
    opt = std::make_unique<SGD>(*model, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  }
  void step() {
    const Tensor x = Tensor::normal(Shape{4, 8}, 0, 1, gen);
    const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 1, 0}, Shape{4});
    opt->zero_grad();
    softmax_cross_entropy(model->forward(x), y).backward();
    opt->step();
  }
  std::string save(const std::string& dir, int64_t epochs) {
    CheckpointMeta m;
    m.epochs_done = epochs;
    m.global_step = epochs;
    m.image_size = 32;
    m.classes = {"a", "b"};
    m.convention = "caffe_bgr";
    return save_checkpoint(dir, *model, *opt, m, 5);
  }
};

// Overwrites the first float of `t`'s values where they lie in `path` (found by their first
// 16 bytes, which occur once there).
void overwrite_first_float(const std::string& path, const Tensor& t, float value) {
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::vector<float> v = t.to_vector<float>();
  REQUIRE(v.size() >= 4);
  const std::string head(reinterpret_cast<const char*>(v.data()), 16);
  const size_t at = bytes.find(head);
  REQUIRE(at != std::string::npos);
  REQUIRE(bytes.find(head, at + 1) == std::string::npos);
  std::memcpy(&bytes[at], &value, sizeof value);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

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
    const h5::File f = h5::File::open_read(state2);
    CHECK(f.root().int_attribute("state_format_version") == 2);
    CHECK(f.root().dataset("optimizer/" + momentum).has_attribute(kChecksumAttribute));
  }
  Run fresh;
  restore_optimizer(state2, *fresh.opt);
  CHECK(momentum_of(*fresh.opt, momentum).to_vector<float>() == momentum_of(*run.opt, momentum).to_vector<float>());
  ResumeChoice intact = newest_intact_checkpoint(tmp.dir);
  REQUIRE(intact.checkpoint);
  CHECK(intact.checkpoint->state_path == state2);
  CHECK(intact.damaged.empty());

  overwrite_first_float(state2, momentum_of(*run.opt, momentum), 3e38f);
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
  overwrite_first_float(choice.checkpoint->weights_path, weight1, 3e38f);
  CHECK_THROWS_WITH(newest_intact_checkpoint(tmp.dir),
                    Contains("holds 1 checkpoint(s) and none is intact") &&
                        Contains("file '" + choice.checkpoint->weights_path + "' is corrupt: tensor 'vgg16/fc8/weight'"));
}
