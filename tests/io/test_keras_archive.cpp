// Keras 3 .keras archives (io/keras_archive.h): a zip around model.weights.h5 imports
// exactly as the bare .weights.h5 does, and hostile archives are refused with the file
// named. The weights are the committed Keras 3 seed fuzz/corpus/weights/keras3.weights.h5
// (fuzz/tiny_vgg.h's shapes); archives are zipped here with libzip, or are the committed
// seeds and reproducers of fuzz/make_keras_archives.py.
#include <catch2/catch.hpp>

#include <zip.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "core/kiln.h"
#include "fuzz/tiny_vgg.h"
#include "io/hdf5.h"
#include "io/keras_archive.h"
#include "io/weights.h"
#include "tests/support/reference.h"
#include "train/api.h"
#include "train/model_spec.h"

using namespace kiln;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;
using Members = std::vector<std::pair<std::string, Bytes>>;

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

Bytes text(const std::string& s) { return Bytes(s.begin(), s.end()); }

// A temp dir removed at scope exit.
struct TempDir {
  std::string dir = test::make_temp_dir("keras_archive");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& name) const { return dir + "/" + name; }
};

// Zips `members` into `path` with libzip; a `password` encrypts model.weights.h5 (AES-256).
void write_zip(const std::string& path, const Members& members, zip_int32_t method, const char* password = nullptr) {
  int code = 0;
  zip_t* za = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  REQUIRE(za != nullptr);
  for (const auto& [name, data] : members) {
    zip_source_t* src = zip_source_buffer(za, data.data(), data.size(), 0);
    REQUIRE(src != nullptr);
    const zip_int64_t i = zip_file_add(za, name.c_str(), src, ZIP_FL_ENC_UTF_8);
    REQUIRE(i >= 0);
    REQUIRE(zip_set_file_compression(za, static_cast<zip_uint64_t>(i), method, 0) == 0);
    if (password && name == io::kKerasWeightsMember)
      REQUIRE(zip_file_set_encryption(za, static_cast<zip_uint64_t>(i), ZIP_EM_AES_256, password) == 0);
  }
  INFO((zip_strerror(za) ? zip_strerror(za) : ""));
  REQUIRE(zip_close(za) == 0);
}

// What Keras 3's model.save writes: metadata.json, config.json, model.weights.h5.
Members keras_members(const Bytes& weights) {
  return {{"metadata.json", text(R"({"keras_version": "3.3.3"})")},
          {"config.json", text(R"({"class_name": "Sequential"})")},
          {io::kKerasWeightsMember, weights}};
}

std::string keras3_weights_path() { return test::source_path("fuzz/corpus/weights/keras3.weights.h5"); }

std::shared_ptr<Sequential> tiny(uint64_t seed) {
  Generator gen(seed);
  return fuzz::make_tiny_vgg(gen);
}

// The model's parameters, name -> values.
std::vector<std::pair<std::string, std::vector<float>>> values_of(Module& m) {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const ParameterRef& p : m.parameters()) out.emplace_back(p.name, p.tensor->to_vector<float>());
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE(".keras archives import exactly as their model.weights.h5 does", "[keras_archive][io]") {
  // Compared with the count at the start: HDF5 keeps a file it could not flush open (a write
  // cut short by a full disk, tests/io/test_weights.cpp), so earlier cases may leave some.
  const int64_t open_before = io::h5::open_object_count();
  TempDir tmp;
  const Bytes weights = read_bytes(keras3_weights_path());
  auto bare = tiny(1);
  const io::ImportReport want = io::import_weights(*bare, keras3_weights_path());
  REQUIRE(want.loaded.size() == 10);
  auto fresh = tiny(2);
  REQUIRE(values_of(*fresh) != values_of(*bare));  // the comparison below can fail

  for (const zip_int32_t method : {ZIP_CM_STORE, ZIP_CM_DEFLATE}) {
    // Told apart by signature, not by name: a renamed archive loads too.
    for (const char* name : {"vgg.keras", "renamed.bin"}) {
      INFO(name << (method == ZIP_CM_STORE ? " (stored)" : " (deflate)"));
      const std::string path = tmp / name;
      write_zip(path, keras_members(weights), method);
      REQUIRE(io::is_zip_file(path));
      auto model = tiny(2);
      const io::ImportReport rep = io::import_weights(*model, path);
      CHECK(rep.path == path);
      CHECK(rep.format == io::WeightsFormat::keras3);
      CHECK(rep.loaded == want.loaded);
      CHECK(rep.convention == want.convention);
      CHECK_THAT(rep.to_string(), Contains("weights '" + path + "' (keras 3"));
      CHECK(values_of(*model) == values_of(*bare));  // bit-exact: the same bytes reach HDF5
      CHECK_THAT(io::verify_weights(path), Contains("Keras 3 files carry no checksums"));
      // The inference API reads the head's size from the file before building the model.
      CHECK(weights_num_classes(find_model_spec("vgg16"), path) == fuzz::kTinyClasses);
      CHECK(io::h5::open_object_count() == open_before);
    }
  }
  CHECK_FALSE(io::is_zip_file(keras3_weights_path()));
  CHECK_FALSE(io::is_zip_file(tmp / "missing.keras"));
}

