// Hostile HDF5 files (docs/hostile_inputs.md): weights and checkpoint state files a user
// downloads are refused with a readable kiln::Error before kiln reads or allocates what
// they declare. The files are the committed reproducers in fuzz/regressions/ (made by
// fuzz/make_regressions.py, or saved from a fuzz campaign); each is opened both from disk
// and as an in-memory image, as the fuzzers open them.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "core/kiln.h"
#include "fuzz/tiny_vgg.h"
#include "io/hdf5.h"
#include "io/weights.h"
#include "tests/support/reference.h"

using namespace kiln;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path regression(const std::string& target, const std::string& name) {
  return fs::path(KILN_SOURCE_DIR) / "fuzz" / "regressions" / target / name;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The file at `p` opened from disk (image == false) or from its bytes in memory.
io::h5::File open(const fs::path& p, bool image) {
  if (!image) return io::h5::File::open_read(p.string());
  const std::vector<uint8_t> bytes = read_bytes(p);
  return io::h5::File::open_image(bytes.data(), bytes.size(), p.filename().string());
}

io::ImportReport import_file(const fs::path& p, bool image, const io::ImportOptions& opt = {}) {
  Generator gen(3);
  auto model = fuzz::make_tiny_vgg(gen);
  const io::h5::File f = open(p, image);
  return io::import_weights(*model, f, opt);
}

}  // namespace

TEST_CASE("open_image: imports as the file does, owns its copy, images of one name stay apart", "[hostile]") {
  const fs::path dir = test::make_temp_dir("hostile_image");
  Generator gen(5);
  auto a = fuzz::make_tiny_vgg(gen), b = fuzz::make_tiny_vgg(gen);
  io::export_weights(*a, (dir / "a.h5").string());
  io::export_weights(*b, (dir / "b.h5").string());
  std::vector<uint8_t> ba = read_bytes(dir / "a.h5"), bb = read_bytes(dir / "b.h5");
  const io::h5::File fa = io::h5::File::open_image(ba.data(), ba.size(), "same.h5");
  const io::h5::File fb = io::h5::File::open_image(bb.data(), bb.size(), "same.h5");
  ba.assign(ba.size(), 0);  // the file keeps its own copy
  auto m = fuzz::make_tiny_vgg(gen);
  CHECK(io::import_weights(*m, fa).loaded.size() == 10);
  CHECK(m->find("vgg16/fc8/weight").tensor->to_vector<float>() == a->find("vgg16/fc8/weight").tensor->to_vector<float>());
  CHECK(io::import_weights(*m, fb).path == "same.h5");
  CHECK(m->find("vgg16/fc8/weight").tensor->to_vector<float>() == b->find("vgg16/fc8/weight").tensor->to_vector<float>());
  CHECK_THROWS_WITH(io::h5::File::open_image(bb.data(), 0, "empty.h5"), Contains("'empty.h5' is empty"));
  const std::vector<uint8_t> junk(4096, 'x');
  CHECK_THROWS_WITH(io::h5::File::open_image(junk.data(), junk.size(), "junk.h5"), Contains("opening HDF5 file image 'junk.h5'"));
  fs::remove_all(dir);
}

TEST_CASE("hostile weights files are refused before any value is read", "[hostile]") {
  // Compared with the count at the start: HDF5 keeps a file it could not flush open (a write
  // cut short by a full disk, tests/io/test_weights.cpp), so earlier cases may leave some.
  const int64_t open_before = io::h5::open_object_count();
  struct Case {
    const char* file;
    const char* expect;
  };
  const Case cases[] = {
      {"external_storage.h5", "external file(s) on disk"},
      {"virtual_dataset.h5", "virtual (VDS) storage"},
      {"scaleoffset_filter.h5", "compressed with filter 6 ('scaleoffset')"},
      {"external_link.h5", "is an external link to another file"},
      {"long_double.h5", "128-bit float of another layout"},
      // Numbers past int in Keras 3 names: std::stoi threw std::out_of_range, not a kiln::Error.
      {"keras3_huge_layer_number.h5", "has no parameter 'vgg16/conv2d_99999999999/weight'"},
      {"keras3_huge_var_number.h5", "model parameters missing from the file"},
  };
  for (const Case& c : cases)
    for (const bool image : {false, true}) {
      INFO(c.file << (image ? " (image)" : " (file)"));
      CHECK_THROWS_WITH(import_file(regression("weights", c.file), image), Contains(c.expect));
      CHECK(io::h5::open_object_count() == open_before);
    }
}

