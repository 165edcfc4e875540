// What the trainer does with a Communicator (train/communicator.h) so that N processes train
// one model as one process with the same global batch would: the same start everywhere,
// the same run checked on every rank, gradients summed in buckets, evaluations summed.
// docs/data_parallel.md explains the whole scheme.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/autograd.h"

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

// Fails on every rank, naming the step, unless every rank holds bit-identical parameters
// (a CRC32C of their bytes compared with rank 0's; buffers are averaged only before
// evaluation): the invariant data-parallel
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
// `bucket_bytes` (parameters from the last to the first, the order backward produces their
// gradients). Installed as backward's grad-ready hook (core/autograd.h), it packs a bucket
// into one flat tensor as soon as all its gradients are final and starts its all-reduce on
// the communication thread while backward goes on; buckets start in bucket order on every
// rank. reduce() starts those that have not started (a rank with no sample this step ran no
// backward), waits for all and writes the sums back. A parameter without a gradient
// contributes zeros and receives the sum.
class GradientReducer {
 public:
  GradientReducer(std::vector<ParameterRef> params, Communicator& comm, int64_t bucket_bytes = int64_t{25} << 20);
  // The hook to install around this step's backward (autograd::GradReadyScope).
  autograd::GradReadyHook hook();
  // After backward on every rank: every parameter's gradient becomes the sum over the ranks.
  void reduce();
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }
  int64_t bytes() const { return bytes_; }  // sent into each step's all-reduces
  // Buckets whose all-reduce started during a backward so far (the rest started in reduce()).
  int64_t started_during_backward() const { return started_in_backward_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    int64_t numel = 0;
  };
  void ready(const TensorImpl& leaf);
  void start(size_t bucket);
  std::vector<ParameterRef> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  int64_t bytes_ = 0;
  std::unordered_map<const TensorImpl*, size_t> bucket_of_;  // a parameter's tensor -> its bucket
  // This step's progress.
  std::vector<size_t> waiting_;  // per bucket, gradients not final yet
  size_t started_ = 0;           // buckets [0, started_) have started
  int64_t started_in_backward_ = 0;
  std::vector<Tensor> flats_;
  std::vector<std::shared_ptr<CommWork>> works_;
};

}  // namespace kiln
