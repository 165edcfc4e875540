// CUDA graphs for the CUDA backend (see cuda_graph.h and Backend::begin_graph_capture):
// stream capture on the compute stream in thread-local mode, instantiation, replay with the
// dropout position written first, and the failure path that leaves the device usable.
#include "kernels/cuda/cuda_graph.h"

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_context.h"

namespace kiln::cuda {
namespace {

// An instantiated graph and the device word pair its recorded dropouts read.
struct CudaGraph final : DeviceGraph {
  int index = 0;
  cudaGraphExec_t exec = nullptr;
  uint64_t* rng = nullptr;  // {seed, offset} at replay; from the pool, made before capture
  ~CudaGraph() override {
    if (exec) cudaGraphExecDestroy(exec);  // no throw from a destructor
    if (rng) {
      try {
        pool_free(index, rng);
      } catch (...) {
      }
    }
  }
};

// The capture this thread is recording.
struct Capture {
  bool on = false;
  int index = 0;
  cudaStream_t stream = nullptr;
  bool has_rng = false;
  PhiloxState rng;
  std::unique_ptr<CudaGraph> graph;
  std::unordered_set<void*> allocations;  // made while recording and not yet freed
  std::vector<void*> deferred;             // made before recording, released inside it: freed after
  std::string error;                      // the first problem an op reported (kept for the result)
};
thread_local Capture t_capture;

// Which device is being recorded (one capture per process at a time) and by whom; work of
// other threads queued on it is counted so a capture starts only when none is in flight.
constexpr int kMaxDevices = 64;
std::mutex g_mu;
std::condition_variable g_cv;
std::atomic<int> g_capture_device{-1};
std::atomic<std::thread::id> g_owner{};
std::array<std::atomic<int>, kMaxDevices> g_uses{};

// Allocations of failed captures, never backed by memory: freeing them is skipped.
std::mutex g_dead_mu;
std::unordered_set<void*> g_dead;
std::atomic<bool> g_any_dead{false};

std::atomic<int>& uses(int index) { return g_uses[static_cast<size_t>(index) % kMaxDevices]; }

// This thread's enter_stream without leave_stream, per device (its share of uses(index)).
int& my_uses(int index) {
  thread_local std::array<int, kMaxDevices> t_uses{};
  return t_uses[static_cast<size_t>(index) % kMaxDevices];
}

std::string cuda_error(const char* what, cudaError_t st) {
  return std::string(what) + " failed: " + cudaGetErrorName(st) + " (" + cudaGetErrorString(st) + ")";
}

void release_capture_slot() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_owner.store(std::thread::id{});
    g_capture_device.store(-1);
  }
  g_cv.notify_all();
}

}  // namespace

bool capturing() { return t_capture.on; }

CapturedRng captured_rng(PhiloxState s) {
  Capture& c = t_capture;
  KILN_CHECK(c.has_rng, "dropout ran while recording a CUDA graph that was given no generator: its masks would "
             "repeat on every replay (give the step graph the dropout layers' generator)");
  KILN_CHECK(s.seed == c.rng.seed && s.offset >= c.rng.offset, "dropout while recording a CUDA graph draws from a ",
             "generator at (seed ", s.seed, ", offset ", s.offset, "), not the capture's (seed ", c.rng.seed,
             ", offset ", c.rng.offset, "): its masks could not be renewed per replay");
  return CapturedRng{c.graph->rng, s.offset - c.rng.offset};
}

void note_allocation(void* p) {
  if (g_any_dead.load()) {
    // The driver may hand out an address again; only the failed capture's use is dead.
    std::lock_guard<std::mutex> lock(g_dead_mu);
    g_dead.erase(p);
  }
  if (t_capture.on) t_capture.allocations.insert(p);
}

bool note_free(void* p) {
  if (t_capture.on) {
    if (t_capture.allocations.erase(p) > 0) return true;
    // Memory the recorded step may have read, released inside it: a replay would read memory
    // the graph does not own. The capture fails; the memory is freed once it has ended.
    t_capture.deferred.push_back(p);
    if (t_capture.error.empty())
      t_capture.error = "a tensor made before recording was released inside the recorded step (a replay would read "
                        "memory the graph does not own)";
    return false;
  }
  if (!g_any_dead.load()) return true;
  std::lock_guard<std::mutex> lock(g_dead_mu);
  return g_dead.erase(p) == 0;
}

void enter_stream(int index) {
  const std::thread::id me = std::this_thread::get_id();
  int& mine = my_uses(index);
  for (;;) {
    ++mine;
    ++uses(index);
    // A nested use (an op's workspace or output allocated inside its OpScope) goes on: the
    // outer use is already counted, so a capture of this device has not begun and is waiting
    // for this thread to leave (waiting here too would deadlock both).
    if (mine > 1 || g_capture_device.load() != index || g_owner.load() == me) return;
    // Another thread records this device: step back and wait until it has finished.
    --uses(index);
    --mine;
    std::unique_lock<std::mutex> lock(g_mu);
    g_cv.wait(lock, [index] { return g_capture_device.load() != index; });
  }
}

void leave_stream(int index) {
  --uses(index);
  --my_uses(index);
}

