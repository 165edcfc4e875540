// The batch loader: worker threads decode and transform images into batches built
// directly in pinned host tensors, a bounded queue keeps batches ready ahead of the
// consumer, and batches bound for a GPU are copied asynchronously. Every random choice
// (the epoch's order, each sample's crop and flip) comes from Philox at (seed, epoch,
// index), so the batches do not depend on the number of workers, and a run resumed at
// epoch e sees what the uninterrupted run saw.
//
// Crops and flips run on the CPU as byte copies from the decode-once cache; for a GPU the
// batch travels as bytes (a quarter of the float batch) and the conversion to network
// inputs (the convention's table, kiln::lut_u8) runs on the device. Once the cache holds
// every sample (after the first epoch, when the budget allows), the images are packed
// once into an atlas on the device, workers only draw each row's crop and flip (a
// 6-number descriptor), and crop, flip and conversion run there in one op
// (kiln::crop_flip_lut_u8): the same values bit for bit, with no pixel crossing the bus.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/image_cache.h"
#include "io/transforms.h"

namespace kiln::io {

// How a Loader batches, orders, crops and delivers a dataset; the Loader checks it when made.
struct LoaderOptions {
  int64_t batch_size = 32;
  int num_workers = 2;
  int prefetch_batches = 2;   // batches built ahead of the consumer (>= 1)
  bool shuffle = true;        // a new order each epoch, from (seed, epoch)
  bool augment = true;        // training: random crop + random flip; false: central crop
  uint64_t seed = 0;
  uint64_t start_epoch = 0;   // resume here: the same order and crops as the full run's epoch
  // ... and at this batch of it (0 <= start_batch <= the epoch's batches): a mid-epoch resume
  // serves the rest of the epoch without decoding the batches its checkpoint trained on.
  int64_t start_batch = 0;
  bool drop_last = false;     // drop the last, short batch of an epoch
  int resize_shorter = 256;   // shorter side first resized to this (0: only if smaller than the crop)
  int crop = 224;
  InputConvention convention = InputConvention::torchvision_rgb;
  Device device = Device::cpu();  // where batches are delivered
  // Where pixels become floats: auto = on the device when it is a GPU, else on the host;
  // device forces the byte path (also on the CPU, where it gives the same values).
  enum class ConvertAt { auto_, host, device } convert_at = ConvertAt::auto_;
  // When pixels convert on the device and the cache holds every sample: pack the cache
  // into a device atlas (device memory of the cache's bytes) and crop and flip there too.
  // Batches are the same either way.
  bool augment_on_device = true;
  bool pin_memory = true;     // build batches in pinned host memory (plain memory without a GPU)
  int64_t cache_bytes = int64_t{2} << 30;  // decode-once budget; 0 turns the cache off
  // Data-parallel: this process serves only its shard of every batch. batch_size is then the
  // global batch and batches_per_epoch the global count; rank shard_rank of shard_count gets
  // the slice shard_of gives of each batch's positions (possibly empty for a short last
  // batch), so the ranks together see every sample of an epoch exactly once, and each
  // sample's crop and flip, keyed by (seed, epoch, sample), do not depend on the rank count.
  int shard_rank = 0, shard_count = 1;
  bool strict = false;        // a file that cannot be decoded is an error, not a warning
  bool warn = true;           // print one line to stderr for each file skipped
  DecodeOptions decode;
};

// Positions [begin, end) of a batch's positions [batch_begin, batch_end): rank `rank` of
// `count` takes a contiguous slice, the slices in rank order tile the batch and differ in
// size by at most one (the last ranks take the extra samples).
struct ShardRange {
  int64_t begin = 0, end = 0;
};
// The slice itself; rank and count are not checked here (the Loader checks its shard options).
ShardRange shard_of(int64_t batch_begin, int64_t batch_end, int rank, int count);

// Batches in an epoch of `samples` samples under `opt` (its batch_size and drop_last).
int64_t epoch_batches(int64_t samples, const LoaderOptions& opt);

// One batch from Loader::next(); the host_* and device_bytes tensors keep async work's inputs alive.
struct Batch {
  Tensor images;       // [n, crop, crop, 3] float32 on LoaderOptions::device (NHWC)
  Tensor labels;       // [n] int64 on LoaderOptions::device
  Tensor host_images;  // the pinned host batch; kept while an async copy may read it
  Tensor host_bytes;   // uint8 [n, crop, crop, 3] instead, when pixels convert on the device
  Tensor device_bytes; // its copy on the device, kept until the conversion has read it
  Tensor host_desc;    // int64 [n, 6] instead, when rows are cut from the device atlas
                       // (crop_flip_lut_u8's descriptors: offset, height, width, y0, x0, flip)
  Tensor host_labels;
  std::vector<int64_t> indices;  // dataset index of each row
  uint64_t epoch = 0;
  int64_t index = 0;    // batch number within the epoch
  int64_t skipped = 0;  // samples of this batch dropped because their file failed to decode
};

// A file the loader skipped and why; `reason` is the error's message and starts with the path.
struct DecodeFailure {
  std::string path;
  std::string reason;
};

// Counters from Loader::stats(): the decode cache, skipped files and the device atlas.
struct LoaderStats {
  CacheStats cache;      // once the device atlas is in use, rows come from it, not the cache
  int64_t failures = 0;  // distinct files that failed to decode
  bool device_atlas = false;  // the cache is packed on LoaderOptions::device (augment_on_device)
  int64_t atlas_bytes = 0;    // its size
  int64_t atlas_rows = 0;     // rows cropped from it so far
};

// Serves a Dataset as batches, epoch after epoch, built ahead by worker threads (see the top of this file).
class Loader {
 public:
  // Checks the options against the dataset (a kiln::Error names the bad one) and starts the workers at once.
  Loader(Dataset dataset, LoaderOptions options);
  // Stops the workers (they abandon the batch in hand) and joins them.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch of the current epoch, or nullopt once at the end of each epoch; the
  // call after that starts the next epoch. Rethrows, here, an error raised in a worker.
  std::optional<Batch> next();

