// The vgg_finetune demo dataset: layout, decodability, determinism, refusal to overwrite,
// and that the classes are told apart by simple image statistics.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "apps/vgg_finetune/demo_data.h"
#include "core/error.h"
#include "io/image.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;

namespace {

struct TempDir {
  fs::path path{test::make_temp_dir("demo_data")};
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Every regular file under `root`, relative path -> bytes, sorted by path.
std::vector<std::pair<std::string, std::vector<uint8_t>>> snapshot(const fs::path& root) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.emplace_back(fs::relative(e.path(), root).string(), read_bytes(e.path()));
  std::sort(out.begin(), out.end());
  return out;
}

// Mean absolute difference between horizontally and vertically adjacent pixels (edge density).
double edge_density(const io::Image& img) {
  double sum = 0;
  int64_t n = 0;
  for (int y = 0; y + 1 < img.height; ++y) {
    const uint8_t* r0 = img.row(y);
    const uint8_t* r1 = img.row(y + 1);
    for (int x = 0; x + 1 < img.width; ++x)
      for (int c = 0; c < 3; ++c) {
        sum += std::abs(r0[3 * x + c] - r0[3 * (x + 1) + c]) + std::abs(r0[3 * x + c] - r1[3 * x + c]);
        n += 2;
      }
  }
  return sum / static_cast<double>(n);
}

}  // namespace

TEST_CASE("demo dataset: layout, decoding, determinism", "[demo]") {
  TempDir a, b, c;
  const fs::path root_a = a.path / "data";
  const app::DemoDataset ds = app::make_demo_dataset(root_a.string(), 3, 4, 2, 7);
  CHECK(ds.root == root_a.string());
  CHECK(ds.classes == std::vector<std::string>{"bear", "cat", "dog"});
  CHECK(ds.train_images == 12);
  CHECK(ds.val_images == 6);

  std::set<std::pair<int, int>> sizes;
  for (const auto& [split, count] : {std::pair<std::string, int>{"train", 4}, {"val", 2}}) {
    std::set<std::string> dirs;
    for (const auto& e : fs::directory_iterator(root_a / split)) dirs.insert(e.path().filename().string());
    CHECK(dirs == std::set<std::string>{"bear", "cat", "dog"});
    for (const std::string& cls : ds.classes) {
      std::set<std::string> files;
      for (const auto& e : fs::directory_iterator(root_a / split / cls)) files.insert(e.path().filename().string());
      std::set<std::string> expected;
      for (int i = 0; i < count; ++i) expected.insert(cls + "_00" + std::to_string(i) + ".jpg");
      CHECK(files == expected);
      for (const std::string& f : files) {
        const io::ImageInfo info = io::read_image_info((root_a / split / cls / f).string());
        const io::Image img = io::decode_image((root_a / split / cls / f).string());
        CHECK(img.width == info.width);
        CHECK(img.height == info.height);
        CHECK(img.width >= 160);
        CHECK(img.width <= 400);
        CHECK(img.height >= 160);
        CHECK(img.height <= 400);
        sizes.insert({img.width, img.height});
      }
    }
  }
  CHECK(fs::directory_iterator(root_a) != fs::directory_iterator());
  CHECK(sizes.size() >= 12);  // 18 images of varied sizes (collisions possible, but few)

  // Same seed, same bytes; another seed, other bytes.
  const fs::path root_b = b.path / "data";
  app::make_demo_dataset(root_b.string(), 3, 4, 2, 7);
  const auto snap_a = snapshot(root_a), snap_b = snapshot(root_b);
  CHECK(snap_a.size() == 18);
  CHECK(snap_a == snap_b);

  app::make_demo_dataset(c.path.string(), 3, 4, 2, 8);  // an existing but empty root is fine
  const auto snap_c = snapshot(c.path);
  REQUIRE(snap_c.size() == snap_a.size());
  int same = 0;
  for (size_t i = 0; i < snap_a.size(); ++i) {
    CHECK(snap_a[i].first == snap_c[i].first);
    same += snap_a[i].second == snap_c[i].second;
  }
  CHECK(same == 0);
}

