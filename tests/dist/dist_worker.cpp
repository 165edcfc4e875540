// kiln_dist_worker: one rank of the communicator tests (test_communicator.sh starts 2-3 of
// them with torchrun-style variables). Scenarios:
//   collectives  all-reduce (float32 tensors, doubles, async buckets in issue order),
//                broadcast (tensor, bytes) and barrier against values computed here;
//                prints "rank R ok"
//   buckets      a 3-layer MLP's gradients summed by GradientReducer in 1 KiB buckets: every
//                bucket starts during backward (the grad-ready hook), the sums are exact
//   die          every rank all-reduces once; then rank 1 exits at once (as if killed), the
//                others all-reduce again: they must fail with kiln::Error
//   stall        rank 1 sleeps instead of its second all-reduce: the others time out
//   env          prints the parsed launch environment (or its one-line error)
//   claim        two stores of this launch's rendezvous (for TCP: rank 0's server and a
//                client of it) claim the same keys in turn; prints who got each: the
//                first claimant of a key, never both (the join's one-process-per-rank rule),
//                and a released key goes to the next claimant
//   time N       times an all-reduce of N floats (median of 3 after one warm-up), for docs
// A kiln::Error is printed as "rank R: error: MESSAGE" and exits 3.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/kiln.h"
#include "dist/dist.h"
#include "dist/rendezvous.h"
#include "layers/layers.h"
#include "train/communicator.h"
#include "train/data_parallel.h"

namespace {

using kiln::Communicator;
using kiln::Tensor;

bool collectives(Communicator& c) {
  const int r = c.rank(), n = c.size();
  bool ok = true;
  // Float32 all-reduce: rank r contributes (r + 1) * (i + 1); the sum is exact in float32.
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((r + 1) * static_cast<int>(i + 1));
  Tensor t = Tensor::from_vector(v, kiln::Shape{10, 100});
  c.allreduce_sum(t);
  const std::vector<float> got = t.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i)
    ok = ok && got[i] == static_cast<float>(n * (n + 1) / 2 * static_cast<int>(i + 1));
  // Doubles: counts and sums.
  std::vector<double> d{1.0, static_cast<double>(r), 0.5};
  c.allreduce_sum(d);
  ok = ok && d[0] == n && d[1] == n * (n - 1) / 2.0 && d[2] == 0.5 * n;
  // Buckets: several async all-reduces in flight, waited in reverse order.
  std::vector<Tensor> buckets;
  std::vector<std::shared_ptr<kiln::CommWork>> works;
  for (int b = 0; b < 4; ++b) {
    buckets.push_back(Tensor::full(kiln::Shape{1 + 1000 * b}, static_cast<double>(b + r)));
    works.push_back(c.allreduce_sum_async(buckets.back()));
  }
  for (int b = 3; b >= 0; --b) {
    works[static_cast<size_t>(b)]->wait();
    const std::vector<float> bv = buckets[static_cast<size_t>(b)].to_vector<float>();
    for (float x : bv) ok = ok && x == static_cast<float>(n * b + n * (n - 1) / 2);
  }
  // Broadcast from the last rank: a tensor and bytes.
  Tensor w = Tensor::full(kiln::Shape{7}, static_cast<double>(r));
  c.broadcast(w, n - 1);
  for (float x : w.to_vector<float>()) ok = ok && x == static_cast<float>(n - 1);
  std::string s = r == 0 ? std::string("from rank zero") : std::string("x");
  c.broadcast(s, 0);
  ok = ok && s == "from rank zero";
  c.barrier();
  return ok;
}

// Every rank builds the same MLP and feeds it rank-dependent input; after the reducer the
// gradients must be the sum of every rank's own (each rank recomputes the others' here).
bool buckets(Communicator& c) {
  auto grads_for = [](int rank, kiln::Sequential& net) {
    for (kiln::ParameterRef& p : net.parameters()) p.tensor->zero_grad();
    std::vector<float> x(4 * 16);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((static_cast<int>(i) * 7 + rank * 3) % 11) / 11.0f;
    kiln::sum(net(Tensor::from_vector(x, kiln::Shape{4, 16}))).backward();
  };
  kiln::Generator gen(3);
  kiln::Sequential net("mlp");
  net.add(std::make_shared<kiln::Linear>("fc1", 16, 32, true, gen));
  net.add(std::make_shared<kiln::ReLU>("relu1"));
  net.add(std::make_shared<kiln::Linear>("fc2", 32, 32, true, gen));
  net.add(std::make_shared<kiln::ReLU>("relu2"));
  net.add(std::make_shared<kiln::Linear>("fc3", 32, 4, true, gen));
  std::vector<std::vector<float>> want;
  for (int q = 0; q < c.size(); ++q) {
    grads_for(q, net);
    size_t k = 0;
    for (kiln::ParameterRef& p : net.parameters()) {
      const std::vector<float> g = p.tensor->grad().to_vector<float>();
      if (q == 0) want.push_back(g);
      else
        for (size_t i = 0; i < g.size(); ++i) want[k][i] += g[i];
      ++k;
    }
  }
  kiln::GradientReducer reducer(net.trainable_parameters(), c, 1024);
  for (kiln::ParameterRef& p : net.parameters()) p.tensor->zero_grad();
  {
    kiln::autograd::GradReadyScope hook(reducer.hook());
    grads_for(c.rank(), net);
  }
  reducer.reduce();
  bool ok = reducer.buckets() >= 2 && reducer.started_during_backward() == reducer.buckets();
  size_t k = 0;
  for (kiln::ParameterRef& p : net.parameters()) {
    const std::vector<float> g = p.tensor->grad().to_vector<float>();
    for (size_t i = 0; i < g.size(); ++i) ok = ok && std::abs(g[i] - want[k][i]) <= 1e-5f * (1 + std::abs(want[k][i]));
    ++k;
  }
  std::printf("rank %d: %lld buckets, %lld started during backward\n", c.rank(),
              static_cast<long long>(reducer.buckets()), static_cast<long long>(reducer.started_during_backward()));
  return ok;
}

