// kiln's own walk over JPEG, PNG and BMP structure (see image_format.h for why). Each check
// mirrors a value stb_image later acts on: a length it skips by, a count it copies, a table
// it indexes; anything stb would refuse anyway is refused here with a clearer message.
#include "io/image_format.h"

#include <array>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace kiln::io::detail {
namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint32_t le16(const uint8_t* p) { return uint32_t{p[0]} | (uint32_t{p[1]} << 8); }
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%02X", v);
  return buf;
}

void check_pixel_limit(int64_t w, int64_t h, int64_t max_pixels, const std::string& name) {
  const int64_t pixels = w * h;
  KILN_CHECK(pixels <= max_pixels, name, ": ", w, "x", h, " = ", pixels, " pixels exceeds the limit of ", max_pixels,
             " (DecodeOptions::max_pixels); not decoded");
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

// ---- JPEG ----

// The most scans kiln lets stb decode (libjpeg-turbo's own fuzzers stop at 500).
constexpr int kMaxJpegScans = 100;

// What the segments before a scan defined; a scan may only use what is defined.
struct JpegState {
  bool frame = false, progressive = false, scanned = false;
  int components = 0, scans = 0;
  std::array<bool, 4> component_scanned{};
  std::array<int, 4> ids{}, quant{};
  std::array<bool, 4> dc_table{}, ac_table{}, quant_table{};
  ImageInfo info;
};

// DHT: one or more tables, each 1 + 16 count bytes + its symbols. stb_image writes the
// symbols into 256 slots and builds codes from the counts without checking either (the
// out-of-bounds write of stb issues 1289/1291).
void check_dht(const uint8_t* p, size_t len, JpegState& st, const std::string& name, size_t at) {
  size_t off = 0;
  while (off < len) {
    KILN_CHECK(off + 17 <= len, name, ": corrupt JPEG (Huffman table segment at byte ", at, " ends inside a table)");
    const int cls = p[off] >> 4, slot = p[off] & 15;
    KILN_CHECK(cls <= 1 && slot <= 3, name, ": corrupt JPEG (Huffman table at byte ", at, " has class ", cls,
               " and slot ", slot, "; at most 1 and 3)");
    uint32_t total = 0, code = 0;
    for (int bits = 1; bits <= 16; ++bits) {
      const uint32_t count = p[off + bits];
      total += count;
      code = (code << 1) + count;  // codes of length `bits` must fit in `bits` bits
      KILN_CHECK(code <= (1u << bits), name, ": corrupt JPEG (Huffman table at byte ", at,
                 " declares more codes of length ", bits, " than fit)");
    }
    KILN_CHECK(total <= 256, name, ": corrupt JPEG (Huffman table at byte ", at, " declares ", total,
               " codes; a table holds at most 256)");
    KILN_CHECK(off + 17 + total <= len, name, ": corrupt JPEG (Huffman table at byte ", at, " declares ", total,
               " codes but its segment holds ", len - off - 17);
    (cls == 0 ? st.dc_table : st.ac_table)[static_cast<size_t>(slot)] = true;
    off += 17 + total;
  }
}

void check_dqt(const uint8_t* p, size_t len, JpegState& st, const std::string& name, size_t at) {
  size_t off = 0;
  while (off < len) {
    const int precision = p[off] >> 4, slot = p[off] & 15;
    KILN_CHECK(precision <= 1 && slot <= 3, name, ": corrupt JPEG (quantisation table at byte ", at,
               " has precision ", precision, " and slot ", slot, "; at most 1 and 3)");
    const size_t size = 1 + 64 * static_cast<size_t>(precision + 1);
    KILN_CHECK(off + size <= len, name, ": corrupt JPEG (quantisation table segment at byte ", at,
               " ends inside a table)");
    st.quant_table[static_cast<size_t>(slot)] = true;
    off += size;
  }
}

void check_sof(const uint8_t* p, size_t len, JpegState& st, const std::string& name, size_t at, int64_t max_pixels) {
  KILN_CHECK(!st.frame, name, ": corrupt JPEG (a second frame header at byte ", at, ")");
  KILN_CHECK(len >= 6, name, ": corrupt JPEG (frame header at byte ", at, " is ", len, " bytes)");
  KILN_CHECK(p[0] == 8, name, ": unsupported JPEG (", int{p[0]}, "-bit samples; only 8-bit JPEGs are decoded)");
  const uint32_t h = be16(p + 1), w = be16(p + 3), n = p[5];
  KILN_CHECK(w > 0 && h > 0, name, ": unsupported JPEG (frame header declares ", w, "x", h,
             "; a height given later in a DNL segment is not supported)");
  check_pixel_limit(w, h, max_pixels, name);
  KILN_CHECK(n == 1 || n == 3 || n == 4, name, ": unsupported JPEG (", n, " colour components; 1, 3 or 4 are decoded)");
  KILN_CHECK(len == 6 + 3 * n, name, ": corrupt JPEG (frame header at byte ", at, " is ", len, " bytes for ", n,
             " components)");
  for (uint32_t i = 0; i < n; ++i) {
    const uint8_t* c = p + 6 + 3 * i;
    const int hs = c[1] >> 4, vs = c[1] & 15;
    KILN_CHECK(hs >= 1 && hs <= 4 && vs >= 1 && vs <= 4 && c[2] <= 3, name, ": corrupt JPEG (component ", i,
               " has sampling ", hs, "x", vs, " and quantisation slot ", int{c[2]}, ")");
    st.ids[i] = c[0];
    st.quant[i] = c[2];
  }
  st.frame = true;
  st.components = static_cast<int>(n);
  st.info = {static_cast<int>(w), static_cast<int>(h), n >= 3 ? 3 : 1};
}

void check_sos(const uint8_t* p, size_t len, JpegState& st, const std::string& name, size_t at) {
  KILN_CHECK(st.frame, name, ": corrupt JPEG (scan at byte ", at, " before the frame header)");
  const uint32_t n = len >= 1 ? p[0] : 0;
  KILN_CHECK(n >= 1 && n <= static_cast<uint32_t>(st.components) && len == 4 + 2 * n, name,
             ": corrupt JPEG (scan header at byte ", at, " lists ", n, " components in ", len, " bytes)");
  const uint8_t* sel = p + 1 + 2 * n;  // Ss, Se, Ah/Al
  const int ss = sel[0], se = sel[1], ah = sel[2] >> 4, al = sel[2] & 15;
  if (st.progressive) {
    KILN_CHECK(ss <= 63 && se <= 63 && ss <= se && ah <= 13 && al <= 13, name,
               ": corrupt JPEG (progressive scan at byte ", at, " has spectral range ", ss, "..", se,
               " and approximation ", ah, "/", al, ")");
    KILN_CHECK(ss == 0 || n == 1, name, ": corrupt JPEG (progressive AC scan at byte ", at, " codes ", n,
               " components; AC scans code one)");
  } else {
    KILN_CHECK(ss == 0 && ah == 0 && al == 0, name, ": corrupt JPEG (baseline scan at byte ", at,
               " has progressive parameters)");
  }
  for (uint32_t i = 0; i < n; ++i) {
    const int id = p[1 + 2 * i], dc = p[2 + 2 * i] >> 4, ac = p[2 + 2 * i] & 15;
    int k = 0;
    while (k < st.components && st.ids[static_cast<size_t>(k)] != id) ++k;
    KILN_CHECK(k < st.components, name, ": corrupt JPEG (scan at byte ", at, " names component ", id,
               ", which the frame does not have)");
    // A sequential frame codes each component in exactly one scan (ITU T.81 B.2.3); a
    // repeated one makes stb decode the whole image again for a few bytes of file.
    KILN_CHECK(st.progressive || !st.component_scanned[static_cast<size_t>(k)], name,
               ": corrupt JPEG (component ", id, " is coded in a second scan at byte ", at, " of a sequential JPEG)");
    st.component_scanned[static_cast<size_t>(k)] = true;
    KILN_CHECK(st.quant_table[static_cast<size_t>(st.quant[static_cast<size_t>(k)])], name,
               ": corrupt JPEG (component ", id, " uses quantisation table ", st.quant[static_cast<size_t>(k)],
               ", which is not defined before the scan at byte ", at, ")");
    // Which Huffman tables the scan decodes with: DC in a first DC pass, AC otherwise.
    const bool uses_dc = !st.progressive || (ss == 0 && ah == 0);
    const bool uses_ac = !st.progressive || ss > 0;
    KILN_CHECK(dc <= 3 && ac <= 3, name, ": corrupt JPEG (scan at byte ", at, " selects Huffman slots ", dc, "/", ac,
               ")");
    KILN_CHECK((!uses_dc || st.dc_table[static_cast<size_t>(dc)]) && (!uses_ac || st.ac_table[static_cast<size_t>(ac)]),
               name, ": corrupt JPEG (scan at byte ", at, " uses a Huffman table that is not defined before it)");
  }
  // Each scan costs stb a pass over the whole image, whatever its size in the file: bound
  // them (encoders write about 10; progressive JPEG allows a few hundred in theory).
  KILN_CHECK(++st.scans <= kMaxJpegScans, name, ": unsupported JPEG (more than ", kMaxJpegScans,
             " scans; each makes the decoder pass over the whole image again)");
  st.scanned = true;
}

// The end of the entropy-coded data that starts at `pos`: the first marker other than a
// stuffed 0xFF00 or a restart marker. Returns `size` when the file ends first.
size_t skip_entropy_data(const uint8_t* b, size_t size, size_t pos) {
  for (; pos + 1 < size; ++pos) {
    if (b[pos] != 0xFF) continue;
    const uint8_t m = b[pos + 1];
    if (m == 0x00 || m == 0xFF || (m >= 0xD0 && m <= 0xD7)) continue;
    return pos;
  }
  return size;
}

ImageInfo check_jpeg(const uint8_t* b, size_t size, const std::string& name, int64_t max_pixels) {
  JpegState st;
  size_t pos = 2;  // after SOI
  for (;;) {
    KILN_CHECK(pos + 2 <= size, name, ": truncated JPEG (file ends at byte ", size, " before the end-of-image marker)");
    KILN_CHECK(b[pos] == 0xFF, name, ": corrupt JPEG (expected a marker at byte ", pos, ", found ", hex(b[pos]), ")");
    const uint8_t m = b[pos + 1];
    if (m == 0xFF) {  // fill byte before a marker
      ++pos;
      continue;
    }
    const size_t at = pos;
    pos += 2;
    if (m == 0xD9) {
      KILN_CHECK(st.scanned, name, ": corrupt JPEG (end-of-image before any scan)");
      return st.info;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without a length
    KILN_CHECK(m != 0xD8, name, ": corrupt JPEG (a second start-of-image marker at byte ", at, ")");
    KILN_CHECK(pos + 2 <= size, name, ": truncated JPEG (file ends inside the marker at byte ", at, ")");
    const size_t len = be16(b + pos);
    KILN_CHECK(len >= 2, name, ": corrupt JPEG (segment ", hex(m), " at byte ", at, " declares length ", len, ")");
    KILN_CHECK(pos + len <= size, name, ": truncated JPEG (segment ", hex(m), " at byte ", at, " declares ", len,
               " bytes, the file ends ", size - pos, " bytes later)");
    const uint8_t* p = b + pos + 2;
    const size_t n = len - 2;
    switch (m) {
      case 0xC0: case 0xC1: case 0xC2:  // baseline, extended, progressive Huffman frames
        st.progressive = m == 0xC2;
        check_sof(p, n, st, name, at, max_pixels);
        break;
      case 0xC3: case 0xC5: case 0xC6: case 0xC7: case 0xC9: case 0xCA: case 0xCB: case 0xCD: case 0xCE: case 0xCF:
        KILN_FAIL(name, ": unsupported JPEG (frame type ", hex(m),
                  ": lossless, hierarchical or arithmetic-coded JPEGs are not decoded)");
      case 0xC4: check_dht(p, n, st, name, at); break;
      case 0xDB: check_dqt(p, n, st, name, at); break;
      case 0xDD:
        KILN_CHECK(n == 2, name, ": corrupt JPEG (restart interval segment at byte ", at, " is ", n, " bytes)");
        break;
      case 0xDA:
        check_sos(p, n, st, name, at);
        pos = skip_entropy_data(b, size, pos + len);
        KILN_CHECK(pos < size, name, ": truncated JPEG (no end-of-image marker after the scan data; file is ", size,
                   " bytes)");
        continue;
      default:
        KILN_CHECK((m >= 0xE0 && m <= 0xEF) || m == 0xFE, name, ": corrupt JPEG (unknown marker ", hex(m),
                   " at byte ", at, ")");
    }
    pos += len;
  }
}

// ---- PNG ----

// Channels as stb_image reports them, from the IHDR colour type (-1: not a valid type).
int png_channels(int colour_type) {
  switch (colour_type) {
    case 0: return 1;
    case 2: return 3;
    case 3: return 3;
    case 4: return 2;
    case 6: return 4;
  }
  return -1;
}

bool png_depth_valid(int colour_type, int depth) {
  switch (colour_type) {
    case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    default: return depth == 8 || depth == 16;
  }
}

ImageInfo check_png(const uint8_t* b, size_t size, const std::string& name, int64_t max_pixels) {
  ImageInfo info;
  int colour_type = -1;
  size_t pos = 8, palette = 0;
  bool idat = false;
  for (;;) {
    KILN_CHECK(pos + 12 <= size, name, ": truncated PNG (file ends at byte ", size, " before the IEND chunk)");
    const uint32_t len = be32(b + pos);
    const std::string type(reinterpret_cast<const char*>(b + pos + 4), 4);
    for (char c : type)
      KILN_CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'), name, ": corrupt PNG (chunk at byte ", pos,
                 " has a type that is not four letters)");
    KILN_CHECK(len <= 0x7FFFFFFFu && len <= size - pos - 12, name, ": truncated PNG (chunk '", type, "' at byte ", pos,
               " declares ", len, " bytes, file has ", size, ")");
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // fuzz builds only: let mutated chunks reach the decoder
    KILN_CHECK(be32(b + pos + 8 + len) == crc32(b + pos + 4, len + 4), name, ": corrupt PNG (CRC mismatch in chunk '",
               type, "' at byte ", pos, ")");
#endif
    const uint8_t* p = b + pos + 8;
    KILN_CHECK((pos == 8) == (type == "IHDR"), name, ": corrupt PNG (",
               pos == 8 ? "the first chunk is '" + type + "', not IHDR" : "a second IHDR chunk", ")");
    if (type == "IHDR") {
      KILN_CHECK(len == 13, name, ": corrupt PNG (IHDR chunk of ", len, " bytes, expected 13)");
      const uint32_t w = be32(p), h = be32(p + 4);
      KILN_CHECK(w > 0 && h > 0 && w <= 0x7FFFFFFFu && h <= 0x7FFFFFFFu, name, ": corrupt PNG (IHDR declares ", w, "x",
                 h, ")");
      check_pixel_limit(w, h, max_pixels, name);
      colour_type = p[9];
      const int depth = p[8];
      KILN_CHECK(png_channels(colour_type) > 0 && png_depth_valid(colour_type, depth), name,
                 ": corrupt PNG (IHDR declares colour type ", colour_type, " with ", depth, "-bit samples)");
      KILN_CHECK(p[10] == 0 && p[11] == 0 && p[12] <= 1, name, ": corrupt PNG (IHDR declares compression ", int{p[10]},
                 ", filter ", int{p[11]}, ", interlace ", int{p[12]}, ")");
      info = {static_cast<int>(w), static_cast<int>(h), png_channels(colour_type)};
    } else if (type == "PLTE") {
      KILN_CHECK(palette == 0 && !idat && len % 3 == 0 && len >= 3 && len <= 768, name,
                 ": corrupt PNG (palette chunk at byte ", pos, " of ", len, " bytes)");
      palette = len / 3;
    } else if (type == "tRNS") {
      KILN_CHECK(!idat, name, ": corrupt PNG (transparency chunk after the image data)");
      const bool ok = colour_type == 3 ? palette > 0 && len <= palette : colour_type == 0 ? len == 2
                                                                       : colour_type == 2 ? len == 6
                                                                                          : false;
      KILN_CHECK(ok, name, ": corrupt PNG (transparency chunk of ", len, " bytes for colour type ", colour_type,
                 palette ? "" : " before any palette", ")");
      if (colour_type == 3) info.channels = 4;
    } else if (type == "IDAT") {
      KILN_CHECK(colour_type != 3 || palette > 0, name, ": corrupt PNG (palette image without a palette chunk)");
      idat = true;
    } else if (type == "IEND") {
      KILN_CHECK(idat, name, ": corrupt PNG (no image data before IEND)");
      return info;
    } else {
      // Bit 5 of the first letter (lower case) marks a chunk a decoder may skip.
      KILN_CHECK(type[0] & 0x20, name, ": unsupported PNG (critical chunk '", type, "' at byte ", pos, ")");
    }
    pos += 12 + len;
  }
}

// ---- BMP ----

ImageInfo check_bmp(const uint8_t* b, size_t size, const std::string& name, int64_t max_pixels) {
  KILN_CHECK(size >= 26, name, ": truncated BMP (", size, " bytes; the headers alone need 26)");
  const uint32_t offset = le32(b + 10), header = le32(b + 14);
  KILN_CHECK(header == 12 || header == 40 || header == 56 || header == 108 || header == 124, name,
             ": unsupported BMP (info header of ", header, " bytes)");
  KILN_CHECK(size >= 14 + size_t{header}, name, ": truncated BMP (the info header needs ", 14 + header,
             " bytes, file has ", size, ")");
  const uint8_t* h = b + 14;
  int64_t w, rows;
  uint32_t planes, bpp, compression = 0;
  if (header == 12) {
    w = le16(h + 4), rows = le16(h + 6), planes = le16(h + 8), bpp = le16(h + 10);
  } else {
    w = static_cast<int32_t>(le32(h + 4)), rows = static_cast<int32_t>(le32(h + 8));
    planes = le16(h + 12), bpp = le16(h + 14), compression = le32(h + 16);
  }
  const int64_t height = rows < 0 ? -rows : rows;  // negative: rows stored top to bottom
  KILN_CHECK(w > 0 && height > 0, name, ": corrupt BMP (header declares ", w, "x", rows, ")");
  check_pixel_limit(w, height, max_pixels, name);
  KILN_CHECK(planes == 1, name, ": corrupt BMP (", planes, " planes)");
  KILN_CHECK(bpp == 1 || bpp == 4 || bpp == 8 || bpp == 16 || bpp == 24 || bpp == 32, name,
             ": unsupported BMP (", bpp, " bits per pixel)");
  KILN_CHECK(compression == 0 || (compression == 3 && (bpp == 16 || bpp == 32)), name,
             ": unsupported BMP (compression ", compression, "; uncompressed and bit-field BMPs are decoded)");
  // Where the headers (and the bit masks that follow a 40- or 56-byte header) end.
  const size_t masks = (compression == 3 && (header == 40 || header == 56)) ? 12 : 0;
  const size_t headers_end = 14 + size_t{header} + masks;
  KILN_CHECK(offset >= headers_end && offset <= size, name, ": corrupt BMP (pixel data offset ", offset,
             " is outside ", headers_end, "..", size, ")");
  if (bpp <= 8) {
    const size_t entry = header == 12 ? 3 : 4, entries = (offset - headers_end) / entry;
    KILN_CHECK(entries >= 1 && entries <= 256, name, ": corrupt BMP (a palette of ", entries,
               " colours between the header and the pixels; expected 1..256)");
  } else {
    KILN_CHECK(offset == headers_end, name, ": corrupt BMP (", offset - headers_end,
               " unexplained bytes between the header and the pixels)");
  }
  const uint64_t stride = (static_cast<uint64_t>(w) * bpp + 31) / 32 * 4;
  KILN_CHECK(stride * static_cast<uint64_t>(height) <= size - offset, name, ": truncated BMP (", w, "x", height,
             " at ", bpp, " bits needs ", stride * static_cast<uint64_t>(height), " bytes of pixels, file has ",
             size - offset, ")");
  const bool alpha = bpp == 32 || (compression == 3 && header >= 108 && le32(h + 52) != 0);
  return {static_cast<int>(w), static_cast<int>(height), alpha ? 4 : 3};
}

// The formats people's folders hold that kiln does not read, by their signatures, so the
// error names what the file is and what to do: "" when none matches.
std::string other_format(const uint8_t* b, size_t n) {
  const std::string convert = " (kiln reads JPEG, PNG and BMP: convert it, e.g. to PNG)";
  const auto at = [&](size_t off, const char* s) {
    const size_t len = std::strlen(s);
    return n >= off + len && std::memcmp(b + off, s, len) == 0;
  };
  if (at(0, "RIFF") && at(8, "WEBP")) return "a WebP image" + convert;
  if (at(0, "GIF87a") || at(0, "GIF89a")) return "a GIF image" + convert;
  if (at(4, "ftypheic") || at(4, "ftypheix") || at(4, "ftypmif1") || at(4, "ftyphevc"))
    return "a HEIC image" + convert;
  if (at(4, "ftypavif")) return "an AVIF image" + convert;
  if (at(0, "II*") && n >= 4 && b[3] == 0) return "a TIFF image" + convert;  // little-endian
  if (at(0, "MM") && n >= 4 && b[2] == 0 && b[3] == 42) return "a TIFF image" + convert;  // big-endian
  if (n >= 4 && b[0] == 0x00 && b[1] == 0x05 && b[2] == 0x16 && b[3] == 0x07)
    return "a macOS AppleDouble ('._') metadata file, not an image (macOS writes one beside each file it copies)";
  return "";
}

}  // namespace

ImageFormat sniff_image_format(const uint8_t* b, size_t n) {
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return ImageFormat::jpeg;
  static constexpr uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 8 && std::memcmp(b, kPng, 8) == 0) return ImageFormat::png;
  if (n >= 2 && b[0] == 'B' && b[1] == 'M') return ImageFormat::bmp;
  return ImageFormat::unknown;
}

ImageInfo check_image_structure(const uint8_t* bytes, size_t size, ImageFormat format, const std::string& name,
                                int64_t max_pixels) {
  switch (format) {
    case ImageFormat::jpeg: return check_jpeg(bytes, size, name, max_pixels);
    case ImageFormat::png: return check_png(bytes, size, name, max_pixels);
    case ImageFormat::bmp: return check_bmp(bytes, size, name, max_pixels);
    case ImageFormat::unknown: break;
  }
  const std::string other = other_format(bytes, size);
  KILN_CHECK(other.empty(), name, ": not a JPEG, PNG or BMP image: it is ", other);
  KILN_FAIL(name, ": not a JPEG, PNG or BMP image (unrecognised first bytes)");
}

}  // namespace kiln::io::detail
