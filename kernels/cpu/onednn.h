// What kiln's oneDNN-backed CPU kernels share: the engine, a stream per thread, and a
// wrapper that turns oneDNN's exceptions into kiln errors naming the op and its shapes.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>
#include <string>

#include "core/error.h"

namespace kiln::cpu {

// The one CPU engine.
dnnl::engine& onednn_engine();
// This thread's stream (in-order; kiln waits on it after each primitive).
dnnl::stream& onednn_stream();

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
