// Writing TensorBoard event files without TensorFlow: TFRecord framing (masked CRC32C)
// around hand-encoded Event protobufs (tensorflow/core/util/event.proto,
// tensorflow/core/framework/summary.proto). The real `tensorboard` package reads them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "io/crc32c.h"  // crc32c, which TFRecord framing masks

namespace kiln::io {

// TFRecord's masking of a CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t n);

// One event file, events.out.tfevents.<unix time>.<hostname>, in `dir` (created if
// needed). The first record is the file_version event; each add_* appends one Event.
// Records are buffered: flush() pushes them to disk (the destructor does too). Errors
// (cannot create the directory or file, a failed write) throw kiln::Error naming the path.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // A scalar, stored as Summary.Value.simple_value (a float: `value` is rounded to float).
  void add_scalar(const std::string& tag, double value, int64_t step);
  // An 8-bit RGB image, rows top to bottom, rgb: [height, width, 3], stored PNG-encoded.
  void add_image_rgb(const std::string& tag, const std::vector<uint8_t>& rgb, int64_t height, int64_t width,
                     int64_t step);
  // A SessionLog START at `step`: TensorBoard then drops the events of earlier files at
  // `step` and later, which a resumed run writes again (tf.summary's restart convention).
  void add_session_start(int64_t step);
  // fflush + fsync: what was added is on disk when this returns.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace kiln::io
