// Streams, pool, handles and op scopes of the CUDA backend (see cuda_context.h).
#include "kernels/cuda/cuda_context.h"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_graph.h"
#include "kernels/cuda/cuda_info.h"

namespace kiln::cuda {
namespace {

thread_local const char* t_current_op = "cuda";

std::mutex g_mu;
std::vector<std::unique_ptr<DeviceContext>> g_contexts;
std::atomic<int> g_first_device{-1};  // the device of the first context made (adopt_kiln_device)

// The device activate() last made current on this thread; -1: none yet.
thread_local int t_device = -1;

double mib(size_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

}  // namespace

const char* current_op() { return t_current_op; }

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

int device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky "no device" error
      return 0;
    }
    return c;
  }();
  return n;
}

DeviceContext& context(int index) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (index >= 0 && static_cast<size_t>(index) < g_contexts.size() && g_contexts[static_cast<size_t>(index)])
    return *g_contexts[static_cast<size_t>(index)];
  const int n = device_count();
  KILN_CHECK(n > 0, "device cuda:", index, " requested, but no GPU was found (cudaGetDeviceCount reports none: "
             "no NVIDIA GPU or driver on this machine)");
  KILN_CHECK(index >= 0 && index < n, "device cuda:", index, " requested, but only ", n, " GPU(s) exist");
  if (g_contexts.size() < static_cast<size_t>(n)) g_contexts.resize(static_cast<size_t>(n));
  auto ctx = std::make_unique<DeviceContext>();
  ctx->index = index;
  int previous = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&previous));
  KILN_CUDA_CHECK(cudaSetDevice(index));
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->compute, cudaStreamNonBlocking));
  KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->copy, cudaStreamNonBlocking));
  KILN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&ctx->pool, index));
  // Keep freed memory in the pool: after the first step nothing goes back to the driver,
  // so a training step in steady state makes no cudaMalloc/cudaFree.
  uint64_t threshold = UINT64_MAX;
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(ctx->pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  // Back to the thread's device only if kiln made one current here: since CUDA 12 cudaSetDevice
  // creates the device's primary context, and a fresh thread's "previous" is the default device
  // 0, so restoring it would put a context on GPU 0 of a process that trains on another GPU.
  // (A thread left on `index` has t_device -1 still: activate() sets its device explicitly.)
  if (t_device >= 0) KILN_CUDA_CHECK(cudaSetDevice(previous));
  g_contexts[static_cast<size_t>(index)] = std::move(ctx);
  int none = -1;
  g_first_device.compare_exchange_strong(none, index);
  return *g_contexts[static_cast<size_t>(index)];
}

DeviceContext& activate(int index) {
  DeviceContext& ctx = context(index);
  if (t_device != index) {
    KILN_CUDA_CHECK(cudaSetDevice(index));
    t_device = index;
  }
  return ctx;
}

void adopt_kiln_device() {
  const int home = g_first_device.load();
  if (t_device < 0 && home >= 0) activate(home);
}

namespace {

// Library handles of one thread, one set per GPU, destroyed with the thread.
struct ThreadHandles {
  struct Set {
    cudnnHandle_t cudnn = nullptr;
    cublasLtHandle_t lt = nullptr;
  };
  std::vector<Set> sets;
  ~ThreadHandles() {
    // Errors are ignored here: at process exit the driver may already be gone.
    for (Set& s : sets) {
      if (s.cudnn) cudnnDestroy(s.cudnn);
      if (s.lt) cublasLtDestroy(s.lt);
    }
  }
  Set& at(int index) {
    if (sets.size() <= static_cast<size_t>(index)) sets.resize(static_cast<size_t>(index) + 1);
    return sets[static_cast<size_t>(index)];
  }
};

ThreadHandles& thread_handles() {
  thread_local ThreadHandles h;
  return h;
}

}  // namespace

cudnnHandle_t cudnn_handle(int index) {
  DeviceContext& ctx = activate(index);
  ThreadHandles::Set& s = thread_handles().at(index);
  if (!s.cudnn) {
    KILN_CUDNN_CHECK(cudnnCreate(&s.cudnn));
    KILN_CUDNN_CHECK(cudnnSetStream(s.cudnn, ctx.compute));
  }
  return s.cudnn;
}

cublasLtHandle_t cublaslt_handle(int index) {
  activate(index);
  ThreadHandles::Set& s = thread_handles().at(index);
  if (!s.lt) KILN_CUBLAS_CHECK(cublasLtCreate(&s.lt));
  return s.lt;
}

namespace {

// enter_stream .. leave_stream around one call that queues on a device's stream.
struct StreamUse {
  int index;
  explicit StreamUse(int i) : index(i) { enter_stream(i); }
  ~StreamUse() { leave_stream(index); }
  StreamUse(const StreamUse&) = delete;
  StreamUse& operator=(const StreamUse&) = delete;
};

}  // namespace

