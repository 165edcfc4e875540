// Signals and oneDNN (kernels/cpu/onednn.h): no handler runs on a thread inside a oneDNN call,
// where its generated GEMM kernels point rsp into the heap. The calling thread holds signals
// for the call, its OpenMP pool for good; a signal that comes meanwhile is handled after.
#include <catch2/catch.hpp>

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <vector>

#include "core/kiln.h"
#include "kernels/cpu/onednn.h"

using namespace kiln;

namespace {

std::atomic<int> g_handled{0};
std::atomic<long> g_main_tid{0}, g_storm_tid{0};
std::atomic<int> g_elsewhere{0};  // handlers run on neither: on a pool worker

extern "C" void count_signal(int) {
  g_handled.fetch_add(1);
  const long me = syscall(SYS_gettid);
  if (me != g_main_tid && me != g_storm_tid) g_elsewhere.fetch_add(1);
}

// Installs count_signal for SIGUSR1 while it lives.
struct Usr1Handler {
  struct sigaction old {};
  Usr1Handler() {
    struct sigaction sa {};
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    g_handled = 0;
    g_elsewhere = 0;
    g_main_tid = syscall(SYS_gettid);
    g_storm_tid = 0;
  }
  ~Usr1Handler() { sigaction(SIGUSR1, &old, nullptr); }
};

bool blocked_here(int sig) {
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, nullptr, &now);
  return sigismember(&now, sig) == 1;
}

}  // namespace

TEST_CASE("SignalsHeld blocks all but the fault signals here and in the OpenMP pool, and handles a held one after",
          "[signals]") {
  const Usr1Handler handler;
  REQUIRE_FALSE(blocked_here(SIGUSR1));
  {
    const cpu::SignalsHeld held;
    CHECK(blocked_here(SIGUSR1));
    CHECK(blocked_here(SIGINT));
    CHECK(blocked_here(SIGTERM));
    CHECK_FALSE(blocked_here(SIGSEGV));  // a fault must reach its handler at once
    CHECK_FALSE(blocked_here(SIGABRT));
    std::atomic<int> open_workers{0};
#pragma omp parallel
    open_workers += blocked_here(SIGUSR1) ? 0 : 1;
    CHECK(open_workers == 0);
    pthread_kill(pthread_self(), SIGUSR1);
    {
      const cpu::SignalsHeld nested;
    }
    CHECK(g_handled == 0);  // the nested guard gives back the outer one's mask
  }
  CHECK(g_handled == 1);
  CHECK_FALSE(blocked_here(SIGUSR1));
  CHECK(g_elsewhere == 0);
}

TEST_CASE("signals to the process never land on a thread inside oneDNN, whose results stay exact", "[signals]") {
  // Linear layers of a batch of 4 (oneDNN's sgemm, whose kernels oneDNN <= 3.11 runs with rsp
  // in the heap) and a convolution, forward and backward. Unguarded, a dnnl_sgemm loop under
  // such a storm crashed with "corrupted size vs. prev_size" within seconds (2026-12-05), and
  // this test saw 72 to 199 handlers run on pool workers (3 runs).
  const Tensor x = Tensor::uniform(Shape{4, 2048}, -1.0f, 1.0f, default_generator());
  const Tensor w = Tensor::uniform(Shape{2048, 2048}, -0.05f, 0.05f, default_generator());
  const Tensor img = Tensor::uniform(Shape{2, 16, 16, 32}, -1.0f, 1.0f, default_generator());
  const Tensor k = Tensor::uniform(Shape{32, 3, 3, 32}, -0.1f, 0.1f, default_generator());
  auto pass = [&] {
    const Tensor wl = w.detach().clone().set_requires_grad(true);
    const Tensor kl = k.detach().clone().set_requires_grad(true);
    const Tensor y = linear(x, wl);
    const Tensor z = conv2d(img, kl, Tensor(), Conv2dParams{1, 1, 1, 1});
    add(sum(y), sum(z)).backward();
    return std::vector<std::vector<float>>{y.to_vector<float>(), wl.grad().to_vector<float>(), z.to_vector<float>(),
                                           kl.grad().to_vector<float>()};
  };
  const auto want = pass();
  const Usr1Handler handler;
  std::atomic<bool> done{false};
  std::thread storm([&] {
    g_storm_tid = syscall(SYS_gettid);
    while (!done) {
      kill(getpid(), SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  while (g_storm_tid == 0) std::this_thread::yield();
  int exact = 0, passes = 0;
  for (; passes < 40; ++passes) exact += pass() == want;
  done = true;
  storm.join();
  CHECK(exact == passes);
  CHECK(g_handled > 0);
  CHECK(g_elsewhere == 0);
}
