// Rendezvous stores and the join check (rendezvous.h). The file store keeps one file per
// key in a directory every rank sees, written atomically (temporary name, then rename), so
// a reader sees a whole value or none.
#include "dist/rendezvous.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/error.h"
#include "dist/tcp_store.h"

namespace kiln::dist {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds timeout_of(const LaunchEnv& env) {
  return std::chrono::milliseconds(static_cast<int64_t>(env.timeout_s * 1000));
}

// A directory of key files; keys are escaped into file names.
class FileStore final : public RendezvousStore {
 public:
  FileStore(std::string dir, std::chrono::milliseconds timeout) : dir_(std::move(dir)), timeout_(timeout) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    KILN_CHECK(fs::is_directory(dir_), "rendezvous: cannot use the directory '", dir_, "'",
               ec ? ": " + ec.message() : std::string(), " (KILN_RENDEZVOUS=file:<dir> needs a directory every rank "
               "can write)");
  }
  void set(const std::string& key, const std::vector<char>& data) override {
    const std::string path = path_of(key), tmp = path + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      f.write(data.data(), static_cast<std::streamsize>(data.size()));
      KILN_CHECK(f.good(), "rendezvous: cannot write '", tmp, "'");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    KILN_CHECK(!ec, "rendezvous: cannot rename '", tmp, "' to '", path, "': ", ec.message());
    own_.push_back(path);
  }
  std::vector<char> get(const std::string& key) override {
    wait({key}, timeout_);
    std::ifstream f(path_of(key), std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (const std::string& k : keys)
      while (!has(k)) {
        KILN_CHECK(Clock::now() < deadline, "rendezvous: waited ", std::chrono::duration<double>(timeout).count(),
                   " s in '", dir_, "' for key '", k, "' that no rank set");
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
  }
  bool has(const std::string& key) override { return fs::exists(path_of(key)); }
  void forget_own() override {
    std::error_code ec;
    for (const std::string& p : own_) fs::remove(p, ec);
    own_.clear();
  }

 private:
  std::string path_of(const std::string& key) const {
    std::string name;
    for (char c : key) {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') {
        name += c;
      } else {
        char hex[4];
        std::snprintf(hex, sizeof hex, "%%%02x", static_cast<unsigned char>(c));
        name += hex;
      }
    }
    return (fs::path(dir_) / ("key." + name)).string();
  }
  std::string dir_;
  std::chrono::milliseconds timeout_;
  std::vector<std::string> own_;
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" || host == "[::1]";
}

}  // namespace

std::unique_ptr<RendezvousStore> open_store(const LaunchEnv& env) {
  if (env.rendezvous.rfind("file:", 0) == 0) return std::make_unique<FileStore>(env.rendezvous.substr(5), timeout_of(env));
  KILN_CHECK(env.rendezvous.rfind("tcp:", 0) == 0, "rendezvous: '", env.rendezvous,
             "' is neither file:<dir> nor tcp:<host>:<port>");
  const std::string hp = env.rendezvous.substr(4);
  const size_t colon = hp.rfind(':');
  std::string host = hp.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_unique<TcpStore>(host, std::stoi(hp.substr(colon + 1)), env.rank == 0, timeout_of(env));
}

void join(RendezvousStore& store, const LaunchEnv& env, const std::string& backend) {
  const std::string prefix = env.run_id + ".join.";
  const std::string mine = "world_size=" + std::to_string(env.world_size) + " backend=" + backend;
  store.set(prefix + std::to_string(env.rank), std::vector<char>(mine.begin(), mine.end()));
  const auto deadline = Clock::now() + timeout_of(env);
  for (;;) {
    std::string missing;
    int count = 0;
    for (int r = 0; r < env.world_size; ++r)
      if (!store.has(prefix + std::to_string(r))) {
        if (count++ < 8) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
    if (count == 0) break;
    // A rank that gives up waiting takes its key with it (file store): left behind, it would
    // join the next run in this directory as a rank of this one. A rank that stops on a
    // disagreement below keeps its key, so that the others see the disagreement at once.
    const bool late = Clock::now() >= deadline;
    if (late) store.forget_own();
    KILN_CHECK(!late, "rank ", env.rank, ": ", count, " of ", env.world_size, " ranks (",
               missing, count > 8 ? ", ..." : "", ") did not join the rendezvous at ", env.rendezvous, " within ",
               env.timeout_s, " s: start all ", env.world_size,
               " processes with the same WORLD_SIZE and rendezvous (KILN_DIST_TIMEOUT sets the wait)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int r = 0; r < env.world_size; ++r) {
    const std::vector<char> v = store.get(prefix + std::to_string(r));
    const std::string theirs(v.begin(), v.end());
    KILN_CHECK(theirs == mine, "rank ", env.rank, " (", mine, ") and rank ", r, " (", theirs,
               ") disagree: start every rank with the same world size and backend",
               env.rendezvous.rfind("file:", 0) == 0 ? " (or, if no rank of this run says so, '" +
                   env.rendezvous.substr(5) + "' holds keys of an earlier run that was killed: empty it)"
                                                      : std::string());
  }
  // A rank launched with a larger world than the others' would wait above for ranks that never
  // come; one whose number is past the world of the others is caught by their check of it.
  const std::string beyond = prefix + std::to_string(env.world_size);
  KILN_CHECK(!store.has(beyond), "rank ", env.rank, ": a rank ", env.world_size, " joined, but WORLD_SIZE is ",
             env.world_size, ": start every rank with the same WORLD_SIZE");
}

TransportHost transport_host(const LaunchEnv& env) {
  TransportHost h;
  if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"); iface != nullptr && *iface != '\0') {
    h.iface = iface;
    return h;
  }
  // A loopback MASTER_ADDR means one machine; otherwise (another host, or a file rendezvous
  // that may be on a shared filesystem) this host's name, as the others resolve it.
  std::string master;
  if (env.rendezvous.rfind("tcp:", 0) == 0) master = env.rendezvous.substr(4, env.rendezvous.rfind(':') - 4);
  if (is_loopback(master)) {
    h.hostname = "127.0.0.1";
    return h;
  }
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  h.hostname = name;
  return h;
}

}  // namespace kiln::dist
