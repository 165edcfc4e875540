// libFuzzer target: bytes read as a Keras 3 .keras archive (io/keras_archive.h: libzip,
// then kiln's checks of the member's name, encryption, method, size and CRC) and, when
// model.weights.h5 comes out intact, opened as an HDF5 image and imported into a tiny
// VGG-named model, as import_weights does for a downloaded .keras file. libzip is Debian's,
// not instrumented: its crashes show, its coverage does not. The member's CRC is checked in
// every build, so mutations rarely reach libhdf5 (fuzz_weights covers that). Any kiln::Error
// is a correct answer; a crash, a sanitizer report or another exception type is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "fuzz/hdf5_leaks.h"
#include "fuzz/tiny_vgg.h"
#include "io/hdf5.h"
#include "io/keras_archive.h"
#include "io/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kiln::Generator gen(1);
  static std::shared_ptr<kiln::Sequential> model = kiln::fuzz::make_tiny_vgg(gen);
  try {
    // A 64 MiB cap instead of 4 GiB: a member that really inflates that far is refused
    // the same way, without the fuzzer's RSS limit taking it for a leak.
    const kiln::io::h5::File file = kiln::io::open_keras_weights(data, size, "fuzz.keras", uint64_t{64} << 20);
    const kiln::io::ImportReport rep = kiln::io::import_weights(*model, file);
    (void)rep.to_string();
  } catch (const kiln::Error&) {
  }
  kiln::fuzz::abort_on_open_hdf5_objects();
  return 0;
}