void die_or_stall(Communicator& c, bool die) {
  Tensor t = Tensor::ones(kiln::Shape{1000});
  c.allreduce_sum(t);
  c.barrier();
  if (c.rank() == 1) {
    // Let the others read what this rank sent last: a socket closed with unread data is
    // reset, and the reset could reach them before the data.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (die) _exit(9);  // no destructor, no goodbye: the sockets close as the kernel reaps us
    std::this_thread::sleep_for(std::chrono::seconds(60));
    _exit(0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  try {
    c.allreduce_sum(t);
  } catch (const kiln::Error& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rank %d: failed after %.1f s: %s\n", c.rank(), s, e.message().c_str());
    std::fflush(stdout);
    _exit(3);  // as a program that stops on the error would (the stalled peer still holds sockets)
  }
  std::printf("rank %d: the second all-reduce returned although rank 1 is gone\n", c.rank());
}

// Key "a" claimed by store 1 then 2, key "b" by 2 then 1, then "a" released by 1 and claimed
// by 2: prints "claims: a 1 0, b 1 0, a after release 1" when exactly the first claimant of
// each got it and a released key is free again; the keys are removed after.
int claim_twice(kiln::LaunchEnv env) {
  env.rank = 0;
  std::unique_ptr<kiln::dist::RendezvousStore> one = kiln::dist::open_store(env);
  env.rank = 1;
  std::unique_ptr<kiln::dist::RendezvousStore> two = kiln::dist::open_store(env);
  const std::vector<char> v{'x'};
  const bool a1 = one->claim("claim.a", v), a2 = two->claim("claim.a", v);
  const bool b2 = two->claim("claim.b", v), b1 = one->claim("claim.b", v);
  one->release("claim.a");  // a failed join gives its place back
  const bool again = two->claim("claim.a", v);
  std::printf("claims: a %d %d, b %d %d, a after release %d\n", a1, a2, b2, b1, again);
  one->forget_own();
  two->forget_own();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string what = argc > 1 ? argv[1] : "";
  int rank = -1;
  try {
    kiln::dist::register_backends();
    const kiln::LaunchEnv env = kiln::launch_env();
    rank = env.rank;
    if (what == "env") {
      std::printf("rank %d of %d local %d launcher %s rendezvous %s timeout %g\n", env.rank, env.world_size,
                  env.local_rank, env.launcher.c_str(), env.rendezvous.c_str(), env.timeout_s);
      return 0;
    }
    if (what == "claim") return claim_twice(env);
    std::unique_ptr<Communicator> c = kiln::make_communicator(env);
    if (what == "collectives") {
      const bool ok = collectives(*c);
      std::printf("rank %d %s (%s, %d ranks)\n", c->rank(), ok ? "ok" : "WRONG VALUES", c->backend().c_str(),
                  c->size());
      return ok ? 0 : 1;
    }
    if (what == "time" && argc > 2) {
      Tensor t = Tensor::ones(kiln::Shape{std::stoll(argv[2])});
      std::vector<double> ms;
      for (int i = 0; i < 4; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        c->allreduce_sum(t);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin() + 1, ms.end());
      std::printf("rank %d: all-reduce of %s floats (%.1f MB): %.2f ms\n", c->rank(), argv[2],
                  static_cast<double>(t.nbytes()) / 1e6, ms[2]);
      return 0;
    }
    if (what == "buckets") {
      const bool ok = buckets(*c);
      std::printf("rank %d %s\n", c->rank(), ok ? "buckets ok" : "WRONG BUCKETS");
      return ok ? 0 : 1;
    }
    if (what == "die" || what == "stall") {
      die_or_stall(*c, what == "die");
      return 1;
    }
    std::fprintf(stderr, "usage: kiln_dist_worker collectives|buckets|die|stall|env\n");
    return 2;
  } catch (const kiln::Error& e) {
    std::printf("rank %d: error: %s\n", rank, e.message().c_str());
    return 3;
  }
}
