// kiln_pipeline_bench: images per second of the image pipeline on generated JPEGs —
// cold decode+transform, cached epochs (crop/flip/normalise only), and the full loader at
// each thread count — and, with --compare, torchvision ImageFolder + DataLoader on the
// same files with the same transforms and worker counts (benchmarks/torch_pipeline.py).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/loader.h"
#include "io/transforms.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Photo-like content (smooth gradients plus texture), so JPEG sizes are realistic.
Image synthetic_photo(int w, int h, uint32_t seed) {
  Image img;
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

void generate(const std::string& dir, int count, int w, int h) {
  for (int i = 0; i < count; ++i) {
    const fs::path cls = fs::path(dir) / (i % 2 ? "cat" : "dog");
    fs::create_directories(cls);
    write_jpeg((cls / ("img" + std::to_string(i) + ".jpg")).string(), synthetic_photo(w, h, static_cast<uint32_t>(i)),
               90);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = (fs::temp_directory_path() / "kiln_pipeline_bench").string();
  int count = 200, batch = 32, epochs = 3;
  std::vector<int> threads = {1, 2};
  bool compare = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--dir") dir = value();
    else if (a == "--images") count = std::stoi(value());
    else if (a == "--batch") batch = std::stoi(value());
    else if (a == "--epochs") epochs = std::stoi(value());
    else if (a == "--threads") {
      threads.clear();
      const std::string v = value();
      for (size_t p = 0; p < v.size();) {
        const size_t q = v.find(',', p);
        threads.push_back(std::stoi(v.substr(p, q - p)));
        p = q == std::string::npos ? v.size() : q + 1;
      }
    } else if (a == "--compare") compare = true;
    else {
      std::fprintf(stderr,
                   "usage: kiln_pipeline_bench [--dir DIR] [--images N] [--batch B] [--epochs E] "
                   "[--threads 1,2] [--compare]\n");
      return 2;
    }
  }
  try {
    if (!fs::exists(dir)) {
      std::printf("generating %d JPEGs of 500x375 (quality 90) in %s\n", count, dir.c_str());
      generate(dir, count, 500, 375);
    }
    const Dataset ds = image_folder(dir);
    std::printf("dataset: %s\n", ds.summary().c_str());
    std::printf("transforms: Resize(256) bilinear, RandomCrop(224), RandomHorizontalFlip, ToTensor+Normalize; "
                "batch %d\n\n", batch);
    const size_t n = ds.size();
    std::vector<float> out(224 * 224 * 3);

    // One thread, no loader: decode + resize + crop/flip/normalise.
    std::vector<Image> resized;
    double t0 = now_s();
    for (size_t i = 0; i < n; ++i) {
      resized.push_back(resize_shorter_side(decode_image(ds.samples[i].path), 256));
      const Image& r = resized.back();
      crop_to_input(r, random_crop(r.width, r.height, 224, 0, 0, i, true), InputConvention::torchvision_rgb, out.data());
    }
    const double cold = n / (now_s() - t0);
    t0 = now_s();
    for (size_t i = 0; i < n; ++i) decode_image(ds.samples[i].path);
    const double decode_only = n / (now_s() - t0);
    t0 = now_s();
    for (int rep = 0; rep < 5; ++rep)
      for (size_t i = 0; i < n; ++i) {
        const Image& r = resized[i];
        crop_to_input(r, random_crop(r.width, r.height, 224, 0, rep, i, true), InputConvention::torchvision_rgb,
                      out.data());
      }
    const double warm = 5.0 * n / (now_s() - t0);
    std::printf("single thread, no loader:\n");
    std::printf("  decode only                      %8.1f img/s\n", decode_only);
    std::printf("  cold decode+resize+crop+norm     %8.1f img/s\n", cold);
    std::printf("  cached crop+flip+norm            %8.1f img/s\n\n", warm);

    std::printf("full loader (pinned batches, prefetch 2), img/s:\n");
    std::printf("  %-8s %-14s %-14s %-14s\n", "threads", "epoch 0 cold", "cached epochs", "no cache");
    for (int t : threads) {
      LoaderOptions o;
      o.batch_size = batch;
      o.num_workers = t;
      double rates[2] = {0, 0};
      {
        Loader loader(ds, o);
        for (int e = 0; e < epochs; ++e) {
          const double s = now_s();
          while (loader.next()) {
          }
          const double r = n / (now_s() - s);
          if (e == 0) rates[0] = r;
          else rates[1] += r / (epochs - 1);
        }
      }
      o.cache_bytes = 0;
      double nocache = 0;
      {
        Loader loader(ds, o);
        const double s = now_s();
        for (int e = 0; e < 2; ++e)
          while (loader.next()) {
          }
        nocache = 2.0 * n / (now_s() - s);
      }
      std::printf("  %-8d %-14.1f %-14.1f %-14.1f\n", t, rates[0], rates[1], nocache);
    }
    if (compare) {
      std::string workers;
      for (int t : threads) {
        if (!workers.empty()) workers += ',';
        workers += std::to_string(t);
      }
      std::string cmd = "/usr/bin/python3 " KILN_SOURCE_DIR "/benchmarks/torch_pipeline.py --dir ";
      cmd.append(dir).append(" --batch ").append(std::to_string(batch));
      cmd.append(" --epochs ").append(std::to_string(epochs)).append(" --workers ").append(workers);
      std::printf("\n%s\n", cmd.c_str());
      std::fflush(stdout);
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "torch_pipeline.py failed\n");
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "kiln_pipeline_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
