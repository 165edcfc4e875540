// One way to write a file so that a reader (or a run resumed after a kill or a power cut)
// sees either the old file or the whole new one, never a part: every file kiln writes
// (weights, checkpoints, benchmark reports, small text files) goes through write_atomic.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

namespace kiln::io {

// The temporary write_atomic writes `path` to: "<path>.tmp<pid>", in the same directory (a
// rename is atomic only within one file system), distinct per process.
std::string temporary_path(const std::string& path);

// True for a file name a writer that was killed may have left: "<name>.tmp" (kiln before the
// pid suffix) or "<name>.tmp<digits>".
bool is_temporary_name(const std::string& file_name);

// "" when `path` opens for reading, else the system's reason ("Permission denied"): a file
// that cannot be read is not thereby damaged, and must not be treated as such.
std::string unreadable_reason(const std::string& path);

// Writes `path` atomically: `write(tmp)` creates, fills and closes the file `tmp`; then that
// file is flushed to disk (fsync), renamed over `path`, and the directory synced so the
// rename itself survives a power cut. If `write` or any step throws, the temporary is
// removed, `path` is left as it was, and the error goes on to the caller.
void write_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write);

// write_atomic of `text` as the whole file.
void write_file_atomic(const std::string& path, const std::string& text);

// The other process holding a DirLock on `dir` ("process 1234 (vgg_finetune)"); "" when none
// does, or it cannot be told (no /proc/locks, no flock).
std::string dir_lock_holder(const std::string& dir);

// Held by the one process that writes a model directory: another process taking it is
// refused, since two runs there would prune and pair each other's checkpoint files. An
// advisory lock (flock) on the directory itself: nothing is created, and the kernel drops
// it when the process ends, killed or not. Taken again in the same process (vgg_finetune,
// then its Trainer), the one lock is shared; but one process holds one writer of a
// directory at a time (two Trainers there, from research code's threads, would prune each
// other's checkpoints as two processes would). On a file system without flock (some network
// mounts) other processes are not kept out; the writer rule within this process still holds.
class DirLock {
 public:
  // writer: the one that writes the directory (a Trainer); shared: around it (the app).
  enum class Role { shared, writer };
  // Locks `dir`, which must exist; refused (kiln::Error naming the holder's process) when
  // another process holds it, or for a writer when this process has one already. `what`
  // names the directory in those messages ("model directory").
  explicit DirLock(const std::string& dir, const std::string& what = "model directory", Role role = Role::shared);
  ~DirLock();
  DirLock(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  DirLock& operator=(DirLock&&) = delete;
  bool locked() const { return locked_; }  // false: the file system has no flock

 private:
  dev_t dev_ = 0;  // the directory's device and inode: this process's lock of it
  ino_t ino_ = 0;
  bool registered_ = false;  // counted in this process's locks (also where flock is missing)
  bool locked_ = false;
  bool writer_ = false;
};

}  // namespace kiln::io
