// libFuzzer target: bytes parsed as an image list file ("path label" lines), as
// image_list does after reading the file. Any kiln::Error is a correct answer.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "io/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const kiln::io::Dataset ds =
        kiln::io::parse_image_list(std::string_view(reinterpret_cast<const char*>(data), size), "/data", "fuzz.txt");
    (void)ds.summary();
  } catch (const kiln::Error&) {
  }
  return 0;
}