TEST_CASE("demo dataset: refuses a non-empty root and bad arguments", "[demo]") {
  TempDir t;
  { std::ofstream(t.path / "mine.txt") << "user data"; }
  try {
    app::make_demo_dataset(t.path.string(), 2, 1, 1);
    FAIL("expected kiln::Error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find(t.path.string()) != std::string::npos);
    CHECK(msg.find("not empty") != std::string::npos);
  }
  CHECK(read_bytes(t.path / "mine.txt").size() == 9);
  CHECK(std::distance(fs::directory_iterator(t.path), fs::directory_iterator()) == 1);

  CHECK_THROWS_AS(app::make_demo_dataset(t.path.string() + "/mine.txt", 2, 1, 1), Error);  // a file
  CHECK_THROWS_AS(app::make_demo_dataset((t.path / "x").string(), 17, 1, 1), Error);
  CHECK_THROWS_AS(app::make_demo_dataset((t.path / "x").string(), 0, 1, 1), Error);
  CHECK_THROWS_AS(app::make_demo_dataset((t.path / "x").string(), 2, -1, 1), Error);
  CHECK_FALSE(fs::exists(t.path / "x"));
  // All 16 recipes draw.
  const app::DemoDataset all = app::make_demo_dataset((t.path / "all").string(), 16, 1, 0);
  CHECK(all.classes.size() == 16);
  CHECK(std::is_sorted(all.classes.begin(), all.classes.end()));
  CHECK(snapshot(t.path / "all").size() == 16);
}

TEST_CASE("demo dataset: classes differ by structure, not by colour", "[demo]") {
  TempDir t;
  const int per_class = 6;
  const app::DemoDataset ds = app::make_demo_dataset(t.path.string(), 8, per_class, 0, 3);
  // feats[class][image]: mean R, G, B, edge density.
  std::vector<std::vector<std::vector<double>>> feats(ds.classes.size());
  for (size_t c = 0; c < ds.classes.size(); ++c)
    for (int i = 0; i < per_class; ++i) {
      const std::string name = ds.classes[c] + "_00" + std::to_string(i) + ".jpg";
      const io::Image img = io::decode_image((t.path / "train" / ds.classes[c] / name).string());
      double m[3] = {0, 0, 0};
      for (size_t k = 0; k < img.pixels.size(); ++k) m[k % 3] += img.pixels[k];
      const double n = static_cast<double>(img.pixels.size() / 3);
      feats[c].push_back({m[0] / n, m[1] / n, m[2] / n, edge_density(img)});
    }

  // Edge density: the frame-filling stripes ("zebra") against the smooth disc ("bear"): every
  // zebra image is busier than every bear image, whatever their colours, and on average
  // clearly so (the disc's grain adds some edges too).
  const size_t bear = 0, zebra = 7;
  REQUIRE(ds.classes[bear] == "bear");
  REQUIRE(ds.classes[zebra] == "zebra");
  double bear_max = 0, zebra_min = 1e9, bear_mean = 0, zebra_mean = 0;
  for (const auto& f : feats[bear]) bear_max = std::max(bear_max, f[3]), bear_mean += f[3] / per_class;
  for (const auto& f : feats[zebra]) zebra_min = std::min(zebra_min, f[3]), zebra_mean += f[3] / per_class;
  INFO("bear edge density max " << bear_max << " mean " << bear_mean << ", zebra min " << zebra_min << " mean "
                                << zebra_mean);
  CHECK(zebra_min > bear_max);
  CHECK(zebra_mean > 1.5 * bear_mean);

  // Nearest class centroid, leave-one-out, on the mean colour alone: near chance (1/8), since
  // every class draws its palette from one shared pool.
  auto centroid = [&](size_t c, int skip) {
    std::vector<double> s(3, 0.0);
    int n = 0;
    for (int i = 0; i < per_class; ++i)
      if (i != skip) {
        for (int k = 0; k < 3; ++k) s[k] += feats[c][i][k];
        ++n;
      }
    for (double& v : s) v /= n;
    return s;
  };
  int correct = 0, total = 0;
  for (size_t c = 0; c < feats.size(); ++c)
    for (int i = 0; i < per_class; ++i) {
      size_t best = 0;
      double best_d = 1e300;
      for (size_t k = 0; k < feats.size(); ++k) {
        const auto cen = centroid(k, k == c ? i : -1);
        double d = 0;
        for (int j = 0; j < 3; ++j) d += (feats[c][i][j] - cen[j]) * (feats[c][i][j] - cen[j]);
        if (d < best_d) best_d = d, best = k;
      }
      correct += best == c;
      ++total;
    }
  const double acc = static_cast<double>(correct) / total;
  INFO("mean-colour nearest-centroid accuracy " << acc);
  CHECK(acc <= 0.3);
}

TEST_CASE("demo colour baseline: near chance on the demo data, perfect where colour is the label", "[demo]") {
  TempDir t;
  app::make_demo_dataset((t.path / "demo").string(), 8, 20, 5, 2);
  const app::ColourBaseline demo =
      app::colour_histogram_baseline((t.path / "demo" / "train").string(), (t.path / "demo" / "val").string());
  CHECK(demo.bins == 64);
  CHECK(demo.train_images == 160);
  CHECK(demo.val_images == 40);
  INFO("colour baseline on the demo data: val " << demo.val_acc);
  CHECK(demo.val_acc <= 0.4);

  // Three classes of one colour each (plus noise): colour alone tells them apart.
  const uint8_t colours[3][3] = {{200, 40, 40}, {40, 200, 40}, {40, 40, 200}};
  for (const char* split : {"train", "val"})
    for (int c = 0; c < 3; ++c) {
      const fs::path dir = t.path / "colour" / split / ("c" + std::to_string(c));
      fs::create_directories(dir);
      for (int i = 0; i < 6; ++i) {
        io::Image img;
        img.width = img.height = 16;
        img.pixels.resize(16 * 16 * 3);
        for (size_t p = 0; p < img.pixels.size(); ++p)
          img.pixels[p] = static_cast<uint8_t>(colours[c][p % 3] + static_cast<int>((p * 7 + i * 13) % 30));
        io::write_png((dir / ("i" + std::to_string(i) + ".png")).string(), img);
      }
    }
  const app::ColourBaseline coloured =
      app::colour_histogram_baseline((t.path / "colour" / "train").string(), (t.path / "colour" / "val").string());
  CHECK(coloured.val_acc == 1.0);
}
