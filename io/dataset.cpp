#include "io/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace kiln::io {
namespace fs = std::filesystem;

std::string Dataset::summary() const {
  std::ostringstream os;
  // A split's classes are the union of all splits' (labels must agree): say how many have images.
  const auto with_images = std::count_if(class_counts.begin(), class_counts.end(), [](auto n) { return n > 0; });
  os << samples.size() << " images in ";
  if (static_cast<size_t>(with_images) < classes.size()) os << with_images << " of ";
  os << classes.size() << " classes";
  for (size_t i = 0; i < classes.size(); ++i) os << (i == 0 ? ": " : ", ") << classes[i] << " " << class_counts[i];
  return os.str();
}

namespace {

std::string lower_extension(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return "";
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

bool is_resource_fork(const std::string& path) { return fs::path(path).filename().string().rfind("._", 0) == 0; }

SkippedFile skipped(const fs::path& p, SkippedFile::Why why, std::string detail = "") {
  return SkippedFile{p.string(), why, std::move(detail)};
}

}  // namespace

bool has_image_extension(const std::string& name) {
  const std::string ext = lower_extension(name);
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

std::string skip_reason(const SkippedFile& f) {
  using Why = SkippedFile::Why;
  switch (f.why) {
    case Why::unsupported:
      return (f.detail.empty() ? std::string("no file extension") : "unsupported format ." + f.detail) +
             " (kiln reads .jpg, .jpeg, .png, .bmp)";
    case Why::hidden:
      return is_resource_fork(f.path) ? "macOS resource fork (a '._' file, not an image)"
                                      : "hidden (the name starts with '.')";
    case Why::folder: return "a folder inside a class folder (class folders are not searched deeper)";
    case Why::outside_class: return "not inside a class folder";
    case Why::empty: return "empty file (0 bytes)";
    case Why::undecodable: return "failed to decode: " + f.detail;
  }
  return "";
}

std::string skip_group(const SkippedFile& f, bool many) {
  using Why = SkippedFile::Why;
  switch (f.why) {
    case Why::unsupported: return f.detail.empty() ? "without extension" : "unsupported ." + f.detail;
    case Why::hidden: return is_resource_fork(f.path) ? (many ? "macOS ._ files" : "macOS ._ file") : "hidden";
    case Why::folder: return many ? "folders in a class folder" : "folder in a class folder";
    case Why::outside_class: return "not in a class folder";
    case Why::empty: return "empty";
    case Why::undecodable: return "failed to decode";
  }
  return "";
}

FolderScan scan_image_folder(const std::string& root) {
  using Why = SkippedFile::Why;
  std::error_code ec;
  KILN_CHECK(fs::is_directory(root, ec), "image folder '", root, "' does not exist or is not a directory");
  FolderScan scan;
  Dataset& ds = scan.dataset;
  ds.root = root;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') scan.skipped.push_back(skipped(e.path(), Why::hidden));
    else if (e.is_directory(ec)) ds.classes.push_back(name);
    else scan.skipped.push_back(skipped(e.path(), Why::outside_class));
  }
  // Class names are kept one per line (classes.txt, checkpoints' lists, CSV reports).
  for (const std::string& c : ds.classes)
    KILN_CHECK(std::none_of(c.begin(), c.end(), [](char ch) { return ch == '\n' || ch == '\r'; }), "image folder '",
               root, "': class folder name '", c, "' holds a line break, which the class list (one name a line) "
               "cannot keep: rename that folder");
  std::sort(ds.classes.begin(), ds.classes.end());
  for (size_t label = 0; label < ds.classes.size(); ++label) {
    const fs::path dir = fs::path(root) / ds.classes[label];
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      // A directory named x.jpg is kept: it fails at decode time and is reported with the rest.
      if (name.empty() || name[0] == '.') scan.skipped.push_back(skipped(e.path(), Why::hidden));
      else if (has_image_extension(name)) files.push_back(e.path().string());
      else if (e.is_directory(ec)) scan.skipped.push_back(skipped(e.path(), Why::folder));
      else scan.skipped.push_back(skipped(e.path(), Why::unsupported, lower_extension(name)));
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) ds.samples.push_back(Sample{std::move(f), static_cast<int64_t>(label)});
    ds.class_counts.push_back(static_cast<int64_t>(files.size()));
  }
  std::sort(scan.skipped.begin(), scan.skipped.end(),
            [](const SkippedFile& a, const SkippedFile& b) { return a.path < b.path; });
  return scan;
}

