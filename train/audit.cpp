#include "train/audit.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <tuple>

#include "core/error.h"
#include "io/crc32c.h"
#include "io/image.h"
#include "train/format.h"

namespace kiln {
namespace fs = std::filesystem;
using Why = io::SkippedFile::Why;

namespace {

// What reading and checking one file found.
struct FileCheck {
  bool ok = false;
  Why why = Why::undecodable;
  std::string detail;
  uint64_t size = 0;
  uint32_t crc = 0;
};

// An error's first line without the file name in front (the report names the file) and
// without the " [io/file.cpp:123]" location at the end (for kiln's developers, not users).
std::string plain_message(const std::string& what, const std::string& path) {
  std::string m = what.substr(0, what.find('\n'));
  if (m.rfind(path + ": ", 0) == 0) m.erase(0, path.size() + 2);
  if (!m.empty() && m.back() == ']') {
    if (const size_t at = m.rfind(" ["); at != std::string::npos) m.resize(at);
  }
  return m;
}

FileCheck check_file(const std::string& path, const AuditOptions& opt) {
  FileCheck r;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    r.why = Why::folder;
    return r;
  }
  if (!fs::is_regular_file(path, ec)) {  // a pipe named x.jpg would block a read forever
    r.detail = "not a regular file (a device, pipe or socket)";
    return r;
  }
  try {
    const std::vector<uint8_t> bytes = io::read_image_bytes(path);
    if (bytes.empty()) {
      r.why = Why::empty;
      return r;
    }
    r.size = bytes.size();
    r.crc = io::crc32c(bytes.data(), bytes.size());
    if (opt.full_decode) io::decode_image_bytes(bytes, path);
    else io::check_image(bytes, path);
    r.ok = true;
  } catch (const std::exception& e) {
    r.detail = plain_message(e.what(), path);
  }
  return r;
}

// Every file checked, `threads` at a time; check_file never throws.
std::vector<FileCheck> check_files(const std::vector<std::string>& paths, const AuditOptions& opt) {
  std::vector<FileCheck> out(paths.size());
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t i = next++; i < paths.size(); i = next++) out[i] = check_file(paths[i], opt);
  };
  const size_t n = std::min<size_t>(static_cast<size_t>(std::clamp(opt.threads, 1, 64)), std::max<size_t>(paths.size(), 1));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return out;
}

bool same_bytes(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  std::vector<char> ba(1 << 16), bb(1 << 16);
  for (;;) {
    fa.read(ba.data(), static_cast<std::streamsize>(ba.size()));
    fb.read(bb.data(), static_cast<std::streamsize>(bb.size()));
    if (fa.gcount() != fb.gcount()) return false;
    if (!std::equal(ba.begin(), ba.begin() + fa.gcount(), bb.begin())) return false;
    if (fa.gcount() == 0 || !fa || !fb) return fa.eof() && fb.eof() && fa.gcount() == fb.gcount();
  }
}

// A usable file as the duplicate search sees it.
struct Candidate {
  uint64_t size;
  uint32_t crc;
  size_t split;
  std::string path;
  int64_t label;
};

// Files bucketed by size and CRC32C, each bucket split by a byte compare; within a set of
// equal files the earliest (split, then path) is paired with each of the others.
std::vector<DuplicatePair> find_duplicates(std::vector<Candidate> files) {
  std::sort(files.begin(), files.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.size, a.crc, a.split, a.path) < std::tie(b.size, b.crc, b.split, b.path);
  });
  std::vector<DuplicatePair> pairs;
  for (size_t lo = 0; lo < files.size();) {
    size_t hi = lo + 1;
    while (hi < files.size() && files[hi].size == files[lo].size && files[hi].crc == files[lo].crc) ++hi;
    std::vector<size_t> firsts;  // the first file of each set of equal files in this bucket
    for (size_t i = lo; i < hi; ++i) {
      const auto rep = std::find_if(firsts.begin(), firsts.end(),
                                    [&](size_t f) { return same_bytes(files[f].path, files[i].path); });
      if (rep == firsts.end()) {
        firsts.push_back(i);
        continue;
      }
      const Candidate& f = files[*rep];
      pairs.push_back(DuplicatePair{f.split, files[i].split, f.path, files[i].path, f.label, files[i].label});
    }
    lo = hi;
  }
  std::sort(pairs.begin(), pairs.end(), [](const DuplicatePair& a, const DuplicatePair& b) {
    return std::tie(a.first_split, a.second_split, a.second, a.first) <
           std::tie(b.first_split, b.second_split, b.second, b.first);
  });
  return pairs;
}

