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
#include "io/image_format.h"

// io/stb.c: caps each allocation stb_image makes on this thread (0: no cap).
extern "C" void kiln_stbi_set_allocation_cap(size_t bytes);

namespace kiln::io {
namespace {

// Sets stb_image's per-allocation cap for one decode on this thread, and lifts it after.
struct StbAllocationCap {
  explicit StbAllocationCap(size_t bytes) { kiln_stbi_set_allocation_cap(bytes); }
  ~StbAllocationCap() { kiln_stbi_set_allocation_cap(0); }
  StbAllocationCap(const StbAllocationCap&) = delete;
  StbAllocationCap& operator=(const StbAllocationCap&) = delete;
};

}  // namespace

std::vector<uint8_t> read_image_bytes(const std::string& path) {
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

namespace {

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

ImageInfo read_image_info(const std::string& path, const DecodeOptions& opt) {
  const std::vector<uint8_t> b = read_image_bytes(path);
  return check_image(b, path, opt);
}

ImageInfo check_image(const std::vector<uint8_t>& b, const std::string& name, const DecodeOptions& opt) {
  KILN_CHECK(!b.empty(), name, ": empty file (0 bytes)");
  KILN_CHECK(b.size() < (size_t{1} << 31), name, ": file of ", b.size(), " bytes is too large to decode");
  return detail::check_image_structure(b.data(), b.size(), detail::sniff_image_format(b.data(), b.size()), name,
                                       opt.max_pixels);
}

Image decode_image(const std::string& path, const DecodeOptions& opt) {
  return decode_image_bytes(read_image_bytes(path), path, opt);
}

Image decode_image_bytes(const std::vector<uint8_t>& b, const std::string& name, const DecodeOptions& opt) {
  // stb_image sees only files whose whole structure kiln has walked (io/image_format.cpp).
  const ImageInfo info = check_image(b, name, opt);
  // The most any one buffer of a legitimate decode needs: 16 bytes a pixel covers a
  // 16-bit RGBA PNG's inflated data twice over and every JPEG component and coefficient
  // buffer; more means the compressed data inflates past what the header declares.
  const size_t cap = size_t{16} * static_cast<size_t>(info.width) * static_cast<size_t>(info.height) + (size_t{16} << 20);
  int w = 0, h = 0, c = 0;
  std::unique_ptr<stbi_uc, StbFree> data;
  {
    StbAllocationCap guard(cap);
    data.reset(stbi_load_from_memory(b.data(), static_cast<int>(b.size()), &w, &h, &c, 3));
  }
  if (data == nullptr) {
    const std::string why = stbi_failure_reason();
    KILN_CHECK(why != "outofmem", name, ": cannot decode (the decoder needed a buffer larger than ", cap,
               " bytes, more than a ", info.width, "x", info.height,
               " image can need: its compressed data inflates past its declared size)");
    KILN_FAIL(name, ": cannot decode (", why, ")");
  }
  KILN_CHECK(w == info.width && h == info.height, name, ": decoded as ", w, "x", h, " but its header declares ",
             info.width, "x", info.height);
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
