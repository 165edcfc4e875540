// kiln_dist: the optional component that gives train/communicator.h its multi-process
// backends on existing collective libraries -- gloo for CPU processes, NCCL (loaded at run
// time) for GPUs -- and the rendezvous stores they bootstrap through. libkiln never links
// it; a program that wants more than one process links kiln_dist and calls
// register_backends() once. docs/data_parallel.md describes launch and failure.
#pragma once

namespace kiln::dist {

// Registers "gloo" (and "nccl" in a CUDA build) with make_communicator's registry; idempotent.
void register_backends();

}  // namespace kiln::dist
