// Procedural demo images. Every class is a recipe: an object shape (circle, square,
// triangle, ring, ...) or a frame-filling pattern, a pattern inside the object (solid,
// stripes, checks, dots, waves) and a texture (value-noise amplitude and frequency, grain).
// Colour is NOT part of a class: each image takes its two-colour palette from a pool shared by
// every class (the sixteen palettes below, in either order), and its background colour at
// random, so a colour statistic alone cannot tell the classes apart (the demo measures that:
// a classifier on colour histograms). Each image varies the recipe: size, object position,
// scale and rotation, pattern period and phase, palette jitter, background colour and
// gradient, noise, JPEG quality.
//
// The class names are flavour only: the data is synthetic and shows no animals.
//
// Randomness: per-image parameters come from Philox (core/philox.h) keyed by the seed, with
// counters derived from (split, class, index), so every image is independent of the others
// and of the order they are drawn in. Per-pixel noise uses a cheap integer hash salted from
// Philox, which keeps generation at a few milliseconds per image.
#include "apps/vgg_finetune/demo_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "core/philox.h"
#include "io/dataset.h"
#include "io/image.h"
#include "train/linear_probe.h"

namespace kiln::app {
namespace {

namespace fs = std::filesystem;

enum class Shape { kCircle, kEllipse, kSquare, kTriangle, kRing, kDiamond, kCross, kStar, kFull };
enum class Pattern { kSolid, kStripes, kChecker, kDots, kWaves };

struct Rgb {
  float r, g, b;
};

struct Recipe {
  const char* name;
  Shape shape;
  Pattern pattern;
  float noise_amp;    // value-noise texture on the object, relative (0.3 = +-30%)
  float noise_cells;  // value-noise cells across the image's shorter side (texture frequency)
  float grain;        // per-pixel noise, in 8-bit levels (peak to peak)
};

// Visual recipes; the names are only labels (synthetic data).
constexpr Recipe kRecipes[] = {
    {"bear", Shape::kCircle, Pattern::kSolid, 0.35f, 5.f, 18.f},
    {"cat", Shape::kEllipse, Pattern::kStripes, 0.10f, 16.f, 10.f},
    {"dog", Shape::kSquare, Pattern::kDots, 0.12f, 40.f, 14.f},
    {"eagle", Shape::kTriangle, Pattern::kSolid, 0.08f, 8.f, 6.f},
    {"fox", Shape::kRing, Pattern::kSolid, 0.20f, 12.f, 10.f},
    {"horse", Shape::kSquare, Pattern::kChecker, 0.06f, 6.f, 8.f},
    {"owl", Shape::kFull, Pattern::kDots, 0.15f, 24.f, 12.f},
    {"zebra", Shape::kFull, Pattern::kStripes, 0.05f, 10.f, 8.f},
    {"lion", Shape::kStar, Pattern::kSolid, 0.15f, 10.f, 10.f},
    {"panda", Shape::kCross, Pattern::kSolid, 0.05f, 6.f, 8.f},
    {"rabbit", Shape::kEllipse, Pattern::kSolid, 0.10f, 48.f, 16.f},
    {"seal", Shape::kDiamond, Pattern::kSolid, 0.05f, 4.f, 4.f},
    {"tiger", Shape::kCircle, Pattern::kStripes, 0.10f, 12.f, 10.f},
    {"whale", Shape::kFull, Pattern::kWaves, 0.10f, 6.f, 8.f},
    {"wolf", Shape::kTriangle, Pattern::kSolid, 0.45f, 20.f, 24.f},
    {"yak", Shape::kSquare, Pattern::kDots, 0.25f, 8.f, 14.f},
};
constexpr int kMaxClasses = static_cast<int>(sizeof(kRecipes) / sizeof(kRecipes[0]));
static_assert(kMaxClasses == 16);

// The palette pool every class draws from: pattern colours ("on", "off"; solid uses "on"),
// contrasted enough for a pattern to show at the demo's 64 px.
constexpr Rgb kPalettes[][2] = {
    {{70, 50, 35}, {240, 240, 230}},  {{215, 85, 30}, {240, 230, 220}}, {{150, 75, 40}, {235, 215, 180}},
    {{20, 20, 20}, {240, 240, 240}},  {{25, 25, 25}, {235, 235, 235}},  {{230, 120, 30}, {25, 20, 15}},
    {{40, 70, 140}, {110, 150, 200}}, {{130, 115, 95}, {205, 195, 170}},
};
constexpr int kPaletteCount = static_cast<int>(sizeof(kPalettes) / sizeof(kPalettes[0]));

constexpr int kMinSide = 160, kMaxSide = 400;

// Uniform [0, 1) numbers for one image: Philox blocks at counters base, base + 1, ...
class ImageRng {
 public:
  ImageRng(uint64_t seed, uint64_t base) : seed_(seed), counter_(base) {}
  float uniform() {
    if (word_ == 4) {
      block_ = philox_block(seed_, counter_++);
      word_ = 0;
    }
    return bits_to_unit_float(block_.v[word_++]);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  int integer(int lo, int hi) {  // [lo, hi]
    return std::min(hi, lo + static_cast<int>(uniform() * static_cast<float>(hi - lo + 1)));
  }
  uint32_t bits() { return static_cast<uint32_t>(uniform() * 16777216.0f) * 257u + 0x9E3779B9u; }

 private:
  uint64_t seed_, counter_;
  Philox4 block_{};
  int word_ = 4;
};

// A fast, well-mixed 32-bit hash (lowbias32) for per-pixel noise.
inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
inline uint32_t hash3(uint32_t x, uint32_t y, uint32_t salt) { return hash32(x * 0x9E3779B1u ^ hash32(y ^ salt)); }

inline float clamp01(float v) { return std::min(1.0f, std::max(0.0f, v)); }
inline float fract(float v) { return v - std::floor(v); }
// Triangle wave in [0, 1], period 1: 0 at integers, 1 at half-integers.
inline float tri(float t) { return 1.0f - std::fabs(2.0f * fract(t) - 1.0f); }

// Smooth 2-D value noise in [-1, 1] on a grid precomputed per image.
class ValueNoise {
 public:
  ValueNoise(int width, int height, float cells_per_short_side, uint32_t salt) {
    scale_ = cells_per_short_side / static_cast<float>(std::min(width, height));
    gw_ = static_cast<int>(std::ceil(static_cast<float>(width) * scale_)) + 2;
    gh_ = static_cast<int>(std::ceil(static_cast<float>(height) * scale_)) + 2;
    grid_.resize(static_cast<size_t>(gw_) * gh_);
    for (int j = 0; j < gh_; ++j)
      for (int i = 0; i < gw_; ++i)
        grid_[static_cast<size_t>(j) * gw_ + i] =
            static_cast<float>(hash3(static_cast<uint32_t>(i), static_cast<uint32_t>(j), salt) >> 8) *
                (2.0f / 16777216.0f) -
            1.0f;
  }
  float at(int x, int y) const {
    const float fx = (static_cast<float>(x) + 0.5f) * scale_, fy = (static_cast<float>(y) + 0.5f) * scale_;
    const int ix = static_cast<int>(fx), iy = static_cast<int>(fy);
    float tx = fx - static_cast<float>(ix), ty = fy - static_cast<float>(iy);
    tx = tx * tx * (3.0f - 2.0f * tx);
    ty = ty * ty * (3.0f - 2.0f * ty);
    const float* r0 = grid_.data() + static_cast<size_t>(iy) * gw_ + ix;
    const float* r1 = r0 + gw_;
    const float top = r0[0] + (r0[1] - r0[0]) * tx, bottom = r1[0] + (r1[1] - r1[0]) * tx;
    return top + (bottom - top) * ty;
  }

