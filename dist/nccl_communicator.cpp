// The NCCL backend of train/communicator.h: one GPU per rank (LOCAL_RANK picks it), NCCL's
// unique id shared through the same rendezvous store as gloo's addresses. libnccl.so.2 is
// opened at run time (dlopen), so neither libkiln nor kiln_dist needs NCCL to load: on the
// GPU machine NCCL comes with PyTorch's pip wheels (nvidia/nccl/lib), and ncclGetVersion
// is checked when the backend starts. Every collective runs on the backend's own stream
// after the device finished kiln's work, and is polled against the timeout: a dead or
// silent peer aborts the communicator (ncclCommAbort) instead of hanging.
#include "dist/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "dist/rendezvous.h"

namespace kiln::dist {

namespace {

using Clock = std::chrono::steady_clock;

// The NCCL entry points kiln uses, resolved from the library at run time.
struct NcclApi {
  ncclResult_t (*GetVersion)(int*);
  ncclResult_t (*GetUniqueId)(ncclUniqueId*);
  ncclResult_t (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*CommDestroy)(ncclComm_t);
  ncclResult_t (*CommAbort)(ncclComm_t);
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*);
  ncclResult_t (*AllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*Broadcast)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  const char* (*GetErrorString)(ncclResult_t);
  int version = 0;
};

template <typename F>
void resolve(void* lib, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  KILN_CHECK(fn != nullptr, "the nccl backend: '", path, "' has no ", name, " (an NCCL 2.x library is needed)");
}

const NcclApi& nccl() {
  static const NcclApi api = [] {
    const char* env = std::getenv("KILN_NCCL_LIBRARY");
    const std::string path = env != nullptr && *env != '\0' ? env : "libnccl.so.2";
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    KILN_CHECK(lib != nullptr, "the nccl backend cannot load ", path, " (", ::dlerror(),
               "): install NCCL 2, or point KILN_NCCL_LIBRARY at PyTorch's nvidia/nccl/lib/libnccl.so.2; "
               "KILN_DIST_BACKEND=gloo reduces over the CPU instead");
    NcclApi a{};
    resolve(lib, "ncclGetVersion", a.GetVersion, path);
    resolve(lib, "ncclGetUniqueId", a.GetUniqueId, path);
    resolve(lib, "ncclCommInitRank", a.CommInitRank, path);
    resolve(lib, "ncclCommDestroy", a.CommDestroy, path);
    resolve(lib, "ncclCommAbort", a.CommAbort, path);
    resolve(lib, "ncclCommGetAsyncError", a.CommGetAsyncError, path);
    resolve(lib, "ncclAllReduce", a.AllReduce, path);
    resolve(lib, "ncclBroadcast", a.Broadcast, path);
    resolve(lib, "ncclGetErrorString", a.GetErrorString, path);
    a.GetVersion(&a.version);
    KILN_CHECK(a.version >= 20700, "the nccl backend needs NCCL 2.7 or newer; ", path, " is version ", a.version);
    return a;
  }();
  return api;
}

void cuda_check(cudaError_t e, const char* what) {
  KILN_CHECK(e == cudaSuccess, "the nccl backend: ", what, " failed: ", cudaGetErrorString(e));
}

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const LaunchEnv& env) : env_(env) {
    const NcclApi& api = nccl();
    int devices = 0;
    cuda_check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    KILN_CHECK(env.local_rank < devices, "rank ", env.rank, ": LOCAL_RANK ", env.local_rank, " names no GPU (",
               devices, " visible): start at most one rank per GPU");
    device_ = env.local_rank;
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    store_ = open_store(env);
    ranks_ = join(*store_, env, "nccl");
    ncclUniqueId id{};
    const std::string key = env.run_id + ".nccl.id";
    if (env.rank == 0) {
      nccl_check(api.GetUniqueId(&id), "ncclGetUniqueId");
      store_->set(key, std::vector<char>(id.internal, id.internal + sizeof id.internal));
    } else {
      const std::vector<char> v = store_->get(key);
      KILN_CHECK(v.size() == sizeof id.internal, "rank ", env.rank, ": the NCCL id in the rendezvous has ", v.size(),
                 " bytes, not ", sizeof id.internal);
      std::memcpy(id.internal, v.data(), v.size());
    }
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    nccl_check(api.CommInitRank(&comm_, env.world_size, id, env.rank), "ncclCommInitRank");
    barrier();
    store_->forget_own();
  }
  ~NcclCommunicator() override {
    shutdown();
    if (comm_ != nullptr) (aborted_ ? nccl().CommAbort(comm_) : nccl().CommDestroy(comm_));
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return env_.rank; }
  int size() const override { return env_.world_size; }
  std::string backend() const override { return "nccl " + std::to_string(nccl().version); }

 protected:
  bool takes_device(Device d) const override { return !d.is_cpu(); }
  void do_allreduce_sum(void* data, int64_t count, Elem elem, Device device) override {
    const size_t bytes = static_cast<size_t>(count) * (elem == Elem::f32 ? 4 : 8);
    on_device(data, bytes, !device.is_cpu(), "all-reduce", [&](void* d) {
      return nccl().AllReduce(d, d, static_cast<size_t>(count), elem == Elem::f32 ? ncclFloat32 : ncclFloat64, ncclSum,
                              comm_, stream_);
    });
  }
  void do_broadcast(void* data, int64_t bytes, int root, Device device) override {
    on_device(data, static_cast<size_t>(bytes), !device.is_cpu(), "broadcast", [&](void* d) {
      return nccl().Broadcast(d, d, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_);
    });
  }
  void do_barrier() override {
    float one = 1;
    do_allreduce_sum(&one, 1, Elem::f32, Device::cpu());
  }

 private:
  void nccl_check(ncclResult_t r, const char* what) {
    KILN_CHECK(r == ncclSuccess, "rank ", env_.rank, " of ", env_.world_size, ": ", what, " failed: ",
               nccl().GetErrorString(r));
  }

  // Runs `op` on device memory (host data goes through a temporary device buffer) and
  // waits for it, up to the timeout.
  template <typename Op>
  void on_device(void* data, size_t bytes, bool is_device, const char* what, Op&& op) {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    cuda_check(cudaDeviceSynchronize(), "waiting for the device's work before a collective");
    void* d = data;
    if (!is_device) {
      cuda_check(cudaMalloc(&d, bytes), "cudaMalloc");
      cuda_check(cudaMemcpy(d, data, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    nccl_check(op(d), what);
    wait(what);
    if (!is_device) {
      cuda_check(cudaMemcpy(data, d, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
      cudaFree(d);
    }
  }

  void wait(const char* what) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(env_.timeout_s * 1000));
    for (;;) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      KILN_CHECK(q == cudaErrorNotReady, "rank ", env_.rank, ": the ", what, " failed on the device: ",
                 cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      nccl().CommGetAsyncError(comm_, &async);
      if (async != ncclSuccess || Clock::now() >= deadline) {
        aborted_ = true;
        nccl().CommAbort(comm_);
        comm_ = nullptr;
        KILN_FAIL("rank ", env_.rank, " of ", env_.world_size, ": the ", what, " failed: ",
                  async != ncclSuccess ? std::string("NCCL: ") + nccl().GetErrorString(async)
                                       : peer_failure_cause(ranks_, env_.rank, env_.timeout_s));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  LaunchEnv env_;
  int device_ = 0;
  std::unique_ptr<RendezvousStore> store_;
  std::vector<RankProcess> ranks_;  // each rank's process, to name one that stopped
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool aborted_ = false;  // comm_ was aborted: destroy nothing more
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const LaunchEnv& env) {
  return std::make_unique<NcclCommunicator>(env);
}

}  // namespace kiln::dist
