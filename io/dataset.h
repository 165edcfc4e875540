// Which files make a data set and which class each belongs to: a folder per class
// (train/bear/*.jpg, train/owl/*.png, ...) or a list file of "path label" lines.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::io {

struct Sample {
  std::string path;
  int64_t label = 0;
};

struct Dataset {
  std::string root;                  // the folder or list file it came from
  std::vector<std::string> classes;  // class names; label i is classes[i]
  std::vector<Sample> samples;       // folder datasets: by class, then by file name
  std::vector<int64_t> class_counts; // samples per class

  size_t size() const { return samples.size(); }
  // "412 images in 3 classes: bear 140, owl 130, wolf 142".
  std::string summary() const;
};

// True for names ending in .jpg, .jpeg, .png or .bmp, any case.
bool has_image_extension(const std::string& name);

// A folder per class. Class names are the sorted subfolder names (hidden ones skipped);
// in each, regular files with an image extension, not hidden, sorted by name. Files are
// not opened here: decoding failures are the loader's to report. Throws kiln::Error
// naming the folder when root is missing, has fewer than two classes, or a class folder
// holds no image file.
Dataset image_folder(const std::string& root);

// A list file: one "path label" per line (label an integer >= 0; relative paths are
// taken from the list file's folder; blank lines and lines starting with # skipped).
// Class names are the label numbers. Throws kiln::Error naming file and line on a bad line.
Dataset image_list(const std::string& list_file);

}  // namespace kiln::io