 private:
  float scale_ = 0;
  int gw_ = 0, gh_ = 0;
  std::vector<float> grid_;
};

// Signed distance (negative inside) of the shape at local point (u, v), in units of the
// object's radius. Exact for most shapes, a close bound for the rest; only its sign and its
// value near 0 (antialiasing) matter.
float shape_distance(Shape s, float u, float v, float aspect, float inner) {
  switch (s) {
    case Shape::kCircle:
      return std::sqrt(u * u + v * v) - 1.0f;
    case Shape::kEllipse: {
      const float vv = v * aspect;  // aspect > 1: squashed along v
      return (std::sqrt(u * u + vv * vv) - 1.0f) / aspect;
    }
    case Shape::kSquare:
      return std::max(std::fabs(u), std::fabs(v)) - 0.85f;
    case Shape::kTriangle: {  // equilateral, circumradius ~1 (Inigo Quilez's exact SDF)
      constexpr float k = 1.7320508f;
      float px = std::fabs(u) - 0.95f, py = v + 0.95f / k;
      if (px + k * py > 0.0f) {
        const float nx = (px - k * py) * 0.5f, ny = (-k * px - py) * 0.5f;
        px = nx;
        py = ny;
      }
      px -= std::min(0.0f, std::max(-1.9f, px));
      const float len = std::sqrt(px * px + py * py);
      return py < 0.0f ? len : -len;
    }
    case Shape::kRing:
      return std::fabs(std::sqrt(u * u + v * v) - (1.0f + inner) * 0.5f) - (1.0f - inner) * 0.5f;
    case Shape::kDiamond:
      return (std::fabs(u) + std::fabs(v) - 1.0f) * 0.70710678f;
    case Shape::kCross: {
      const float au = std::fabs(u), av = std::fabs(v);
      return std::min(std::max(au - 0.3f, av - 1.0f), std::max(au - 1.0f, av - 0.3f));
    }
    case Shape::kStar: {
      const float r = std::sqrt(u * u + v * v);
      const float a = std::atan2(v, u);
      return (r - (0.7f + 0.3f * std::cos(5.0f * a))) * 0.6f;
    }
    case Shape::kFull:
      return -1.0f;
  }
  return 1.0f;
}

// Pattern value in [0, 1] (1 = colour a) at local (u, v); px: one pixel in local units.
float pattern_value(Pattern p, float u, float v, float period, float phase, float px) {
  switch (p) {
    case Pattern::kSolid:
      return 1.0f;
    case Pattern::kStripes: {
      // tri() moves 2/period per local unit; antialias over about one pixel.
      const float t = tri(u / period + phase);
      return clamp01(0.5f + (t - 0.5f) * period / (2.0f * px));
    }
    case Pattern::kWaves: {
      const float t = tri((u + 0.25f * period * std::sin(v * 6.2831853f / (2.5f * period))) / period + phase);
      return clamp01(0.5f + (t - 0.5f) * period / (2.0f * px));
    }
    case Pattern::kChecker: {
      const float su = tri(u / period + phase) - 0.5f, sv = tri(v / period) - 0.5f;
      return clamp01(0.5f + su * sv * period / px * 2.0f);
    }
    case Pattern::kDots: {
      const float cu = fract(u / period + phase) - 0.5f, cv = fract(v / period) - 0.5f;
      const float d = (std::sqrt(cu * cu + cv * cv) - 0.3f) * period;  // local units
      return clamp01(0.5f - d / px);
    }
  }
  return 1.0f;
}

uint8_t to_byte(float v) { return static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v + 0.5f))); }

