#include "io/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "core/error.h"

// io/stb.c compiles stb_image_write into kiln, but stb_image_write.h declares this only in
// its implementation section.
extern "C" unsigned char* stbi_write_png_to_mem(const unsigned char* pixels, int stride_bytes, int x, int y, int n,
                                                int* out_len);

namespace kiln::io {

namespace {

// ---- protobuf wire format, just what Event/Summary need ----
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t{field} << 3) | type); }
// int32 and int64 fields: negative values are sign-extended to 10 bytes, as protobuf does.
void put_int(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(v));
}
void put_double(std::string& out, uint32_t field, double v) {
  put_key(out, field, kFixed64);
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
}
void put_float(std::string& out, uint32_t field, float v) {
  put_key(out, field, kFixed32);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
}
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Field numbers from event.proto and summary.proto.
namespace event_field { constexpr uint32_t wall_time = 1, step = 2, file_version = 3, summary = 5, session_log = 7; }
namespace session_log_field { constexpr uint32_t status = 1, start = 1; }  // SessionLog.status, its START value
namespace summary_field { constexpr uint32_t value = 1; }
namespace value_field { constexpr uint32_t tag = 1, simple_value = 2, image = 4; }
namespace image_field { constexpr uint32_t height = 1, width = 2, colorspace = 3, encoded_image_string = 4; }

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Event{wall_time, step, summary{value: [value]}}.
std::string summary_event(int64_t step, const std::string& value) {
  std::string summary;
  put_bytes(summary, summary_field::value, value);
  std::string event;
  put_double(event, event_field::wall_time, now_seconds());
  put_int(event, event_field::step, step);
  put_bytes(event, event_field::summary, summary);
  return event;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

struct FreeDeleter {
  void operator()(unsigned char* p) const { std::free(p); }
};

}  // namespace

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  KILN_CHECK(!ec && fs::is_directory(dir), dir, ": cannot create the TensorBoard log directory (",
             ec ? ec.message() : "exists and is not a directory", ")");

  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0 || host[0] == '\0') std::strcpy(host.data(), "localhost");
  const auto secs = static_cast<long long>(now_seconds());
  const std::string base = (fs::path(dir) / ("events.out.tfevents." + std::to_string(secs) + "." + host.data())).string();
  // O_EXCL: a second writer in the same second (and host) gets base.1, base.2, ... instead
  // of truncating the first one's file; TensorBoard reads every *tfevents* file.
  int fd = -1;
  for (int n = 0; fd < 0; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    KILN_CHECK(fd >= 0 || (errno == EEXIST && n < 1000), path_, ": cannot create the event file (",
               std::strerror(errno), ")");
  }
  file_ = ::fdopen(fd, "wb");
  if (file_ == nullptr) {
    const int err = errno;
    ::close(fd);
    KILN_FAIL(path_, ": cannot open the event file (", std::strerror(err), ")");
  }

  std::string event;
  put_double(event, event_field::wall_time, now_seconds());
  put_bytes(event, event_field::file_version, "brain.Event:2");
  write_record(event);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ == nullptr) return;
  std::fflush(file_);
  ::fsync(::fileno(file_));
  std::fclose(file_);
}

void TensorBoardWriter::write_record(const std::string& data) {
  // TFRecord: uint64 length, masked crc of those 8 bytes, data, masked crc of data; little endian.
  std::string rec;
  rec.reserve(data.size() + 16);
  put_le(rec, data.size(), 8);
  put_le(rec, masked_crc32c(rec.data(), 8), 4);
  rec += data;
  put_le(rec, masked_crc32c(data.data(), data.size()), 4);
  KILN_CHECK(std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size(), path_, ": cannot write the event file (",
             std::strerror(errno), ")");
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string v;
  put_bytes(v, value_field::tag, tag);
  put_float(v, value_field::simple_value, static_cast<float>(value));
  write_record(summary_event(step, v));
}

void TensorBoardWriter::add_session_start(int64_t step) {
  std::string log;
  put_int(log, session_log_field::status, session_log_field::start);
  std::string event;
  put_double(event, event_field::wall_time, now_seconds());
  put_int(event, event_field::step, step);
  put_bytes(event, event_field::session_log, log);
  write_record(event);
}

void TensorBoardWriter::add_image_rgb(const std::string& tag, const std::vector<uint8_t>& rgb, int64_t height,
                                      int64_t width, int64_t step) {
  KILN_CHECK(height > 0 && width > 0 && height <= (1 << 24) && width <= (1 << 24), path_, ": image '", tag,
             "': height and width must be positive (and at most 2^24), got ", height, "x", width);
  KILN_CHECK(rgb.size() == static_cast<size_t>(height * width * 3), path_, ": image '", tag, "': expected ",
             height, "*", width, "*3 = ", height * width * 3, " bytes of RGB, got ", rgb.size());
  int len = 0;
  std::unique_ptr<unsigned char, FreeDeleter> png(stbi_write_png_to_mem(
      rgb.data(), static_cast<int>(width * 3), static_cast<int>(width), static_cast<int>(height), 3, &len));
  KILN_CHECK(png != nullptr && len > 0, path_, ": image '", tag, "': PNG encoding failed");

  std::string image;
  put_int(image, image_field::height, height);
  put_int(image, image_field::width, width);
  put_int(image, image_field::colorspace, 3);  // RGB
  put_bytes(image, image_field::encoded_image_string, std::string(reinterpret_cast<const char*>(png.get()), len));
  std::string v;
  put_bytes(v, value_field::tag, tag);
  put_bytes(v, value_field::image, image);
  write_record(summary_event(step, v));
}

void TensorBoardWriter::flush() {
  KILN_CHECK(std::fflush(file_) == 0, path_, ": cannot write the event file (", std::strerror(errno), ")");
  KILN_CHECK(::fsync(::fileno(file_)) == 0, path_, ": cannot sync the event file to disk (", std::strerror(errno),
             ")");
}

}  // namespace kiln::io
