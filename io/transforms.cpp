#include "io/transforms.h"

#include <array>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/philox.h"

namespace kiln::io {
namespace {

// Pillow's Resample.c constants: 32-bit accumulators, 8-bit pixels, 2 bits of headroom.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out * 2]: first input index, count
  std::vector<int32_t> k;   // [out * ksize]: fixed-point weights
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1).
Coeffs precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = triangle((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// out: [rows, out_w, ch] from rows [row0, row0 + rows) of src.
void resample_horizontal(const Image& src, int row0, int rows, const Coeffs& c, Image& out) {
  const int ch = src.channels;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.row(row0 + y);
    uint8_t* o = out.row(y);
    for (int xx = 0; xx < out.width; ++xx) {
      const int xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      if (ch == 3) {  // the common case: three sums in one walk over the window
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = in + xmin * 3;
        for (int x = 0; x < xmax; ++x, p += 3) s0 += p[0] * k[x], s1 += p[1] * k[x], s2 += p[2] * k[x];
        o[xx * 3] = clip8(s0), o[xx * 3 + 1] = clip8(s1), o[xx * 3 + 2] = clip8(s2);
        continue;
      }
      for (int cc = 0; cc < ch; ++cc) {
        int32_t ss = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; ++x) ss += in[(x + xmin) * ch + cc] * k[x];
        o[xx * ch + cc] = clip8(ss);
      }
    }
  }
}

// out: [out_h, w, ch]; bounds are relative to src's first row.
void resample_vertical(const Image& src, const Coeffs& c, int row_shift, Image& out) {
  const int n = src.width * src.channels;
  std::vector<int32_t> acc(n);
  for (int yy = 0; yy < out.height; ++yy) {
    const int ymin = c.bounds[yy * 2] - row_shift, ymax = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* in = src.row(ymin + y);
      const int32_t ky = k[y];
      for (int i = 0; i < n; ++i) acc[i] += in[i] * ky;
    }
    uint8_t* o = out.row(yy);
    for (int i = 0; i < n; ++i) o[i] = clip8(acc[i]);
  }
}

Image blank(int w, int h, int ch) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = ch;
  img.pixels.resize(static_cast<size_t>(w) * h * ch);
  return img;
}

}  // namespace

Image resize_bilinear(const Image& src, int width, int height) {
  KILN_CHECK(width > 0 && height > 0, "resize_bilinear: target ", width, "x", height, " must be positive");
  KILN_CHECK(src.width > 0 && src.height > 0, "resize_bilinear: empty source image");
  const bool need_h = width != src.width, need_v = height != src.height;
  if (!need_h && !need_v) return src;
  const Coeffs cv = precompute(src.height, height);
  if (!need_h) {
    Image out = blank(width, height, src.channels);
    resample_vertical(src, cv, 0, out);
    return out;
  }
  const Coeffs ch = precompute(src.width, width);
  // Only the source rows the vertical pass will read go through the horizontal pass.
  const int first = need_v ? cv.bounds[0] : 0;
  const int last = need_v ? cv.bounds[(height - 1) * 2] + cv.bounds[(height - 1) * 2 + 1] : src.height;
  Image tmp = blank(width, last - first, src.channels);
  resample_horizontal(src, first, last - first, ch, tmp);
  if (!need_v) return tmp;
  Image out = blank(width, height, src.channels);
  resample_vertical(tmp, cv, first, out);
  return out;
}

std::pair<int, int> shorter_side_size(int width, int height, int size) {
  KILN_CHECK(width > 0 && height > 0 && size > 0, "shorter_side_size: sizes must be positive, got ", width, "x",
             height, " -> ", size);
  const int64_t longer = width <= height ? int64_t{size} * height / width : int64_t{size} * width / height;
  // An extreme aspect ratio turns a small image into a huge one (11x65473 at a shorter side
  // of 256 is 256x1523735, 1.1 GB): refuse it like a pixel bomb, before allocating.
  const int64_t limit = DecodeOptions{}.max_pixels;
  KILN_CHECK(longer * size <= limit, "resizing a ", width, "x", height, " image to a shorter side of ", size,
             " would give ", longer * size, " pixels, over the limit of ", limit,
             " (aspect ratio ", std::max(width, height) / std::min(width, height), ":1 is too extreme)");
  if (width <= height) return {size, static_cast<int>(longer)};
  return {static_cast<int>(longer), size};
}

Image resize_shorter_side(const Image& src, int size) {
  const auto [w, h] = shorter_side_size(src.width, src.height, size);
  return resize_bilinear(src, w, h);
}

Crop center_crop(int width, int height, int size) {
  KILN_CHECK(width >= size && height >= size, "center_crop: ", size, "x", size, " crop of a ", width, "x", height,
             " image");
  Crop c;
  c.size = size;
  // std::nearbyint rounds halves to even, like Python's round().
  c.top = static_cast<int>(std::nearbyint((height - size) / 2.0));
  c.left = static_cast<int>(std::nearbyint((width - size) / 2.0));
  return c;
}

