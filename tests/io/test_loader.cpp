// The batch loader: shapes and epochs, reproducibility (seed, workers, resume), the
// decode-once cache and its device atlas, broken files, errors from workers, and shutdown
// without leftovers.
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "core/ops.h"
#include "io/loader.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;

namespace {

constexpr int kResize = 36, kCrop = 32;

Image pattern(int w, int h, uint32_t salt) {
  Image img;
  img.width = w, img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<uint8_t>((i * 2654435761u + salt * 97u) >> 7);
  return img;
}

// 3 classes x 5 PNGs of assorted sizes, some smaller than the crop.
std::string make_folder(const std::string& tag) {
  const fs::path root = test::make_temp_dir(tag);
  const int sizes[5][2] = {{48, 40}, {40, 56}, {30, 20}, {64, 36}, {36, 36}};
  uint32_t salt = 0;
  for (const char* c : {"a", "b", "c"}) {
    fs::create_directories(root / c);
    for (int i = 0; i < 5; ++i)
      write_png((root / c / ("img" + std::to_string(i) + ".png")).string(),
                pattern(sizes[i][0], sizes[i][1], ++salt));
  }
  return root.string();
}

LoaderOptions small_options() {
  LoaderOptions o;
  o.batch_size = 4;
  o.num_workers = 2;
  o.resize_shorter = kResize;
  o.crop = kCrop;
  o.seed = 7;
  return o;
}

struct Epochs {
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int64_t>> labels, indices;
};

Epochs run(const Dataset& ds, LoaderOptions o, int epochs) {
  Loader loader(ds, o);
  Epochs out;
  for (int e = 0; e < epochs; ++e)
    while (auto b = loader.next()) {
      out.images.push_back(b->images.to_vector<float>());
      out.labels.push_back(b->labels.to_vector<int64_t>());
      out.indices.push_back(b->indices);
    }
  return out;
}

size_t thread_count() {
  return static_cast<size_t>(std::distance(fs::directory_iterator("/proc/self/task"), fs::directory_iterator{}));
}

// The thread count once joined threads are gone from /proc: pthread_join returns when the
// kernel clears the thread's id, a moment before the task leaves /proc/self/task (seen: a
// count one too high, about 1 run in 30). Polls until the count is `expected` or 2 s pass,
// then returns the count, which the caller still compares with `expected`.
size_t thread_count_after_join(size_t expected) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  size_t n = thread_count();
  while (n != expected && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    n = thread_count();
  }
  return n;
}

// The thread count once it holds still for 50 ms (up to 2 s): a baseline taken while a thread
// of an earlier loader or test was still exiting counted it, and the count after this loader
// then came out one lower (2 == 3 under ThreadSanitizer's timing).
size_t steady_thread_count() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  size_t n = thread_count();
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const size_t again = thread_count();
    if (again == n) break;
    n = again;
  }
  return n;
}

std::vector<float> expected_row(const Dataset& ds, int64_t sample, const LoaderOptions& o, uint64_t epoch) {
  Image img = resize_shorter_side(decode_image(ds.samples[sample].path), std::max(o.resize_shorter, o.crop));
  const Crop c = o.augment ? random_crop(img.width, img.height, o.crop, o.seed, epoch, sample, true)
                           : center_crop(img.width, img.height, o.crop);
  std::vector<float> row(static_cast<size_t>(o.crop) * o.crop * 3);
  crop_to_input(img, c, o.convention, row.data());
  return row;
}

}  // namespace

