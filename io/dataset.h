// Which files make a data set and which class each belongs to: a folder per class
// (train/bear/*.jpg, train/owl/*.png, ...) or a list file of "path label" lines.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::io {

// One image file and its label, an index into Dataset::classes.
struct Sample {
  std::string path;
  int64_t label = 0;
};

// The samples of a data set, its class names and per-class counts (image_folder, image_list).
struct Dataset {
  std::string root;                  // the folder or list file it came from
  std::vector<std::string> classes;  // class names; label i is classes[i]
  std::vector<Sample> samples;       // folder datasets: by class, then by file name
  std::vector<int64_t> class_counts; // samples per class

  // Samples, not classes.
  size_t size() const { return samples.size(); }
  // "412 images in 3 classes: bear 140, owl 130, wolf 142".
  std::string summary() const;
};

// True for names ending in .jpg, .jpeg, .png or .bmp, any case.
bool has_image_extension(const std::string& name);

// A file under a data folder that is not used for training, and why. The folder scan finds
// the first four kinds; an audit that reads the files (train/audit.h) the last two.
struct SkippedFile {
  // What is wrong with it; `detail` adds the extension or the decoder's message.
  enum class Why { unsupported, hidden, folder, outside_class, empty, undecodable };
  std::string path;
  Why why = Why::unsupported;
  std::string detail;  // unsupported: the extension, lower case ("" when none); undecodable: the message
};
// The reason as a user reads it: "unsupported format .webp (kiln reads .jpg, .jpeg, .png, .bmp)".
std::string skip_reason(const SkippedFile& f);
// The reason's group, for counts: "unsupported .webp", "macOS ._ file", "failed to decode";
// with `many`, the form that follows a count above 1 ("macOS ._ files", "folders in a class folder").
std::string skip_group(const SkippedFile& f, bool many = false);

// A folder-per-class scan that says what it passed over.
struct FolderScan {
  Dataset dataset;                   // as image_folder makes it, but class folders without images kept (count 0)
  std::vector<SkippedFile> skipped;  // everything else found under root, sorted by path
};
// The scan behind image_folder, without its checks on class counts: throws kiln::Error only
// when root is missing or a class folder's name holds a line break. Lists every other entry:
// hidden files and folders (macOS "._" forks named as such), files without an image
// extension, folders inside a class folder (not searched), files next to the class folders.
FolderScan scan_image_folder(const std::string& root);

// A folder per class. Class names are the sorted subfolder names (hidden ones skipped);
// in each, regular files with an image extension, not hidden, sorted by name. Files are
// not opened here: decoding failures are the loader's to report. Throws kiln::Error
// naming the folder when root is missing, has fewer than two classes, or a class folder
// holds no image file.
Dataset image_folder(const std::string& root);

// Limits on list files, which may come from anywhere: labels are class indices (classes
// 0..max label are made, so a label of 10^12 must not allocate 10^12 classes; 65536 classes
// already make VGG16's fc8 a 1 GB layer), lines are a path and a number, and the whole
// file is read into memory.
inline constexpr int64_t kMaxListLabel = 65535;
inline constexpr size_t kMaxListLineBytes = 16384;
inline constexpr int64_t kMaxListFileBytes = int64_t{1} << 30;

// A list file: one "path label" per line (label an integer 0..kMaxListLabel; relative paths
// are taken from the list file's folder; blank lines and lines starting with # skipped;
// LF or CRLF line ends; a UTF-8 byte-order mark is ignored). Class names are the label
// numbers. Throws kiln::Error naming file and line on a bad line (NUL bytes, overlong lines,
// labels that are not plain decimal numbers in range).
Dataset image_list(const std::string& list_file);
// The same from the file's text: `base_dir` resolves relative paths ("" keeps them
// relative), `name` is the file named in messages and in Dataset::root.
Dataset parse_image_list(std::string_view text, const std::string& base_dir, const std::string& name);

}  // namespace kiln::io
