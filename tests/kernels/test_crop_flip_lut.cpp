// crop_flip_lut_u8, the loader's device-side crop, flip and conversion: on the CPU it must
// equal io::crop_to_input bit for bit (and so crop_to_bytes + lut_u8); the CUDA backend
// must equal the CPU bit for bit; bad descriptors are refused before anything runs.
#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "core/kiln.h"
#include "io/transforms.h"
#include "tests/support/gpu.h"

using namespace kiln;
using namespace kiln::io;
using Catch::Contains;

namespace {

Image noise(int w, int h, uint32_t salt) {
  Image img;
  img.width = w, img.height = h;
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  uint32_t x = 2463534242u ^ salt;
  for (uint8_t& p : img.pixels) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // xorshift32: every byte value, no pattern
    p = static_cast<uint8_t>(x >> 24);
  }
  return img;
}

// The images back to back in one uint8 atlas (after `lead` unused bytes, so offsets are
// not all zero), channels in the convention's order; offsets[i] is image i's first byte.
Tensor pack(const std::vector<Image>& images, InputConvention c, int64_t lead, std::vector<int64_t>& offsets) {
  int64_t total = lead;
  for (const Image& img : images) offsets.push_back(total), total += static_cast<int64_t>(img.nbytes());
  Tensor atlas = Tensor::zeros(Shape{total}, TensorOptions{DType::u8});
  for (size_t i = 0; i < images.size(); ++i)
    to_convention_bytes(images[i], c, atlas.data<uint8_t>() + offsets[i]);
  return atlas;
}

Tensor table(InputConvention c) {
  const auto t = convention_lut(c);
  return Tensor::from_vector(std::vector<float>(t.begin(), t.end()), Shape{3, 256});
}

Tensor descriptors(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return Tensor::from_vector(flat, Shape{static_cast<int64_t>(rows.size()), 6});
}

// Non-square images, one exactly the crop's size.
const std::vector<Image>& images() {
  static const std::vector<Image> v = {noise(40, 33, 1), noise(29, 50, 2), noise(24, 24, 3), noise(31, 24, 4)};
  return v;
}

// For every image: the four corners, then random_crop's draws, each with and without flip.
std::vector<std::pair<size_t, Crop>> windows(int s) {
  std::vector<std::pair<size_t, Crop>> out;
  for (size_t i = 0; i < images().size(); ++i) {
    const int w = images()[i].width, h = images()[i].height;
    std::vector<Crop> crops = {{0, 0, s}, {h - s, w - s, s}, {0, w - s, s}, {h - s, 0, s}};
    for (uint64_t k = 0; k < 6; ++k) crops.push_back(random_crop(w, h, s, 11, 3, k, false));
    for (Crop c : crops)
      for (bool flip : {false, true}) c.flip = flip, out.emplace_back(i, c);
  }
  return out;
}

}  // namespace

TEST_CASE("crop_flip_lut_u8 on the CPU equals crop_to_input at edges and with flips", "[ops][crop]") {
  const int s = 24;
  for (InputConvention c : {InputConvention::caffe_bgr, InputConvention::torchvision_rgb, InputConvention::tf_rgb}) {
    INFO(convention_name(c));
    std::vector<int64_t> offsets;
    const Tensor atlas = pack(images(), c, 5, offsets);
    const auto win = windows(s);
    std::vector<std::vector<int64_t>> rows;
    std::vector<float> want(win.size() * s * s * 3);
    for (size_t r = 0; r < win.size(); ++r) {
      const auto& [i, crop] = win[r];
      const Image& img = images()[i];
      rows.push_back({offsets[i], img.height, img.width, crop.top, crop.left, crop.flip ? 1 : 0});
      crop_to_input(img, crop, c, want.data() + r * s * s * 3);
    }
    const Tensor out = crop_flip_lut_u8(atlas, descriptors(rows), table(c), s);
    REQUIRE(out.shape() == Shape{static_cast<int64_t>(win.size()), s, s, 3});
    REQUIRE(out.dtype() == DType::f32);
    const std::vector<float> got = out.to_vector<float>();
    for (size_t r = 0; r < win.size(); ++r) {
      INFO("image " << win[r].first << ", crop at (" << win[r].second.top << ", " << win[r].second.left
                    << "), flip " << win[r].second.flip);
      REQUIRE(std::memcmp(got.data() + r * s * s * 3, want.data() + r * s * s * 3, s * s * 3 * sizeof(float)) == 0);
    }
  }
  // No rows: an empty batch, nothing launched.
  std::vector<int64_t> offsets;
  const Tensor atlas = pack(images(), InputConvention::tf_rgb, 0, offsets);
  const Tensor none = crop_flip_lut_u8(atlas, Tensor::zeros(Shape{0, 6}, TensorOptions{DType::i64}),
                                       table(InputConvention::tf_rgb), s);
  CHECK(none.shape() == Shape{0, s, s, 3});
}

