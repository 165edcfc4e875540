// The TCP rendezvous store (tcp_store.h). Messages: op byte ('S' set, 'G' get, 'C' check),
// a u32 key count, per key a u32 length and its bytes, and for 'S' a u32 length and the
// value; the answer is one status byte, and for 'G' a u32 length and the value.
#include "dist/tcp_store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace kiln::dist {

namespace {

using Clock = std::chrono::steady_clock;

bool send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool recv_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t k = ::recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// resize and memcpy rather than insert: GCC 12 misreports insert into a 1-byte vector (-Warray-bounds).
void put_u32(std::vector<char>& m, uint32_t v) {
  const uint32_t be = htonl(v);
  const size_t at = m.size();
  m.resize(at + 4);
  std::memcpy(m.data() + at, &be, 4);
}

void put_bytes(std::vector<char>& m, const char* p, size_t n) {
  put_u32(m, static_cast<uint32_t>(n));
  const size_t at = m.size();
  m.resize(at + n);
  if (n > 0) std::memcpy(m.data() + at, p, n);
}

// A request on one key: the op, the key and (set, claim) its value.
std::vector<char> one_key(char op, const std::string& key, const std::vector<char>* value) {
  std::vector<char> m{op};
  put_u32(m, 1);
  put_bytes(m, key.data(), key.size());
  if (value != nullptr) put_bytes(m, value->data(), value->size());
  return m;
}

bool read_u32(int fd, uint32_t& v) {
  if (!recv_all(fd, &v, 4)) return false;
  v = ntohl(v);
  return true;
}

bool read_bytes(int fd, std::vector<char>& out) {
  uint32_t n = 0;
  if (!read_u32(fd, n) || n > (64u << 20)) return false;  // rendezvous values are small
  out.resize(n);
  return n == 0 || recv_all(fd, out.data(), n);
}

// Sends and receives on `fd` (and connect, on Linux) give up after `t`: a store that never
// answers (rank 0 stopped, another program on the port, a host that drops packets) is an
// error within the rendezvous timeout, not a wait without end (found by review).
void set_io_timeout(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000;  // 0 would mean no timeout
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A connected socket to host:port whose I/O gives up after `timeout`, or -1 (the reason in `why`).
int connect_to(const std::string& host, int port, std::chrono::milliseconds timeout, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) {
    why = std::string("cannot resolve '") + host + "': " + gai_strerror(rc);
    return -1;
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    set_io_timeout(fd, timeout);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    why = std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd >= 0) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

}  // namespace

TcpStore::TcpStore(const std::string& host, int port, bool serve, std::chrono::milliseconds timeout)
    : where_(host + ":" + std::to_string(port)), timeout_(timeout) {
  if (serve) {
    listen_fd_ = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool v6 = listen_fd_ >= 0;
    if (!v6) listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    KILN_CHECK(listen_fd_ >= 0, "rendezvous: cannot open a socket: ", std::strerror(errno));
    const int one = 1, zero = 0;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = 0;
    if (v6) {
      ::setsockopt(listen_fd_, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<uint16_t>(port));
      rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0 || ::listen(listen_fd_, 128) != 0) {
      const std::string why = std::strerror(errno);
      ::close(listen_fd_);
      KILN_FAIL("rendezvous: rank 0 cannot serve on port ", port, ": ", why,
                " (choose another MASTER_PORT, or stop what holds it)");
    }
    accept_thread_ = std::thread([this] { serve_loop(); });
  }
  const auto deadline = Clock::now() + timeout;
  std::string why;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    fd_ = connect_to(host, port, std::max(left, std::chrono::milliseconds(1)), why);
    if (fd_ >= 0) break;
    if (Clock::now() >= deadline) {
      if (serve) {
        stop_ = true;
        ::shutdown(listen_fd_, SHUT_RDWR);
        accept_thread_.join();
        ::close(listen_fd_);
      }
      KILN_FAIL("rendezvous: cannot reach the store at ", where_, " within ",
                std::chrono::duration<double>(timeout).count(), " s (", why,
                "): is rank 0 running, and are MASTER_ADDR and MASTER_PORT right? (KILN_DIST_TIMEOUT sets the wait)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  set_io_timeout(fd_, timeout_);  // each request within the whole timeout
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) ::close(fd_);
  if (listen_fd_ >= 0) {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    ::close(listen_fd_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : client_threads_) t.join();
    for (int fd : client_fds_) ::close(fd);
  }
}

void TcpStore::serve_loop() {
  while (!stop_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;  // shut down
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      ::close(fd);
      return;
    }
    client_fds_.push_back(fd);
    client_threads_.emplace_back([this, fd] { serve_client(fd); });
  }
}

void TcpStore::serve_client(int fd) {
  for (;;) {
    char op = 0;
    uint32_t nkeys = 0;
    if (!recv_all(fd, &op, 1) || !read_u32(fd, nkeys) || nkeys > 4096) return;
    std::vector<std::string> keys(nkeys);
    std::vector<char> buf;
    for (auto& k : keys) {
      if (!read_bytes(fd, buf)) return;
      k.assign(buf.begin(), buf.end());
    }
    std::vector<char> reply;
    if (op == 'S' || op == 'X') {  // set; X: only where absent, replying whether it set
      if (nkeys != 1 || !read_bytes(fd, buf)) return;
      std::lock_guard<std::mutex> lock(mu_);
      const bool sets = op == 'S' || data_.count(keys[0]) == 0;
      if (sets) data_[keys[0]] = buf;
      reply.push_back(sets ? 1 : 0);
    } else if (op == 'D' && nkeys == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      data_.erase(keys[0]);
      reply.push_back(1);
    } else if (op == 'G' && nkeys == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = data_.find(keys[0]);
      reply.push_back(it != data_.end() ? 1 : 0);
      if (it != data_.end()) put_bytes(reply, it->second.data(), it->second.size());
    } else if (op == 'C') {
      std::lock_guard<std::mutex> lock(mu_);
      bool all = true;
      for (const auto& k : keys) all = all && data_.count(k) > 0;
      reply.push_back(all ? 1 : 0);
    } else {
      return;  // not a kiln rendezvous client
    }
    if (!send_all(fd, reply.data(), reply.size())) return;
  }
}

std::vector<char> TcpStore::request(const std::vector<char>& msg) {
  std::lock_guard<std::mutex> lock(client_mu_);
  char status = 0;
  std::vector<char> value;
  bool ok = send_all(fd_, msg.data(), msg.size()) && recv_all(fd_, &status, 1);
  if (ok && msg[0] == 'G' && status == 1) ok = read_bytes(fd_, value);
  if (!ok && (errno == EAGAIN || errno == EWOULDBLOCK))
    KILN_FAIL("rendezvous: the store at ", where_, " did not answer within ",
              std::chrono::duration<double>(timeout_).count(), " s (rank 0 stopped or stuck, or another program on ",
              "MASTER_PORT?; KILN_DIST_TIMEOUT sets the wait)");
  KILN_CHECK(ok, "rendezvous: the store at ", where_, " closed the connection (rank 0 stopped, or another program on ",
             "MASTER_PORT?)");
  value.insert(value.begin(), status);
  return value;
}

void TcpStore::set(const std::string& key, const std::vector<char>& data) { request(one_key('S', key, &data)); }

bool TcpStore::claim(const std::string& key, const std::vector<char>& data) {
  return request(one_key('X', key, &data))[0] == 1;
}

void TcpStore::release(const std::string& key) { request(one_key('D', key, nullptr)); }

bool TcpStore::check(const std::vector<std::string>& keys) {
  std::vector<char> m{'C'};
  put_u32(m, static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) put_bytes(m, k.data(), k.size());
  return request(m)[0] == 1;
}

void TcpStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!check(keys)) {
    if (Clock::now() >= deadline) {
      std::string names;
      for (const auto& k : keys) names += (names.empty() ? "" : ", ") + k;
      KILN_FAIL("rendezvous: waited ", std::chrono::duration<double>(timeout).count(), " s at ", where_,
                " for keys (", names, ") that no rank set");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::vector<char> TcpStore::get(const std::string& key) {
  wait({key}, timeout_);
  std::vector<char> r = request(one_key('G', key, nullptr));
  return std::vector<char>(r.begin() + 1, r.end());
}

}  // namespace kiln::dist
