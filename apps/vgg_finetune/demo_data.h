// The vgg_finetune app's built-in demo dataset: an image-folder dataset drawn procedurally,
// so the demo runs where nothing can be downloaded. The classes are SYNTHETIC: each name
// ("bear", "cat", ...) is only a label for a visual recipe (shape, pattern, texture); colours
// come from a pool every class shares, and the images show no animals. See demo_data.cpp for
// the recipes. Also the demo's trivial baseline: what colour alone predicts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::app {

struct DemoDataset {
  std::string root;                  // as given
  std::vector<std::string> classes;  // class names, sorted (the order a folder dataset lists them)
  int64_t train_images = 0, val_images = 0;
};

// Writes root/train/<class>/<class>_NNN.jpg (train_per_class per class) and
// root/val/<class>/<class>_NNN.jpg (val_per_class per class): JPEGs of width and height each
// in [160, 400]. classes: 1..16. The bytes depend only on the arguments (seed included), not
// on the machine or the run. Creates root and the folders below it; throws kiln::Error when
// root exists and is not an empty directory (user data is never overwritten), on bad
// arguments, or when a file cannot be written.
DemoDataset make_demo_dataset(const std::string& root, int classes = 8, int train_per_class = 100,
                              int val_per_class = 25, uint64_t seed = 1);

// A classifier that sees only colour, on the same split as the network.
struct ColourBaseline {
  double train_acc = 0, val_acc = 0;
  int64_t bins = 0, train_images = 0, val_images = 0;
};

// Ridge regression (train/linear_probe.h) on each image's joint RGB histogram (4 levels per
// channel: 64 bins, as fractions of the image), fitted on the folder-per-class train_dir and
// scored on val_dir (same classes). Unreadable images are left out.
ColourBaseline colour_histogram_baseline(const std::string& train_dir, const std::string& val_dir);

}  // namespace kiln::app