std::string CudaBackend::begin_graph_capture(int index, const PhiloxState* rng) {
  Capture& c = t_capture;
  if (c.on) return "this thread is already recording a CUDA graph";
  DeviceContext& ctx = activate(index);
  // Under lazy module loading, load the recorded forms' kernels now, not inside the capture.
  preload_graph_kernels();
  auto graph = std::make_unique<CudaGraph>();
  graph->index = index;
  if (rng) graph->rng = static_cast<uint64_t*>(pool_allocate(index, 2 * sizeof(uint64_t), "graph dropout position"));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_capture_device.load() != -1) return "another thread is recording a CUDA graph";
    g_owner.store(std::this_thread::get_id());
    g_capture_device.store(index);
  }
  // Work other threads are queuing on this device right now goes in before the capture.
  while (uses(index).load() != my_uses(index)) std::this_thread::yield();
  // Thread-local mode: this thread may not make calls that are unsafe while recording, and
  // the loader threads' own CUDA calls (on the copy stream, host allocations) go on as usual.
  const cudaError_t st = cudaStreamBeginCapture(ctx.compute, cudaStreamCaptureModeThreadLocal);
  if (st != cudaSuccess) {
    cudaGetLastError();
    release_capture_slot();
    return cuda_error("cudaStreamBeginCapture", st);
  }
  c.on = true;
  c.index = index;
  c.stream = ctx.compute;
  c.has_rng = rng != nullptr;
  c.rng = rng ? *rng : PhiloxState{};
  c.graph = std::move(graph);
  c.allocations.clear();
  c.deferred.clear();
  c.error.clear();
  return "";
}

GraphCapture CudaBackend::end_graph_capture(int index) {
  Capture& c = t_capture;
  GraphCapture out;
  if (!c.on || c.index != index) {
    out.error = "no CUDA graph is being recorded on cuda:" + std::to_string(index) + " by this thread";
    return out;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t st = cudaStreamEndCapture(c.stream, &graph);
  c.on = false;
  for (void* p : c.deferred) cudaFreeAsync(p, c.stream);  // errors are cleared below
  c.deferred.clear();
  std::string error = c.error;
  if (error.empty() && st != cudaSuccess) error = cuda_error("cudaStreamEndCapture", st);
  if (error.empty() && graph == nullptr) error = "cudaStreamEndCapture returned no graph";
  if (error.empty() && !c.allocations.empty())
    error = std::to_string(c.allocations.size()) + " device allocation(s) made while recording outlive the capture "
            "(a tensor kept by a layer or cache that was first made inside the captured step)";
  if (error.empty()) {
    // No cudaGraphInstantiateFlagAutoFreeOnLaunch: every allocation the graph makes is also
    // freed in it (checked above), so a graph may be launched again while nothing it made
    // is still referenced.
    const cudaError_t inst = cudaGraphInstantiateWithFlags(&c.graph->exec, graph, 0);
    if (inst != cudaSuccess) error = cuda_error("cudaGraphInstantiate", inst);
  }
  if (!error.empty() && !c.allocations.empty()) {
    // Tensors still hold addresses of a graph that will never run: never free them, and
    // keep the graph (its addresses stay reserved) rather than let the pool reuse them.
    std::lock_guard<std::mutex> lock(g_dead_mu);
    g_dead.insert(c.allocations.begin(), c.allocations.end());
    g_any_dead.store(true);
    graph = nullptr;
  }
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a failed capture's errors are reported here, not by the next op
  c.allocations.clear();
  std::unique_ptr<CudaGraph> made = std::move(c.graph);
  release_capture_slot();
  if (error.empty()) {
    out.graph = std::move(made);
  } else {
    out.error = error;
    if (made) made->exec = nullptr;  // instantiation failed or never ran
  }
  return out;
}

std::string CudaBackend::replay_graph(DeviceGraph& graph, PhiloxState rng) {
  auto* g = dynamic_cast<CudaGraph*>(&graph);
  KILN_CHECK(g != nullptr && g->exec != nullptr, "replay_graph: not a CUDA graph made by this backend");
  OpScope scope("cuda graph replay", g->index);
  // A one-thread kernel, not a copy from pageable memory (which may wait for the stream).
  if (g->rng) launch_set_philox(g->rng, rng, scope.stream());
  cudaError_t st = cudaGraphLaunch(g->exec, scope.stream());
  if (st == cudaErrorMemoryAllocation) {
    // The pool keeps every block the eager steps freed (release threshold: never): give the
    // unused ones back so the graph's own allocations can be backed, and try once more.
    cudaGetLastError();
    KILN_CUDA_CHECK(cudaStreamSynchronize(scope.stream()));
    KILN_CUDA_CHECK(cudaMemPoolTrimTo(scope.ctx().pool, 0));
    // And the memory other graphs cached and no longer use (a dropped StepGraph's), as
    // pool_allocate's retry does.
    KILN_CUDA_CHECK(cudaDeviceGraphMemTrim(g->index));
    st = cudaGraphLaunch(g->exec, scope.stream());
  }
  if (st == cudaErrorMemoryAllocation) {
    // Not sticky: nothing ran. Clear the thread's last error, or the caller's next (eager)
    // op would report it as its own.
    cudaGetLastError();
    scope.done();
    return cuda_error("cudaGraphLaunch", st);
  }
  KILN_CUDA_CHECK(st);
  scope.done();
  return "";
}

}  // namespace kiln::cuda
