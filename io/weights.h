// Weight import and export in HDF5: kiln's own layout (docs/weights_format.md), Keras /
// tf-keras files (save_weights, save, keras.applications) and Keras 3 `.weights.h5`.
// Source weights are mapped onto kiln's stable names ("vgg16/conv1_1/weight") through an
// assignment map (tf.train.init_from_checkpoint's idea) and a skip list; the import
// reports what was loaded, skipped, missing or mismatched, and which input convention
// the weights expect (docs/architecture.md, "Preprocessing follows the weights").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/convention.h"
#include "layers/module.h"

namespace kiln::io {

namespace h5 {
class File;
class Group;
}  // namespace h5

// The layouts import reads; export writes kiln or keras (keras3 is import-only).
enum class WeightsFormat { kiln, keras, keras3 };
// "kiln", "keras (HDF5)", "keras 3 (.weights.h5)".
const char* format_name(WeightsFormat f);

// How import_weights maps, skips and checks entries; the defaults load a file of the same model, whole.
struct ImportOptions {
  // Source name or scope -> kiln name or scope. Keys ending in '/' map whole scopes
  // ({"vgg16/": "vgg16/"}); the longest matching key wins. Source entries no key matches
  // are not loaded (reported as unmapped). Empty means {"<source model>/": "<model>/"},
  // and then the file's model must be the model's (a VGG19 file does not load into VGG16).
  // Keras files name no kiln model: their entries are named "<model>/<layer>/weight|bias"
  // after the model being loaded, with Keras layers renamed as kiln names them
  // (block1_conv1 -> conv1_1, fc1 -> fc6, fc2 -> fc7, predictions -> fc8).
  std::map<std::string, std::string> assignment_map;
  // Names, scopes ("vgg16/fc8/") or globs matched against both source and kiln names:
  // those entries are not loaded, a shape mismatch there is no error, and a model
  // parameter they cover is not missing (it keeps its initial value).
  std::vector<std::string> skip;
  // Model parameters the map covers but the file lacks are an error unless this is set.
  bool allow_missing = false;
  // Entries shaped unlike their model parameter are skipped (and reported in mismatched)
  // instead of an error, and the parameter keeps its value (Keras's skip_mismatch), e.g. a
  // head sized for other classes.
  bool skip_mismatched = false;
  // A skip pattern that matches no entry of the file and no parameter of the model is an
  // error (a typo, e.g. "vgg16/fc8" for the scope "vgg16/fc8/", would load what it meant to
  // skip). Off for callers whose patterns may legitimately match nothing (the trainer skips
  // published layers a model lacks whether or not the file has them); Python sets it.
  bool skip_must_match = false;
};

// What an import did, for logs (to_string) and checks: which names loaded, skipped, unmapped, missing.
struct ImportReport {
  std::string path;
  WeightsFormat format = WeightsFormat::kiln;
  std::string source_model;  // the file's model ("vgg16"); for Keras files, the target's
  InputConvention convention = InputConvention::unknown;
  std::vector<std::string> loaded;      // kiln names
  std::vector<std::string> skipped;     // source names
  std::vector<std::string> unmapped;    // source names no assignment-map key covers
  std::vector<std::string> missing;     // kiln names covered by the map, absent from the file
  std::vector<std::string> mismatched;  // skipped entries whose shape differs from the model's
  // "verified (...)" when every loaded tensor matched its CRC32C (kiln format 2), else
  // "none ..." and why (Keras files and kiln format 1 carry no checksums).
  std::string checksums;
  // A few readable lines: counts, then the names in each non-empty category.
  std::string to_string() const;
};

// Loads weights from `path` into `model` (parameters keep their device and trainable
// flags). `path` may be HDF5 or a Keras 3 .keras archive (io/keras_archive.h), told apart
// by signature. Nothing is changed unless the whole import succeeds. Errors (kiln::Error)
// name the file, the entry, and what was expected and found.
ImportReport import_weights(Module& model, const std::string& path, const ImportOptions& opt = {});
// The same from a file already open (e.g. h5::File::open_image of bytes in memory); every
// dataset's shape and type is checked against the model before any value is read.
ImportReport import_weights(Module& model, const h5::File& file, const ImportOptions& opt = {});

// How export_weights writes: the layout, the input convention to record, and which tensors.
struct ExportOptions {
  WeightsFormat format = WeightsFormat::kiln;  // kiln or keras (keras3 is import-only)
  // The preprocessing the model's inputs need, recorded in the file (in Keras's layout as an
  // attribute Keras ignores) and reported when it is imported; load_model preprocesses by it.
  // The default is the loader's (LoaderOptions), so a model trained with defaults exports right.
  InputConvention convention = InputConvention::torchvision_rgb;
  // Kiln layout only: which parameters and buffers (by full name) are written; null: all.
  // Checkpoints write what trains and keep what a phase freezes in a file of its own.
  std::function<bool(const std::string& name)> select;
};

// ---- Per-tensor checksums (kiln format 2; vgg_finetune's state files use them too) ----

// The dataset attribute holding a tensor's CRC32C: an int64 attribute whose value is the
// unsigned 32-bit CRC (0 .. 2^32-1).
inline constexpr const char* kChecksumAttribute = "crc32c";
// CRC32C of n float32 values as little-endian bytes, the checksum kiln stores per tensor.
uint32_t tensor_checksum(const float* data, size_t n);
// Writes a float32 dataset at `rel` below `g` (intermediate groups created) with its checksum.
void write_checksummed(h5::Group& g, const std::string& rel, const std::vector<int64_t>& shape, const float* data);
// Reads the float32 dataset at `rel` below `g`. With `verify`, it must carry a checksum equal
// to its values' CRC32C; otherwise a kiln::Error names the file and the tensor ("... is
// corrupt: tensor 'vgg16/conv1_2/weight' fails its checksum (stored 0x..., computed 0x...)").
std::vector<float> read_checksummed(const h5::Group& g, const std::string& rel, bool verify);
// Reads every tensor of the weights file at `path` and checks its checksum (kiln format 2),
// without a model; a corrupt tensor is a kiln::Error as above. Returns what
// ImportReport::checksums would say (files without checksums are not an error).
std::string verify_weights(const std::string& path);
// The model a weights file is for ("vgg16"), from its root: kiln's layout names it, so does a
// Keras-layout file kiln wrote, and keras.applications' layer names identify VGG16, VGG19 and
// ResNet50 (resnet50_v1); "" for other files.
std::string weights_source_model(const h5::Group& root);
// Reads every dataset below `g` and checks its checksum (each must carry one); the first
// corrupt tensor is a kiln::Error as above. Returns how many were checked.
size_t verify_checksums(const h5::Group& g);

// Writes the model's parameters and buffers (Module::buffers, e.g. running statistics) to
// `path` atomically (io/atomic_file.h: a temporary beside
// it, synced, renamed over `path`), so `path` is never half-written.
void export_weights(Module& model, const std::string& path, const ExportOptions& opt = {});

// A kiln-format weights file of named tensors (any device and float dtype; written as
// float32 with their checksums), atomically as export_weights: what export_weights writes
// for a Module, and a checkpoint for host copies taken earlier (io/checkpoint.h).
void write_kiln_weights(const std::string& path, const std::string& model_name, InputConvention convention,
                        const std::vector<std::pair<std::string, const Tensor*>>& tensors);

}  // namespace kiln::io
