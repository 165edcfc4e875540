// kiln_bench --suite pipeline: the image pipeline on generated JPEGs (--data DIR, made
// once: 200 photo-like 500x375 JPEGs, quality 90, two classes). One run of a row is one
// pass over the dataset; its img/s is in the summary. Rows:
//   decode               stb_image decode only, one thread
//   cold                 decode + resize(256) + random crop 224 + flip + normalise, one thread
//   cached               crop + flip + normalise from the resized images, one thread
//   loader/wT/cold       the full Loader (T workers, pinned batches of 32) without the
//                        decode-once cache: every epoch decodes
//   loader/wT/cached     the same Loader with its cache, after the epoch that filled it
//   loader/wT/cached@device_atlas   the variant a GPU run uses: the cache packed into one
//                        uint8 atlas, batches cut from it by crop_flip_lut_u8 (here on the CPU)
// T runs over 1, 2 and every hardware thread. Checked before timing: every loader batch
// of one epoch equals, bit for bit, the single-thread transforms of the same samples.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/bench_common.h"
#include "benchmarks/suites.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/loader.h"
#include "io/transforms.h"

namespace fs = std::filesystem;

namespace kiln::bench {

namespace {

constexpr int kImages = 200, kWidth = 500, kHeight = 375, kBatch = 32, kCrop = 224;
constexpr uint64_t kSeed = 0;

// Photo-like content (smooth gradients plus texture), so JPEG sizes and decode times are
// those of photographs rather than of flat colour.
io::Image synthetic_photo(int w, int h, uint32_t seed) {
  io::Image img;
  img.width = w, img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  uint32_t s = seed * 2654435761u + 1;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      s = s * 1664525u + 1013904223u;
      uint8_t* p = img.row(y) + x * 3;
      const int n = static_cast<int>((s >> 24) % 24) - 12;
      const int k = static_cast<int>(seed % 97);
      p[0] = static_cast<uint8_t>(std::clamp((x * 200 / w + k * 37) % 220 + n + 20, 0, 255));
      p[1] = static_cast<uint8_t>(std::clamp((y * 180 / h + k * 11) % 200 + n + 30, 0, 255));
      p[2] = static_cast<uint8_t>(std::clamp(((x + y) * 150 / (w + h) + k * 5) % 200 + n + 30, 0, 255));
    }
  return img;
}

constexpr const char* kMarker = ".kiln_pipeline_bench";  // in DIR: kiln_bench made it

// The marker's text once the dataset is whole ("200 500x375"); before that it says "generating".
std::string marker_text() {
  return std::to_string(kImages) + " " + std::to_string(kWidth) + "x" + std::to_string(kHeight);
}

// Writes the dataset unless DIR already holds it whole (the marker says so). The marker is
// written first, so a run cut short leaves a folder kiln_bench still knows as its own.
void ensure_dataset(const std::string& dir) {
  const fs::path marker = fs::path(dir) / kMarker;
  std::string said;
  if (std::ifstream f(marker); f && std::getline(f, said) && said == marker_text()) return;
  check_data_dir(dir);
  fs::create_directories(dir);
  std::ofstream(marker) << "generating\n";
  std::printf("generating %d JPEGs of %dx%d (quality 90) in %s\n", kImages, kWidth, kHeight, dir.c_str());
  for (int i = 0; i < kImages; ++i) {
    const fs::path cls = fs::path(dir) / (i % 2 ? "cat" : "dog");
    fs::create_directories(cls);
    io::write_jpeg((cls / ("img" + std::to_string(i) + ".jpg")).string(),
                   synthetic_photo(kWidth, kHeight, static_cast<uint32_t>(i)), 90);
  }
  std::ofstream(marker) << marker_text() << "\n";
}

Row pipeline_row(const std::string& name, int64_t images) {
  Row r;
  r.name = name;
  r.kind = "pipe";
  r.shape = std::to_string(images) + " x " + std::to_string(kWidth) + "x" + std::to_string(kHeight) + " jpg";
  r.flops = 0;
  // What one pass writes: the float batches (what the network reads).
  r.bytes = 4.0 * images * kCrop * kCrop * 3;
  return r;
}

// Whole epochs of `loader` against `reference` (sample, epoch, destination): the first fills
// the cache, the second (cached) is served from it, through the atlas where there is one.
// Bit-identical (rtol 0): the loader runs the same transforms. Judged image by image; r keeps
// the worst image's verdict.
void check_loader_epochs(io::Loader& loader, const std::function<void(int64_t, uint64_t, float*)>& reference,
                         size_t image_floats, int64_t n, bool cached, bool atlas, Row& r) {
  Row worst;
  std::vector<float> ref(image_floats);
  int64_t rows = 0;
  for (int e = 0; e < (cached ? 2 : 1); ++e)
    while (auto b = loader.next()) {
      const std::vector<float> got = b->images.to_vector<float>();
      for (size_t k = 0; k < b->indices.size(); ++k) {
        reference(b->indices[k], b->epoch, ref.data());
        Row one;
        check_row(
            one, ref.size(), [&](size_t i) { return got[k * ref.size() + i]; }, [&](size_t i) { return ref[i]; }, 0,
            "image " + std::to_string(b->indices[k]) + " of epoch " + std::to_string(b->epoch));
        if (!worst.checked || one.check_budget > worst.check_budget) worst = std::move(one);
        ++rows;
      }
    }
  r.checked = worst.checked;
  r.check_ok = worst.check_ok;
  r.check = worst.check;
  r.check_budget = worst.check_budget;
  const int64_t expected = n * (cached ? 2 : 1);
  if (rows != expected) {
    r.check_ok = false;
    r.check = "the checked epochs delivered " + std::to_string(rows) + " images, not " + std::to_string(expected);
  }
  if (atlas && !loader.stats().device_atlas) {
    r.check_ok = false;
    r.check = "the loader did not build its atlas";
  }
}

}  // namespace

