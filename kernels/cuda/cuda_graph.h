// What the CUDA backend's ops consult while a thread records a CUDA graph
// (cuda_graph.cpp; Backend::begin_graph_capture): whether to skip host syncs, where a
// recorded dropout reads its Philox position, which allocations the capture made, and the
// gate that keeps other threads' work off a stream being recorded.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/philox.h"

namespace kiln::cuda {

// True while this thread records a graph: ops must not wait for the host.
bool capturing();

// Where a recorded dropout draws: Philox {base[0], base[1] + delta}, with base in device
// memory written before each replay. Throws when the capture was given no generator or the
// dropout's stream is not the capture's (the graph could not renew its masks).
struct CapturedRng {
  const uint64_t* base;
  uint64_t delta;
};
CapturedRng captured_rng(PhiloxState s);

// Enqueues dst[0] = s.seed, dst[1] = s.offset (cuda_elementwise.cu): a graph's dropout
// position, written on its stream before each replay.
void launch_set_philox(uint64_t* dst, PhiloxState s, cudaStream_t stream);
// Loads the kernels above and the recorded dropout's (cuda_elementwise.cu) before a capture:
// under lazy module loading they would otherwise first load inside it.
void preload_graph_kernels();

// Pool bookkeeping: an allocation made while recording must be freed while recording.
void note_allocation(void* p);
// False when p must not be handed to cudaFreeAsync: it came from a capture that failed
// and was never backed by memory.
bool note_free(void* p);

// Brackets work a thread queues on device `index`'s streams. A thread other than the one
// recording waits here until the capture ends (unless it is already inside a use of that
// device, which the capture waits for); the capture starts once such work is queued.
void enter_stream(int index);
void leave_stream(int index);

}  // namespace kiln::cuda