double median(std::vector<int64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? static_cast<double>(v[m]) : 0.5 * static_cast<double>(v[m - 1] + v[m]);
}

// "1/4" for 0.25, else the fraction as a number.
std::string fraction_text(double f) {
  for (int d = 2; d <= 10; ++d)
    if (std::abs(f * d - 1.0) < 1e-9) return "1/" + std::to_string(d);
  return format_number("%g", f);
}

// The class rules: what stops training (errors) and what it may go ahead with (warnings).
void check_classes(AuditReport& r, const AuditOptions& opt) {
  const SplitAudit& first = r.splits.front();
  const std::string first_root = first.usable.root;
  const int64_t first_classes = std::count(first.has_folder.begin(), first.has_folder.end(), true);
  if (first_classes < 2)
    r.errors.push_back(first.name + " ('" + first_root + "') has " + plural(first_classes, "class folder", "class folders") +
                       "; training needs at least two");
  for (size_t s = 0; s < r.splits.size(); ++s) {
    const SplitAudit& sp = r.splits[s];
    const bool empty_split = sp.usable.samples.empty();
    if (s > 0 && empty_split && !sp.usable.classes.empty())
      r.errors.push_back(sp.name + " ('" + sp.usable.root + "') has no usable image: nothing to evaluate on");
    for (size_t c = 0; c < r.classes.size(); ++c) {
      const std::string& name = r.classes[c];
      const int64_t n = sp.usable.class_counts[c];
      const std::string dir = (fs::path(sp.usable.root) / name).string();
      // A class folder holding folders and no image is most often a dataset nested one level too
      // deep (data/train/train/<class>/): "remove the folder" would delete all of it.
      std::vector<std::string> subfolders;
      if (sp.has_folder[c] && sp.found[c] == 0)
        for (const io::SkippedFile& f : r.skipped)
          if (f.why == io::SkippedFile::Why::folder && fs::path(f.path).parent_path() == fs::path(dir))
            subfolders.push_back(fs::path(f.path).filename().string());
      const std::string why_none = !sp.has_folder[c] ? "no folder '" + dir + "'"
                                   : !subfolders.empty() ? "'" + dir + "' holds folders (" + join_names(subfolders, 3) +
                                                               "), not images"
                                   : sp.found[c] == 0 ? "'" + dir + "' holds no .jpg, .jpeg, .png or .bmp file"
                                   : "'" + dir + "': " + plural(sp.found[c], "image file", "image files") +
                                         " found, none usable (see the skipped files)";
      if (s == 0 && sp.has_folder[c] && n == 0) {
        r.errors.push_back("class '" + name + "' has no usable image in " + sp.name + " (" + why_none + "): " +
                           (subfolders.empty() ? "add images or remove the folder"
                                               : "class folders nested one level too deep? Each class folder holds "
                                                 "its images directly; give the folder that holds the class folders"));
      } else if (s > 0 && !first.has_folder[c] && sp.has_folder[c]) {
        r.errors.push_back(sp.name + " has class '" + name + "' that " + first.name +
                           " has no folder for: the model could not learn it; rename or remove '" + dir +
                           "' (class folders must match " + first.name + "'s)");
      } else if (s > 0 && n == 0 && !empty_split) {
        r.warnings.push_back(sp.name + " has no image of class '" + name + "' (" + why_none +
                             "): its accuracy there is not measured");
      }
    }
    std::vector<int64_t> counts;
    for (size_t c = 0; c < r.classes.size(); ++c)
      if (sp.has_folder[c]) counts.push_back(sp.usable.class_counts[c]);
    const double med = median(counts);
    for (size_t c = 0; c < r.classes.size(); ++c) {
      const int64_t n = sp.usable.class_counts[c];
      if (n > 0 && static_cast<double>(n) < opt.small_class_fraction * med)
        r.warnings.push_back("class '" + r.classes[c] + "' has " + plural(n, sp.name + " image", sp.name + " images") +
                             ", under " + fraction_text(opt.small_class_fraction) + " of the median class in " +
                             sp.name + " (" + format_number("%g", med) +
                             "): too few to learn or to measure well (rule: a class under " +
                             fraction_text(opt.small_class_fraction) + " of its split's median is flagged)");
    }
  }
}

