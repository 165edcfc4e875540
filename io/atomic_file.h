// One way to write a file so that a reader (or a run resumed after a kill or a power cut)
// sees either the old file or the whole new one, never a part: every file kiln writes
// (weights, checkpoints, benchmark reports, small text files) goes through write_atomic.
#pragma once

#include <functional>
#include <string>

namespace kiln::io {

// The temporary write_atomic writes `path` to: "<path>.tmp<pid>", in the same directory (a
// rename is atomic only within one file system), distinct per process.
std::string temporary_path(const std::string& path);

// True for a file name a writer that was killed may have left: "<name>.tmp" (kiln before the
// pid suffix) or "<name>.tmp<digits>".
bool is_temporary_name(const std::string& file_name);

// Writes `path` atomically: `write(tmp)` creates, fills and closes the file `tmp`; then that
// file is flushed to disk (fsync), renamed over `path`, and the directory synced so the
// rename itself survives a power cut. If `write` or any step throws, the temporary is
// removed, `path` is left as it was, and the error goes on to the caller.
void write_atomic(const std::string& path, const std::function<void(const std::string& tmp)>& write);

// write_atomic of `text` as the whole file.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace kiln::io