TEST_CASE("crop_flip_lut_u8 refuses windows outside their image and wrong dtypes, naming the op",
          "[ops][crop][errors]") {
  const Image& img = images()[0];  // 40 wide, 33 high
  std::vector<int64_t> offsets;
  const Tensor atlas = pack({img}, InputConvention::tf_rgb, 7, offsets);
  const Tensor lut = table(InputConvention::tf_rgb);
  const int64_t off = offsets[0], h = 33, w = 40, s = 24;
  const auto call = [&](std::vector<int64_t> row) { return crop_flip_lut_u8(atlas, descriptors({row}), lut, s); };
  REQUIRE_NOTHROW(call({off, h, w, h - s, w - s, 1}));
  REQUIRE_THROWS_WITH(call({off, h, w, h - s + 1, 0, 0}),
                      Contains("crop_flip_lut_u8") && Contains("outside its image of height 33, width 40"));
  REQUIRE_THROWS_WITH(call({off, h, w, 0, w - s + 1, 1}),
                      Contains("crop_flip_lut_u8") && Contains("outside its image"));
  REQUIRE_THROWS_WITH(call({off, h, w, -1, 0, 0}), Contains("crop_flip_lut_u8") && Contains("outside its image"));
  REQUIRE_THROWS_WITH(call({off, h, w, 0, -1, 0}), Contains("crop_flip_lut_u8") && Contains("outside its image"));
  // The image itself must lie inside the atlas.
  REQUIRE_THROWS_WITH(call({off + 1, h, w, 0, 0, 0}), Contains("crop_flip_lut_u8") && Contains("inside the atlas"));
  REQUIRE_THROWS_WITH(call({-1, h, w, 0, 0, 0}), Contains("crop_flip_lut_u8") && Contains("inside the atlas"));
  REQUIRE_THROWS_WITH(call({off, int64_t{1} << 40, int64_t{1} << 40, 0, 0, 0}),
                      Contains("crop_flip_lut_u8") && Contains("inside the atlas"));
  REQUIRE_THROWS_WITH(call({off, h, w, 0, 0, 2}), Contains("crop_flip_lut_u8") && Contains("flip 2"));
  REQUIRE_THROWS_WITH(call({off, 0, w, 0, 0, 0}), Contains("crop_flip_lut_u8") && Contains("positive"));
  // A later row is checked too, and named.
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, descriptors({{off, h, w, 0, 0, 0}, {off, h, w, 20, 0, 0}}), lut, s),
                      Contains("crop_flip_lut_u8") && Contains("row 1"));
  // Dtypes and shapes.
  const Tensor desc = descriptors({{off, h, w, 0, 0, 0}});
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas.to(DType::f32), desc, lut, s),
                      Contains("crop_flip_lut_u8") && Contains("uint8") && Contains("float32"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas.reshape(Shape{1, atlas.numel()}), desc, lut, s),
                      Contains("crop_flip_lut_u8") && Contains("atlas"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, desc.to(DType::i32), lut, s),
                      Contains("crop_flip_lut_u8") && Contains("int64") && Contains("int32"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, Tensor::zeros(Shape{1, 5}, TensorOptions{DType::i64}), lut, s),
                      Contains("crop_flip_lut_u8") && Contains("[1, 5]"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, desc, Tensor::zeros(Shape{3, 255}), s),
                      Contains("crop_flip_lut_u8") && Contains("[3, 255]"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, desc, lut.to(DType::bf16), s),
                      Contains("crop_flip_lut_u8") && Contains("float32"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, desc, lut, 0), Contains("crop_flip_lut_u8") && Contains("crop"));
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(Tensor(), desc, lut, s), Contains("crop_flip_lut_u8") && Contains("undefined"));
}

TEST_CASE("crop_flip_lut_u8 on the GPU equals the CPU bit for bit", "[cuda][ops][crop]") {
  KILN_SKIP_WITHOUT_GPU();
  const Device gpu = Device::cuda(0);
  // The test images, then a batch of VGG-sized crops (many blocks, grid-stride).
  for (const int s : {24, 224}) {
    INFO("crop " << s);
    std::vector<Image> imgs = images();
    if (s == 224) imgs = {noise(256, 341, 5), noise(300, 256, 6), noise(224, 224, 7)};
    std::vector<int64_t> offsets;
    const Tensor atlas = pack(imgs, InputConvention::caffe_bgr, 3, offsets);
    std::vector<std::vector<int64_t>> rows;
    for (uint64_t k = 0; k < 64; ++k) {
      const size_t i = k % imgs.size();
      const Crop c = random_crop(imgs[i].width, imgs[i].height, s, 5, 0, k, true);
      rows.push_back({offsets[i], imgs[i].height, imgs[i].width, c.top, c.left, c.flip ? 1 : 0});
    }
    const Tensor desc = descriptors(rows);
    const Tensor lut = table(InputConvention::caffe_bgr);
    const std::vector<float> cpu = crop_flip_lut_u8(atlas, desc, lut, s).to_vector<float>();
    const Tensor out = crop_flip_lut_u8(atlas.to(gpu), desc, lut.to(gpu), s);
    CHECK(out.device() == gpu);
    const std::vector<float> got = out.to_vector<float>();
    REQUIRE(got.size() == cpu.size());
    CHECK(std::memcmp(got.data(), cpu.data(), cpu.size() * sizeof(float)) == 0);
  }
  // desc must stay on the host, where it is checked.
  std::vector<int64_t> offsets;
  const Tensor atlas = pack(images(), InputConvention::tf_rgb, 0, offsets).to(gpu);
  const Tensor desc = descriptors({{0, 33, 40, 0, 0, 0}});
  REQUIRE_THROWS_WITH(crop_flip_lut_u8(atlas, desc.to(gpu), table(InputConvention::tf_rgb).to(gpu), 24),
                      Contains("crop_flip_lut_u8") && Contains("host"));
}
