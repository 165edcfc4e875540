#include "io/loader.h"

#include <array>

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/ops.h"
#include "core/philox.h"

namespace kiln::io {
namespace {

// The shuffle's Philox key, distinct from augmentation's (transforms.cpp).
constexpr uint64_t kShuffleKey = 0x3C6E'F372'FE94'F82Bull;

}  // namespace

Loader::Loader(Dataset dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), opt_(std::move(options)),
      cache_(dataset_.size(), std::max<int64_t>(opt_.cache_bytes, 0)) {
  const int64_t n = static_cast<int64_t>(dataset_.size());
  KILN_CHECK(n > 0, "Loader: dataset '", dataset_.root, "' has no samples");
  KILN_CHECK(n < (int64_t{1} << 32), "Loader: ", n, " samples; at most 2^32 supported");
  KILN_CHECK(opt_.num_workers > 0, "Loader: num_workers must be 1 or more, got ", opt_.num_workers,
             " (images are decoded on worker threads; 1 is the nearest to a PyTorch DataLoader's 0)");
  KILN_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count, "Loader: shard ",
             opt_.shard_rank, " of ", opt_.shard_count, " is not a rank of the shard count");
  KILN_CHECK(opt_.prefetch_batches > 0, "Loader: prefetch_batches must be positive, got ", opt_.prefetch_batches);
  KILN_CHECK(opt_.crop > 0 && opt_.crop <= kMaxImageSize && opt_.resize_shorter >= 0, "Loader: crop ", opt_.crop,
             " must be in 1..", kMaxImageSize, " and resize ", opt_.resize_shorter, " non-negative");
  batches_per_epoch_ = epoch_batches(n, opt_);
  KILN_CHECK(batches_per_epoch_ > 0, "Loader: drop_last with batch_size ", opt_.batch_size, " > ", n,
             " samples leaves no batch");
  // start_batch == the epoch's batches: nothing of start_epoch is left to serve.
  KILN_CHECK(opt_.start_batch >= 0 && opt_.start_batch <= batches_per_epoch_, "Loader: start_batch ",
             opt_.start_batch, " is outside 0..", batches_per_epoch_, ", the batches of an epoch (", n,
             " samples, batch_size ", opt_.batch_size, ")");
  epoch_ = opt_.start_epoch;
  // Jobs count batches from the start of start_epoch: the skipped ones are never built.
  next_job_ = consumed_ = served_in_epoch_ = opt_.start_batch;
  bytes_ = opt_.convert_at == LoaderOptions::ConvertAt::device ||
           (opt_.convert_at == LoaderOptions::ConvertAt::auto_ && !opt_.device.is_cpu());
  atlas_wanted_ = bytes_ && opt_.augment_on_device && opt_.cache_bytes > 0;
  if (bytes_) {
    const std::array<float, 3 * 256> table = convention_lut(opt_.convention);
    lut_ = Tensor::from_vector(std::vector<float>(table.begin(), table.end()), Shape{3, 256}).to(opt_.device);
  }
  workers_.reserve(static_cast<size_t>(opt_.num_workers));
  for (int i = 0; i < opt_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

int64_t epoch_batches(int64_t samples, const LoaderOptions& opt) {
  KILN_CHECK(opt.batch_size > 0, "Loader: batch_size must be positive, got ", opt.batch_size);
  return opt.drop_last ? samples / opt.batch_size : (samples + opt.batch_size - 1) / opt.batch_size;
}

ShardRange shard_of(int64_t batch_begin, int64_t batch_end, int rank, int count) {
  const int64_t n = batch_end - batch_begin;
  return ShardRange{batch_begin + n * rank / count, batch_begin + n * (rank + 1) / count};
}

std::vector<int64_t> Loader::epoch_order(uint64_t epoch) const {
  const int64_t n = static_cast<int64_t>(dataset_.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!opt_.shuffle) return order;
  KILN_CHECK(epoch < (uint64_t{1} << 30), "Loader: epoch ", epoch, " beyond 2^30");
  // Fisher-Yates; swap i draws word i % 4 of block (epoch, i / 4).
  for (int64_t i = n - 1; i > 0; --i) {
    const Philox4 b = philox_block(opt_.seed ^ kShuffleKey, (epoch << 32) | static_cast<uint64_t>(i / 4));
    const uint64_t j = (uint64_t{philox_word(b, static_cast<unsigned>(i % 4))} * static_cast<uint64_t>(i + 1)) >> 32;
    std::swap(order[i], order[j]);
  }
  return order;
}

std::shared_ptr<const std::vector<int64_t>> Loader::order_for(uint64_t epoch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = orders_.find(epoch);
    if (it != orders_.end()) return it->second;
  }
  auto order = std::make_shared<const std::vector<int64_t>>(epoch_order(epoch));
  std::lock_guard<std::mutex> lock(mu_);
  // Workers are at most a window of batches apart: two epochs cover them.
  while (!orders_.empty() && orders_.begin()->first + 1 < epoch) orders_.erase(orders_.begin());
  return orders_.emplace(epoch, order).first->second;
}

void Loader::worker_loop() {
  for (;;) {
    int64_t job = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || failed_ || next_job_ < consumed_ + opt_.prefetch_batches; });
      if (stop_ || failed_) return;
      job = next_job_++;
    }
    Ready r;
    try {
      r.batch = build(job);
    } catch (...) {
      r.error = std::current_exception();
    }
    const bool failed = r.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failed) failed_ = true;
      ready_.emplace(job, std::move(r));
    }
    ready_cv_.notify_all();
    if (failed) work_cv_.notify_all();
  }
}

