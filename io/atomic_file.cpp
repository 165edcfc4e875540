// Temporary file, fsync of file and directory, rename: the one atomic-write path (see
// atomic_file.h). Errors are kiln::Error naming the file and the system's reason.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

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

void write_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write) {
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
    const bool closed = std::fclose(f) == 0;
    KILN_CHECK(ok && closed, "failed writing '", tmp, "' (disk full?)");
  });
}

}  // namespace kiln::io
