// Internal to io/: the structure of a JPEG, PNG or BMP file, walked and checked by kiln
// before any decoder sees the bytes. stb_image trusts what a file declares (a JPEG Huffman
// table of 4080 codes is written into 256 slots), so every length, count and table a
// decoder will act on is checked here first, and the image size comes from kiln's own
// parse (the pixel limit is enforced before stb_image allocates anything).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "io/image.h"

namespace kiln::io::detail {

// The formats kiln decodes, told apart by their first bytes.
enum class ImageFormat { jpeg, png, bmp, unknown };
ImageFormat sniff_image_format(const uint8_t* bytes, size_t size);

// Walks every segment (JPEG), chunk (PNG) or header (BMP) of the file and returns its size
// and stored channel count. Throws kiln::Error naming `name` and what is wrong: truncation,
// impossible lengths or counts, unsupported variants, or more than `max_pixels` pixels
// (checked as soon as the header declares the size). The format must not be unknown.
ImageInfo check_image_structure(const uint8_t* bytes, size_t size, ImageFormat format, const std::string& name,
                                int64_t max_pixels);

}  // namespace kiln::io::detail