TEST_CASE("loader: batch shapes, labels, epoch boundaries, keep-last and drop-last", "[loader]") {
  const std::string root = make_folder("loader_basic");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  o.shuffle = false;
  o.augment = false;
  o.convention = InputConvention::caffe_bgr;
  {
    Loader loader(ds, o);
    CHECK(loader.batches_per_epoch() == 4);
    for (uint64_t epoch = 0; epoch < 2; ++epoch) {
      CHECK(loader.epoch() == epoch);
      int64_t seen = 0;
      for (int64_t k = 0; k < 4; ++k) {
        auto b = loader.next();
        REQUIRE(b.has_value());
        const int64_t n = k < 3 ? 4 : 3;
        CHECK(b->images.shape() == Shape{n, kCrop, kCrop, 3});
        CHECK(b->images.dtype() == DType::f32);
        CHECK(b->labels.shape() == Shape{n});
        CHECK(b->labels.dtype() == DType::i64);
        CHECK((b->epoch == epoch && b->index == k));
        const auto labels = b->labels.to_vector<int64_t>();
        const auto images = b->images.to_vector<float>();
        for (int64_t r = 0; r < n; ++r) {
          const int64_t sample = seen + r;
          REQUIRE(b->indices[r] == sample);
          REQUIRE(labels[r] == sample / 5);
          const auto row = expected_row(ds, sample, o, epoch);
          REQUIRE(std::equal(row.begin(), row.end(), images.begin() + r * kCrop * kCrop * 3));
        }
        seen += n;
      }
      CHECK_FALSE(loader.next().has_value());  // the epoch boundary
    }
    CHECK(loader.epoch() == 2);
  }
  o.drop_last = true;
  Loader dropping(ds, o);
  CHECK(dropping.batches_per_epoch() == 3);
  int batches = 0;
  while (auto b = dropping.next()) {
    CHECK(b->images.dim(0) == 4);
    ++batches;
  }
  CHECK(batches == 3);
  fs::remove_all(root);
}

TEST_CASE("loader: reproducible from the seed, whatever the workers, and when resumed", "[loader]") {
  const std::string root = make_folder("loader_seed");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  const Epochs a = run(ds, o, 2);
  REQUIRE(a.images.size() == 8);
  const Epochs again = run(ds, o, 2);
  CHECK(again.images == a.images);
  CHECK(again.labels == a.labels);

  o.num_workers = 1;
  CHECK(run(ds, o, 2).images == a.images);
  o.num_workers = 3;
  o.prefetch_batches = 5;
  CHECK(run(ds, o, 2).images == a.images);

  // Epoch 1 of a run resumed at epoch 1 is epoch 1 of the full run.
  LoaderOptions resumed = small_options();
  resumed.start_epoch = 1;
  const Epochs r = run(ds, resumed, 1);
  CHECK(r.images == std::vector<std::vector<float>>(a.images.begin() + 4, a.images.end()));
  CHECK(r.indices == std::vector<std::vector<int64_t>>(a.indices.begin() + 4, a.indices.end()));

  // Resumed mid-epoch (batch 2 of epoch 1): the rest of that epoch, then the next, as the
  // full run served them, without decoding the batches skipped. One worker a batch ahead
  // decodes the 7 samples of batches 2-3, and at most the next epoch's first 4.
  const Epochs full3 = run(ds, small_options(), 3);
  REQUIRE(full3.images.size() == 12);
  resumed.start_batch = 2;
  resumed.num_workers = 1;
  resumed.prefetch_batches = 1;
  {
    Loader mid(ds, resumed);
    Epochs m;
    for (int e = 0; e < 2; ++e) {
      while (auto batch = mid.next()) {
        m.images.push_back(batch->images.to_vector<float>());
        m.indices.push_back(batch->indices);
      }
      const int64_t decoded = mid.stats().cache.misses;
      if (e == 0) CHECK((decoded >= 7 && decoded <= 11));  // all 15 when it read batches 0-1
    }
    CHECK(m.images == std::vector<std::vector<float>>(full3.images.begin() + 6, full3.images.end()));
    CHECK(m.indices == std::vector<std::vector<int64_t>>(full3.indices.begin() + 6, full3.indices.end()));
  }
  // Started at its end (a stop asked for after an epoch's last batch): nothing of epoch 1,
  // then epoch 2 as the full run served it.
  resumed.start_batch = 4;  // an epoch of 15 samples has batches 0-3
  {
    Loader end(ds, resumed);
    CHECK_FALSE(end.next().has_value());
    for (size_t k = 8; k < 12; ++k) {
      auto batch = end.next();
      REQUIRE(batch.has_value());
      CHECK(batch->indices == full3.indices[k]);
    }
  }
  resumed.start_batch = 5;
  CHECK_THROWS_WITH(Loader(ds, resumed), Catch::Contains("start_batch 5 is outside 0..4, the batches of an epoch"));

  // The two epochs are shuffled differently, and a different seed changes everything.
  CHECK(std::vector<std::vector<int64_t>>(a.indices.begin(), a.indices.begin() + 4) !=
        std::vector<std::vector<int64_t>>(a.indices.begin() + 4, a.indices.end()));
  LoaderOptions other = small_options();
  other.seed = 8;
  const Epochs b = run(ds, other, 2);
  CHECK(b.indices != a.indices);
  CHECK(b.images != a.images);

  // Each row is the crop and flip drawn at (seed, epoch, sample index).
  Loader loader(ds, small_options());
  loader.next();
  loader.next();
  auto batch = loader.next();
  REQUIRE(batch.has_value());
  const auto images = batch->images.to_vector<float>();
  for (size_t r = 0; r < batch->indices.size(); ++r) {
    const auto row = expected_row(ds, batch->indices[r], small_options(), 0);
    REQUIRE(std::equal(row.begin(), row.end(), images.begin() + r * kCrop * kCrop * 3));
  }
  fs::remove_all(root);
}

