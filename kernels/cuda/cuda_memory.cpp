// Memory of the CUDA backend: device tensors from the stream-ordered pool, pinned host
// tensors from cudaHostAlloc, copies between them (blocking, or overlapped on the copy
// stream), memory statistics, and the backend's registration.
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_graph.h"

namespace kiln::cuda {
namespace {

// Device memory of one GPU, from its pool.
class DeviceAllocator final : public Allocator {
 public:
  explicit DeviceAllocator(int index) : index_(index) {}
  void* allocate(size_t bytes) override { return pool_allocate(index_, bytes, "tensor"); }
  void deallocate(void* p, size_t) override {
    try {
      pool_free(index_, p);
    } catch (...) {
      // Freeing runs from destructors; a failure here means the context is already gone.
    }
  }

 private:
  int index_;
};

// Page-locked host memory when a GPU exists (so copies can overlap compute); plain
// aligned memory otherwise, and then pinned() says so.
class PinnedAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (device_count() == 0) return host_allocator().allocate(bytes);
    // Loader workers allocate batches: on a thread with no device yet, cudaHostAlloc would
    // make a context on device 0 (memory on GPU 0 for every rank of a data-parallel run).
    adopt_kiln_device();
    void* p = nullptr;
    const cudaError_t st = cudaHostAlloc(&p, bytes == 0 ? 64 : bytes, cudaHostAllocPortable);
    if (st != cudaSuccess) {
      cudaGetLastError();
      KILN_FAIL("pinned host allocation of ", bytes, " bytes failed: ", cudaGetErrorString(st));
    }
    return p;
  }
  void deallocate(void* p, size_t bytes) override {
    if (device_count() == 0) return host_allocator().deallocate(p, bytes);
    try {
      adopt_kiln_device();  // as in allocate(): a worker dropping a batch past the cache's cap
    } catch (...) {
      // Freeing runs from destructors; cudaFreeHost below works from any device.
    }
    cudaFreeHost(p);
  }
  bool pinned() const override { return device_count() > 0; }
};

// Host buffers of in-flight non-blocking copies, kept alive until their event fires.
struct Pending {
  cudaEvent_t done;
  std::shared_ptr<Storage> keep;
};
std::mutex g_pending_mu;
std::deque<Pending> g_pending;

void reap_pending() {
  if (capturing()) return;  // cudaEventQuery is not allowed while recording a graph
  std::lock_guard<std::mutex> lock(g_pending_mu);
  while (!g_pending.empty() && cudaEventQuery(g_pending.front().done) == cudaSuccess) {
    cudaEventDestroy(g_pending.front().done);
    g_pending.pop_front();
  }
  cudaGetLastError();  // cudaErrorNotReady is not an error here
}

CudaBackend g_backend;

struct Registrar {
  // No CUDA call here: the driver is touched only when a CUDA tensor is first made.
  Registrar() {
    register_backend(DeviceType::cuda, &g_backend);
    // cudaHostAlloc is slow (it maps pages for the device): pinned batches of the same
    // size are reused. Leaked on purpose: tensors may be freed after static destruction.
    static PinnedAllocator* raw = new PinnedAllocator();
    static CachingAllocator* cached = new CachingAllocator(*raw, 0, size_t{2} << 30);
    set_pinned_host_allocator(cached);
  }
} g_registrar;

}  // namespace

int CudaBackend::device_count() { return cuda::device_count(); }

void CudaBackend::synchronize(int index) {
  OpScope scope("synchronize", index);
  KILN_CUDA_CHECK(cudaStreamSynchronize(scope.ctx().copy));
  KILN_CUDA_CHECK(cudaStreamSynchronize(scope.ctx().compute));
  reap_pending();
}

