// Data-parallel training's view of the other processes: a communicator (all-reduce,
// broadcast, barrier, and an asynchronous all-reduce for gradient buckets) over an existing
// collective library, and the launch environment a launcher (torchrun-style variables or
// mpirun's OMPI_COMM_WORLD_*) gives a process. libkiln holds only this interface and the
// single-process no-op; the backends on gloo and NCCL live in the optional component
// kiln_dist (dist/), which registers them, so libkiln never links a collective library.
// docs/data_parallel.md describes launch, rendezvous, what travels and failure.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"

namespace kiln {

// Where this process stands in a multi-process run, as its launcher described it.
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string launcher = "single";  // "single", "torchrun" (RANK/WORLD_SIZE) or "mpirun" (OMPI_COMM_WORLD_*)
  // How ranks find each other: "file:<dir>" (a directory every rank sees) or "tcp:<host>:<port>"
  // (rank 0 serves a small key-value store there; keys only, never tensors).
  std::string rendezvous;
  std::string backend;     // "gloo", "nccl", or "" (the device's default: nccl on CUDA, else gloo)
  std::string run_id = "kiln";  // prefixes every rendezvous key (KILN_RUN_ID)
  double timeout_s = 300;  // a collective or the rendezvous that takes longer fails (KILN_DIST_TIMEOUT)
  bool distributed() const { return world_size > 1; }  // more than one process
};

// Reads the launch environment through `get` (a getenv): RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun), else OMPI_COMM_WORLD_RANK, _SIZE,
// _LOCAL_RANK, _LOCAL_SIZE (mpirun); KILN_RENDEZVOUS (file:<dir> or tcp:<host>:<port>)
// overrides MASTER_ADDR/PORT; KILN_DIST_BACKEND, KILN_DIST_TIMEOUT (seconds), KILN_RUN_ID.
// Nothing set: a single process. Inconsistent or malformed values are one-line errors.
LaunchEnv launch_env_from(const std::function<const char*(const char*)>& get);
// launch_env_from(::getenv).
LaunchEnv launch_env();

// A handle on an asynchronous collective; wait() returns once it is done and rethrows its error.
class CommWork {
 public:
  void wait();        // blocks until done; rethrows the collective's error
  bool done() const;  // without blocking

 private:
  friend class Communicator;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

// A group of processes that reduce together. Every rank must issue the same collectives in
// the same order with the same shapes. All collectives (blocking ones too) run on one
// communication thread in issue order, so buckets started during backward never race a
// later blocking call. Collectives fail with kiln::Error (naming the rank, the operation and
// the timeout) when a peer dies or does not answer within the timeout; a failed
// communicator stays failed.
class Communicator {
 public:
  virtual ~Communicator();
  virtual int rank() const = 0;  // 0 .. size() - 1; rank 0 writes for the group
  virtual int size() const = 0;  // the number of processes
  // "single", "gloo", "nccl": for people and logs.
  virtual std::string backend() const = 0;

  // Sums a contiguous float32 tensor over all ranks, in place (any device the backend takes).
  void allreduce_sum(Tensor& t);
  // The same, started on the communication thread; `t` must live until wait().
  std::shared_ptr<CommWork> allreduce_sum_async(Tensor t);
  // Sums host doubles over all ranks, in place (counts and loss sums: exact for integers < 2^53).
  void allreduce_sum(std::vector<double>& v);
  // Replaces `t` (contiguous, any dtype) on every rank with root's.
  void broadcast(Tensor& t, int root = 0);
  // Replaces `bytes` on every rank with root's (its size included).
  void broadcast(std::string& bytes, int root = 0);
  // Returns once every rank has called it.
  void barrier();

 protected:
  enum class Elem { f32, f64 };
  // The backend's collectives, called on the communication thread only. `device`: data is
  // device memory of the tensor's device (else host memory).
  virtual void do_allreduce_sum(void* data, int64_t count, Elem elem, Device device) = 0;
  virtual void do_broadcast(void* data, int64_t bytes, int root, Device device) = 0;
  virtual void do_barrier() = 0;
  // Whether the backend reduces device memory itself (NCCL); otherwise a device tensor
  // travels through a host copy.
  virtual bool takes_device(Device d) const { return d.is_cpu(); }
  // Stops the communication thread; a backend's destructor calls it before freeing its state.
  void shutdown();

 private:
  std::shared_ptr<CommWork> submit(std::function<void()> op, const char* what);
  void comm_loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::function<void()>, std::shared_ptr<CommWork>>> queue_;
  bool stop_ = false;
  std::string failed_;  // the first failure: every later collective fails with it
  std::thread thread_;
};

// The no-op communicator of a single process: rank 0 of 1.
std::unique_ptr<Communicator> single_process();

// Makes a backend's communicator for the launch environment (connects to the peers).
using CommunicatorFactory = std::function<std::unique_ptr<Communicator>(const LaunchEnv&)>;
// Registers a backend by name ("gloo", "nccl"); kiln_dist does this (dist/dist.h).
void register_communicator_backend(const std::string& name, CommunicatorFactory factory);
// The names registered so far.
std::vector<std::string> communicator_backends();
// The communicator for `env`: single_process() for a world of 1, else the backend env.backend
// names (its default when empty: "nccl" when `device` is a GPU, else "gloo"). A build with
// no such backend is a one-line error saying what to install.
std::unique_ptr<Communicator> make_communicator(const LaunchEnv& env, Device device = Device::cpu());

}  // namespace kiln
