// Temporary file, fsync of file and directory, rename: the one atomic-write path (see
// atomic_file.h). Errors are kiln::Error naming the file and the system's reason.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include "core/error.h"

namespace fs = std::filesystem;

namespace kiln::io {

namespace {

// fsync of a file or directory by name (HDF5 and other writers close their own handle).
void sync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  KILN_CHECK(fd >= 0, "cannot open '", path, "' to sync it to disk: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot sync a directory (EINVAL); the rename is then as durable as they allow.
  KILN_CHECK(rc == 0 || (directory && err == EINVAL), "failed syncing '", path, "' to disk (", std::strerror(err),
             "; disk full?)");
}

std::string directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

std::string temporary_path(const std::string& path) { return path + ".tmp" + std::to_string(::getpid()); }

bool is_temporary_name(const std::string& name) {
  const size_t at = name.rfind(".tmp");
  if (at == std::string::npos || at == 0) return false;
  for (size_t i = at + 4; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  return true;
}

std::string unreadable_reason(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "";
}

void write_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
  // Said in a user's words before the writer fails on its temporary name (HDF5's message named
  // "f.h5.tmp7818", its open flags and errno 2).
  std::error_code dir_ec;
  const std::string dir = directory_of(path);
  KILN_CHECK(fs::is_directory(dir, dir_ec), "cannot write '", path, "': the folder '", dir, "' ",
             fs::exists(dir, dir_ec) ? "is not a folder" : "does not exist (create it first)");
  const std::string tmp = temporary_path(path);
  try {
    write(tmp);
    sync_path(tmp, false);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    KILN_CHECK(!ec, "cannot rename '", tmp, "' to '", path, "': ", ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  sync_path(directory_of(path), true);
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, [&](const std::string& tmp) {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    KILN_CHECK(f != nullptr, "cannot write '", tmp, "': ", std::strerror(errno));
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
    const int err = errno;
    const bool closed = std::fclose(f) == 0;
    KILN_CHECK(ok && closed, "cannot write '", path, "': ", std::strerror(ok ? errno : err));
  });
}

namespace {

// "process 1234 (vgg_finetune)" for the holder of the flock on (dev, ino), from /proc/locks
// ("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF", device as hex major:minor), passing
// over process `skip`; "" when it cannot be told.
std::string lock_holder(dev_t dev, ino_t ino, pid_t skip = -1) {
  std::ifstream locks("/proc/locks");
  char want[64];
  std::snprintf(want, sizeof want, "%02x:%02x:%llu", major(dev), minor(dev), static_cast<unsigned long long>(ino));
  for (std::string line; std::getline(locks, line);) {
    std::istringstream in(line);
    std::string id, kind, mode, access, pid, dev_ino;
    if (!(in >> id >> kind >> mode >> access >> pid >> dev_ino) || kind != "FLOCK" || dev_ino != want ||
        pid == std::to_string(skip))
      continue;
    std::string comm;
    std::ifstream(std::string("/proc/") + pid + "/comm") >> comm;
    return "process " + pid + (comm.empty() ? "" : " (" + comm + ")");
  }
  return "";
}

}  // namespace

std::string dir_lock_holder(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return "";
  return lock_holder(st.st_dev, st.st_ino, ::getpid());
}

namespace {

// This process's directory locks, by device and inode: the locked descriptor, how many
// DirLocks share it and whether one is its writer, all changed only under the mutex (a
// DirLock ending while another starts must not meet a descriptor about to close).
struct HeldLocks {
  struct Held {
    int fd = -1;  // -1: the file system has no flock (the writer rule still holds in-process)
    int users = 0;
    bool writer = false;
  };
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, Held> by_dir;
};

HeldLocks& held_locks() {
  static HeldLocks h;
  return h;
}

}  // namespace

DirLock::DirLock(const std::string& dir, const std::string& what, Role role) {
  HeldLocks& h = held_locks();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, "cannot open ", what, " '", dir, "' to lock it: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    KILN_FAIL("cannot stat ", what, " '", dir, "': ", std::strerror(err));
  }
  const std::lock_guard<std::mutex> guard(h.mu);
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};
  const auto it = h.by_dir.find(key);
  const bool writer = role == Role::writer;
  if (it != h.by_dir.end()) {  // this process holds it already: share, but not between writers
    ::close(fd);
    KILN_CHECK(!(writer && it->second.writer), what, " '", dir,
               "' is in use by another run in this process, which writes its checkpoints there; give each run "
               "its own directory");
    ++it->second.users;
    it->second.writer = it->second.writer || writer;
    locked_ = it->second.fd >= 0;
  } else {
    int held = fd;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      held = -1;  // no flock here (ENOLCK, EINVAL...): unlocked between processes
      if (err == EWOULDBLOCK) {
        const std::string holder = lock_holder(st.st_dev, st.st_ino);
        KILN_FAIL(what, " '", dir, "' is in use by another run (", holder.empty() ? "another process" : holder,
                  "), which writes its checkpoints there; wait for it to end, stop it, or use another directory");
      }
    }
    h.by_dir[key] = HeldLocks::Held{held, 1, writer};
    locked_ = held >= 0;
  }
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  registered_ = true;
  writer_ = writer;
}

DirLock::DirLock(DirLock&& o) noexcept
    : dev_(o.dev_), ino_(o.ino_), registered_(o.registered_), locked_(o.locked_), writer_(o.writer_) {
  o.registered_ = false;
}

DirLock::~DirLock() {
  if (!registered_) return;
  HeldLocks& h = held_locks();
  const std::lock_guard<std::mutex> guard(h.mu);
  const auto it = h.by_dir.find({dev_, ino_});
  if (it == h.by_dir.end()) return;
  if (writer_) it->second.writer = false;
  if (--it->second.users > 0) return;
  if (it->second.fd >= 0) ::close(it->second.fd);  // releases the flock
  h.by_dir.erase(it);
}

}  // namespace kiln::io
