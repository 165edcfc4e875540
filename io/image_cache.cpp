#include "io/image_cache.h"

namespace kiln::io {

ImageCache::ImageCache(size_t samples, int64_t budget_bytes) : slots_(samples), bad_(samples, false) {
  stats_.budget = budget_bytes;
}

std::shared_ptr<const Image> ImageCache::get(size_t i) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<const Image> img = slots_.at(i);
  ++(img ? stats_.hits : stats_.misses);
  return img;
}

void ImageCache::put(size_t i, std::shared_ptr<const Image> img) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t bytes = static_cast<int64_t>(img->nbytes());
  if (slots_.at(i) || stats_.bytes + bytes > stats_.budget) return;
  slots_[i] = std::move(img);
  stats_.bytes += bytes;
  ++stats_.entries;
}

bool ImageCache::mark_bad(size_t i) {
  std::lock_guard<std::mutex> lock(mu_);
  if (bad_.at(i)) return false;
  bad_[i] = true;
  ++bad_count_;
  return true;
}

bool ImageCache::is_bad(size_t i) const {
  std::lock_guard<std::mutex> lock(mu_);
  return bad_.at(i);
}

bool ImageCache::complete() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.entries + bad_count_ == static_cast<int64_t>(slots_.size());
}

std::vector<std::shared_ptr<const Image>> ImageCache::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slots_;
}

CacheStats ImageCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace kiln::io
