// What kiln's oneDNN-backed CPU kernels share: the engine, a stream per thread, scratchpads
// per call, signals held while oneDNN runs, and a wrapper that turns oneDNN's exceptions into
// kiln errors naming the op and its shapes.
#pragma once

#include <csignal>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

#include "core/error.h"

namespace kiln::cpu {

// The one CPU engine.
dnnl::engine& onednn_engine();
// This thread's stream (in-order; kiln waits on it after each primitive).
dnnl::stream& onednn_stream();

// Held while kiln builds any oneDNN primitive or descriptor, and while it looks up or fills
// its own caches of them. Two threads building at once meet in oneDNN 2.6's global
// primitive cache, which ThreadSanitizer flagged (a cache key read in one thread while
// another's insert was, as TSan sees it, unsynchronised; CI, 2026-12-03). Warm, each call
// holds it for a lookup; a thread meeting a new shape holds it while oneDNN builds
// (milliseconds of JIT), and other threads' convolutions and matmuls wait that long, once
// per shape (the plan cache's own lock already held them so for a new forward).
[[nodiscard]] std::unique_lock<std::mutex> onednn_build_lock();

// Attributes for kiln's cached primitives: the scratchpad is the caller's (user mode). In
// Debian's oneDNN 2.6 the library's own scratchpad is shared, so two threads running one
// cached primitive at once wrote each other's partial results (wrong convolutions from
// research code's threads; tests/kernels/test_conv_threads.cpp). Each thread passes its own
// (add_scratchpad).
dnnl::primitive_attr user_scratchpad(dnnl::primitive_attr attr = {});

// Adds to `args` the scratchpad a primitive made with user_scratchpad needs (md: its
// scratchpad_desc()): this thread's buffer, grown as needed and kept, so a call allocates
// nothing once warm. The primitive must have finished (onednn_stream().wait()) before this
// thread runs another.
void add_scratchpad(const dnnl::memory::desc& md, std::unordered_map<int, dnnl::memory>& args);

// oneDNN's generated f32 GEMM kernels (up to oneDNN 3.11; Debian ships 2.6.3) point rsp into
// the heap while they run (oneDNN issue #4845, fixed by its PR #4855), and the kernel writes a
// signal's frame at rsp: a handler that ran on a thread inside one wrote over heap memory (a
// weight turned NaN, or malloc's records: "corrupted size vs. prev_size"; vgg_finetune's
// SIGTERM test, about one CI run in three, 2026-12-05). Default actions and ignored signals
// push no frame; a handler does: Python's SIGINT one, vgg_finetune's, a profiler's SIGPROF.
// So while one lives, every signal but the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
// SIGSYS, SIGABRT: they must reach their handler at once) is blocked in this thread, and first
// in every worker of its OpenMP pool, for good (they never need one: the kernel delivers a
// process-wide signal to a thread that does not block it). One that comes meanwhile is
// handled when the call ends. Costs two system calls, 0.45 us for both here (docs/performance.md).
class SignalsHeld {
 public:
  SignalsHeld();
  ~SignalsHeld();
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;

 private:
  sigset_t before_;  // the thread's mask before
};

// Runs fn with signals held (SignalsHeld); a dnnl::error becomes kiln::Error "op: oneDNN
// failed (...) for <shapes()>". shapes is called only then: the description costs nothing on
// the calls that succeed.
template <typename Shapes, typename Fn>
void onednn_guarded(const char* op, Shapes&& shapes, Fn&& fn) {
  const SignalsHeld held;
  try {
    fn();
  } catch (const dnnl::error& e) {
    const std::string what = shapes();
    // oneDNN has bf16 kernels only from AVX-512 up: on an AVX2 CPU it finds no implementation.
    const bool bf16 = e.status == dnnl_unimplemented && what.find("bfloat16") != std::string::npos;
    KILN_FAIL(op, ": oneDNN failed (", e.what(), ", status ", static_cast<int>(e.status), ") for ", what,
              bf16 ? "; oneDNN has no bfloat16 kernel for this CPU (it needs AVX-512): use float32 here "
                     "(precision fp32)"
                   : "");
  }
}

}  // namespace kiln::cpu
