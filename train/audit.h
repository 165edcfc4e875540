// Checks a data set the way training will read it, before any training: which files are
// used and which are not (and why), exact duplicates within and across splits, classes
// missing from a split or far smaller than the others. `vgg_finetune audit` prints it;
// `vgg_finetune train` starts with it and trains on the usable files only, so a run says
// up front what a silent skip per batch would otherwise hide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/dataset.h"

namespace kiln {

// How thoroughly and how fast to audit.
struct AuditOptions {
  // Decode every image fully, as the loader will (stb_image after kiln's structure walk).
  // false: the structure walk alone (every segment, chunk, CRC and the end marker, no pixels).
  bool full_decode = true;
  int threads = 2;                     // files read and decoded in parallel
  double small_class_fraction = 0.25;  // a class under this fraction of its split's median is flagged
  size_t max_pairs = 10;               // duplicate pairs of each kind named in the summary; the rest counted
};

// One split (train/, val/, test/, or a single folder of classes) after the audit.
struct SplitAudit {
  std::string name;            // "train", "val", "test", or the folder itself
  io::Dataset usable;          // the files that passed, labelled by AuditReport::classes
  std::vector<int64_t> found;  // per class: files with an image extension found, usable or not
  std::vector<bool> has_folder;  // per class: the split has a folder for it
};

// Two files with the same bytes (size, CRC32C, then a byte-for-byte compare).
struct DuplicatePair {
  size_t first_split = 0, second_split = 0;  // indices into AuditReport::splits; first <= second
  std::string first, second;                 // paths; first is the earlier split, then the earlier path
  int64_t first_label = 0, second_label = 0;
};

// What an audit found, and what training may or may not go ahead with.
struct AuditReport {
  std::vector<std::string> classes;      // every class folder of any split, sorted
  std::vector<SplitAudit> splits;        // in the order given; the first is the one trained on
  std::vector<io::SkippedFile> skipped;  // every split's, sorted by path
  std::vector<DuplicatePair> duplicates;
  std::vector<std::string> errors;    // what makes training impossible: train refuses to start
  std::vector<std::string> warnings;  // what training goes ahead with, but a user should hear
  int64_t files_read = 0;             // files opened and checked
  double seconds = 0;
  AuditOptions options;               // what it was run with

  // The split of that name, or nullptr.
  const SplitAudit* split(const std::string& name) const;
  // The lines for people: usable counts per split and class, skipped files by reason (the
  // first `list_skipped` named, then "see `skipped_path`" when it is not empty), duplicates,
  // warnings and errors.
  std::string summary(size_t list_skipped, const std::string& skipped_path) const;
  // skipped.txt: one "path<TAB>reason" line per skipped file, sorted by path.
  std::string skipped_text() const;
};

// Audits splits given as (name, folder) pairs; the first is the split trained on, whose
// class folders the others must not go beyond. Reads every file once. Throws kiln::Error
// only when a folder is missing; everything wrong with the data is in the report.
AuditReport audit_splits(const std::vector<std::pair<std::string, std::string>>& splits, const AuditOptions& opt = {});

// A data folder: its train/, val/ and test/ (those present) when it holds train/ or val/,
// otherwise the folder itself as one split of class folders.
AuditReport audit_data_dir(const std::string& dir, const AuditOptions& opt = {});

}  // namespace kiln