Dataset image_folder(const std::string& root) {
  Dataset ds = scan_image_folder(root).dataset;
  KILN_CHECK(ds.classes.size() >= 2, "image folder '", root, "': expected at least two class subfolders, found ",
             ds.classes.size(), ds.classes.empty() ? "" : " ('" + ds.classes[0] + "')");
  for (size_t label = 0; label < ds.classes.size(); ++label)
    KILN_CHECK(ds.class_counts[label] > 0, "class folder '", (fs::path(root) / ds.classes[label]).string(),
               "' holds no image file (expected .jpg, .jpeg, .png or .bmp)");
  return ds;
}

namespace {

// Up to 60 characters of `s` for a message, control bytes written as \xNN.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 60) out += "...";
  return out;
}

// A label: plain decimal digits, 0..kMaxListLabel; -1 otherwise.
int64_t parse_label(std::string_view text) {
  if (text.empty() || text.size() > 5) return -1;
  int64_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v <= kMaxListLabel ? v : -1;
}

}  // namespace

Dataset parse_image_list(std::string_view text, const std::string& base_dir, const std::string& name) {
  Dataset ds;
  ds.root = name;
  const fs::path base(base_dir);
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a UTF-8 byte-order mark
  int64_t max_label = -1;
  int64_t lineno = 0;
  while (!text.empty()) {
    ++lineno;
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    KILN_CHECK(line.size() <= kMaxListLineBytes, name, ":", lineno, ": line of ", line.size(),
               " bytes, longer than kiln's limit of ", kMaxListLineBytes, " (is this a list file?)");
    KILN_CHECK(line.find('\0') == std::string_view::npos, name, ":", lineno,
               ": NUL byte in the line (is this a binary file, or UTF-16 text? expected UTF-8 or ASCII)");
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    const auto last = line.find_last_not_of(" \t\r");
    const auto sep = line.find_last_of(" \t", last);
    KILN_CHECK(sep != std::string_view::npos && sep > first, name, ":", lineno, ": expected 'path label', got '",
               printable(line), "'");
    const std::string_view label_text = line.substr(sep + 1, last - sep);
    const int64_t label = parse_label(label_text);
    KILN_CHECK(label >= 0, name, ":", lineno, ": expected a non-negative integer label, got '", printable(label_text),
               "' (labels are class numbers 0..", kMaxListLabel, ")");
    fs::path p(line.substr(first, line.find_last_not_of(" \t", sep) - first + 1));
    if (p.is_relative()) p = base / p;
    ds.samples.push_back(Sample{p.string(), label});
    max_label = std::max(max_label, label);
  }
  KILN_CHECK(!ds.samples.empty(), "image list '", name, "' holds no 'path label' line");
  ds.class_counts.assign(static_cast<size_t>(max_label + 1), 0);
  for (const auto& s : ds.samples) ++ds.class_counts[static_cast<size_t>(s.label)];
  for (int64_t i = 0; i <= max_label; ++i) ds.classes.push_back(std::to_string(i));
  return ds;
}

Dataset image_list(const std::string& list_file) {
  std::ifstream in(list_file, std::ios::binary);
  KILN_CHECK(in.good(), "cannot open image list '", list_file, "'");
  std::error_code ec;
  const auto size = fs::file_size(list_file, ec);
  KILN_CHECK(ec || size <= static_cast<uint64_t>(kMaxListFileBytes), "image list '", list_file, "' is ", size,
             " bytes, over kiln's limit of ", kMaxListFileBytes, " (is this a list file?)");
  std::string text;
  char buf[1 << 16];
  // Read in blocks with the limit enforced as we go: a FIFO or /dev/zero has no size.
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    KILN_CHECK(text.size() <= static_cast<size_t>(kMaxListFileBytes), "image list '", list_file,
               "' is over kiln's limit of ", kMaxListFileBytes, " bytes (is this a list file?)");
  }
  KILN_CHECK(!in.bad(), "failed reading image list '", list_file, "'");
  return parse_image_list(text, fs::path(list_file).parent_path().string(), list_file);
}

}  // namespace kiln::io
