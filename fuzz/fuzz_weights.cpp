// libFuzzer target: bytes opened as an in-memory HDF5 file image and imported into a tiny
// VGG-named model, as import_weights does for a downloaded file. The seeds cover kiln's
// layout, Keras classic (layer_names / weight_names) and Keras 3 (layers/<name>/vars/<i>);
// the input's size picks the import options, so the skip/mismatch, allow_missing and
// assignment-map paths run too. Any kiln::Error is a correct answer; a crash, a sanitizer
// report or another exception type is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "fuzz/hdf5_leaks.h"
#include "fuzz/tiny_vgg.h"
#include "io/hdf5.h"
#include "io/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::Generator gen(1);
  static std::shared_ptr<kiln::Sequential> model = kiln::fuzz::make_tiny_vgg(gen);
  kiln::io::ImportOptions opt;
  switch (size % 4) {
    case 1: opt.skip = {"vgg16/fc8/"}; break;  // keep a fresh head: the mismatch path
    case 2:
      opt.allow_missing = true;
      opt.skip = {"*/bias"};
      break;
    case 3: opt.assignment_map = {{"vgg16/", "vgg16/"}, {"vgg16/fc7/weight", "vgg16/fc6/weight"}}; break;
    default: break;
  }
  try {
    const kiln::io::h5::File file = kiln::io::h5::File::open_image(data, size, "fuzz.h5");
    const kiln::io::ImportReport rep = kiln::io::import_weights(*model, file, opt);
    (void)rep.to_string();
  } catch (const kiln::Error&) {
  }
  kiln::fuzz::abort_on_open_hdf5_objects();
  return 0;
}