// The usable dataset of one split from its scan and its files' checks, labelled by `classes`.
void fill_split(SplitAudit& sp, const io::FolderScan& scan, const std::vector<FileCheck>& checks, size_t at,
                const std::vector<std::string>& classes, std::vector<io::SkippedFile>& skipped,
                std::vector<Candidate>& candidates, size_t split_index) {
  const io::Dataset& ds = scan.dataset;
  sp.usable.root = ds.root;
  sp.usable.classes = classes;
  sp.usable.class_counts.assign(classes.size(), 0);
  sp.found.assign(classes.size(), 0);
  sp.has_folder.assign(classes.size(), false);
  std::vector<int64_t> label_of(ds.classes.size());
  for (size_t c = 0; c < ds.classes.size(); ++c) {
    label_of[c] = std::lower_bound(classes.begin(), classes.end(), ds.classes[c]) - classes.begin();
    sp.has_folder[static_cast<size_t>(label_of[c])] = true;
  }
  for (size_t i = 0; i < ds.samples.size(); ++i) {
    const io::Sample& s = ds.samples[i];
    const FileCheck& fc = checks[at + i];
    const int64_t label = label_of[static_cast<size_t>(s.label)];
    ++sp.found[static_cast<size_t>(label)];
    if (!fc.ok) {
      skipped.push_back(io::SkippedFile{s.path, fc.why, fc.detail});
      continue;
    }
    sp.usable.samples.push_back(io::Sample{s.path, label});
    ++sp.usable.class_counts[static_cast<size_t>(label)];
    candidates.push_back(Candidate{fc.size, fc.crc, split_index, s.path, label});
  }
  // The scan's classes are a sorted subset of the sorted union: samples stay by class, then name.
}

// "train: 800 images in 8 classes: bear 100, ... (3 more image files found, not usable)".
std::string split_line(const SplitAudit& sp) {
  int64_t found = 0;
  for (int64_t n : sp.found) found += n;
  const auto usable = static_cast<int64_t>(sp.usable.samples.size());
  return "  " + sp.name + ": " + sp.usable.summary() +
         (found > usable ? " (" + plural(found - usable, "more image file", "more image files") + " found, not usable)"
                         : std::string()) + "\n";
}

// "3 files (2 unsupported .webp, 1 failed to decode)".
std::string skipped_counts(const std::vector<io::SkippedFile>& skipped) {
  // Each group's count and a file of it, whose group is said in the count's number.
  std::map<std::string, std::pair<int64_t, const io::SkippedFile*>> groups;
  for (const io::SkippedFile& f : skipped) {
    auto& [count, example] = groups[io::skip_group(f)];
    ++count;
    example = &f;
  }
  std::vector<std::pair<int64_t, const io::SkippedFile*>> order;
  for (const auto& [name, g] : groups) order.push_back(g);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string out = plural(static_cast<int64_t>(skipped.size()), "file", "files") + " (";
  for (size_t i = 0; i < order.size(); ++i) {
    const auto& [count, example] = order[i];
    out += (i ? ", " : "") + std::to_string(count) + " " + io::skip_group(*example, count > 1);
  }
  return out + ")";
}