TEST_CASE("link cycles in a weights file: each group is walked once", "[hostile]") {
  // A group hard- or soft-linked into its own subtree recursed until the stack ran out.
  for (const char* file : {"hard_link_cycle.h5", "soft_link_cycle.h5"})
    for (const bool image : {false, true}) {
      INFO(file);
      CHECK(import_file(regression("weights", file), image).loaded.size() == 10);
    }
}

TEST_CASE("declared sizes are checked against the memory limit and the file size before reading", "[hostile]") {
  for (const bool image : {false, true}) {
    // 2^40 x 4 and 2^62 x 4 floats, never written: unmapped by the import (their names are
    // not the model's), refused by a direct read before allocating.
    const io::h5::File big = open(regression("weights", "huge_declared.h5"), image);
    Generator gen(1);
    CHECK(io::import_weights(*fuzz::make_tiny_vgg(gen), big).unmapped == std::vector<std::string>{"big", "overflow"});
    CHECK_THROWS_WITH(big.root().dataset("big").read_f32(),
                      Contains("declares 4398046511104 elements of 4 bytes (17592186044416 bytes), over kiln's limit"));
    CHECK_THROWS_WITH(big.root().dataset("overflow"), Contains("(4611686018427387904, 4) whose element count overflows"));
    // Contiguous values cut off by the end of the file.
    const io::h5::File cut = open(regression("weights", "contiguous_past_eof.h5"), image);
    CHECK_THROWS_WITH(cut.root().dataset("tail").read_f32(),
                      Contains("should hold 65536 bytes") && Contains("truncated download?"));
  }
}

TEST_CASE("hostile checkpoint state files are refused", "[hostile]") {
  Generator gen(3);
  auto model = fuzz::make_tiny_vgg(gen);
  SGD opt(*model, SgdOptions{.lr = 0.01f, .momentum = 0.9f});
  for (const bool image : {false, true}) {
    auto meta = [&](const char* f) { return io::read_checkpoint_meta(open(regression("checkpoint", f), image).root()); };
    // std::stod threw std::invalid_argument, which list_checkpoints does not catch.
    CHECK_THROWS_WITH(meta("val_loss_not_a_number.h5"), Contains("'val_loss' should be a number, found 'lots'"));
    CHECK_THROWS_WITH(meta("image_size_huge.h5"), Contains("image_size is 1099511627776, expected 1..16384"));
    CHECK_THROWS_WITH(meta("weights_file_escapes.h5"), Contains("must be a file name inside the model directory"));
    const io::h5::File f = open(regression("checkpoint", "momentum_transposed.h5"), image);
    CHECK(io::read_checkpoint_meta(f.root()).image_size == 64);
    // Same count of values, other shape: was accepted (only the count was compared, after reading).
    CHECK_THROWS_WITH(io::restore_optimizer(f.root(), opt),
                      Contains("'vgg16/fc6/weight/momentum' has shape (16, 8), expected (8, 16)"));
  }
}

TEST_CASE("every committed fuzz reproducer replays without a crash", "[hostile]") {
  // Compared with the count at the start: HDF5 keeps a file it could not flush open (a write
  // cut short by a full disk, tests/io/test_weights.cpp), so earlier cases may leave some.
  const int64_t open_before = io::h5::open_object_count();
  // What the fuzz targets do with one input; only a kiln::Error may come out.
  Generator gen(3);
  auto model = fuzz::make_tiny_vgg(gen);
  SGD opt(*model, SgdOptions{.lr = 0.01f, .momentum = 0.9f});
  size_t replayed = 0;
  for (const char* target : {"weights", "checkpoint"}) {
    for (const auto& e : fs::directory_iterator(fs::path(KILN_SOURCE_DIR) / "fuzz" / "regressions" / target)) {
      INFO(e.path().string());
      const std::vector<uint8_t> bytes = read_bytes(e.path());
      try {
        const io::h5::File f = io::h5::File::open_image(bytes.data(), bytes.size(), e.path().filename().string());
        if (std::string(target) == "weights") {
          (void)io::import_weights(*model, f);
        } else {
          try {
            (void)io::read_checkpoint_meta(f.root());
          } catch (const Error&) {
          }
          io::restore_optimizer(f.root(), opt);
        }
      } catch (const Error&) {
      }
      CHECK(io::h5::open_object_count() == open_before);
      ++replayed;
    }
  }
  CHECK(replayed >= 15);
}
