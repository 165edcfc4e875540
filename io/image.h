// Decoding image files (JPEG, PNG, BMP through stb_image) into 8-bit RGB. stb_image only
// sees a file after kiln has walked its whole structure (io/image_format.cpp): every JPEG
// segment and Huffman table, every PNG chunk and its CRC, the BMP headers against the file
// size, and a size limit read from the header before anything is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::io {

// An 8-bit image, rows top to bottom, channels interleaved: pixels: [height, width, channels].
struct Image {
  int width = 0;
  int height = 0;
  int channels = 3;
  std::vector<uint8_t> pixels;

  // Pixel bytes held: what the decode cache and the loader's device atlas count.
  size_t nbytes() const { return pixels.size(); }
  // Row y's first byte; y is not range-checked.
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  // The same, read-only.
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * channels; }
};

// Limits checked before any pixel is decoded; the loader passes its own (LoaderOptions::decode).
struct DecodeOptions {
  // Images with more pixels than this (width * height, read from the header) are refused
  // before any pixel is decoded: a corrupt or hostile header cannot make us allocate gigabytes.
  int64_t max_pixels = int64_t{64} << 20;
};

// An image file's size and channels, from kiln's own parse of its header.
struct ImageInfo {
  int width = 0;
  int height = 0;
  int channels = 0;  // as stored: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
};
// Checks a file's whole structure without decoding pixels (what decode_image checks before
// decoding) and returns its size; throws kiln::Error naming the file and the reason.
ImageInfo read_image_info(const std::string& path, const DecodeOptions& opt = {});
// The same for bytes in memory; `name` is used in error messages.
ImageInfo check_image(const std::vector<uint8_t>& bytes, const std::string& name, const DecodeOptions& opt = {});

// A file's bytes, read whole (what decode_image reads); throws kiln::Error naming the file
// when it is a directory or cannot be opened or read.
std::vector<uint8_t> read_image_bytes(const std::string& path);

// Decodes a JPEG (baseline or progressive), PNG (1-16 bit, palette, grey, alpha) or BMP
// file to 8-bit RGB (alpha dropped, grey replicated, 16-bit scaled to 8). Throws
// kiln::Error naming the file and the reason when it cannot.
Image decode_image(const std::string& path, const DecodeOptions& opt = {});
// The same from bytes in memory; `name` is used in error messages.
Image decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& name, const DecodeOptions& opt = {});

// Writers (stb_image_write), for tests, benchmarks and debugging output. RGB or grey.
// quality: JPEG quality 1..100. Throw kiln::Error when the file cannot be written.
void write_png(const std::string& path, const Image& img);
void write_jpeg(const std::string& path, const Image& img, int quality = 90);
void write_bmp(const std::string& path, const Image& img);

}  // namespace kiln::io
