// The communicator interface's shared half (train/communicator.h): the launch environment,
// the communication thread that runs every collective in issue order, the single-process
// no-op and the backend registry kiln_dist fills.
#include "train/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>

#include "core/error.h"

namespace kiln {

namespace {

// A non-negative integer variable, or -1 when unset; anything else is an error naming it.
int int_var(const std::function<const char*(const char*)>& get, const char* name) {
  const char* v = get(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  KILN_CHECK(end != nullptr && *end == '\0' && x >= 0, "launch: ", name, "='", v, "' is not a non-negative integer");
  KILN_CHECK(x < (1 << 20), "launch: ", name, "=", v, " is more than kiln takes (at most ", (1 << 20) - 1, ")");
  return static_cast<int>(x);
}

std::string str_var(const std::function<const char*(const char*)>& get, const char* name) {
  const char* v = get(name);
  return v == nullptr ? std::string() : std::string(v);
}

// Fills rank and sizes from one launcher's variables; false when its size variable is unset.
bool read_launcher(const std::function<const char*(const char*)>& get, LaunchEnv& env, const char* rank,
                   const char* size, const char* local_rank, const char* local_size) {
  const int r = int_var(get, rank), n = int_var(get, size);
  if (n < 0 && r < 0) return false;
  KILN_CHECK(n != 0, "launch: ", size, "=0: a run has one process or more (unset ", rank, " and ", size,
             " for one process)");
  KILN_CHECK(n >= 1, "launch: ", rank, " is set but ", size, " is not, or is empty (set both, or neither for one "
             "process)");
  KILN_CHECK(r >= 0, "launch: ", size, "=", n, " is set but ", rank, " is not (set both, or neither for one process)");
  KILN_CHECK(r < n, "launch: ", rank, "=", r, " is not below ", size, "=", n, " (ranks count from 0)");
  env.rank = r;
  env.world_size = n;
  const int lr = int_var(get, local_rank), ln = int_var(get, local_size);
  env.local_rank = lr >= 0 ? lr : r;
  env.local_world_size = ln >= 1 ? ln : n;
  return true;
}

}  // namespace

LaunchEnv launch_env_from(const std::function<const char*(const char*)>& get) {
  LaunchEnv env;
  if (read_launcher(get, env, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))
    env.launcher = "torchrun";
  else if (read_launcher(get, env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                         "OMPI_COMM_WORLD_LOCAL_SIZE"))
    env.launcher = "mpirun";
  if (const std::string t = str_var(get, "KILN_DIST_TIMEOUT"); !t.empty()) {
    char* end = nullptr;
    const double s = std::strtod(t.c_str(), &end);
    KILN_CHECK(end != nullptr && *end == '\0' && s > 0 && s <= 86400, "launch: KILN_DIST_TIMEOUT='", t,
               "' is not a number of seconds in (0, 86400]");
    env.timeout_s = s;
  }
  env.backend = str_var(get, "KILN_DIST_BACKEND");
  KILN_CHECK(env.backend.empty() || env.backend == "gloo" || env.backend == "nccl", "launch: KILN_DIST_BACKEND='",
             env.backend, "' is not gloo or nccl");
  if (const std::string id = str_var(get, "KILN_RUN_ID"); !id.empty()) env.run_id = id;
  const std::string rdv = str_var(get, "KILN_RENDEZVOUS");
  if (!rdv.empty()) {
    KILN_CHECK(rdv.rfind("file:", 0) == 0 || rdv.rfind("tcp:", 0) == 0, "launch: KILN_RENDEZVOUS='", rdv,
               "' is neither file:<directory> nor tcp:<host>:<port>");
    env.rendezvous = rdv;
  } else {
    const std::string addr = str_var(get, "MASTER_ADDR"), port = str_var(get, "MASTER_PORT");
    if (!addr.empty() || !port.empty()) {
      // torchrun's agent serves its own store (PyTorch's protocol) on MASTER_PORT.
      KILN_CHECK(str_var(get, "TORCHELASTIC_USE_AGENT_STORE").empty(), "launch: under torchrun, MASTER_PORT ",
                 port, " is torchrun's own store: give kiln another, KILN_RENDEZVOUS=tcp:", addr, ":<free port> (or "
                 "file:<dir>), in the environment torchrun starts from");
      KILN_CHECK(!addr.empty() && !port.empty(), "launch: set both MASTER_ADDR and MASTER_PORT (got MASTER_ADDR='",
                 addr, "', MASTER_PORT='", port, "')");
      env.rendezvous = "tcp:" + addr + ":" + port;
    }
  }
  if (env.rendezvous.rfind("tcp:", 0) == 0) {
    const std::string hp = env.rendezvous.substr(4);
    const size_t colon = hp.rfind(':');
    const std::string port = colon == std::string::npos ? "" : hp.substr(colon + 1);
    char* end = nullptr;
    const long p = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
    KILN_CHECK(colon != std::string::npos && colon > 0 && end != nullptr && *end == '\0' && p > 0 && p < 65536,
               "launch: the rendezvous '", env.rendezvous, "' is not tcp:<host>:<port> with a port in 1..65535");
  }
  KILN_CHECK(env.rendezvous != "file:", "launch: KILN_RENDEZVOUS=file: names no directory");
  KILN_CHECK(!env.distributed() || !env.rendezvous.empty(), "launch: ",
             env.launcher == "mpirun" ? "OMPI_COMM_WORLD_SIZE" : "WORLD_SIZE", "=", env.world_size,
             " but no rendezvous is set: export MASTER_ADDR and MASTER_PORT, or KILN_RENDEZVOUS=file:<dir> "
             "(a directory every rank sees)");
  return env;
}

LaunchEnv launch_env() {
  return launch_env_from([](const char* n) { return static_cast<const char*>(std::getenv(n)); });
}

// ---------------------------------------------------------------- CommWork

void CommWork::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return done_; });
  if (error_) std::rethrow_exception(error_);
}

