// How the ranks of a run meet: a key-value store named by the launch environment (a
// directory every rank sees, or rank 0's TCP store) and the join check every backend runs
// first, so a wrong world size or a missing rank is one line, not a hang.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <gloo/rendezvous/store.h>

#include "train/communicator.h"

namespace kiln::dist {

// A gloo Store that can also forget the keys this process set (once every rank read them).
class RendezvousStore : public gloo::rendezvous::Store {
 public:
  // Removes this process's keys where the store outlives the run (the file store); a no-op
  // where it dies with rank 0 (TCP).
  virtual void forget_own() {}
  // True when `key` is set now.
  virtual bool has(const std::string& key) = 0;
  // Sets `key` to data unless it is set already, in one atomic step; true when this call
  // set it. Of two processes claiming a key, exactly one gets true, whatever the timing.
  virtual bool claim(const std::string& key, const std::vector<char>& data) = 0;
  // Removes a key this process claimed: a rank whose join failed gives its place back, so
  // that it can be started again.
  virtual void release(const std::string& key) = 0;
};

// The store env.rendezvous names ("file:<dir>" or "tcp:<host>:<port>"), its waits bounded by
// env.timeout_s.
std::unique_ptr<RendezvousStore> open_store(const LaunchEnv& env);

// The process that holds one rank's place: its pid and where that pid means something (host
// name and pid namespace), so that a rank can tell which peer on its own machine has stopped.
struct RankProcess {
  long long pid = 0;
  std::string where;
};

// Every rank announces itself (rank, world size, backend) under env.run_id and waits for
// all world_size ranks; a rank that does not come within the timeout, or ranks that
// disagree on the world size or backend, are a one-line error. Returns each rank's process.
std::vector<RankProcess> join(RendezvousStore& store, const LaunchEnv& env, const std::string& backend);

// Why a collective failed on rank `self`, for its error: "rank 1 (pid 4242) has exited" when
// ranks on this machine are gone (waiting up to a second for one that is closing), else that a
// peer stopped or did not answer within timeout_s, and whether the ranks here still run.
std::string peer_failure_cause(const std::vector<RankProcess>& ranks, int self, double timeout_s);

// The address this rank's gloo transport listens on: GLOO_SOCKET_IFNAME's interface when set,
// loopback when MASTER_ADDR is a loopback address, else this host's name.
struct TransportHost {
  std::string iface, hostname;
};
TransportHost transport_host(const LaunchEnv& env);

}  // namespace kiln::dist