  // The epoch next() is serving.
  uint64_t epoch() const { return epoch_; }
  // Batches in every epoch (global under sharding); a resume's first epoch serves those from start_batch on.
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  // The dataset as given: files that fail to decode stay in it.
  const Dataset& dataset() const { return dataset_; }
  // The dataset indices of an epoch in the order they are served (before dropping failures).
  std::vector<int64_t> epoch_order(uint64_t epoch) const;

  // Counters so far; safe to call while the workers run.
  LoaderStats stats() const;
  // The files skipped so far, each once, in the order workers met them (none under strict: it throws).
  std::vector<DecodeFailure> failures() const;

 private:
  struct Ready {
    Batch batch;
    std::exception_ptr error;
  };
  void worker_loop();
  Batch build(int64_t job);
  std::shared_ptr<const Image> load(int64_t sample);
  std::shared_ptr<const std::vector<int64_t>> order_for(uint64_t epoch);
  void build_atlas();
  void to_device_labels(Batch& b) const;

  Dataset dataset_;
  LoaderOptions opt_;
  int64_t batches_per_epoch_ = 0;
  ImageCache cache_;
  bool bytes_ = false;  // batches travel as bytes, converted by lut_ on the target device
  Tensor lut_;          // [3, 256] float32 on opt_.device

  // The device atlas: every held image packed once, channels in the convention's order.
  // next() builds it (on the consumer's thread) and alone reads atlas_; workers see it
  // through atlas_index_, published under mu_ once atlas_ is ready.
  struct AtlasEntry {
    int64_t offset = -1;  // byte offset in atlas_; -1: the file failed to decode
    int height = 0, width = 0;
  };
  bool atlas_wanted_ = false;  // bytes_ && augment_on_device && a cache; false once tried
  Tensor atlas_;               // uint8 [bytes] on opt_.device
  std::shared_ptr<const std::vector<AtlasEntry>> atlas_index_;
  int64_t atlas_bytes_ = 0;
  std::atomic<int64_t> atlas_rows_{0};

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for room in the window
  std::condition_variable ready_cv_;  // the consumer waits for its batch
  int64_t next_job_ = 0;              // next job a worker takes (jobs count across epochs)
  int64_t consumed_ = 0;              // jobs handed to the consumer
  std::map<int64_t, Ready> ready_;
  std::atomic<bool> stop_{false};
  bool failed_ = false;
  std::exception_ptr error_;          // sticky once the consumer has seen it
  std::map<uint64_t, std::shared_ptr<const std::vector<int64_t>>> orders_;
  std::vector<DecodeFailure> failures_;

  uint64_t epoch_ = 0;
  int64_t served_in_epoch_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace kiln::io
