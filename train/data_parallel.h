// What the trainer does with a Communicator (train/communicator.h) so that N processes train
// one model as one process with the same global batch would: the same start everywhere,
// the same run checked on every rank, gradients summed in buckets, evaluations summed.
// docs/data_parallel.md explains the whole scheme.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"
#include "train/communicator.h"
#include "train/evaluate.h"
#include "train/feature_cache.h"

namespace kiln {

// Replaces every rank's parameters and buffers with rank 0's (frozen ones included).
void broadcast_model(Module& model, Communicator& comm);

// Every rank compares its `fingerprint` (a text naming model, recipe and data) with rank 0's;
// if any differs, every rank fails with one line naming the ranks that differ, and those
// ranks also name the first differing line.
void check_same_run(Communicator& comm, const std::string& fingerprint);

// compute_features divided over the ranks: rank r runs the prefix on its contiguous share of
// `ds` (shard_of over the data set), then every rank receives every share, so every rank
// holds the whole cache, rows in data-set order as compute_features gives them.
FeatureCache compute_features_sharded(Sequential& model, size_t cut, const io::Dataset& ds, io::LoaderOptions opt,
                                      Communicator& comm);

// Fails on every rank, naming the step, unless every rank holds bit-identical parameters and
// buffers (a CRC32C of their bytes compared with rank 0's): the invariant data-parallel
// training keeps; costs a pass over the weights, so for tests (--check-replicas).
void check_replicas(Module& model, Communicator& comm, int64_t step);

// Averages float buffers (batch norm's running statistics) over the ranks: each rank's
// training-mode batch norm updated them from its own share of the batch.
void average_buffers(Module& model, Communicator& comm);

// Sums an evaluation each rank made of its shard of a data set (losses weighted by images).
EvalResult reduce_eval(const EvalResult& local, Communicator& comm);

// evaluate() of this rank's shard (`loader` is sharded; the shard may be empty), summed over
// the ranks by reduce_eval; no image on any rank is an error.
EvalResult evaluate_sharded(Module& model, io::Loader& loader, int64_t num_classes, Communicator& comm);

// Sums the gradients of a set of parameters over the ranks, in buckets of about
// `bucket_bytes`: each bucket is packed into one flat tensor and its all-reduce starts on
// the communication thread while the next bucket is packed; buckets run from the last
// parameter to the first (the order backward produces them). A parameter without a
// gradient (this rank had no sample in the step) contributes zeros and receives the sum.
class GradientReducer {
 public:
  GradientReducer(std::vector<ParameterRef> params, Communicator& comm, int64_t bucket_bytes = int64_t{25} << 20);
  // After backward on every rank: every parameter's gradient becomes the sum over the ranks.
  void reduce();
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  int64_t bytes() const { return bytes_; }  // sent into each step's all-reduces

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    int64_t numel = 0;
  };
  std::vector<ParameterRef> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  int64_t bytes_ = 0;
};

}  // namespace kiln
