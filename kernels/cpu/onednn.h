// What kiln's oneDNN-backed CPU kernels share: the engine, a stream per thread, scratchpads
// per call, and a wrapper that turns oneDNN's exceptions into kiln errors naming the op and
// its shapes.
#pragma once

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

// Runs fn; a dnnl::error becomes kiln::Error "op: oneDNN failed (...) for <shapes()>".
// shapes is called only then: the description costs nothing on the calls that succeed.
template <typename Shapes, typename Fn>
void onednn_guarded(const char* op, Shapes&& shapes, Fn&& fn) {
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
