// Hostile image files: kiln's structure checks (io/image_format.cpp) refuse them with a
// reason before stb_image sees a byte. The reproducers in fuzz/regressions/image/ are the
// fuzzer's and the issue tracker's findings; the seeds in fuzz/corpus/image/ must all decode.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/image.h"
#include "io/transforms.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::io;

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string decode_error(const std::vector<uint8_t>& bytes, const DecodeOptions& opt = {}) {
  try {
    decode_image_bytes(bytes, "test.img", opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> files_in(const std::string& rel) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(test::source_path(rel))) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

void put_be32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// The CRC of a PNG chunk (type + data), so a test can forge a chunk that passes the CRC check.
uint32_t png_crc(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

}  // namespace

TEST_CASE("hostile images: every seed of the fuzz corpus decodes, and its header agrees", "[images][hostile]") {
  const std::vector<std::string> seeds = files_in("fuzz/corpus/image");
  REQUIRE(seeds.size() >= 20);
  for (const std::string& path : seeds) {
    INFO(path);
    const ImageInfo info = read_image_info(path);
    const Image img = decode_image(path);
    CHECK((img.width == info.width && img.height == info.height));
  }
}

TEST_CASE("hostile images: every reproducer in fuzz/regressions/image is refused with a reason", "[images][hostile]") {
  const std::vector<std::string> files = files_in("fuzz/regressions/image");
  REQUIRE(!files.empty());
  for (const std::string& path : files) {
    INFO(path);
    // As the loader takes a file: decode, then resize to its default shorter side.
    std::string msg;
    try {
      (void)resize_shorter_side(decode_image_bytes(read_bytes(path), "test.img"), 256);
    } catch (const Error& e) {
      msg = e.what();
    }
    CHECK_THAT(msg, Catch::Contains("test.img: ") || Catch::Contains("too extreme"));
  }
  // Those written by hand, with the reason each must give.
  CHECK_THAT(decode_error(read_bytes(test::source_path("fuzz/regressions/image/jpeg-dht-300-codes.jpg"))),
             Catch::Contains("declares 300 codes; a table holds at most 256"));
  CHECK_THAT(decode_error(read_bytes(test::source_path("fuzz/regressions/image/bmp-height-int-min.bmp"))),
             Catch::Contains("13x2147483648 = 27917287424 pixels exceeds the limit"));
  // Found by fuzz_image as a "slow unit": 617 bytes of sequential JPEG that declares
  // 65497x7 and codes its one component in three scans, each a full decode in stb.
  CHECK_THAT(decode_error(read_bytes(test::source_path("fuzz/regressions/image/jpeg-sequential-component-rescanned.jpg"))),
             Catch::Contains("is coded in a second scan"));
  // 64 KiB of PNG data that inflates to 64 MiB for a 100x100 image: stb_image would grow its
  // buffer to fit; kiln caps each of its allocations by the declared size.
  CHECK_THAT(decode_error(read_bytes(test::source_path("fuzz/regressions/image/png-inflate-bomb-64MiB.png"))),
             Catch::Contains("inflates past its declared size"));
}

TEST_CASE("hostile images: an extreme aspect ratio is refused before resizing, not after", "[images][hostile]") {
  // Found by fuzz_image (a timeout in the resize): a valid 11x65473 JPEG, well within the
  // pixel limit, that resizing to the loader's shorter side of 256 would make 256x1523735.
  const Image img = decode_image(test::source_path("fuzz/regressions/image/jpeg-11x65473-aspect-ratio.jpg"));
  CHECK((img.width == 11 && img.height == 65473));
  CHECK_THROWS_WITH(resize_shorter_side(img, 256),
                    Catch::Contains("11x65473 image to a shorter side of 256 would give 390076160 pixels"));
  CHECK(resize_shorter_side(img, 16).height == 95233);  // small enough: still resized
}

TEST_CASE("hostile images: a PNG's size comes from kiln's own header parse, limit and all", "[images][hostile]") {
  std::vector<uint8_t> png = read_bytes(test::source_path("fuzz/corpus/image/rgb.png"));
  put_be32(png, 16, 40000000);  // IHDR width: larger than stb_image's own bound (2^24)
  put_be32(png, 20, 3);
  put_be32(png, 29, png_crc(&png[12], 17));
  CHECK_THAT(decode_error(png), Catch::Contains("40000000x3 = 120000000 pixels exceeds the limit of 67108864"));
  put_be32(png, 16, 13);
  put_be32(png, 20, 9);
  png[24] = 3;  // bit depth 3 is never valid
  put_be32(png, 29, png_crc(&png[12], 17));
  CHECK_THAT(decode_error(png), Catch::Contains("colour type 2 with 3-bit samples"));
}

TEST_CASE("hostile images: JPEG segments are checked before the decoder acts on them", "[images][hostile]") {
  const std::vector<uint8_t> jpg = read_bytes(test::source_path("fuzz/corpus/image/baseline_444.jpg"));
  auto find_marker = [&](const std::vector<uint8_t>& b, uint8_t m) {  // b.size() when absent
    for (size_t i = 2; i + 1 < b.size(); ++i)
      if (b[i] == 0xFF && b[i + 1] == m) return i;
    return b.size();
  };
  std::vector<uint8_t> b = jpg;
  const size_t sof = find_marker(b, 0xC0);
  b[sof + 4] = 12;  // sample precision
  CHECK_THAT(decode_error(b), Catch::Contains("12-bit samples"));

  b = jpg;  // a DHT segment whose length runs past the end of the file
  const size_t dht = find_marker(b, 0xC4);
  b[dht + 2] = 0xFF;
  CHECK_THAT(decode_error(b), Catch::Contains("truncated JPEG (segment 0xC4"));

  b = jpg;  // drop every DHT segment: the scan then uses undefined Huffman tables
  for (size_t at; (at = find_marker(b, 0xC4)) < find_marker(b, 0xDA);) {
    const size_t len = (size_t{b[at + 2]} << 8) | b[at + 3];
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + 2 + len));
  }
  CHECK_THAT(decode_error(b), Catch::Contains("Huffman table that is not defined"));

  b = jpg;
  b[find_marker(b, 0xC0) + 1] = 0xC9;  // arithmetic coding
  CHECK_THAT(decode_error(b), Catch::Contains("arithmetic-coded JPEGs are not decoded"));
}

TEST_CASE("hostile images: BMP headers are checked against the file", "[images][hostile]") {
  const std::vector<uint8_t> bmp = read_bytes(test::source_path("fuzz/corpus/image/rgb.bmp"));
  std::vector<uint8_t> b(bmp.begin(), bmp.end() - 10);
  CHECK_THAT(decode_error(b), Catch::Contains("truncated BMP"));
  b = bmp;
  b[10] = 200;  // pixel data offset past the headers
  CHECK_THAT(decode_error(b), Catch::Contains("unexplained bytes between the header and the pixels"));
  b = bmp;
  b[30] = 1;  // RLE compression
  CHECK_THAT(decode_error(b), Catch::Contains("compression 1"));
}