// The duplicate pairs of one kind: a sentence, then up to `max` pairs and a count of the rest.
std::string duplicate_lines(const AuditReport& r, const std::vector<const DuplicatePair*>& pairs,
                            const std::string& sentence, size_t max) {
  if (pairs.empty()) return "";
  std::string out = "duplicates: " + sentence + ":\n";
  for (size_t i = 0; i < pairs.size() && i < max; ++i) {
    const DuplicatePair& p = *pairs[i];
    out += "  " + p.second + " = " + p.first;
    if (p.first_label != p.second_label)
      out += "  (class '" + r.classes[static_cast<size_t>(p.second_label)] + "' vs '" +
             r.classes[static_cast<size_t>(p.first_label)] + "')";
    out += "\n";
  }
  if (pairs.size() > max) out += "  ... and " + std::to_string(pairs.size() - max) + " more\n";
  return out;
}

std::string duplicates_text(const AuditReport& r, size_t max) {
  if (r.duplicates.empty()) return "duplicates: none (no two usable files have the same bytes)\n";
  std::string out;
  std::vector<const DuplicatePair*> conflicts;
  for (const DuplicatePair& p : r.duplicates)
    if (p.first_label != p.second_label) conflicts.push_back(&p);
  for (size_t a = 0; a < r.splits.size(); ++a) {
    for (size_t b = a; b < r.splits.size(); ++b) {
      std::vector<const DuplicatePair*> kind;
      for (const DuplicatePair& p : r.duplicates)
        if (p.first_split == a && p.second_split == b) kind.push_back(&p);
      const auto n = static_cast<int64_t>(kind.size());
      const std::string& A = r.splits[a].name;
      const std::string& B = r.splits[b].name;
      const std::string sentence =
          a == b ? plural(n, A + " image is an exact copy", A + " images are exact copies") + " of another " + A +
                       " image (each copy counts again in every epoch)"
                 : plural(n, B + " image is an exact copy", B + " images are exact copies") + " of " + A +
                       " images: " + B + " accuracy overstates accuracy on new images (the model trained on them); " +
                       "remove them from one of the two";
      out += duplicate_lines(r, kind, sentence, max);
    }
  }
  if (!conflicts.empty())
    out += "duplicates: " + plural(static_cast<int64_t>(conflicts.size()), "image is", "images are") +
           " filed under two classes (the same bytes with two labels; one label is wrong), listed above with both "
           "classes\n";
  return out;
}

}  // namespace

std::string AuditReport::summary(size_t list_skipped, const std::string& skipped_path) const {
  const auto failed = std::count_if(skipped.begin(), skipped.end(), [](const io::SkippedFile& f) {
    return f.why == io::SkippedFile::Why::undecodable;
  });
  const std::string how = options.full_decode ? "fully decoded" : "checked (structure only, no decode)";
  std::string out = "audit: " + plural(files_read, "image file", "image files") + " read and " +
                    (failed == 0 ? how : std::to_string(files_read - failed) + " of them " + how + ", " +
                                             std::to_string(failed) + " failing") +
                    " in " + format_number("%.1f", seconds) + " s\n";
  for (const SplitAudit& sp : splits) out += split_line(sp);
  if (skipped.empty()) {
    out += "skipped: none\n";
  } else {
    out += "skipped: " + skipped_counts(skipped) +
           (skipped_path.empty() ? std::string() : " -- see " + skipped_path) + "\n";
    for (size_t i = 0; i < skipped.size() && i < list_skipped; ++i)
      out += "  " + skipped[i].path + ": " + io::skip_reason(skipped[i]) + "\n";
    if (skipped.size() > list_skipped && list_skipped > 0)
      out += "  ... and " + std::to_string(skipped.size() - list_skipped) + " more\n";
  }
  out += duplicates_text(*this, options.max_pairs);
  for (const std::string& w : warnings) out += "warning: " + w + "\n";
  for (const std::string& e : errors) out += "error: " + e + "\n";
  return out;
}