void CudaBackend::copy_block(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                             int64_t width) {
  if (rows == 0 || width == 0) return;
  OpScope scope("copy_block", dst.device().index);
  const auto es = static_cast<int64_t>(dtype_size(src.dtype()));
  const auto src_pitch = static_cast<size_t>(src.numel() / rows * es);
  const auto dst_pitch = static_cast<size_t>(dst.numel() / rows * es);
  const auto bytes = static_cast<size_t>(width * es);
  char* d = static_cast<char*>(dst.raw_data()) + dst_col * es;
  const char* s = static_cast<const char*>(src.raw_data()) + src_col * es;
  // The copy engine's pitch limit, asked only where a strided copy is wanted.
  const auto pitches_fit = [&] {
    int max_pitch = 0;
    KILN_CUDA_CHECK(cudaDeviceGetAttribute(&max_pitch, cudaDevAttrMaxPitch, dst.device().index));
    return src_pitch <= static_cast<size_t>(max_pitch) && dst_pitch <= static_cast<size_t>(max_pitch);
  };
  if (rows == 1 || (src_pitch == bytes && dst_pitch == bytes)) {
    // One run of bytes (a block along dimension 0, or whole rows): a plain copy, whatever its size.
    KILN_CUDA_CHECK(cudaMemcpyAsync(d, s, bytes * static_cast<size_t>(rows), cudaMemcpyDeviceToDevice,
                                    scope.stream()));
  } else if (pitches_fit()) {
    // One strided copy for every row: the copy engine walks the pitches, no kernel of kiln's.
    KILN_CUDA_CHECK(cudaMemcpy2DAsync(d, dst_pitch, s, src_pitch, bytes, static_cast<size_t>(rows),
                                      cudaMemcpyDeviceToDevice, scope.stream()));
  } else {
    // A pitch past the copy engine's limit (rows over 2 GiB apart, so few rows): a copy per row.
    for (int64_t r = 0; r < rows; ++r)
      KILN_CUDA_CHECK(cudaMemcpyAsync(d + static_cast<size_t>(r) * dst_pitch, s + static_cast<size_t>(r) * src_pitch,
                                      bytes, cudaMemcpyDeviceToDevice, scope.stream()));
  }
  scope.done();
}

