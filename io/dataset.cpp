#include "io/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kiln::io {
namespace fs = std::filesystem;

std::string Dataset::summary() const {
  std::ostringstream os;
  os << samples.size() << " images in " << classes.size() << " classes";
  for (size_t i = 0; i < classes.size(); ++i) os << (i == 0 ? ": " : ", ") << classes[i] << " " << class_counts[i];
  return os.str();
}

bool has_image_extension(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

Dataset image_folder(const std::string& root) {
  std::error_code ec;
  KILN_CHECK(fs::is_directory(root, ec), "image folder '", root, "' does not exist or is not a directory");
  Dataset ds;
  ds.root = root;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (!name.empty() && name[0] != '.' && e.is_directory(ec)) ds.classes.push_back(name);
  }
  std::sort(ds.classes.begin(), ds.classes.end());
  KILN_CHECK(ds.classes.size() >= 2, "image folder '", root, "': expected at least two class subfolders, found ",
             ds.classes.size(), ds.classes.empty() ? "" : " ('" + ds.classes[0] + "')");
  for (size_t label = 0; label < ds.classes.size(); ++label) {
    const fs::path dir = fs::path(root) / ds.classes[label];
    std::vector<std::string> files;
    // A directory named x.jpg is kept: it fails at decode time and is reported with the rest.
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (!name.empty() && name[0] != '.' && has_image_extension(name)) files.push_back(e.path().string());
    }
    KILN_CHECK(!files.empty(), "class folder '", dir.string(),
               "' holds no image file (expected .jpg, .jpeg, .png or .bmp)");
    std::sort(files.begin(), files.end());
    for (auto& f : files) ds.samples.push_back(Sample{std::move(f), static_cast<int64_t>(label)});
    ds.class_counts.push_back(static_cast<int64_t>(files.size()));
  }
  return ds;
}

Dataset image_list(const std::string& list_file) {
  std::ifstream in(list_file);
  KILN_CHECK(in.good(), "cannot open image list '", list_file, "'");
  Dataset ds;
  ds.root = list_file;
  const fs::path base = fs::path(list_file).parent_path();
  std::string line;
  int64_t max_label = -1;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto end = line.find_last_not_of(" \t\r");
    const auto sep = line.find_last_of(" \t", end);
    KILN_CHECK(sep != std::string::npos && sep > first, list_file, ":", lineno, ": expected 'path label', got '",
               line, "'");
    const std::string label_text = line.substr(sep + 1, end - sep);
    size_t used = 0;
    int64_t label = -1;
    try {
      label = std::stoll(label_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KILN_CHECK(used == label_text.size() && label >= 0, list_file, ":", lineno,
               ": expected a non-negative integer label, got '", label_text, "'");
    fs::path p(line.substr(first, line.find_last_not_of(" \t", sep) - first + 1));
    if (p.is_relative()) p = base / p;
    ds.samples.push_back(Sample{p.string(), label});
    max_label = std::max(max_label, label);
  }
  KILN_CHECK(!ds.samples.empty(), "image list '", list_file, "' holds no 'path label' line");
  ds.class_counts.assign(static_cast<size_t>(max_label + 1), 0);
  for (const auto& s : ds.samples) ++ds.class_counts[static_cast<size_t>(s.label)];
  for (int64_t i = 0; i <= max_label; ++i) ds.classes.push_back(std::to_string(i));
  return ds;
}

}  // namespace kiln::io