std::string AuditReport::skipped_text() const {
  std::string out;
  for (const io::SkippedFile& f : skipped) out += f.path + "\t" + io::skip_reason(f) + "\n";
  return out;
}

const SplitAudit* AuditReport::split(const std::string& name) const {
  for (const SplitAudit& s : splits)
    if (s.name == name) return &s;
  return nullptr;
}

AuditReport audit_splits(const std::vector<std::pair<std::string, std::string>>& splits, const AuditOptions& opt) {
  KILN_CHECK(!splits.empty(), "audit_splits: no folder given");
  const auto t0 = std::chrono::steady_clock::now();
  AuditReport r;
  r.options = opt;
  std::vector<io::FolderScan> scans;
  std::vector<std::string> paths;
  for (const auto& [name, dir] : splits) {
    scans.push_back(io::scan_image_folder(dir));
    for (const std::string& c : scans.back().dataset.classes) r.classes.push_back(c);
    for (const io::Sample& s : scans.back().dataset.samples) paths.push_back(s.path);
    for (io::SkippedFile& f : scans.back().skipped) r.skipped.push_back(std::move(f));
  }
  std::sort(r.classes.begin(), r.classes.end());
  r.classes.erase(std::unique(r.classes.begin(), r.classes.end()), r.classes.end());
  const std::vector<FileCheck> checks = check_files(paths, opt);
  r.files_read = static_cast<int64_t>(paths.size());
  std::vector<Candidate> candidates;
  size_t at = 0;
  for (size_t s = 0; s < splits.size(); ++s) {
    SplitAudit sp;
    sp.name = splits[s].first;
    fill_split(sp, scans[s], checks, at, r.classes, r.skipped, candidates, s);
    at += scans[s].dataset.samples.size();
    r.splits.push_back(std::move(sp));
  }
  std::sort(r.skipped.begin(), r.skipped.end(),
            [](const io::SkippedFile& a, const io::SkippedFile& b) { return a.path < b.path; });
  r.duplicates = find_duplicates(std::move(candidates));
  check_classes(r, opt);
  // One folder given as two splits: every image is its own "duplicate", and the second
  // split's accuracy is the first's, measuring nothing about new images.
  for (size_t a = 0; a < splits.size(); ++a)
    for (size_t b = a + 1; b < splits.size(); ++b) {
      std::error_code ec;
      if (fs::equivalent(splits[a].second, splits[b].second, ec))
        r.errors.push_back(splits[b].first + " is the same folder as " + splits[a].first + " ('" + splits[b].second +
                           "'): its accuracy would be the training accuracy; give a folder of other images");
    }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

AuditReport audit_data_dir(const std::string& dir, const AuditOptions& opt) {
  std::error_code ec;
  KILN_CHECK(fs::is_directory(dir, ec), "data folder '", dir, "' does not exist or is not a directory");
  std::vector<std::pair<std::string, std::string>> splits;
  for (const char* name : {"train", "val", "test"})
    if (fs::is_directory(fs::path(dir) / name, ec)) splits.emplace_back(name, (fs::path(dir) / name).string());
  const bool split_folder = !splits.empty();
  if (!split_folder) splits.emplace_back(dir, dir);
  AuditReport r = audit_splits(splits, opt);
  // train --data-dir refuses a folder of splits without both; --train-dir/--val-dir take any two.
  if (split_folder && (!r.split("train") || !r.split("val"))) {
    const char* has = r.split("train") ? "train" : r.split("val") ? "val" : "test";
    const char* lacks = r.split("train") ? "val" : "train";
    r.errors.push_back("'" + dir + "' has " + has + "/ but no " + lacks + "/: train --data-dir needs both (or give " +
                       "--train-dir and --val-dir, each a folder per class, e.g. " +
                       (fs::path(dir) / has).string() + ")");
  }
  return r;
}

}  // namespace kiln