void check_data_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path p(dir);
  if (dir.empty()) throw std::invalid_argument("--data needs a folder");
  if (!fs::exists(p, ec)) return;
  if (!fs::is_directory(p, ec))
    throw std::invalid_argument("--data " + dir + ": not a folder; give a new or empty folder for the generated JPEGs");
  if (!fs::exists(p / kMarker, ec) && !fs::is_empty(p, ec))
    throw std::invalid_argument("--data " + dir + ": the folder holds files and was not made by kiln_bench (no " +
                                kMarker + "); give a new or empty folder for the 200 generated JPEGs");
}

SuiteResult run_pipeline(const Options& opt, const MachineLimits& m) {
  ensure_dataset(opt.data_dir);
  const io::Dataset ds = io::image_folder(opt.data_dir);
  const int64_t n = static_cast<int64_t>(ds.size());
  std::printf("dataset: %s\ntransforms: Resize(256) bilinear (antialiased), RandomCrop(224), RandomHorizontalFlip, "
              "ToTensor + Normalize (torchvision convention); loader batch %d, prefetch 2\n\n",
              ds.summary().c_str(), kBatch);
  SuiteResult res;
  set_table_widths(30, 24);
  print_table_header();
  const auto conv = io::InputConvention::torchvision_rgb;
  std::vector<float> out(static_cast<size_t>(kCrop) * kCrop * 3);

  // Single thread, no loader. The resized images are the reference for every check below.
  std::vector<io::Image> resized;
  for (int64_t i = 0; i < n; ++i)
    resized.push_back(io::resize_shorter_side(io::decode_image(ds.samples[static_cast<size_t>(i)].path), 256));
  const auto reference = [&](int64_t sample, uint64_t epoch, float* dst) {
    const io::Image& r = resized[static_cast<size_t>(sample)];
    io::crop_to_input(r, io::random_crop(r.width, r.height, kCrop, kSeed, epoch, static_cast<uint64_t>(sample), true),
                      conv, dst);
  };
  {
    Row r = pipeline_row("decode", n);
    const io::Image first = io::decode_image(ds.samples[0].path);
    r.checked = true;
    r.check_ok = first.width == kWidth && first.height == kHeight;
    r.check = "decoded " + std::to_string(first.width) + "x" + std::to_string(first.height);
    time_checked_row(std::move(r), opt, m, res, [&] {
      for (int64_t i = 0; i < n; ++i) (void)io::decode_image(ds.samples[static_cast<size_t>(i)].path);
    });
  }
  {
    Row r = pipeline_row("cold", n);
    r.checked = r.check_ok = true;  // the same calls as the reference; the loader rows check
    r.check = "the reference transforms";
    uint64_t epoch = 0;
    time_checked_row(std::move(r), opt, m, res, [&] {
      for (int64_t i = 0; i < n; ++i) {
        const io::Image img = io::resize_shorter_side(io::decode_image(ds.samples[static_cast<size_t>(i)].path), 256);
        io::crop_to_input(img, io::random_crop(img.width, img.height, kCrop, kSeed, epoch, static_cast<uint64_t>(i), true),
                          conv, out.data());
      }
      ++epoch;
    });
  }
  {
    Row r = pipeline_row("cached", n);
    r.checked = r.check_ok = true;
    r.check = "the reference transforms";
    uint64_t epoch = 0;
    time_checked_row(std::move(r), opt, m, res, [&] {
      for (int64_t i = 0; i < n; ++i) reference(i, epoch, out.data());
      ++epoch;
    });
  }

  std::set<int> workers = {1, 2, static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  for (const int w : workers) {
    // Variants of the cached loader: crops written as floats by the workers (kiln's CPU
    // default), and "@device_atlas": the cache packed once into one uint8 atlas and each
    // batch cut from it by crop_flip_lut_u8 (kiln's default for a GPU; here forced on the CPU).
    struct Variant {
      bool cached, atlas;
    };
    for (const Variant v : {Variant{false, false}, Variant{true, false}, Variant{true, true}}) {
      const bool cached = v.cached;
      io::LoaderOptions lo;
      lo.batch_size = kBatch;
      lo.num_workers = w;
      lo.seed = kSeed;
      lo.convention = conv;
      lo.warn = false;
      lo.cache_bytes = cached ? lo.cache_bytes : 0;
      if (v.atlas) lo.convert_at = io::LoaderOptions::ConvertAt::device;
      io::Loader loader(ds, lo);
      Row r = pipeline_row("loader/w" + std::to_string(w) + (cached ? "/cached" : "/cold") +
                               (v.atlas ? "@device_atlas" : ""),
                           n);
      check_loader_epochs(loader, reference, out.size(), n, cached, v.atlas, r);
      time_checked_row(std::move(r), opt, m, res, [&] {
        while (loader.next()) {
        }
      });
      if (cached) {
        const io::LoaderStats st = loader.stats();
        std::printf("  %d worker(s)%s: cache %lld hits, %lld misses, %lld images, %.1f MiB held%s\n", w,
                    v.atlas ? ", atlas" : "", static_cast<long long>(st.cache.hits),
                    static_cast<long long>(st.cache.misses), static_cast<long long>(st.cache.entries),
                    static_cast<double>(st.cache.bytes) / (1 << 20),
                    st.device_atlas ? (", atlas " + std::to_string(st.atlas_bytes >> 20) + " MiB, " +
                                       std::to_string(st.atlas_rows) + " rows cut from it").c_str()
                                    : "");
      }
    }
  }
  for (const Row& r : res.rows)
    if (r.timed) res.summary.emplace_back(r.name + "_img_per_s", static_cast<double>(n) / (r.t.median_ms * 1e-3));
  std::printf("\nimages per second (one pass = %lld images):\n", static_cast<long long>(n));
  for (const auto& [k, v] : res.summary) std::printf("  %-34s %8.1f\n", k.c_str(), v);
  return res;
}

}  // namespace kiln::bench