bool CommWork::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

// ---------------------------------------------------------------- Communicator

Communicator::~Communicator() { shutdown(); }

void Communicator::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<CommWork> Communicator::submit(std::function<void()> op, const char* what) {
  auto work = std::make_shared<CommWork>();
  std::string failed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    KILN_CHECK(!stop_, "communicator: ", what, " after the communicator was shut down");
    failed = failed_;
    if (failed.empty()) {
      if (!thread_.joinable()) thread_ = std::thread([this] { comm_loop(); });
      queue_.emplace_back(std::move(op), work);
    }
  }
  if (!failed.empty()) {
    // A failed group stays failed: the ranks no longer agree on what was reduced.
    work->error_ = std::make_exception_ptr(Error(failed));
    work->done_ = true;
    return work;
  }
  cv_.notify_all();
  return work;
}

void Communicator::comm_loop() {
  for (;;) {
    std::pair<std::function<void()>, std::shared_ptr<CommWork>> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    std::exception_ptr err;
    bool skip = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failed_.empty()) {
        err = std::make_exception_ptr(Error(failed_));
        skip = true;
      }
    }
    if (!skip) {
      try {
        job.first();
      } catch (const Error& e) {
        err = std::current_exception();
        std::lock_guard<std::mutex> lock(mu_);
        failed_ = e.message();
      } catch (const std::exception& e) {
        std::string msg = "communicator (" + backend() + ", rank " + std::to_string(rank()) + "): " + e.what();
        err = std::make_exception_ptr(Error(msg));
        std::lock_guard<std::mutex> lock(mu_);
        failed_ = msg;
      }
    }
    {
      std::lock_guard<std::mutex> lock(job.second->mu_);
      job.second->error_ = err;
      job.second->done_ = true;
    }
    job.second->cv_.notify_all();
  }
}

namespace {

void check_reducible(const Tensor& t) {
  KILN_CHECK(t.defined() && t.dtype() == DType::f32 && t.is_contiguous(), "communicator: all-reduce takes a "
             "contiguous float32 tensor, got ", t.defined() ? t.description() : std::string("an undefined tensor"));
}

}  // namespace