std::shared_ptr<const Image> Loader::load(int64_t sample) {
  const size_t i = static_cast<size_t>(sample);
  if (cache_.is_bad(i)) return nullptr;
  if (auto img = cache_.get(i)) return img;
  const std::string& path = dataset_.samples[i].path;
  std::shared_ptr<const Image> img;
  try {
    Image decoded = decode_image(path, opt_.decode);
    int side = opt_.resize_shorter;
    // Images smaller than the crop are resized up first.
    if (side == 0 && std::min(decoded.width, decoded.height) < opt_.crop) side = opt_.crop;
    if (side != 0) decoded = resize_shorter_side(decoded, std::max(side, opt_.crop));
    img = std::make_shared<const Image>(std::move(decoded));
  } catch (const Error& e) {
    if (opt_.strict) throw;
    if (cache_.mark_bad(i)) {
      // Decode errors name the file already; a transform's (an extreme aspect ratio) does not.
      // For people: no source location (the app shows those only under KILN_VERBOSE=1).
      const std::string what = e.message();
      const std::string msg = what.rfind(path, 0) == 0 ? what : path + ": " + what;
      if (opt_.warn) std::fprintf(stderr, "kiln: warning: skipping image: %s\n", msg.c_str());
      std::lock_guard<std::mutex> lock(mu_);
      failures_.push_back(DecodeFailure{path, msg});
    }
    return nullptr;
  }
  if (opt_.cache_bytes > 0) cache_.put(i, img);
  return img;
}

Batch Loader::build(int64_t job) {
  Batch b;
  b.epoch = opt_.start_epoch + static_cast<uint64_t>(job / batches_per_epoch_);
  b.index = job % batches_per_epoch_;
  const auto order = order_for(b.epoch);
  const ShardRange sh = shard_of(b.index * opt_.batch_size,
                                 std::min<int64_t>((b.index + 1) * opt_.batch_size, static_cast<int64_t>(order->size())),
                                 opt_.shard_rank, opt_.shard_count);
  const int64_t begin = sh.begin, end = sh.end;
  const int64_t n = end - begin, s = opt_.crop;
  std::shared_ptr<const std::vector<AtlasEntry>> atlas;
  if (bytes_) {
    std::lock_guard<std::mutex> lock(mu_);
    atlas = atlas_index_;
  }
  // With the atlas, a row is its descriptor; otherwise its pixels, as bytes or floats.
  Tensor images = atlas ? Tensor::empty({n, 6}, TensorOptions{DType::i64, Device::cpu(), opt_.pin_memory})
                        : Tensor::empty({n, s, s, 3}, TensorOptions{bytes_ ? DType::u8 : DType::f32, Device::cpu(),
                                                                    opt_.pin_memory});
  Tensor labels = Tensor::empty({n}, TensorOptions{DType::i64, Device::cpu(), opt_.pin_memory});
  int64_t* desc = atlas ? images.data<int64_t>() : nullptr;
  float* out = !atlas && !bytes_ ? images.data<float>() : nullptr;
  uint8_t* out_bytes = !atlas && bytes_ ? images.data<uint8_t>() : nullptr;
  int64_t* lab = labels.data<int64_t>();
  int64_t rows = 0;
  for (int64_t k = begin; k < end; ++k) {
    if (stop_) return b;  // the loader is closing: abandon the batch
    const int64_t sample = (*order)[k];
    std::shared_ptr<const Image> img;
    const AtlasEntry* entry = nullptr;
    if (atlas) {
      entry = &(*atlas)[static_cast<size_t>(sample)];
      if (entry->offset < 0) {  // failed in an earlier epoch, reported then
        ++b.skipped;
        continue;
      }
    } else if (!(img = load(sample))) {
      ++b.skipped;
      continue;
    }
    const int width = entry ? entry->width : img->width, height = entry ? entry->height : img->height;
    const Crop crop = opt_.augment ? random_crop(width, height, static_cast<int>(s), opt_.seed, b.epoch,
                                                 static_cast<uint64_t>(sample), true)
                                   : center_crop(width, height, static_cast<int>(s));
    if (entry) {
      int64_t* d = desc + rows * 6;
      d[0] = entry->offset, d[1] = height, d[2] = width, d[3] = crop.top, d[4] = crop.left, d[5] = crop.flip;
    } else if (bytes_) {
      crop_to_bytes(*img, crop, opt_.convention, out_bytes + rows * s * s * 3);
    } else {
      crop_to_input(*img, crop, opt_.convention, out + rows * s * s * 3);
    }
    lab[rows] = dataset_.samples[static_cast<size_t>(sample)].label;
    b.indices.push_back(sample);
    ++rows;
  }
  if (rows < n) {
    images = images.slice(0, rows);
    labels = labels.slice(0, rows);
  }
  (atlas ? b.host_desc : bytes_ ? b.host_bytes : b.host_images) = images;
  b.host_labels = labels;
  return b;
}

