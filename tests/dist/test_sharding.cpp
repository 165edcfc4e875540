// Data-parallel sharding (io/loader.h shard_of, LoaderOptions::shard_rank/shard_count):
// the ranks' slices tile every global batch, so each epoch serves every sample exactly once
// with no overlap, and a sample's pixels (crop and flip) do not depend on the rank count;
// dropout masks keyed by the global row; libkiln alone (no kiln_dist) refuses N processes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "core/generator.h"
#include "core/ops.h"
#include "io/image.h"
#include "io/loader.h"
#include "train/communicator.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;

TEST_CASE("shard_of tiles a batch into near-equal contiguous slices", "[dist]") {
  for (int64_t n = 0; n <= 9; ++n)
    for (int count = 1; count <= 4; ++count) {
      int64_t at = 100;
      for (int r = 0; r < count; ++r) {
        const ShardRange s = shard_of(100, 100 + n, r, count);
        CHECK(s.begin == at);
        CHECK(s.end >= s.begin);
        const int64_t size = s.end - s.begin;
        CHECK((size == n / count || size == n / count + 1));
        at = s.end;
      }
      CHECK(at == 100 + n);
    }
}

namespace {

// 2 classes x 7 PNGs (14 samples): with batch 4 the last global batch holds 2.
std::string make_dataset() {
  const fs::path root = test::make_temp_dir("sharding");
  for (const char* c : {"a", "b"}) {
    fs::create_directories(root / c);
    for (int i = 0; i < 7; ++i) {
      Image img;
      img.width = 20 + i, img.height = 18 + 2 * i;
      img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
      for (size_t k = 0; k < img.pixels.size(); ++k)
        img.pixels[k] = static_cast<uint8_t>((k * 2654435761u + static_cast<uint32_t>(i * 31 + c[0])) >> 9);
      write_png((root / c / ("img" + std::to_string(i) + ".png")).string(), img);
    }
  }
  return root.string();
}

struct Served {
  std::vector<std::vector<int64_t>> indices;  // per global batch, in rank order
  std::vector<std::vector<float>> pixels;
};

// Two epochs of `count` sharded loaders, each global batch's rows joined in rank order.
Served serve(const Dataset& ds, int count) {
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 2;
  o.resize_shorter = 20;
  o.crop = 16;
  o.seed = 11;
  o.shard_count = count;
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < count; ++r) {
    o.shard_rank = r;
    ranks.push_back(std::make_unique<Loader>(ds, o));
  }
  Served out;
  for (int e = 0; e < 2; ++e)
    for (;;) {
      std::vector<int64_t> idx;
      std::vector<float> px;
      bool any = false;
      for (auto& l : ranks) {
        std::optional<Batch> b = l->next();
        if (!b) continue;
        any = true;
        idx.insert(idx.end(), b->indices.begin(), b->indices.end());
        const std::vector<float> v = b->images.to_vector<float>();
        px.insert(px.end(), v.begin(), v.end());
      }
      if (!any) break;
      out.indices.push_back(idx);
      out.pixels.push_back(px);
    }
  return out;
}

}  // namespace

TEST_CASE("sharded loaders serve each sample once per epoch, as one loader would", "[dist]") {
  const std::string root = make_dataset();
  const Dataset ds = image_folder(root);
  REQUIRE(ds.size() == 14);
  const Served one = serve(ds, 1);
  REQUIRE(one.indices.size() == 8);  // 4 batches per epoch, 2 epochs
  for (int count : {2, 3}) {
    INFO("ranks: " << count);
    const Served many = serve(ds, count);
    REQUIRE(many.indices.size() == one.indices.size());
    for (size_t b = 0; b < one.indices.size(); ++b) {
      CHECK(many.indices[b] == one.indices[b]);
      CHECK(many.pixels[b] == one.pixels[b]);
    }
    for (int e = 0; e < 2; ++e) {
      std::vector<int64_t> seen;
      for (size_t b = 4 * static_cast<size_t>(e); b < 4 * static_cast<size_t>(e + 1); ++b)
        seen.insert(seen.end(), many.indices[b].begin(), many.indices[b].end());
      std::sort(seen.begin(), seen.end());
      std::vector<int64_t> all(14);
      std::iota(all.begin(), all.end(), 0);
      CHECK(seen == all);
    }
  }
  CHECK(one.indices[0] != one.indices[4]);  // shuffled: the epochs differ
  fs::remove_all(root);
}

TEST_CASE("dropout masks keyed by the global row do not depend on how a batch is split", "[dist]") {
  // One process: a batch of 6 rows of 8 values after some earlier use of the stream.
  const Tensor x = Tensor::ones(Shape{6, 8});
  Generator one(5);
  one.reserve(12);
  const std::vector<float> whole = dropout(x, 0.5f, true, one).to_vector<float>();
  for (const std::vector<int64_t>& cuts : std::vector<std::vector<int64_t>>{{0, 2, 6}, {0, 3, 4, 6}, {0, 0, 6}}) {
    std::vector<float> joined;
    PhiloxState after{};
    for (size_t r = 0; r + 1 < cuts.size(); ++r) {
      Generator g(5);
      g.reserve(12);
      const int64_t rows = cuts[r + 1] - cuts[r];
      if (rows > 0) {
        g.set_row_window(cuts[r], rows, 6);
        const std::vector<float> part = dropout(x.slice(cuts[r], cuts[r + 1]), 0.5f, true, g).to_vector<float>();
        g.set_row_window(0, 0, 0);
        joined.insert(joined.end(), part.begin(), part.end());
        after = g.state();
        CHECK(after.offset == one.state().offset);  // every rank's stream advanced as the whole batch's
      }
    }
    CHECK(joined == whole);
  }
  Generator odd(5);
  odd.set_row_window(1, 1, 2);
  CHECK_THROWS_WITH(dropout(Tensor::ones(Shape{1, 3}), 0.5f, true, odd),
                    Catch::Contains("multiple of 4 values") && Catch::Contains("rows have 3"));
}

TEST_CASE("without kiln_dist a multi-process launch is one line, one process works alone", "[dist]") {
  // kiln_tests links libkiln alone: no backend is registered here.
  const LaunchEnv env = launch_env_from([](const char* n) -> const char* {
    const std::string k = n;
    return k == "RANK" ? "1" : k == "WORLD_SIZE" ? "2" : k == "MASTER_ADDR" ? "127.0.0.1" : k == "MASTER_PORT" ? "29999" : nullptr;
  });
  CHECK(env.distributed());
  CHECK(env.launcher == "torchrun");
  CHECK_THROWS_WITH(make_communicator(env), Catch::Contains("rank 1 of 2") &&
                                                Catch::Contains("no multi-process backend is registered") &&
                                                Catch::Contains("kiln::dist::register_backends()"));
  std::unique_ptr<Communicator> one = make_communicator(launch_env_from([](const char*) -> const char* { return nullptr; }));
  CHECK(one->size() == 1);
  Tensor t = Tensor::full(Shape{3}, 2.0);
  one->allreduce_sum(t);
  one->allreduce_sum_async(t)->wait();
  one->barrier();
  CHECK(t.to_vector<float>() == std::vector<float>{2, 2, 2});
}
