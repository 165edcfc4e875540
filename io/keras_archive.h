// Keras 3 `.keras` archives (model.save("x.keras")): a ZIP holding config.json,
// metadata.json and model.weights.h5, whose layout kiln already reads (WeightsFormat::keras3).
// The archive is a downloaded file like any other (docs/hostile_inputs.md): libzip reads it,
// and kiln checks what the archive declares before it allocates or trusts a byte of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/hdf5.h"

namespace kiln::io {

// The member holding the weights, as Keras 3's saving_lib names it.
inline constexpr const char* kKerasWeightsMember = "model.weights.h5";
// The most bytes the member may hold uncompressed: the same bound as one HDF5 dataset
// (h5::kMaxDatasetBytes); VGG16's whole weights file is 528 MB.
inline constexpr uint64_t kMaxKerasMemberBytes = uint64_t{4} << 30;

// True when `data` begins with a ZIP signature (a local file header, or an empty archive's
// end record); the extension is never consulted.
bool is_zip_signature(const void* data, size_t size);
// True when the file at `path` begins with a ZIP signature; false when it cannot be read.
bool is_zip_file(const std::string& path);

// The uncompressed bytes of model.weights.h5 from the .keras archive at `path`. Refused, with
// a kiln::Error naming `path`: archives libzip cannot read (truncated, inconsistent), a
// missing or duplicated member, an encrypted member, compression other than stored or
// deflate, a declared size over `max_bytes`, and bytes that disagree with the declared size
// or CRC.
std::vector<uint8_t> read_keras_weights(const std::string& path, uint64_t max_bytes = kMaxKerasMemberBytes);
// The same from archive bytes in memory (the fuzz target); `name` is used in messages only.
std::vector<uint8_t> read_keras_weights(const void* data, size_t size, const std::string& name,
                                        uint64_t max_bytes = kMaxKerasMemberBytes);

// The archive in memory opened as its model.weights.h5 (what fuzz_keras_archive feeds).
h5::File open_keras_weights(const void* data, size_t size, const std::string& name,
                            uint64_t max_bytes = kMaxKerasMemberBytes);
// Opens a weights file the user named: an HDF5 file as it is, a .keras archive as its
// model.weights.h5 held in memory (h5::File::open_image), with `path` as the File's path()
// so reports and errors name the user's file.
h5::File open_weights_file(const std::string& path);

}  // namespace kiln::io
