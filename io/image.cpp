#include "io/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace kiln::io {
namespace {

enum class Format { jpeg, png, bmp, unknown };

Format sniff(const std::vector<uint8_t>& b) {
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return Format::jpeg;
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) return Format::png;
  if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') return Format::bmp;
  return Format::unknown;
}

std::vector<uint8_t> read_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KILN_CHECK(!fs::is_directory(path, ec), path, ": is a directory, not an image file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  KILN_CHECK(f != nullptr, path, ": cannot open (", std::strerror(errno), ")");
  std::vector<uint8_t> bytes;
  std::array<uint8_t, 1 << 16> buf;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f.get());
    bytes.insert(bytes.end(), buf.data(), buf.data() + n);
    if (n < buf.size()) {
      KILN_CHECK(!std::ferror(f.get()), path, ": read error (", std::strerror(errno), ")");
      break;
    }
  }
  return bytes;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint32_t crc32(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// stb_image skips PNG CRCs; a flipped bit in the compressed data could otherwise decode
// to a plausible but wrong image.
void check_png_chunks(const std::vector<uint8_t>& b, const std::string& name) {
  size_t pos = 8;
  for (;;) {
    KILN_CHECK(pos + 12 <= b.size(), name, ": truncated PNG (file ends at byte ", b.size(), " before the IEND chunk)");
    const uint32_t len = be32(&b[pos]);
    const std::string type(reinterpret_cast<const char*>(&b[pos + 4]), 4);
    KILN_CHECK(len <= b.size() && pos + 12 + len <= b.size(), name, ": truncated PNG (chunk '", type, "' at byte ",
               pos, " declares ", len, " bytes, file has ", b.size());
    const uint32_t stored = be32(&b[pos + 8 + len]);
    const uint32_t actual = crc32(&b[pos + 4], len + 4);
    KILN_CHECK(stored == actual, name, ": corrupt PNG (CRC mismatch in chunk '", type, "' at byte ", pos, ")");
    pos += 12 + len;
    if (type == "IEND") return;
  }
}

// stb_image pads a truncated entropy-coded scan with zeros and reports success; a JPEG
// whose scan data has no end-of-image marker after it is truncated.
void check_jpeg_complete(const std::vector<uint8_t>& b, const std::string& name) {
  size_t pos = 2;
  while (pos + 4 <= b.size()) {
    KILN_CHECK(b[pos] == 0xFF, name, ": corrupt JPEG (expected a marker at byte ", pos, ")");
    const uint8_t m = b[pos + 1];
    if (m == 0xFF) { ++pos; continue; }  // fill byte
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) { pos += 2; continue; }
    KILN_CHECK(m != 0xD9, name, ": corrupt JPEG (end-of-image before any scan)");
    const size_t len = (size_t{b[pos + 2]} << 8) | b[pos + 3];
    if (m == 0xDA) {  // start of scan: the rest is entropy data and later scans
      for (size_t i = pos + 2 + len; i + 1 < b.size(); ++i)
        if (b[i] == 0xFF && b[i + 1] == 0xD9) return;
      KILN_FAIL(name, ": truncated JPEG (no end-of-image marker after the scan data; file is ", b.size(), " bytes)");
    }
    pos += 2 + len;
  }
  KILN_FAIL(name, ": truncated JPEG (file ends at byte ", b.size(), " before the image data)");
}

struct StbFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};

void check_writable(const Image& img, const char* what) {
  KILN_CHECK(img.width > 0 && img.height > 0 && (img.channels == 1 || img.channels == 3) &&
                 img.pixels.size() == static_cast<size_t>(img.width) * img.height * img.channels,
             what, ": expected a non-empty grey or RGB image with matching pixel data, got ", img.width, "x",
             img.height, "x", img.channels, " with ", img.pixels.size(), " bytes");
}

}  // namespace

ImageInfo read_image_info(const std::string& path) {
  const std::vector<uint8_t> b = read_file(path);
  KILN_CHECK(!b.empty(), path, ": empty file (0 bytes)");
  ImageInfo info;
  KILN_CHECK(stbi_info_from_memory(b.data(), static_cast<int>(b.size()), &info.width, &info.height, &info.channels),
             path, ": cannot read the image header (", stbi_failure_reason(), ")");
  return info;
}

Image decode_image(const std::string& path, const DecodeOptions& opt) {
  return decode_image_bytes(read_file(path), path, opt);
}

Image decode_image_bytes(const std::vector<uint8_t>& b, const std::string& name, const DecodeOptions& opt) {
  KILN_CHECK(!b.empty(), name, ": empty file (0 bytes)");
  KILN_CHECK(b.size() < (size_t{1} << 31), name, ": file of ", b.size(), " bytes is too large to decode");
  const Format format = sniff(b);
  KILN_CHECK(format != Format::unknown, name, ": not a JPEG, PNG or BMP image (unrecognised first bytes)");
  const int n = static_cast<int>(b.size());
  int w = 0, h = 0, c = 0;
  KILN_CHECK(stbi_info_from_memory(b.data(), n, &w, &h, &c), name, ": cannot read the image header (",
             stbi_failure_reason(), ")");
  const int64_t pixels = int64_t{w} * h;
  KILN_CHECK(pixels <= opt.max_pixels, name, ": ", w, "x", h, " = ", pixels, " pixels exceeds the limit of ",
             opt.max_pixels, " (DecodeOptions::max_pixels); not decoded");
  if (format == Format::png) check_png_chunks(b, name);
  if (format == Format::jpeg) check_jpeg_complete(b, name);
  std::unique_ptr<stbi_uc, StbFree> data(stbi_load_from_memory(b.data(), n, &w, &h, &c, 3));
  KILN_CHECK(data != nullptr, name, ": cannot decode (", stbi_failure_reason(), ")");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(data.get(), data.get() + static_cast<size_t>(w) * h * 3);
  return img;
}

void write_png(const std::string& path, const Image& img) {
  check_writable(img, "write_png");
  KILN_CHECK(stbi_write_png(path.c_str(), img.width, img.height, img.channels, img.pixels.data(),
                            img.width * img.channels),
             path, ": cannot write PNG");
}

void write_jpeg(const std::string& path, const Image& img, int quality) {
  check_writable(img, "write_jpeg");
  KILN_CHECK(stbi_write_jpg(path.c_str(), img.width, img.height, img.channels, img.pixels.data(), quality), path,
             ": cannot write JPEG");
}

void write_bmp(const std::string& path, const Image& img) {
  check_writable(img, "write_bmp");
  KILN_CHECK(stbi_write_bmp(path.c_str(), img.width, img.height, img.channels, img.pixels.data()), path,
             ": cannot write BMP");
}

}  // namespace kiln::io