void* pool_allocate(int index, size_t bytes, const char* what) {
  DeviceContext& ctx = activate(index);
  const StreamUse use(index);
  const size_t ask = bytes == 0 ? 256 : bytes;  // a valid, unique pointer even for empty tensors
  void* p = nullptr;
  cudaError_t st = cudaMallocFromPoolAsync(&p, ask, ctx.pool, ctx.compute);
  // (While recording a graph the retry's sync is not allowed: the capture fails instead.)
  if (st == cudaErrorMemoryAllocation && !capturing()) {
    // Give cached blocks back to the driver and try once more before failing.
    cudaGetLastError();
    KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.compute));
    KILN_CUDA_CHECK(cudaMemPoolTrimTo(ctx.pool, 0));
    // Memory cached for CUDA graphs (a dropped StepGraph's) is not the pool's: return it too.
    KILN_CUDA_CHECK(cudaDeviceGraphMemTrim(index));
    st = cudaMallocFromPoolAsync(&p, ask, ctx.pool, ctx.compute);
  }
  if (st == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    uint64_t used = 0;
    cudaMemPoolGetAttribute(ctx.pool, cudaMemPoolAttrUsedMemCurrent, &used);
    KILN_FAIL(current_op(), ": cuda:", index, " out of memory: ", what, " asked for ", bytes, " bytes (",
              mib(bytes), " MiB); ", mib(free_b), " MiB free of ", mib(total_b), " MiB, kiln's tensors hold ",
              mib(static_cast<size_t>(used)), " MiB");
  }
  KILN_CUDA_CHECK(st);
  // Stream-ordered like the allocation itself (and recorded as a node while capturing).
  if (poison_allocations()) KILN_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, ask, ctx.compute));
  note_allocation(p);
  return p;
}

void pool_free(int index, void* p) {
  if (p == nullptr || !note_free(p)) return;
  DeviceContext& ctx = activate(index);
  const StreamUse use(index);
  const cudaError_t st = cudaFreeAsync(p, ctx.compute);
  if (st != cudaSuccess && capturing()) {
    // The capture has already failed (it is discarded): end_graph_capture reports why.
    cudaGetLastError();
    return;
  }
  KILN_CUDA_CHECK(st);
}

Workspace::Workspace(int index, size_t bytes) : index_(index), bytes_(bytes) {
  if (bytes > 0) data_ = pool_allocate(index, bytes, "workspace");
}

Workspace::~Workspace() {
  if (!data_) return;
  try {
    pool_free(index_, data_);
  } catch (...) {
    // No throw from a destructor.
  }
}

OpScope::OpScope(const char* op, int device) : previous_(t_current_op), ctx_(nullptr) {
  t_current_op = op;
  try {
    ctx_ = &activate(device);
  } catch (...) {
    t_current_op = previous_;
    throw;
  }
  enter_stream(device);  // after activate: a failed one leaves nothing to undo
}

OpScope::~OpScope() {
  leave_stream(ctx_->index);
  t_current_op = previous_;
}

void OpScope::done() {
  KILN_CUDA_CHECK(cudaGetLastError());
  if (debug_sync() && !capturing()) KILN_CUDA_CHECK(cudaStreamSynchronize(ctx_->compute));
}

bool debug_sync() {
  static const bool on = [] {
    const char* v = std::getenv("KILN_CUDA_SYNC");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}

std::string CudaBackend::device_name(int index) { return cuda::device_name(index); }

// bf16 tensor cores: compute capability 8.0 (Ampere) and newer.
bool CudaBackend::native_bf16(int index) {
  int major = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index));
  return major >= 8;
}

// Events around fn on the compute stream: the GPU's clock over the work fn queued there
// (fn itself returns long before that work ends). Lives in the library so programs that
// time GPU work need no CUDA runtime of their own (cudart is static in libkiln; a second
// copy in a program would be a second runtime).
double CudaBackend::time_ms(int index, const std::function<void()>& fn) {
  activate(index);
  const StreamUse use(index);  // its event records go on the compute stream: not while another thread records it
  cudaEvent_t a = nullptr, b = nullptr;
  KILN_CUDA_CHECK(cudaEventCreate(&a));
  const cudaError_t made = cudaEventCreate(&b);
  if (made != cudaSuccess) cudaEventDestroy(a);
  KILN_CUDA_CHECK(made);
  float ms = 0;
  try {
    KILN_CUDA_CHECK(cudaEventRecord(a, context(index).compute));
    fn();
    KILN_CUDA_CHECK(cudaEventRecord(b, context(index).compute));
    KILN_CUDA_CHECK(cudaEventSynchronize(b));
    KILN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  } catch (...) {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    throw;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

unsigned elementwise_blocks(int64_t n, int threads) {
  static const int sms = [] {
    int dev = 0, count = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      return 80;
    }
    return count;
  }();
  const int64_t needed = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(sms) * 32;  // enough blocks to fill the GPU; the rest grid-strides
  const int64_t blocks = needed < 1 ? 1 : (needed < cap ? needed : cap);
  return static_cast<unsigned>(blocks);
}

}  // namespace kiln::cuda