TEST_CASE("loader: decode once, then serve from memory within the budget", "[loader]") {
  const std::string root = make_folder("loader_cache");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  // One worker: no two decodes of one image race. Workers run ahead into the next epoch
  // (prefetch), so its first batch may already be counted when an epoch ends.
  o.num_workers = 1;
  o.prefetch_batches = 1;
  {
    Loader loader(ds, o);
    while (loader.next()) {
    }
    CacheStats s = loader.stats().cache;
    CHECK((s.misses == 15 && s.entries == 15 && s.hits <= 4));
    CHECK(s.bytes >= 15 * kResize * kResize * 3);
    while (loader.next()) {
    }
    s = loader.stats().cache;
    CHECK((s.misses == 15 && s.hits >= 15 && s.hits <= 19 && s.entries == 15));
  }
  o.cache_bytes = kResize * kResize * 3 * 2;  // room for about two images
  {
    Loader loader(ds, o);
    for (int e = 0; e < 2; ++e)
      while (loader.next()) {
      }
    const CacheStats s = loader.stats().cache;
    CHECK((s.entries >= 1 && s.entries <= 2 && s.bytes <= o.cache_bytes));
    CHECK(s.hits >= s.entries);               // each kept image served again in epoch 1
    CHECK(s.misses >= 2 * (15 - s.entries));  // the others decoded every epoch
  }
  // Results do not depend on whether an image came from the cache.
  o.cache_bytes = 0;
  LoaderOptions cached = small_options();
  CHECK(run(ds, o, 2).images == run(ds, cached, 2).images);
  fs::remove_all(root);
}

TEST_CASE("loader: broken files are skipped and reported once, strict mode raises in next()", "[loader]") {
  const std::string root = make_folder("loader_broken");
  const fs::path bad = fs::path(root) / "b";
  std::ofstream(bad / "zero.jpg");  // 0 bytes
  std::ofstream(bad / "text.jpg") << "not an image";
  fs::create_directory(bad / "dir.jpg");
  const Dataset ds = image_folder(root);
  REQUIRE(ds.size() == 18);
  LoaderOptions o = small_options();
  o.warn = false;
  {
    Loader loader(ds, o);
    for (int e = 0; e < 2; ++e) {
      int64_t rows = 0, skipped = 0;
      while (auto b = loader.next()) {
        rows += b->images.dim(0), skipped += b->skipped;
        CHECK(b->labels.dim(0) == b->images.dim(0));
      }
      CHECK(rows == 15);
      CHECK(skipped == 3);
    }
    const auto failures = loader.failures();
    REQUIRE(failures.size() == 3);  // once each, not once per epoch
    CHECK(loader.stats().failures == 3);
    for (const auto& f : failures) {
      INFO(f.path << ": " << f.reason);
      CHECK(f.reason.find(f.path) != std::string::npos);
    }
  }
  o.strict = true;
  o.shuffle = false;
  const size_t threads_before = steady_thread_count();
  {
    Loader loader(ds, o);
    // Class b holds dir.jpg first (sorted): sample 5, in batch 1.
    REQUIRE(loader.next().has_value());
    CHECK_THROWS_WITH(loader.next(), Catch::Contains("dir.jpg") && Catch::Contains("is a directory"));
    CHECK_THROWS_AS(loader.next(), Error);  // the error stays
  }
  CHECK(thread_count_after_join(threads_before) == threads_before);
  fs::remove_all(root);
}