std::shared_ptr<CommWork> Communicator::allreduce_sum_async(Tensor t) {
  check_reducible(t);
  if (size() == 1) {
    auto done = std::make_shared<CommWork>();
    done->done_ = true;
    return done;
  }
  return submit(
      [this, t]() mutable {
        if (takes_device(t.device())) {
          do_allreduce_sum(t.raw_data(), t.numel(), Elem::f32, t.device());
          t.mark_modified();  // an in-place write, as copy_from's on the host path
          return;
        }
        Tensor h = t.cpu();
        do_allreduce_sum(h.raw_data(), h.numel(), Elem::f32, Device::cpu());
        t.copy_from(h.to(t.device()));
      },
      "all-reduce");
}

void Communicator::allreduce_sum(Tensor& t) { allreduce_sum_async(t)->wait(); }

void Communicator::allreduce_sum(std::vector<double>& v) {
  if (size() == 1 || v.empty()) return;
  submit([this, &v] { do_allreduce_sum(v.data(), static_cast<int64_t>(v.size()), Elem::f64, Device::cpu()); },
         "all-reduce")
      ->wait();
}

void Communicator::broadcast(Tensor& t, int root) {
  KILN_CHECK(t.defined() && t.is_contiguous(), "communicator: broadcast takes a contiguous tensor");
  KILN_CHECK(root >= 0 && root < size(), "communicator: broadcast root ", root, " is not a rank of ", size());
  if (size() == 1) return;
  submit(
      [this, &t, root] {
        if (takes_device(t.device())) {
          do_broadcast(t.raw_data(), static_cast<int64_t>(t.nbytes()), root, t.device());
          t.mark_modified();  // an in-place write: a frozen layer's bf16 copy, a saved tensor see it
          return;
        }
        Tensor h = t.cpu();
        do_broadcast(h.raw_data(), static_cast<int64_t>(h.nbytes()), root, Device::cpu());
        t.copy_from(h.to(t.device()));
      },
      "broadcast")
      ->wait();
}

void Communicator::broadcast(std::string& bytes, int root) {
  KILN_CHECK(root >= 0 && root < size(), "communicator: broadcast root ", root, " is not a rank of ", size());
  if (size() == 1) return;
  submit(
      [this, &bytes, root] {
        int64_t n = static_cast<int64_t>(bytes.size());
        do_broadcast(&n, sizeof n, root, Device::cpu());
        bytes.resize(static_cast<size_t>(n));
        if (n > 0) do_broadcast(bytes.data(), n, root, Device::cpu());
      },
      "broadcast")
      ->wait();
}

void Communicator::barrier() {
  if (size() == 1) return;
  submit([this] { do_barrier(); }, "barrier")->wait();
}

// ---------------------------------------------------------------- single process and registry

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }

 protected:
  void do_allreduce_sum(void*, int64_t, Elem, Device) override {}
  void do_broadcast(void*, int64_t, int, Device) override {}
  void do_barrier() override {}
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::string, CommunicatorFactory>& registry() {
  static std::map<std::string, CommunicatorFactory> r;
  return r;
}

}  // namespace

std::unique_ptr<Communicator> single_process() { return std::make_unique<SingleProcess>(); }

void register_communicator_backend(const std::string& name, CommunicatorFactory factory) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(factory);
}

std::vector<std::string> communicator_backends() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> names;
  for (const auto& [name, f] : registry()) names.push_back(name);
  return names;
}

std::unique_ptr<Communicator> make_communicator(const LaunchEnv& env, Device device) {
  if (!env.distributed()) return single_process();
  const std::string name = !env.backend.empty() ? env.backend : device.is_cpu() ? "gloo" : "nccl";
  CommunicatorFactory f;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    if (it != registry().end()) f = it->second;
  }
  if (!f) {
    if (registry().empty())
      KILN_FAIL("launched as rank ", env.rank, " of ", env.world_size, " (", env.launcher,
                ") but no multi-process backend is registered: a program must link kiln::dist (libkiln_dist) and "
                "call kiln::dist::register_backends() first; a kiln without libkiln_dist was built without gloo "
                "(install libgloo-dev and rebuild)");
    std::string have;
    for (const std::string& n : communicator_backends()) have += (have.empty() ? "" : ", ") + n;
    KILN_FAIL("launched as rank ", env.rank, " of ", env.world_size, " with the '", name,
              "' backend, which this build lacks (it has: ", have, ")",
              name == "nccl" ? "; NCCL needs a CUDA build" : "");
  }
  return f(env);
}

}  // namespace kiln