// Draws image `index` of class `cls` in split `split` (0 train, 1 val) and returns it with
// its JPEG quality.
io::Image draw_image(const Recipe& rc, uint64_t seed, int split, int cls, int index, int* quality) {
  // 16 Philox blocks (64 numbers) per image; about 30 are drawn.
  const uint64_t image_id = (static_cast<uint64_t>(split) << 36) | (static_cast<uint64_t>(cls) << 30) |
                            static_cast<uint64_t>(index);
  ImageRng rng(seed, image_id << 4);

  io::Image img;
  img.width = rng.integer(kMinSide, kMaxSide);
  img.height = rng.integer(kMinSide, kMaxSide);
  img.channels = 3;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
  const float w = static_cast<float>(img.width), h = static_cast<float>(img.height);
  const float short_side = std::min(w, h);

  // Geometry: centre, radius (pixels), rotation.
  const bool full = rc.shape == Shape::kFull;
  // Kept near the centre and upright (within +-20 degrees): a network whose features are
  // random (the demo's, not pretrained) tells shapes apart from a few hundred examples only
  // when pose varies little; colour, which varies fully, is the nuisance it must ignore.
  const float radius = short_side * (full ? rng.uniform(0.25f, 0.45f) : rng.uniform(0.28f, 0.36f));
  const float cx = w * rng.uniform(0.45f, 0.55f), cy = h * rng.uniform(0.45f, 0.55f);
  const float angle = 0.3f + rng.uniform(-0.35f, 0.35f);
  const float cs = std::cos(angle), sn = std::sin(angle);
  const float aspect = rng.uniform(1.4f, 2.0f);  // ellipse
  const float inner = rng.uniform(0.45f, 0.7f);  // ring
  const float period = rng.uniform(0.25f, 0.45f) * (full ? 0.8f : 1.0f);
  const float phase = rng.uniform();
  const float px = 1.0f / radius;  // one pixel in local units

  // The palette: any of the shared pool, either way round, with brightness and tint jitter.
  const Rgb* pal = kPalettes[rng.integer(0, kPaletteCount - 1)];
  const bool swap = rng.uniform() < 0.5f;
  const Rgb& pa = pal[swap ? 1 : 0];
  const Rgb& pb = pal[swap ? 0 : 1];
  const float bright = rng.uniform(0.8f, 1.15f);
  const float ta = rng.uniform(-18.f, 18.f), tb = rng.uniform(-18.f, 18.f), tc = rng.uniform(-18.f, 18.f);
  const Rgb ca{pa.r * bright + ta, pa.g * bright + tb, pa.b * bright + tc};
  const Rgb cb{pb.r * bright + tb, pb.g * bright + tc, pb.b * bright + ta};

  // Background: a muted random colour with a linear gradient and soft blotches.
  const float grey = rng.uniform(40.f, 215.f);
  const Rgb bg{grey + rng.uniform(-45.f, 45.f), grey + rng.uniform(-45.f, 45.f), grey + rng.uniform(-45.f, 45.f)};
  const float gx = rng.uniform(-40.f, 40.f) / w, gy = rng.uniform(-40.f, 40.f) / h;
  const float bg_noise = rng.uniform(4.f, 20.f);

  const float noise_amp = rc.noise_amp * rng.uniform(0.7f, 1.3f);
  const float noise_cells = rc.noise_cells * rng.uniform(0.8f, 1.25f);
  const float grain = rc.grain * rng.uniform(0.7f, 1.3f);
  *quality = rng.integer(80, 95);

  const uint32_t salt = rng.bits();
  const ValueNoise texture(img.width, img.height, noise_cells, salt ^ 0x51ED270Bu);
  const ValueNoise blotch(img.width, img.height, 3.0f, salt ^ 0xA3C59AC3u);

  for (int y = 0; y < img.height; ++y) {
    uint8_t* row = img.row(y);
    const float dy = static_cast<float>(y) + 0.5f - cy;
    for (int x = 0; x < img.width; ++x) {
      const float dx = static_cast<float>(x) + 0.5f - cx;
      // Local coordinates: rotated, in units of the radius.
      const float u = (cs * dx + sn * dy) * px, v = (-sn * dx + cs * dy) * px;

      const float blot = blotch.at(x, y) * bg_noise;
      const float grad = gx * (static_cast<float>(x) - 0.5f * w) + gy * (static_cast<float>(y) - 0.5f * h);
      float r = bg.r + grad + blot, g = bg.g + grad + blot, b = bg.b + grad + blot;

      const float d = shape_distance(rc.shape, u, v, aspect, inner);
      const float cover = clamp01(0.5f - d / px);
      if (cover > 0.0f) {
        const float p = pattern_value(rc.pattern, u, v, period, phase, px);
        const float tex = 1.0f + noise_amp * texture.at(x, y);
        const float orr = (cb.r + (ca.r - cb.r) * p) * tex, og = (cb.g + (ca.g - cb.g) * p) * tex,
                    ob = (cb.b + (ca.b - cb.b) * p) * tex;
        r += (orr - r) * cover;
        g += (og - g) * cover;
        b += (ob - b) * cover;
      }

      const uint32_t hsh = hash3(static_cast<uint32_t>(x), static_cast<uint32_t>(y), salt);
      const float n0 = static_cast<float>(hsh & 0xFF) * (1.0f / 255.0f) - 0.5f;
      const float n1 = static_cast<float>((hsh >> 8) & 0xFF) * (1.0f / 255.0f) - 0.5f;
      const float n2 = static_cast<float>((hsh >> 16) & 0xFF) * (1.0f / 255.0f) - 0.5f;
      const float lum = static_cast<float>(hsh >> 24) * (1.0f / 255.0f) - 0.5f;
      row[3 * x + 0] = to_byte(r + grain * (0.7f * lum + 0.3f * n0));
      row[3 * x + 1] = to_byte(g + grain * (0.7f * lum + 0.3f * n1));
      row[3 * x + 2] = to_byte(b + grain * (0.7f * lum + 0.3f * n2));
    }
  }
  return img;
}