TEST_CASE("loader: stopping mid-epoch leaves no thread behind", "[loader]") {
  const std::string root = make_folder("loader_stop");
  const Dataset ds = image_folder(root);
  const size_t before = steady_thread_count();
  for (int workers : {1, 2, 4}) {
    LoaderOptions o = small_options();
    o.num_workers = workers;
    {
      Loader loader(ds, o);
      CHECK(thread_count() == before + workers);
      REQUIRE(loader.next().has_value());  // then walk away with batches queued
    }
    CHECK(thread_count_after_join(before) == before);
    { Loader unused(ds, o); }  // destroyed before anything was asked of it
    CHECK(thread_count_after_join(before) == before);
  }
  fs::remove_all(root);
}

TEST_CASE("loader: batches copied to the GPU equal the host batches", "[loader][cuda]") {
  if (!has_backend(DeviceType::cuda) || device_count(DeviceType::cuda) == 0) {
    WARN("no CUDA device: skipped");
    return;
  }
  const std::string root = make_folder("loader_cuda");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  const Epochs host = run(ds, o, 1);
  o.device = Device::cuda(0);
  // auto: bytes travel and convert on the GPU; host: floats travel.
  for (auto at : {LoaderOptions::ConvertAt::auto_, LoaderOptions::ConvertAt::host}) {
    o.convert_at = at;
    Loader loader(ds, o);
    size_t k = 0;
    while (auto b = loader.next()) {
      CHECK(b->images.device() == Device::cuda(0));
      CHECK((at == LoaderOptions::ConvertAt::host ? b->host_images : b->host_bytes).is_pinned());
      CHECK(b->images.to_vector<float>() == host.images[k]);  // to_vector synchronises
      CHECK(b->labels.to_vector<int64_t>() == host.labels[k]);
      ++k;
    }
    CHECK(k == host.images.size());
  }
  fs::remove_all(root);
}

TEST_CASE("bytes through the convention's table equal crop_to_input bit for bit", "[loader][images]") {
  const Image img = pattern(40, 33, 5);
  const Crop crop{3, 4, 24, true};
  for (InputConvention c : {InputConvention::caffe_bgr, InputConvention::torchvision_rgb, InputConvention::tf_rgb}) {
    INFO(convention_name(c));
    std::vector<float> want(24 * 24 * 3);
    crop_to_input(img, crop, c, want.data());
    Tensor bytes = Tensor::empty(Shape{24, 24, 3}, TensorOptions{DType::u8});
    crop_to_bytes(img, crop, c, bytes.data<uint8_t>());
    const std::array<float, 3 * 256> table = convention_lut(c);
    const Tensor lut = Tensor::from_vector(std::vector<float>(table.begin(), table.end()), Shape{3, 256});
    CHECK(lut_u8(bytes, lut).to_vector<float>() == want);
  }
  REQUIRE_THROWS_WITH(lut_u8(Tensor::zeros(Shape{2, 4}, TensorOptions{DType::u8}), Tensor::zeros(Shape{3, 256})),
                      Catch::Contains("lut_u8") && Catch::Contains("channels"));
  REQUIRE_THROWS_WITH(lut_u8(Tensor::zeros(Shape{2, 3}), Tensor::zeros(Shape{3, 256})),
                      Catch::Contains("uint8"));
}