void Loader::build_atlas() {
  atlas_wanted_ = false;  // one try: it succeeds, or says why and the byte path stays
  const std::vector<std::shared_ptr<const Image>> held = cache_.snapshot();
  auto index = std::make_shared<std::vector<AtlasEntry>>(held.size());
  int64_t total = 0;
  for (size_t i = 0; i < held.size(); ++i) {
    if (!held[i]) continue;  // complete(): only failed files are missing
    (*index)[i] = AtlasEntry{total, held[i]->height, held[i]->width};
    total += static_cast<int64_t>(held[i]->nbytes());
  }
  if (total == 0) return;  // every file failed to decode: nothing to pack
  try {
    Tensor host = Tensor::empty({total}, TensorOptions{DType::u8});
    uint8_t* p = host.data<uint8_t>();
    for (size_t i = 0; i < held.size(); ++i)
      if (held[i]) to_convention_bytes(*held[i], opt_.convention, p + (*index)[i].offset);
    atlas_ = opt_.device.is_cpu() ? host : host.to(opt_.device);
  } catch (const Error& e) {
    // Typically no room on the device: crops stay on the host, the conversion on the device.
    atlas_ = Tensor();
    if (opt_.warn) std::fprintf(stderr, "kiln: warning: no device atlas, crops stay on the host: %s\n", e.what());
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  atlas_index_ = std::move(index);
  atlas_bytes_ = total;
}

void Loader::to_device_labels(Batch& b) const {
  if (opt_.device.is_cpu()) {
    b.labels = b.host_labels;
    return;
  }
  // Ordered on the backend's copy stream; b keeps the pinned source alive meanwhile.
  b.labels = Tensor::empty(b.host_labels.shape(), TensorOptions{DType::i64, opt_.device});
  b.labels.copy_from(b.host_labels, /*non_blocking=*/true);
}

std::optional<Batch> Loader::next() {
  if (served_in_epoch_ == batches_per_epoch_) {
    served_in_epoch_ = 0;
    ++epoch_;
    return std::nullopt;
  }
  Ready r;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (error_) std::rethrow_exception(error_);
    ready_cv_.wait(lock, [&] { return ready_.count(consumed_) != 0; });
    auto node = ready_.extract(consumed_);
    r = std::move(node.mapped());
    ++consumed_;
    if (r.error) error_ = r.error;
  }
  work_cv_.notify_all();
  if (r.error) std::rethrow_exception(r.error);
  ++served_in_epoch_;
  // Nothing left to decode: from here on workers send descriptors (batches already built
  // as bytes are served as they are; both give the same values).
  if (atlas_wanted_ && cache_.complete()) build_atlas();
  Batch& b = r.batch;
  if (b.host_desc.defined()) {
    b.images = crop_flip_lut_u8(atlas_, b.host_desc, lut_, opt_.crop);
    atlas_rows_ += b.host_desc.dim(0);
  } else if (bytes_) {
    // Bytes to the device (ordered on the copy stream), then the table lookup there.
    if (opt_.device.is_cpu()) {
      b.device_bytes = b.host_bytes;
    } else {
      b.device_bytes = Tensor::empty(b.host_bytes.shape(), TensorOptions{DType::u8, opt_.device});
      b.device_bytes.copy_from(b.host_bytes, /*non_blocking=*/true);
    }
    b.images = lut_u8(b.device_bytes, lut_);
  } else if (opt_.device.is_cpu()) {
    b.images = b.host_images;
  } else {
    // Ordered on the backend's copy stream; b keeps the pinned source alive meanwhile.
    b.images = Tensor::empty(b.host_images.shape(), TensorOptions{DType::f32, opt_.device});
    b.images.copy_from(b.host_images, /*non_blocking=*/true);
  }
  to_device_labels(b);
  return b;
}

LoaderStats Loader::stats() const {
  LoaderStats s;
  s.cache = cache_.stats();
  std::lock_guard<std::mutex> lock(mu_);
  s.failures = static_cast<int64_t>(failures_.size());
  s.device_atlas = atlas_bytes_ > 0;
  s.atlas_bytes = atlas_bytes_;
  s.atlas_rows = atlas_rows_;
  return s;
}

std::vector<DecodeFailure> Loader::failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failures_;
}

}  // namespace kiln::io