TEST_CASE("hostile .keras archives are refused, naming the file", "[keras_archive][hostile]") {
  // Compared with the count at the start: HDF5 keeps a file it could not flush open (a write
  // cut short by a full disk, tests/io/test_weights.cpp), so earlier cases may leave some.
  const int64_t open_before = io::h5::open_object_count();
  TempDir tmp;
  const Bytes weights = read_bytes(keras3_weights_path());
  struct Case {
    const char* file;
    const char* expect;
  };
  // The reproducers of fuzz/make_keras_archives.py.
  const Case cases[] = {
      {"no_weights_member.zip",
       "is a zip archive without model.weights.h5: not a Keras 3 .keras file (it holds 2 member(s): 'config.json', "
       "'metadata.json')"},
      {"duplicate_member.keras", "is a zip archive holding two members of the same name"},
      {"truncated.keras", "starts like a zip archive (a Keras 3 .keras file) but libzip cannot read it"},
      {"bzip2_member.keras", "model.weights.h5 is compressed with zip method 12"},
      {"declared_size_lies.keras", "holds 6930 bytes, its zip entry declares 4026531840"},
      {"stored_sizes_disagree.keras", "is stored uncompressed but declares 6930 bytes in the archive and 6830"},
      {"crc_mismatch.keras", "CRC error"},
      {"member_not_hdf5.keras", "whose model.weights.h5 is not an HDF5 file (no HDF5 signature found)"},
  };
  for (const Case& c : cases) {
    INFO(c.file);
    const std::string path = test::source_path(std::string("fuzz/regressions/keras_archive/") + c.file);
    auto model = tiny(4);
    const auto before = values_of(*model);
    const std::string from_path = error_of([&] { io::import_weights(*model, path); });
    CHECK_THAT(from_path, Contains("'" + path + "'") && Contains(c.expect));
    CHECK(values_of(*model) == before);
    // From bytes in memory, as the fuzz target reads them: the same refusal.
    const Bytes b = read_bytes(path);
    CHECK_THAT(error_of([&] { io::open_keras_weights(b.data(), b.size(), c.file); }),
               Contains(std::string("'") + c.file + "'") && Contains(c.expect));
    CHECK(io::h5::open_object_count() == open_before);
  }

  SECTION("an encrypted member") {
    const std::string path = tmp / "encrypted.keras";
    write_zip(path, keras_members(weights), ZIP_CM_STORE, "secret");
    CHECK_THAT(error_of([&] { io::import_weights(*tiny(4), path); }),
               Contains("'" + path + "': model.weights.h5 is encrypted") && Contains("reads only unencrypted ones"));
  }
  SECTION("a member over the size limit") {
    const std::string path = tmp / "big.keras";
    write_zip(path, keras_members(weights), ZIP_CM_DEFLATE);
    CHECK(io::read_keras_weights(path, weights.size()) == weights);
    CHECK_THAT(error_of([&] { io::read_keras_weights(path, weights.size() - 1); }),
               Contains("'" + path + "': model.weights.h5 declares 6930 bytes uncompressed, over kiln's limit of 6929"));
  }
  SECTION("a zip signature over bytes that are no archive, and files that are no zip") {
    const std::string junk = tmp / "junk.keras";
    std::ofstream(junk, std::ios::binary) << "PK\x03\x04" << std::string(4096, 'x');
    CHECK_THAT(error_of([&] { io::import_weights(*tiny(4), junk); }),
               Contains("'" + junk + "' starts like a zip archive") && Contains("truncated download or corrupt file?"));
    const std::string txt = tmp / "notes.keras";
    std::ofstream(txt) << "not an archive\n";
    CHECK_THAT(error_of([&] { io::import_weights(*tiny(4), txt); }), Contains("'" + txt + "' is not an HDF5 file"));
    CHECK_THAT(error_of([&] { io::import_weights(*tiny(4), tmp / "absent.keras"); }), Contains("does not exist"));
    const Bytes empty;
    CHECK_THAT(error_of([&] { io::open_keras_weights(empty.data(), 0, "empty.keras"); }),
               Contains("'empty.keras' is empty"));
  }
  CHECK(io::h5::open_object_count() == open_before);
}

TEST_CASE("the keras_archive fuzz seeds import and every reproducer replays without a crash",
          "[keras_archive][hostile]") {
  // Compared with the count at the start: HDF5 keeps a file it could not flush open (a write
  // cut short by a full disk, tests/io/test_weights.cpp), so earlier cases may leave some.
  const int64_t open_before = io::h5::open_object_count();
  // What fuzz_keras_archive does with one input; only a kiln::Error may come out.
  size_t seeds = 0, replayed = 0;
  for (const char* dir : {"fuzz/corpus/keras_archive", "fuzz/regressions/keras_archive"}) {
    const bool seed = std::string(dir).find("corpus") != std::string::npos;
    for (const auto& e : fs::directory_iterator(test::source_path(dir))) {
      INFO(e.path().string());
      const Bytes b = read_bytes(e.path().string());
      auto model = tiny(5);
      if (seed) {
        const io::h5::File f = io::open_keras_weights(b.data(), b.size(), e.path().filename().string());
        CHECK(io::import_weights(*model, f).loaded.size() == 10);
        ++seeds;
      } else {
        CHECK_THROWS_AS(io::import_weights(*model, io::open_keras_weights(b.data(), b.size(), "r.keras")), Error);
        ++replayed;
      }
      CHECK(io::h5::open_object_count() == open_before);
    }
  }
  CHECK(seeds >= 2);
  CHECK(replayed >= 8);
}