TEST_CASE("loader: the byte path (convert on the device) gives the float path's batches", "[loader]") {
  const std::string root = make_folder("loader_bytes");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  const Epochs floats = run(ds, o, 2);
  o.convert_at = LoaderOptions::ConvertAt::device;  // on the CPU device: the same code path minus the copy
  const Epochs bytes = run(ds, o, 2);
  CHECK(bytes.images == floats.images);
  CHECK(bytes.labels == floats.labels);
  CHECK(bytes.indices == floats.indices);
  fs::remove_all(root);
}

namespace {

struct Served {
  Epochs epochs;
  std::vector<int64_t> skipped;
  LoaderStats stats;
};

Served serve(const Dataset& ds, const LoaderOptions& o, int epochs) {
  Loader loader(ds, o);
  Served out;
  for (int e = 0; e < epochs; ++e)
    while (auto b = loader.next()) {
      CHECK(b->images.shape() == Shape{b->labels.dim(0), kCrop, kCrop, 3});
      out.epochs.images.push_back(b->images.to_vector<float>());
      out.epochs.labels.push_back(b->labels.to_vector<int64_t>());
      out.epochs.indices.push_back(b->indices);
      out.skipped.push_back(b->skipped);
    }
  out.stats = loader.stats();
  return out;
}

}  // namespace

TEST_CASE("loader: crops from the device atlas (forced on the CPU) equal the host path's", "[loader][atlas]") {
  const std::string root = make_folder("loader_atlas");
  std::ofstream(fs::path(root) / "b" / "broken.png") << "not a png";
  const Dataset ds = image_folder(root);
  REQUIRE(ds.size() == 16);
  LoaderOptions o = small_options();
  o.warn = false;
  // Three epochs: the first decodes everything, batches built ahead of the atlas come as
  // bytes, the rest from the atlas. Random crops with flips, then central crops in BGR.
  for (const bool augment : {true, false}) {
    INFO("augment " << augment);
    o.augment = augment;
    o.convention = augment ? InputConvention::torchvision_rgb : InputConvention::caffe_bgr;
    o.convert_at = LoaderOptions::ConvertAt::host;
    const Served host = serve(ds, o, 3);
    REQUIRE(host.epochs.images.size() == 12);  // 16 samples, 4 batches an epoch
    CHECK_FALSE(host.stats.device_atlas);
    o.convert_at = LoaderOptions::ConvertAt::device;
    const Served atlas = serve(ds, o, 3);
    CHECK(atlas.stats.device_atlas);
    CHECK(atlas.stats.atlas_bytes == atlas.stats.cache.bytes);
    CHECK(atlas.stats.atlas_rows >= 15);  // at least the last epoch
    CHECK(atlas.stats.failures == 1);     // reported once, in the first epoch
    CHECK(atlas.epochs.images == host.epochs.images);
    CHECK(atlas.epochs.labels == host.epochs.labels);
    CHECK(atlas.epochs.indices == host.epochs.indices);
    CHECK(atlas.skipped == host.skipped);
    int64_t skipped = 0;
    for (int64_t k : atlas.skipped) skipped += k;
    CHECK(skipped == 3);  // the broken file, once an epoch
    // Switched off, or a cache that cannot hold every image: no atlas, the same batches.
    o.augment_on_device = false;
    const Served off = serve(ds, o, 2);
    CHECK_FALSE(off.stats.device_atlas);
    CHECK(off.stats.atlas_rows == 0);
    o.augment_on_device = true;
    o.cache_bytes = kResize * kResize * 3 * 4;
    const Served small = serve(ds, o, 2);
    CHECK_FALSE(small.stats.device_atlas);
    const std::vector<std::vector<float>> two(host.epochs.images.begin(), host.epochs.images.begin() + 8);
    CHECK(off.epochs.images == two);
    CHECK(small.epochs.images == two);
    o.cache_bytes = LoaderOptions{}.cache_bytes;
  }
  // Resumed at epoch 2, the atlas run serves what epoch 2 of the full run served.
  o = small_options();
  o.warn = false;
  const Served full = serve(ds, o, 3);
  o.convert_at = LoaderOptions::ConvertAt::device;
  o.start_epoch = 2;
  o.num_workers = 1;
  const Served resumed = serve(ds, o, 2);
  CHECK(resumed.stats.device_atlas);
  REQUIRE(full.epochs.images.size() == 12);  // 16 samples, 4 batches an epoch
  CHECK(std::vector<std::vector<float>>(resumed.epochs.images.begin(), resumed.epochs.images.begin() + 4) ==
        std::vector<std::vector<float>>(full.epochs.images.begin() + 8, full.epochs.images.end()));
  fs::remove_all(root);
}

