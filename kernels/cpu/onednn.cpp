#include "kernels/cpu/onednn.h"

#include <omp.h>
#include <pthread.h>

#include <cstddef>
#include <cstdlib>
#include <initializer_list>
#include <memory>

namespace kiln::cpu {

dnnl::engine& onednn_engine() {
  // Never destroyed, as the plan caches built on it (cpu_conv.cpp): a thread may run at exit.
  static auto& e = *new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& onednn_stream() {
  thread_local dnnl::stream s(onednn_engine());
  return s;
}

std::unique_lock<std::mutex> onednn_build_lock() {
  static std::mutex mu;
  return std::unique_lock<std::mutex>(mu);
}

dnnl::primitive_attr user_scratchpad(dnnl::primitive_attr attr) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

void add_scratchpad(const dnnl::memory::desc& md, std::unordered_map<int, dnnl::memory>& args) {
  const size_t bytes = md.get_size();
  if (bytes == 0) return;
  thread_local std::unique_ptr<std::byte[], void (*)(std::byte*)> buf(nullptr, [](std::byte* p) { std::free(p); });
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    const size_t rounded = (bytes + 4095) / 4096 * 4096;  // aligned_alloc wants a multiple of the alignment
    buf.reset(static_cast<std::byte*>(std::aligned_alloc(4096, rounded)));
    KILN_CHECK(buf != nullptr, "oneDNN scratchpad: cannot allocate ", rounded, " bytes");
    capacity = rounded;
  }
  args.insert_or_assign(DNNL_ARG_SCRATCHPAD, dnnl::memory(md, onednn_engine(), buf.get()));
}

namespace {

sigset_t held_signals() {
  sigset_t s;
  sigfillset(&s);
  for (const int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&s, sig);
  return s;
}

}  // namespace

SignalsHeld::SignalsHeld() {
  static const sigset_t held = held_signals();
  pthread_sigmask(SIG_BLOCK, &held, &before_);
  // This thread's OpenMP pool, where oneDNN runs its kernels: blocked once, and again if its
  // size changes (libgomp then starts workers, which may have inherited an open mask).
  thread_local int blocked_pool = 0;
  const int pool = omp_get_max_threads();
  if (blocked_pool != pool && !omp_in_parallel()) {
#pragma omp parallel
    pthread_sigmask(SIG_BLOCK, &held, nullptr);
    blocked_pool = pool;
  }
}

SignalsHeld::~SignalsHeld() { pthread_sigmask(SIG_SETMASK, &before_, nullptr); }

}  // namespace kiln::cpu
