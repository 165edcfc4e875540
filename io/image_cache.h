// Decode once: the decoded, resized 8-bit images of a data set kept in memory up to a
// byte budget, so after the first epoch only crop, flip and normalise remain. Also
// remembers which files failed, so each is decoded (and reported) once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/image.h"

namespace kiln::io {

struct CacheStats {
  int64_t hits = 0;     // images served from memory
  int64_t misses = 0;   // images decoded (cold, or not kept for lack of budget)
  int64_t entries = 0;  // images held
  int64_t bytes = 0;    // pixel bytes held
  int64_t budget = 0;   // the byte budget
};

// One slot per sample; thread-safe.
class ImageCache {
 public:
  ImageCache(size_t samples, int64_t budget_bytes);

  // The cached image of sample i, or null (counted as a hit or a miss).
  std::shared_ptr<const Image> get(size_t i);
  // Keeps img for sample i when it fits in what is left of the budget; first come, first kept.
  void put(size_t i, std::shared_ptr<const Image> img);
  // Records that sample i cannot be decoded; true the first time (so the caller reports it once).
  bool mark_bad(size_t i);
  bool is_bad(size_t i) const;
  // True when every sample is either held or known bad: nothing will ever be decoded again.
  bool complete() const;
  // The held images by sample (null where none is held), without counting hits.
  std::vector<std::shared_ptr<const Image>> snapshot() const;

  CacheStats stats() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const Image>> slots_;
  std::vector<bool> bad_;
  int64_t bad_count_ = 0;
  CacheStats stats_;
};

}  // namespace kiln::io
