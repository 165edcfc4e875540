// Rendezvous stores and the join check (rendezvous.h). The file store keeps one file per
// key in a directory every rank sees, written atomically (temporary name, then rename), so
// a reader sees a whole value or none.
#include "dist/rendezvous.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
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
  // O_EXCL: the file system lets one process create the file. Its value, written after, is
  // read once every rank has joined (each rank sets its join value after its claim), or by a
  // refused claimant, which may find it still empty and then says less.
  bool claim(const std::string& key, const std::vector<char>& data) override {
    const std::string path = path_of(key);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      KILN_CHECK(errno == EEXIST, "rendezvous: cannot create '", path, "': ", std::strerror(errno));
      return false;
    }
    const bool written = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    ::close(fd);
    std::error_code ec;
    if (!written) fs::remove(path, ec);  // not left claimed by a process that stops here
    KILN_CHECK(written, "rendezvous: cannot write '", path, "'");
    own_.push_back(path);
    return true;
  }
  void release(const std::string& key) override {
    const std::string path = path_of(key);
    std::error_code ec;
    fs::remove(path, ec);
    own_.erase(std::remove(own_.begin(), own_.end(), path), own_.end());
  }
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

namespace {

// Rank r's join value against this rank's: a disagreement stops this rank at once.
void check_join_value(RendezvousStore& store, const LaunchEnv& env, const std::string& key, int r,
                      const std::string& mine) {
  const std::vector<char> v = store.get(key);
  const std::string theirs(v.begin(), v.end());
  KILN_CHECK(theirs == mine, "rank ", env.rank, " (", mine, ") and rank ", r, " (", theirs,
             ") disagree: start every rank with the same world size and backend",
             env.rendezvous.rfind("file:", 0) == 0 ? " (or, if no rank of this run says so, '" +
                 env.rendezvous.substr(5) + "' holds keys of an earlier run that was killed: empty it)"
                                                    : std::string());
}

// Sets this rank's join value, waits for every rank's (each checked against it as it
// comes), then checks that no rank beyond WORLD_SIZE came.
void wait_for_ranks(RendezvousStore& store, const LaunchEnv& env, const std::string& prefix, const std::string& mine) {
  store.set(prefix + std::to_string(env.rank), std::vector<char>(mine.begin(), mine.end()));
  const auto start = Clock::now(), deadline = start + timeout_of(env);
  std::vector<bool> checked(static_cast<size_t>(env.world_size), false);
  bool said_waiting = false;
  for (;;) {
    std::string missing;
    int count = 0;
    for (int r = 0; r < env.world_size; ++r) {
      if (checked[static_cast<size_t>(r)]) continue;
      const std::string key = prefix + std::to_string(r);
      if (store.has(key)) {
        // Each value as soon as it is there: a rank started with another WORLD_SIZE stops
        // every rank at once, not only those whose world it fits (found by review).
        check_join_value(store, env, key, r, mine);
        checked[static_cast<size_t>(r)] = true;
      } else if (count++ < 8) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
    }
    if (count == 0) break;
    // A rank that gives up waiting takes its key with it (file store): left behind, it would
    // join the next run in this directory as a rank of this one. A rank that stops on a
    // disagreement keeps its key, so that the others see the disagreement at once.
    const bool late = Clock::now() >= deadline;
    if (late) store.forget_own();
    KILN_CHECK(!late, "rank ", env.rank, ": ", count, " of ", env.world_size, " ranks (",
               missing, count > 8 ? ", ..." : "", ") did not join the rendezvous at ", env.rendezvous, " within ",
               env.timeout_s, " s: start all ", env.world_size,
               " processes with the same WORLD_SIZE and rendezvous (KILN_DIST_TIMEOUT sets the wait)");
    // Said once: a rank that failed before joining (a typo in its command) left the others
    // silent for the whole timeout.
    if (!said_waiting && Clock::now() - start > std::chrono::seconds(5)) {
      std::fprintf(stderr, "rank %d: waiting for rank(s) %s%s to join the rendezvous at %s (up to %g s, "
                   "KILN_DIST_TIMEOUT)\n", env.rank, missing.c_str(), count > 8 ? ", ..." : "",
                   env.rendezvous.c_str(), env.timeout_s);
      said_waiting = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // A rank launched with a larger world than the others' would wait above for ranks that never
  // come; one whose number is past the world of the others is caught by their check of it.
  const std::string beyond = prefix + std::to_string(env.world_size);
  KILN_CHECK(!store.has(beyond), "rank ", env.rank, ": a rank ", env.world_size, " joined, but WORLD_SIZE is ",
             env.world_size, ": start every rank with the same WORLD_SIZE");
}

// Where this process's pid means something: the host name and the pid namespace (two
// containers on one host may share a name and reuse each other's pids).
std::string this_process_place() {
  char name[256] = {};
  ::gethostname(name, sizeof name - 1);
  std::error_code ec;
  const fs::path ns = fs::read_symlink("/proc/self/ns/pid", ec);
  return std::string(name) + (ec ? "" : " " + ns.string());
}

// Whether process `pid` of this machine has exited: gone, or a zombie its parent has not
// reaped yet (its sockets are closed, so its peers' collectives fail before it is gone).
bool process_exited(long long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  const std::string line((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = line.rfind(')');  // the state follows "(comm)", which may hold spaces
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z' || line[paren + 2] == 'X';
}

}  // namespace

std::string peer_failure_cause(const std::vector<RankProcess>& ranks, int self, double timeout_s) {
  const std::string here = this_process_place();
  std::vector<size_t> local;
  for (size_t r = 0; r < ranks.size(); ++r)
    if (static_cast<int>(r) != self && ranks[r].pid > 0 && ranks[r].where == here) local.push_back(r);
  std::string gone;
  int count = 0;
  // A peer whose socket closed may not have finished exiting yet: a second's grace.
  for (int attempt = 0; attempt < 20 && count == 0 && !local.empty(); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (size_t r : local) {
      if (!process_exited(ranks[r].pid)) continue;
      gone += (gone.empty() ? "" : ", ") + std::to_string(r) + " (pid " + std::to_string(ranks[r].pid) + ")";
      ++count;
    }
  }
  if (count > 0)
    return std::string(count == 1 ? "rank " : "ranks ") + gone + (count == 1 ? " has" : " have") + " exited";
  std::ostringstream os;
  os << "a peer process stopped or did not answer within " << timeout_s << " s (KILN_DIST_TIMEOUT)";
  const std::string out = os.str();
  if (local.empty()) return out;
  return out + (local.size() + 1 == ranks.size() ? "; every rank runs on this machine and all are still running, so "
                                                   "one hung"
                                                 : "; every other rank on this machine is still running");
}

namespace {

// The process a rank's claim names ("PID@PLACE").
RankProcess claimant(RendezvousStore& store, const std::string& id_key) {
  const std::vector<char> v = store.get(id_key);
  const std::string text(v.begin(), v.end());
  const size_t at = text.find('@');
  RankProcess p;
  p.pid = std::atoll(text.substr(0, at).c_str());
  if (at != std::string::npos) p.where = text.substr(at + 1);
  return p;
}

// Each rank's process, from the claims (every rank has joined).
std::vector<RankProcess> read_roster(RendezvousStore& store, const std::string& prefix, int world_size) {
  std::vector<RankProcess> ranks;
  for (int r = 0; r < world_size; ++r) ranks.push_back(claimant(store, prefix + std::to_string(r) + ".id"));
  return ranks;
}

// Throws for a rank whose place another process claimed first, saying which process when it
// can: one on this machine that is still running (this rank was started twice), one that has
// exited (keys left by a killed run), or one elsewhere.
[[noreturn]] void refuse_taken_place(RendezvousStore& store, const LaunchEnv& env, const std::string& id_key) {
  const bool file = env.rendezvous.rfind("file:", 0) == 0;
  const std::string fresh = file ? "empty '" + env.rendezvous.substr(5) + "'" : std::string("restart every rank");
  RankProcess holder;
  if (store.has(id_key)) holder = claimant(store, id_key);
  const bool here = holder.pid > 0 && holder.where == this_process_place();
  const std::string who = holder.pid > 0 ? " (pid " + std::to_string(holder.pid) + ")" : "";
  if (here && process_exited(holder.pid))
    KILN_FAIL("rank ", env.rank, ": its place at ", env.rendezvous, " is held by a process of an earlier run", who,
              " that has exited: that run was killed while its ranks waited; ", fresh, " and start again");
  KILN_FAIL("rank ", env.rank, ": another process", who, here ? ", running on this machine," : "", " joined as rank ",
            env.rank, " at ", env.rendezvous, " first: two processes were started with RANK=", env.rank,
            ", or a second run uses this rendezvous (give each run its own ", file ? "directory" : "MASTER_PORT", ")",
            here ? "" : ", or an earlier run there was killed: " + fresh);
}

}  // namespace

std::vector<RankProcess> join(RendezvousStore& store, const LaunchEnv& env, const std::string& backend) {
  const std::string prefix = env.run_id + ".join.";
  const std::string mine = "world_size=" + std::to_string(env.world_size) + " backend=" + backend;
  // Two runs on one MASTER_PORT, or a rank started twice, merged silently: one run trained
  // with the other's process and data (found by review). A store whose run has all its ranks
  // refuses another, and a rank's place held by another process is said.
  KILN_CHECK(!store.has(prefix + "complete"), "rank ", env.rank, ": the run at ", env.rendezvous, " has all its ",
             "ranks already: another run uses this rendezvous (give each run its own MASTER_PORT), or this rank ",
             "was started twice");
  // A rank's place goes to one process: a second started with the same RANK is refused at
  // once, whenever it comes (a check of who held the key last let both through when the
  // second set it after the first had looked).
  // The claim is the check; its value ("PID@PLACE") names the process for a person reading a
  // file rendezvous directory, for the refusal below and for peer_failure_cause.
  const std::string pid = std::to_string(::getpid()) + "@" + this_process_place();
  const std::string id_key = prefix + std::to_string(env.rank) + ".id";
  if (!store.claim(id_key, std::vector<char>(pid.begin(), pid.end()))) refuse_taken_place(store, env, id_key);
  try {
    wait_for_ranks(store, env, prefix, mine);
  } catch (...) {
    // Its place back: a rank that failed to join can be started again (the join value
    // stays, so that the others see a disagreement at once).
    try {
      store.release(id_key);
    } catch (...) {  // the store is gone (rank 0 stopped): nothing holds the place
    }
    throw;
  }
  const std::string one = "1";
  store.set(prefix + "complete", std::vector<char>(one.begin(), one.end()));
  return read_roster(store, prefix, env.world_size);
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