Crop random_crop(int width, int height, int size, uint64_t seed, uint64_t epoch, uint64_t index, bool allow_flip) {
  KILN_CHECK(width >= size && height >= size, "random_crop: ", size, "x", size, " crop of a ", width, "x", height,
             " image");
  KILN_CHECK(index < (uint64_t{1} << 32) && epoch < (uint64_t{1} << 32), "random_crop: epoch ", epoch,
             " or index ", index, " beyond 2^32");
  // A key of its own, so augmentation never shares numbers with the shuffle or dropout.
  const Philox4 b = philox_block(seed ^ 0xA5A5'1F2E'3D4C'5B6Aull, (epoch << 32) | index);
  const auto below = [](uint32_t bits, int n) { return static_cast<int>((uint64_t{bits} * uint64_t(n)) >> 32); };
  Crop c;
  c.size = size;
  c.top = below(b.v[0], height - size + 1);
  c.left = below(b.v[1], width - size + 1);
  c.flip = allow_flip && (b.v[2] >> 31) != 0;
  return c;
}

namespace {
// Channel i of the network input comes from pixel channel src[i] (BGR swaps 0 and 2).
std::array<int, 3> source_channels(InputConvention convention, const char* what) {
  return preprocessing_for(convention, what).bgr ? std::array<int, 3>{2, 1, 0} : std::array<int, 3>{0, 1, 2};
}

void check_crop(const Image& img, const Crop& crop, const char* what) {
  KILN_CHECK(img.channels == 3, what, ": expected an RGB image, got ", img.channels, " channels");
  KILN_CHECK(crop.top >= 0 && crop.left >= 0 && crop.top + crop.size <= img.height &&
                 crop.left + crop.size <= img.width,
             what, ": crop ", crop.size, " at (", crop.top, ", ", crop.left, ") outside a ", img.width, "x",
             img.height, " image");
}
}  // namespace

std::array<float, 3 * 256> convention_lut(InputConvention convention) {
  // out[c] = (pixel / divisor - mean[c]) / std[c], computed the way torchvision does for its
  // convention (x/255, then (x-m)/s); for the others divisor and std are 1, which is exact.
  const Preprocessing p = preprocessing_for(convention, "convention_lut");
  std::array<float, 3 * 256> lut{};
  for (size_t c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / p.divisor;
      lut[c * 256 + static_cast<size_t>(v)] = (x - p.mean[c]) / p.std[c];
    }
  return lut;
}

void crop_to_input(const Image& img, const Crop& crop, InputConvention convention, float* out) {
  check_crop(img, crop, "crop_to_input");
  const std::array<int, 3> src = source_channels(convention, "crop_to_input");
  const std::array<float, 3 * 256> lut = convention_lut(convention);
  const int s = crop.size;
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = img.row(crop.top + y) + static_cast<size_t>(crop.left) * 3;
    float* o = out + static_cast<size_t>(y) * s * 3;
    for (int x = 0; x < s; ++x) {
      const uint8_t* p = row + static_cast<size_t>(crop.flip ? s - 1 - x : x) * 3;
      o[x * 3 + 0] = lut[static_cast<size_t>(0 * 256 + p[src[0]])];
      o[x * 3 + 1] = lut[static_cast<size_t>(1 * 256 + p[src[1]])];
      o[x * 3 + 2] = lut[static_cast<size_t>(2 * 256 + p[src[2]])];
    }
  }
}

void crop_to_bytes(const Image& img, const Crop& crop, InputConvention convention, uint8_t* out) {
  check_crop(img, crop, "crop_to_bytes");
  const std::array<int, 3> src = source_channels(convention, "crop_to_bytes");
  const int s = crop.size;
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = img.row(crop.top + y) + static_cast<size_t>(crop.left) * 3;
    uint8_t* o = out + static_cast<size_t>(y) * s * 3;
    for (int x = 0; x < s; ++x) {
      const uint8_t* p = row + static_cast<size_t>(crop.flip ? s - 1 - x : x) * 3;
      o[x * 3 + 0] = p[src[0]];
      o[x * 3 + 1] = p[src[1]];
      o[x * 3 + 2] = p[src[2]];
    }
  }
}

void to_convention_bytes(const Image& img, InputConvention convention, uint8_t* out) {
  KILN_CHECK(img.channels == 3, "to_convention_bytes: expected an RGB image, got ", img.channels, " channels");
  const std::array<int, 3> src = source_channels(convention, "to_convention_bytes");
  const size_t pixels = static_cast<size_t>(img.width) * img.height;
  const uint8_t* p = img.pixels.data();
  for (size_t i = 0; i < pixels; ++i, p += 3, out += 3) out[0] = p[src[0]], out[1] = p[src[1]], out[2] = p[src[2]];
}

}  // namespace kiln::io