std::string file_name(const std::string& cls, int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "_%03d.jpg", index);
  return cls + buf;
}

// 4 x 4 x 4 joint RGB histograms of the readable images of `ds`, as fractions; their labels.
Tensor colour_histograms(const io::Dataset& ds, std::vector<int64_t>& labels) {
  constexpr int kBins = 64;
  std::vector<float> h;
  for (const io::Sample& s : ds.samples) {
    io::Image img;
    try {
      img = io::decode_image(s.path);
    } catch (const Error&) {
      continue;
    }
    std::vector<float> row(kBins, 0.0f);
    const size_t n = img.pixels.size() / 3;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = img.pixels.data() + 3 * i;
      row[static_cast<size_t>((p[0] >> 6) * 16 + (p[1] >> 6) * 4 + (p[2] >> 6))] += 1.0f / static_cast<float>(n);
    }
    h.insert(h.end(), row.begin(), row.end());
    labels.push_back(s.label);
  }
  KILN_CHECK(!labels.empty(), "no image of '", ds.root, "' could be read");
  return Tensor::from_vector(h, kiln::Shape{static_cast<int64_t>(labels.size()), kBins});
}

}  // namespace

ColourBaseline colour_histogram_baseline(const std::string& train_dir, const std::string& val_dir) {
  const io::Dataset train = io::image_folder(train_dir), val = io::image_folder(val_dir);
  KILN_CHECK(train.classes == val.classes, "the classes of '", val_dir, "' differ from those of '", train_dir, "'");
  std::vector<int64_t> ytr, yva;
  const Tensor htr = colour_histograms(train, ytr), hva = colour_histograms(val, yva);
  const LinearProbe p = fit_linear_probe(htr, ytr, static_cast<int64_t>(train.classes.size()));
  ColourBaseline b;
  b.train_acc = p.train_acc;
  b.val_acc = probe_accuracy(p, hva, yva);
  b.bins = htr.dim(1);
  b.train_images = htr.dim(0);
  b.val_images = hva.dim(0);
  return b;
}

