// Signal handlers and the threads that compute. oneDNN's generated f32 GEMM kernels (under
// kiln's CPU linear layers and some convolutions; oneDNN up to 3.11, and Debian ships 2.6.3)
// point rsp into the heap while they run (oneDNN issue #4845, fixed by its PR #4855). The
// kernel writes a signal's frame at rsp, so a handler that runs on a thread inside one of them
// writes that frame over heap memory: a weight turned NaN or silently wrong, or malloc's own
// records ("corrupted size vs. prev_size"), found later. vgg_finetune's SIGTERM test met it
// about once in three CI runs (2026-12-05; docs/performance.md). Default actions and ignored
// signals push no frame; a handler does. So a handled signal must stay blocked in every
// thread that computes and be let in where nothing computes:
//  - vgg_finetune blocks SIGINT and SIGTERM in main() before any thread exists (every thread
//    inherits the mask) and takes them with sigwait on a thread of their own.
//  - kiln's Python calls hold signals (SignalsHeld) while they compute; a pending one's
//    handler (Python's C-level one) runs when the call ends, or between training steps.
// Research code that installs a handler (a profiler's SIGPROF, an alarm) does the same.
#pragma once

#include <csignal>

namespace kiln {

// The signals SignalsHeld blocks: every one but those the kernel raises for the faulting
// thread (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT), which must reach their
// handlers (a crash reporter, a sanitizer) and cannot wait.
sigset_t held_signals();

// Blocks `signals` in every worker of the calling thread's OpenMP pool, where oneDNN runs
// (workers the pool starts later inherit the calling thread's mask instead).
void block_signals_in_pool(const sigset_t& signals);

// While it lives, held_signals() are blocked in the calling thread and its OpenMP pool, so no
// handler runs inside a kernel; a signal that comes meanwhile stays pending, and its handler
// runs when the guard ends (the thread's mask restored) or in let_pending_in(). Nests; a
// nanobind call_guard, so default-constructible. The pool's workers stay blocked afterwards:
// they never need a signal (the kernel delivers process-wide ones to other threads).
class SignalsHeld {
 public:
  SignalsHeld();
  ~SignalsHeld();
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;
  // Runs the handlers of pending signals now, on this thread: call it between computations
  // (a trainer's should_stop), where a frame lands on an ordinary stack.
  void let_pending_in() const;

 private:
  sigset_t before_;  // the thread's mask at construction
};

}  // namespace kiln
