// libFuzzer target: bytes decoded as the loader decodes a file (sniff, kiln's structure
// checks, stb_image compiled into this build, then the resize and crop every sample goes
// through). Any kiln::Error is a correct answer; a crash or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/image.h"
#include "io/transforms.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  kiln::io::DecodeOptions opt;
  opt.max_pixels = int64_t{1} << 22;  // below the default 64 Mi: keeps each run fast; the checks do not depend on it
  try {
    const kiln::io::Image img = kiln::io::decode_image_bytes(bytes, "fuzz input", opt);
    const kiln::io::Image small = kiln::io::resize_shorter_side(img, 16);
    std::vector<float> out(16 * 16 * 3);
    kiln::io::crop_to_input(small, kiln::io::center_crop(small.width, small.height, 16),
                            kiln::io::InputConvention::caffe_bgr, out.data());
  } catch (const kiln::Error&) {
  }
  return 0;
}
