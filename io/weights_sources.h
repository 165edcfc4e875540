// Internal to io/: the list of weight entries a file offers, named as kiln names them,
// shared by the format readers (weights.cpp, weights_keras.cpp).
#pragma once

#include <string>
#include <vector>

#include "io/hdf5.h"
#include "io/weights.h"

namespace kiln::io::weights_detail {

// How a stored array relates to kiln's layout.
enum class Layout {
  same,       // already kiln's layout
  conv_hwio,  // Keras conv kernel (kh, kw, in, out) -> OHWI [out, kh, kw, in]
  dense_io,   // Keras dense kernel (in, out) -> [out, in]
};

struct SourceEntry {
  std::string name;    // kiln-style source name, "vgg16/conv1_1/weight"
  std::string origin;  // the dataset's path in the file
  Layout layout = Layout::same;
};

struct SourceList {
  WeightsFormat format = WeightsFormat::kiln;
  std::string model;
  InputConvention convention = InputConvention::unknown;
  std::vector<SourceEntry> entries;
};

// True when the root looks like a Keras classic (layer_names) or Keras 3 (layers/) file.
bool is_keras(const h5::Group& root);
bool is_keras3(const h5::Group& root);
// A Keras file's entries named after `model`'s layers (layers/models/keras_names.h picks
// the model's Keras names; batch-norm weights by name, else by position).
SourceList list_keras(const h5::Group& root, Module& model);
SourceList list_keras3(const h5::Group& root, Module& model);
// Writes the model as Keras's save_weights does (layer_names, weight_names, kernels in
// Keras's layouts; layer names from layers/models/keras_names.h, batch norms as gamma,
// beta, moving_mean, moving_variance), and the input convention its inputs need in a root
// attribute Keras ignores, which list_keras reads back (files without it: caffe_bgr).
inline constexpr const char* kKerasConventionAttribute = "kiln_input_convention";
// The model kiln exported a Keras-layout file from ("vgg11"), likewise ignored by Keras: read
// back as the file's model, so that weights of another network are refused by name, not
// loaded into the layers whose names and shapes happen to match. Files without it are read
// as the target model's.
inline constexpr const char* kKerasModelAttribute = "kiln_model";
// The model a Keras HDF5 file is for: the kiln_model attribute kiln writes, else the model
// keras.applications' layer names identify ("vgg16", "vgg19", "resnet50_v1"), else "".
std::string keras_file_model(const h5::Group& root);
void write_keras(h5::Group& root, Module& model, InputConvention convention);

// Row-major [rows, cols] -> [cols, rows].
void transpose(const float* src, float* dst, int64_t rows, int64_t cols);

}  // namespace kiln::io::weights_detail