DemoDataset make_demo_dataset(const std::string& root, int classes, int train_per_class, int val_per_class,
                              uint64_t seed) {
  KILN_CHECK(!root.empty(), "make_demo_dataset: empty root path");
  KILN_CHECK(classes >= 1 && classes <= kMaxClasses, "make_demo_dataset: classes must be in [1, ", kMaxClasses,
             "], got ", classes);
  KILN_CHECK(train_per_class >= 0 && val_per_class >= 0 && train_per_class <= 100000 && val_per_class <= 100000,
             "make_demo_dataset: images per class must be in [0, 100000], got train ", train_per_class, ", val ",
             val_per_class);

  const fs::path base(root);
  std::error_code ec;
  const fs::file_status st = fs::status(base, ec);
  if (fs::exists(st)) {
    KILN_CHECK(fs::is_directory(st), "make_demo_dataset: ", root, " exists and is not a directory; not overwriting it");
    const bool empty = fs::is_empty(base, ec);
    KILN_CHECK(!ec, "make_demo_dataset: cannot list ", root, ": ", ec.message());
    KILN_CHECK(empty, "make_demo_dataset: ", root,
               " exists and is not empty; refusing to write the demo dataset into it (choose a new or empty "
               "directory)");
  }

  DemoDataset out;
  out.root = root;
  const char* splits[2] = {"train", "val"};
  const int per_class[2] = {train_per_class, val_per_class};
  for (int s = 0; s < 2; ++s) {
    for (int c = 0; c < classes; ++c) {
      const Recipe& rc = kRecipes[c];
      const fs::path dir = base / splits[s] / rc.name;
      fs::create_directories(dir, ec);
      KILN_CHECK(!ec, "make_demo_dataset: cannot create ", dir.string(), ": ", ec.message());
      for (int i = 0; i < per_class[s]; ++i) {
        int quality = 90;
        const io::Image img = draw_image(rc, seed, s, c, i, &quality);
        io::write_jpeg((dir / file_name(rc.name, i)).string(), img, quality);
      }
    }
  }
  for (int c = 0; c < classes; ++c) out.classes.emplace_back(kRecipes[c].name);
  std::sort(out.classes.begin(), out.classes.end());
  out.train_images = static_cast<int64_t>(classes) * train_per_class;
  out.val_images = static_cast<int64_t>(classes) * val_per_class;
  return out;
}

}  // namespace kiln::app
