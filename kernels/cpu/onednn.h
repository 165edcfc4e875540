// What kiln's oneDNN-backed CPU kernels share: the engine, a stream per thread, scratchpads
// per call, and a wrapper that turns oneDNN's exceptions into kiln errors naming the op and
// its shapes.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "core/tensor.h"

namespace kiln::cpu {

// The one CPU engine.
dnnl::engine& onednn_engine();
// This thread's stream (in-order; kiln waits on it after each primitive).
dnnl::stream& onednn_stream();

// Attributes for kiln's cached primitives: the scratchpad is the caller's (user mode). In
// Debian's oneDNN 2.6 the library's own scratchpad is shared, so two threads running one
// cached primitive at once wrote each other's partial results (wrong convolutions from
// research code's threads; tests/kernels/test_conv_threads.cpp). Each call passes its own.
dnnl::primitive_attr user_scratchpad(dnnl::primitive_attr attr = {});

// A scratchpad for one execution of a primitive made with user_scratchpad: a buffer from
// kiln's host allocator (which reuses freed blocks), added to the call's arguments when the
// primitive needs one.
class Scratchpad {
 public:
  Scratchpad(const dnnl::memory::desc& md, std::unordered_map<int, dnnl::memory>& args);

 private:
  Tensor buf_;
};

// Runs fn; a dnnl::error becomes kiln::Error "op: oneDNN failed (...) for <shapes()>".
// shapes is called only then: the description costs nothing on the calls that succeed.
template <typename Shapes, typename Fn>
void onednn_guarded(const char* op, Shapes&& shapes, Fn&& fn) {
  try {
    fn();
  } catch (const dnnl::error& e) {
    KILN_FAIL(op, ": oneDNN failed (", e.what(), ", status ", static_cast<int>(e.status), ") for ", shapes());
  }
}

}  // namespace kiln::cpu
