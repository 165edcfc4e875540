// The gloo backend of train/communicator.h for CPU processes: gloo's TCP transport, full
// mesh connected through the rendezvous store, ring all-reduce (every rank ends with the
// same bytes), one-to-all broadcast, and gloo's own timeout on every collective. Chosen over
// Open MPI because gloo is a library (no launcher needed: torchrun-style variables and
// mpirun both work), its collectives take a per-operation timeout, and a dead peer surfaces
// as an exception instead of MPI's abort of the whole job.
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <chrono>
#include <csignal>
#include <exception>

#include "core/error.h"
#include "dist/gloo_communicator.h"
#include "dist/rendezvous.h"

namespace kiln::dist {

namespace {

class GlooCommunicator final : public Communicator {
 public:
  explicit GlooCommunicator(const LaunchEnv& env) : env_(env) {
    // gloo's TCP transport writes with plain write(2): a write to a peer that has died
    // raises SIGPIPE, which would kill this rank silently (exit 141) before gloo throws.
    // Ignored, the write fails with EPIPE and the rank stops with kiln's error naming the
    // lost peer (dist_train's killed-rank check once died so, rc 141, on 2026-12-02).
    std::signal(SIGPIPE, SIG_IGN);
    store_ = open_store(env);
    ranks_ = join(*store_, env, "gloo");
    const TransportHost host = transport_host(env);
    gloo::transport::tcp::attr attr;
    attr.iface = host.iface;
    attr.hostname = host.hostname;
    try {  // gloo's own checks (an interface it cannot find) throw EnforceNotMet, not gloo::Exception
      device_ = gloo::transport::tcp::CreateDevice(attr);
    } catch (const std::exception& e) {
      KILN_FAIL("rank ", env.rank, ": gloo cannot open its transport on ",
                host.iface.empty() ? "host '" + host.hostname + "'"
                                   : "interface '" + host.iface + "' (GLOO_SOCKET_IFNAME)",
                ": ", e.what(), host.iface.empty() ? "" : "; `ip -brief address` lists this machine's interfaces");
    }
    try {
      auto ctx = std::make_shared<gloo::rendezvous::Context>(env.rank, env.world_size);
      ctx->setTimeout(std::chrono::milliseconds(static_cast<int64_t>(env.timeout_s * 1000)));
      gloo::rendezvous::PrefixStore prefixed(env.run_id + ".gloo", *store_);
      ctx->connectFullMesh(prefixed, device_);
      context_ = std::move(ctx);
    } catch (const gloo::Exception& e) {
      KILN_FAIL("rank ", env.rank, " of ", env.world_size, ": gloo could not connect the ranks (transport on ",
                host.iface.empty() ? host.hostname : "interface " + host.iface, "): ", e.what(),
                " (set GLOO_SOCKET_IFNAME to the interface the machines reach each other on)");
    }
    barrier();            // every rank has read every address
    store_->forget_own();  // so a file rendezvous directory can serve the next run
  }
  ~GlooCommunicator() override { shutdown(); }

  int rank() const override { return env_.rank; }
  int size() const override { return env_.world_size; }
  std::string backend() const override { return "gloo"; }

 protected:
  void do_allreduce_sum(void* data, int64_t count, Elem elem, Device) override {
    guarded("all-reduce", [&] {
      gloo::AllreduceOptions opts(context_);
      if (elem == Elem::f32) {
        opts.setOutput(static_cast<float*>(data), static_cast<size_t>(count));
        opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      } else {
        opts.setOutput(static_cast<double*>(data), static_cast<size_t>(count));
        opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
      }
      gloo::allreduce(opts);
    });
  }
  void do_broadcast(void* data, int64_t bytes, int root, Device) override {
    guarded("broadcast", [&] {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<char*>(data), static_cast<size_t>(bytes));
      opts.setRoot(root);
      gloo::broadcast(opts);
    });
  }
  void do_barrier() override {
    guarded("barrier", [&] {
      gloo::BarrierOptions opts(context_);
      gloo::barrier(opts);
    });
  }

 private:
  template <typename F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const gloo::Exception& e) {
      KILN_FAIL("rank ", env_.rank, " of ", env_.world_size, ": the ", what, " failed: ",
                peer_failure_cause(ranks_, env_.rank, env_.timeout_s), " [gloo: ", e.what(), "]");
    }
  }

  LaunchEnv env_;
  std::unique_ptr<RendezvousStore> store_;
  std::vector<RankProcess> ranks_;  // each rank's process, to name one that stopped
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> context_;
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(const LaunchEnv& env) {
  return std::make_unique<GlooCommunicator>(env);
}

}  // namespace kiln::dist
