// The TCP rendezvous store: rank 0 serves a small key-value map on MASTER_PORT, the other
// ranks connect to MASTER_ADDR:MASTER_PORT. It carries rendezvous keys only (gloo's
// transport addresses, NCCL's unique id, each rank's world size), never tensors: gloo and
// NCCL move the data over their own connections. Debian's gloo has file, hash, prefix and
// Redis stores but no TCP store, hence this one, behind gloo's Store interface.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dist/rendezvous.h"

namespace kiln::dist {

// A gloo rendezvous Store over TCP; the server runs in rank 0's process.
class TcpStore final : public RendezvousStore {
 public:
  // Rank 0 (`serve`) listens on `port` (all interfaces) and connects to itself; the others
  // connect to host:port, retrying until `timeout` (the rendezvous is unreachable after it).
  TcpStore(const std::string& host, int port, bool serve, std::chrono::milliseconds timeout);
  ~TcpStore() override;

  // Sets key to data (the last set wins).
  void set(const std::string& key, const std::vector<char>& data) override;
  // Waits (up to the timeout) for the key, then returns its value.
  std::vector<char> get(const std::string& key) override;
  // Waits until every key is set; past the timeout, a kiln::Error naming the keys.
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;
  // True when every key is set.
  bool check(const std::vector<std::string>& keys);
  bool has(const std::string& key) override { return check({key}); }
  // The server sets the key only if it is absent, under its lock.
  bool claim(const std::string& key, const std::vector<char>& data) override;
  void release(const std::string& key) override;

 private:
  std::vector<char> request(const std::vector<char>& msg);
  void serve_loop();
  void serve_client(int fd);

  std::string where_;  // host:port, for messages
  std::chrono::milliseconds timeout_;
  int fd_ = -1;          // this process's connection to the server
  std::mutex client_mu_;  // one request at a time on fd_
  // The server (rank 0 only).
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::map<std::string, std::vector<char>> data_;
  std::vector<int> client_fds_;
  std::vector<std::thread> client_threads_;
};

}  // namespace kiln::dist
