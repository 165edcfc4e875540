// The batch loader: worker threads decode and transform images into batches built
// directly in pinned host tensors, a bounded queue keeps batches ready ahead of the
// consumer, and batches bound for a GPU are copied asynchronously. Every random choice
// (the epoch's order, each sample's crop and flip) comes from Philox at (seed, epoch,
// index), so the batches do not depend on the number of workers, and a run resumed at
// epoch e sees what the uninterrupted run saw.
//
// Crops and flips run on the CPU as byte copies from the decode-once cache; for a GPU the
// batch travels as bytes (a quarter of the float batch) and the conversion to network
// inputs (the convention's table, kiln::lut_u8) runs on the device.
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

struct LoaderOptions {
  int64_t batch_size = 32;
  int num_workers = 2;
  int prefetch_batches = 2;   // batches built ahead of the consumer (>= 1)
  bool shuffle = true;        // a new order each epoch, from (seed, epoch)
  bool augment = true;        // training: random crop + random flip; false: central crop
  uint64_t seed = 0;
  uint64_t start_epoch = 0;   // resume here: the same order and crops as the full run's epoch
  bool drop_last = false;     // drop the last, short batch of an epoch
  int resize_shorter = 256;   // shorter side first resized to this (0: only if smaller than the crop)
  int crop = 224;
  InputConvention convention = InputConvention::torchvision_rgb;
  Device device = Device::cpu();  // where batches are delivered
  // Where pixels become floats: auto = on the device when it is a GPU, else on the host;
  // device forces the byte path (also on the CPU, where it gives the same values).
  enum class ConvertAt { auto_, host, device } convert_at = ConvertAt::auto_;
  bool pin_memory = true;     // build batches in pinned host memory (plain memory without a GPU)
  int64_t cache_bytes = int64_t{2} << 30;  // decode-once budget; 0 turns the cache off
  bool strict = false;        // a file that cannot be decoded is an error, not a warning
  bool warn = true;           // print one line to stderr for each file skipped
  DecodeOptions decode;
};

struct Batch {
  Tensor images;       // [n, crop, crop, 3] float32 on LoaderOptions::device (NHWC)
  Tensor labels;       // [n] int64 on LoaderOptions::device
  Tensor host_images;  // the pinned host batch; kept while an async copy may read it
  Tensor host_bytes;   // uint8 [n, crop, crop, 3] instead, when pixels convert on the device
  Tensor device_bytes; // its copy on the device, kept until the conversion has read it
  Tensor host_labels;
  std::vector<int64_t> indices;  // dataset index of each row
  uint64_t epoch = 0;
  int64_t index = 0;    // batch number within the epoch
  int64_t skipped = 0;  // samples of this batch dropped because their file failed to decode
};

struct DecodeFailure {
  std::string path;
  std::string reason;
};

struct LoaderStats {
  CacheStats cache;
  int64_t failures = 0;  // distinct files that failed to decode
};

class Loader {
 public:
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
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const Dataset& dataset() const { return dataset_; }
  // The dataset indices of an epoch in the order they are served (before dropping failures).
  std::vector<int64_t> epoch_order(uint64_t epoch) const;

  LoaderStats stats() const;
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

  Dataset dataset_;
  LoaderOptions opt_;
  int64_t batches_per_epoch_ = 0;
  ImageCache cache_;
  bool bytes_ = false;  // batches travel as bytes, converted by lut_ on the target device
  Tensor lut_;          // [3, 256] float32 on opt_.device

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