MemoryStats CudaBackend::memory_stats(int index) {
  DeviceContext& ctx = context(index);
  uint64_t used = 0, high = 0, reserved = 0;
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(ctx.pool, cudaMemPoolAttrUsedMemCurrent, &used));
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(ctx.pool, cudaMemPoolAttrUsedMemHigh, &high));
  KILN_CUDA_CHECK(cudaMemPoolGetAttribute(ctx.pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  return MemoryStats{static_cast<int64_t>(used), static_cast<int64_t>(high), static_cast<int64_t>(reserved)};
}

void CudaBackend::reset_peak_memory(int index) {
  DeviceContext& ctx = context(index);
  uint64_t zero = 0;
  KILN_CUDA_CHECK(cudaMemPoolSetAttribute(ctx.pool, cudaMemPoolAttrUsedMemHigh, &zero));
}

Allocator& CudaBackend::allocator(int index) {
  static std::mutex mu;
  // Never destroyed: a thread still running at exit may free into its allocator.
  static auto& allocators = *new std::vector<std::unique_ptr<DeviceAllocator>>;
  context(index);  // throws a clear error when the GPU does not exist
  std::lock_guard<std::mutex> lock(mu);
  if (allocators.size() <= static_cast<size_t>(index)) allocators.resize(static_cast<size_t>(index) + 1);
  auto& a = allocators[static_cast<size_t>(index)];
  if (!a) a = std::make_unique<DeviceAllocator>(index);
  return *a;
}

void CudaBackend::copy(const Tensor& src, Tensor& dst, bool non_blocking) {
  const bool src_dev = src.device().is_cuda(), dst_dev = dst.device().is_cuda();
  const int index = dst_dev ? dst.device().index : src.device().index;
  if (src.dtype() != dst.dtype()) {
    if (src_dev && dst_dev) {
      OpScope scope("copy (convert)", index);
      launch_convert(src.raw_data(), src.dtype(), dst.raw_data(), dst.dtype(), src.numel(), scope.stream());
      KILN_CUDA_CHECK_LAUNCH();
      scope.done();
    } else if (!src_dev) {
      copy(src.to(dst.dtype()), dst, false);  // convert on the host, then move
    } else {
      copy(src.to(dst.dtype()), dst, non_blocking);  // convert on the device, then move
    }
    return;
  }
  reap_pending();
  OpScope scope("copy", index);
  DeviceContext& ctx = scope.ctx();
  const size_t bytes = src.nbytes();
  if (bytes == 0) return;
  if (src_dev && dst_dev) {
    if (src.device().index == dst.device().index) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, cudaMemcpyDeviceToDevice, ctx.compute));
    } else {
      // Across GPUs: order after the source's work, then copy on the destination's stream,
      // and wait for it: the source's memory is freed on its own device's stream, which
      // knows nothing of this one (a rare path: kiln trains one GPU per process).
      KILN_CUDA_CHECK(cudaStreamSynchronize(context(src.device().index).compute));
      KILN_CUDA_CHECK(cudaMemcpyPeerAsync(dst.raw_data(), dst.device().index, src.raw_data(), src.device().index,
                                          bytes, ctx.compute));
      KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.compute));
    }
  } else if (dst_dev) {  // host -> device
    if (non_blocking && src.is_pinned()) {
      // The copy stream waits for earlier work that may still read dst, copies, and the
      // compute stream waits for the copy: later ops see the data, compute overlaps it.
      cudaEvent_t before = nullptr, after = nullptr;
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&before, cudaEventDisableTiming));
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&after, cudaEventDisableTiming));
      KILN_CUDA_CHECK(cudaEventRecord(before, ctx.compute));
      KILN_CUDA_CHECK(cudaStreamWaitEvent(ctx.copy, before, 0));
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, cudaMemcpyHostToDevice, ctx.copy));
      KILN_CUDA_CHECK(cudaEventRecord(after, ctx.copy));
      KILN_CUDA_CHECK(cudaStreamWaitEvent(ctx.compute, after, 0));
      cudaEventDestroy(before);
      std::lock_guard<std::mutex> lock(g_pending_mu);
      g_pending.push_back(Pending{after, src.impl().storage});
    } else {
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, cudaMemcpyHostToDevice, ctx.compute));
      // From pinned memory the DMA reads the source later: wait, so the caller may reuse it.
      if (src.is_pinned()) KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.compute));
    }
  } else {  // device -> host
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, cudaMemcpyDeviceToHost, ctx.compute));
    if (!(non_blocking && dst.is_pinned())) {
      KILN_CUDA_CHECK(cudaStreamSynchronize(ctx.compute));
    } else {
      // The DMA writes dst later: keep its pinned block out of the cache (and so away from a
      // loader thread's next batch) until the copy is done, even if the caller drops it.
      cudaEvent_t after = nullptr;
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&after, cudaEventDisableTiming));
      KILN_CUDA_CHECK(cudaEventRecord(after, ctx.compute));
      std::lock_guard<std::mutex> lock(g_pending_mu);
      g_pending.push_back(Pending{after, dst.impl().storage});
    }
  }
  scope.done();
}

namespace {
// A DLPack stream handle as a CUDA stream (1: legacy default, 2: per-thread default).
cudaStream_t external_stream(std::uintptr_t stream) {
  KILN_CHECK(stream != 0, "stream handle 0 is ambiguous on CUDA (DLPack): pass 1 for the legacy default stream");
  if (stream == 1) return cudaStreamLegacy;
  if (stream == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(stream);
}

// `waiter` waits for the work queued so far on `source`, through an event (both on the
// current device); the event is released once the wait is queued.
void order_after(cudaStream_t waiter, cudaStream_t source) {
  cudaEvent_t e = nullptr;
  KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const cudaError_t recorded = cudaEventRecord(e, source);
  const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(waiter, e, 0) : recorded;
  cudaEventDestroy(e);
  KILN_CUDA_CHECK(waited);
}
}  // namespace

void CudaBackend::stream_waits_for_kiln(int index, std::uintptr_t stream) {
  OpScope scope("stream hand-off (DLPack)", index);
  // The copy stream's last work is already ordered before the compute stream's (copy()).
  order_after(external_stream(stream), scope.ctx().compute);
  scope.done();
}

void CudaBackend::kiln_waits_for_stream(int index, std::uintptr_t stream) {
  OpScope scope("stream hand-off (DLPack)", index);
  order_after(scope.ctx().compute, external_stream(stream));
  scope.done();
}

std::uintptr_t CudaBackend::stream_handle(int index) {
  return reinterpret_cast<std::uintptr_t>(context(index).compute);
}

}  // namespace kiln::cuda
