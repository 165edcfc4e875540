// libFuzzer target: bytes opened as an in-memory HDF5 file image and read as a
// kiln checkpoint state file (io/checkpoint.h): read_checkpoint_meta, then restore_optimizer into an
// SGD-with-momentum optimizer of a tiny VGG-named model (its state: one momentum dataset
// per parameter and the int64 step attribute). Any kiln::Error is a correct answer.
#include <cstddef>
#include <cstdint>

#include "io/checkpoint.h"
#include "core/error.h"
#include "fuzz/hdf5_leaks.h"
#include "fuzz/tiny_vgg.h"
#include "io/hdf5.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::Generator gen(1);
  static std::shared_ptr<kiln::Sequential> model = kiln::fuzz::make_tiny_vgg(gen);
  static kiln::SGD opt(*model, kiln::SgdOptions{.lr = 0.01f, .momentum = 0.9f});
  try {
    const kiln::io::h5::File file = kiln::io::h5::File::open_image(data, size, "fuzz.state.h5");
    const kiln::io::h5::Group root = file.root();
    try {
      (void)kiln::io::read_checkpoint_meta(root);
    } catch (const kiln::Error&) {
    }
    kiln::io::restore_optimizer(root, opt);
  } catch (const kiln::Error&) {
  }
  kiln::fuzz::abort_on_open_hdf5_objects();
  return 0;
}
