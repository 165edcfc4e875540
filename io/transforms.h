// The image transforms of the classic ImageNet recipe: shorter side to 256 (PIL's
// antialiased bilinear, reproduced exactly), a 224 crop (random for training, central for
// evaluation), an optional horizontal flip, and the input convention of the weights.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "io/convention.h"
#include "io/image.h"

namespace kiln::io {

// The largest input crop (image size) kiln takes: a 16384 x 16384 RGB crop is 3 GiB as
// floats. The loader, checkpoints and single-image loading check against it.
inline constexpr int64_t kMaxImageSize = 16384;

// Resamples to width x height with PIL's BILINEAR filter (Image.resize in Pillow 9): a
// triangle whose support grows with the shrink factor (antialiased when shrinking),
// separable, horizontal pass first, 8-bit fixed-point coefficients with 22 fraction bits.
Image resize_bilinear(const Image& src, int width, int height);

// The size torchvision.transforms.Resize(size) gives: shorter side `size`, longer side
// int(size * long / short).
std::pair<int, int> shorter_side_size(int width, int height, int size);
// Resizes so the shorter side is `size` (returns a copy when it already is).
Image resize_shorter_side(const Image& src, int size);

// A square crop of `size` at (top, left), mirrored left-right when flip is set.
struct Crop {
  int top = 0;
  int left = 0;
  int size = 0;
  bool flip = false;
};
// torchvision.transforms.CenterCrop: offsets round((extent - size) / 2), halves to even.
Crop center_crop(int width, int height, int size);
// A uniformly random crop position and (when allow_flip) a coin-flip mirror, drawn from
// Philox at (seed, epoch, index) alone, so it does not depend on threads or order.
Crop random_crop(int width, int height, int size, uint64_t seed, uint64_t epoch, uint64_t index, bool allow_flip);

// Writes the crop of img (which must contain it), converted per the convention (not
// unknown: that is a kiln::Error, as in the three functions below).
// out: [size, size, 3] float32, channels in the convention's order.
void crop_to_input(const Image& img, const Crop& crop, InputConvention convention, float* out);

// The same crop as bytes, channels already in the convention's order: with
// convention_lut() and kiln::lut_u8 it gives crop_to_input's values bit for bit, and lets
// the conversion to float run on the device (a quarter of the bytes to copy).
void crop_to_bytes(const Image& img, const Crop& crop, InputConvention convention, uint8_t* out);

// The whole image as bytes with channels in the convention's order (what crop_to_bytes
// copies from): the layout kiln::crop_flip_lut_u8 reads from its atlas.
// out: [height, width, 3] uint8.
void to_convention_bytes(const Image& img, InputConvention convention, uint8_t* out);

// The convention as a table [3 channels][256 pixel values] of network inputs.
std::array<float, 3 * 256> convention_lut(InputConvention convention);

}  // namespace kiln::io
