// Per-device state of the CUDA backend: streams, the stream-ordered memory pool, library
// handles (per device and thread, created lazily, released by RAII), workspaces, and the
// OpScope that names the running op in errors and, in debug mode, synchronises after it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace kiln::cuda {

// Streams and pool of one GPU. Work of every op goes on `compute`; host<->device copies
// that may overlap compute go on `copy`, ordered with events.
struct DeviceContext {
  int index = 0;
  cudaStream_t compute = nullptr;
  cudaStream_t copy = nullptr;
  cudaMemPool_t pool = nullptr;
};

// Number of GPUs; 0 without GPU or driver (never throws).
int device_count();

// The context of GPU `index`, created on first use; throws kiln::Error naming the device
// when it does not exist.
DeviceContext& context(int index);

// Makes `index` current on this thread and returns its context.
DeviceContext& activate(int index);

// For a thread that has made no device current through activate() (a loader worker about to
// allocate or free pinned memory): makes current the first device kiln made a context on. The
// runtime would otherwise use device 0, and the first CUDA call on the thread would create a
// primary context there: a rank on GPU 3 would hold memory on GPU 0. No-op before any context.
void adopt_kiln_device();

// cuDNN and cuBLASLt handles of this thread for GPU `index`, bound to its compute stream.
cudnnHandle_t cudnn_handle(int index);
cublasLtHandle_t cublaslt_handle(int index);

// Device memory from the pool, stream-ordered on the compute stream. Throws an
// out-of-memory error that says how much was asked for and how much is free.
void* pool_allocate(int index, size_t bytes, const char* what);
void pool_free(int index, void* p);

// Scratch memory for one op (cuDNN and cuBLASLt workspaces), back to the pool at scope end.
class Workspace {
 public:
  Workspace(int index, size_t bytes);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  int index_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Names the op for error messages for its lifetime and activates the device. done()
// checks for launch errors and, when KILN_CUDA_SYNC=1, synchronises so an asynchronous
// fault is reported by the op that caused it.
class OpScope {
 public:
  OpScope(const char* op, int device);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
  DeviceContext& ctx() const { return *ctx_; }
  cudaStream_t stream() const { return ctx_->compute; }
  void done();

 private:
  const char* previous_;
  DeviceContext* ctx_;
};

// True when KILN_CUDA_SYNC=1: synchronise after every op (debugging asynchronous errors).
bool debug_sync();

// Grid size for a grid-stride elementwise kernel over n elements.
unsigned elementwise_blocks(int64_t n, int threads = 256);

}  // namespace kiln::cuda