TEST_CASE("loader: a mid-epoch start serves the full run's batches on the byte path, the atlas and each shard",
          "[loader][atlas]") {
  const std::string root = make_folder("loader_start");
  const Dataset ds = image_folder(root);  // 15 samples: batches 0-3 of an epoch, the last of 3
  struct Variant {
    const char* name;
    LoaderOptions::ConvertAt at;
    bool atlas;
    int rank, count;
  };
  for (const Variant& v : {Variant{"bytes", LoaderOptions::ConvertAt::device, false, 0, 1},
                           Variant{"atlas", LoaderOptions::ConvertAt::device, true, 0, 1},
                           Variant{"shard 0 of 2", LoaderOptions::ConvertAt::host, false, 0, 2},
                           Variant{"shard 1 of 2", LoaderOptions::ConvertAt::host, false, 1, 2}}) {
    INFO(v.name);
    LoaderOptions o = small_options();
    o.convert_at = v.at;
    o.augment_on_device = v.atlas;
    o.shard_rank = v.rank;
    o.shard_count = v.count;
    const Served full = serve(ds, o, 4);
    REQUIRE(full.epochs.indices.size() == 16);
    o.start_epoch = 1;
    o.start_batch = 3;  // the short last batch is next
    o.num_workers = 1;
    const Served resumed = serve(ds, o, 3);  // the rest of epoch 1, then epochs 2 and 3
    CHECK(resumed.stats.device_atlas == v.atlas);
    REQUIRE(resumed.epochs.indices.size() == 9);
    CHECK(resumed.epochs.indices == std::vector<std::vector<int64_t>>(full.epochs.indices.begin() + 7,
                                                                      full.epochs.indices.end()));
    CHECK(resumed.epochs.images == std::vector<std::vector<float>>(full.epochs.images.begin() + 7,
                                                                   full.epochs.images.end()));
    CHECK(resumed.epochs.labels == std::vector<std::vector<int64_t>>(full.epochs.labels.begin() + 7,
                                                                     full.epochs.labels.end()));
    const ShardRange mine = shard_of(12, 15, v.rank, v.count);  // this rank's rows of the short batch
    CHECK(static_cast<int64_t>(resumed.epochs.indices.front().size()) == mine.end - mine.begin);
  }
  fs::remove_all(root);
}

TEST_CASE("loader: crops from the GPU atlas equal the host batches", "[loader][atlas][cuda]") {
  if (!has_backend(DeviceType::cuda) || device_count(DeviceType::cuda) == 0) {
    WARN("no CUDA device: skipped");
    return;
  }
  const std::string root = make_folder("loader_atlas_cuda");
  const Dataset ds = image_folder(root);
  LoaderOptions o = small_options();
  const Served host = serve(ds, o, 3);
  o.device = Device::cuda(0);
  const Served gpu = serve(ds, o, 3);
  CHECK(gpu.stats.device_atlas);
  CHECK(gpu.stats.atlas_rows >= 15);
  CHECK(gpu.epochs.images == host.epochs.images);
  CHECK(gpu.epochs.labels == host.epochs.labels);
  fs::remove_all(root);
}
