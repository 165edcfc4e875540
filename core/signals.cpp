#include "core/signals.h"

#include <pthread.h>

#include <initializer_list>

namespace kiln {

sigset_t held_signals() {
  sigset_t s;
  sigfillset(&s);
  for (const int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&s, sig);
  return s;
}

void block_signals_in_pool(const sigset_t& signals) {
  // Every thread of the team the default parallel region starts: the pool oneDNN and kiln's
  // kernels run on from this thread.
#pragma omp parallel
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

SignalsHeld::SignalsHeld() {
  const sigset_t held = held_signals();
  pthread_sigmask(SIG_BLOCK, &held, &before_);
  // Once per thread: workers started later by this thread inherit its (blocked) mask.
  thread_local bool pool_blocked = false;
  if (!pool_blocked) {
    block_signals_in_pool(held);
    pool_blocked = true;
  }
}

SignalsHeld::~SignalsHeld() { pthread_sigmask(SIG_SETMASK, &before_, nullptr); }

void SignalsHeld::let_pending_in() const {
  sigset_t held;
  pthread_sigmask(SIG_SETMASK, &before_, &held);  // a pending signal's handler runs on this return
  pthread_sigmask(SIG_SETMASK, &held, nullptr);
}

}  // namespace kiln
