// io/atomic_file: a file written through write_atomic is either the old one or the whole new
// one; a failed write leaves no temporary and no partial file behind. DirLock keeps a second
// run out of a model directory.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "tests/support/reference.h"

namespace fs = std::filesystem;
using namespace kiln;
using Catch::Matchers::Contains;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct TempDir {
  std::string dir = test::make_temp_dir("atomic_file");
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  size_t entries() const {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
  }
};

}  // namespace

TEST_CASE("write_file_atomic writes the whole content and leaves no temporary", "[atomic_file]") {
  TempDir t;
  const std::string path = (fs::path(t.dir) / "a.txt").string();
  io::write_file_atomic(path, "first\n");
  CHECK(read_all(path) == "first\n");
  io::write_file_atomic(path, std::string(100000, 'x'));
  CHECK(read_all(path) == std::string(100000, 'x'));
  CHECK(t.entries() == 1);
}

TEST_CASE("write_atomic: a failing writer leaves the old file and removes its temporary", "[atomic_file]") {
  TempDir t;
  const std::string path = (fs::path(t.dir) / "b.txt").string();
  io::write_file_atomic(path, "old");
  std::string seen_tmp;
  CHECK_THROWS_WITH(io::write_atomic(path,
                                     [&](const std::string& tmp) {
                                       seen_tmp = tmp;
                                       std::ofstream(tmp, std::ios::binary) << "half of the new";
                                       // Mid-write: the target still holds the old content in full.
                                       CHECK(read_all(path) == "old");
                                       CHECK(fs::path(tmp).parent_path() == fs::path(path).parent_path());
                                       KILN_FAIL("disk full (simulated)");
                                     }),
                    Contains("disk full (simulated)"));
  CHECK(read_all(path) == "old");
  CHECK_FALSE(seen_tmp.empty());
  CHECK_FALSE(fs::exists(seen_tmp));
  CHECK(t.entries() == 1);

  // A new file that fails is not created at all.
  const std::string fresh = (fs::path(t.dir) / "c.txt").string();
  CHECK_THROWS(io::write_atomic(fresh, [](const std::string& tmp) {
    std::ofstream(tmp) << "partial";
    throw std::runtime_error("writer failed");
  }));
  CHECK_FALSE(fs::exists(fresh));
  CHECK(t.entries() == 1);
}

TEST_CASE("write_atomic refuses a directory that does not exist, naming the file and the folder", "[atomic_file]") {
  TempDir t;
  const std::string dir = (fs::path(t.dir) / "missing").string(), path = dir + "/d.txt";
  // The file a user named and the folder to create, not the temporary name (HDF5 said "d.h5.tmp<pid>").
  CHECK_THROWS_WITH(io::write_file_atomic(path, "x"),
                    Contains("cannot write '" + path + "': the folder '" + dir + "' does not exist (create it first)"));
  std::ofstream(dir) << "a file where the folder should be";
  CHECK_THROWS_WITH(io::write_file_atomic(path, "x"), Contains("the folder '" + dir + "' is not a folder"));
}

TEST_CASE("is_temporary_name knows what a killed writer leaves", "[atomic_file]") {
  CHECK(io::is_temporary_name("ckpt-000001.state.h5.tmp"));
  CHECK(io::is_temporary_name("ckpt-000001.state.h5.tmp12345"));
  CHECK(io::is_temporary_name(fs::path(io::temporary_path("/x/y.h5")).filename().string()));
  CHECK_FALSE(io::is_temporary_name("ckpt-000001.state.h5"));
  CHECK_FALSE(io::is_temporary_name("notes.tmp.txt"));
  CHECK_FALSE(io::is_temporary_name(".tmp"));
}

TEST_CASE("DirLock refuses a directory another process holds, shares it within one but for writers, and lets go",
          "[atomic_file]") {
  TempDir t;
  {
    const io::DirLock a(t.dir);
    const io::DirLock b(t.dir);  // the same process again: the one lock, shared
    CHECK(a.locked());
    CHECK(b.locked());
    CHECK(t.entries() == 0);  // nothing is created
  }
  // Another holder, as another process's run would be (a flock through another open file).
  const int fd = ::open(t.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  CHECK_THROWS_WITH(io::DirLock(t.dir), Contains("model directory '" + t.dir + "' is in use by another run (process " +
                                                 std::to_string(::getpid())) &&
                                            Contains("use another directory"));
  ::close(fd);  // the holder ends
  const io::DirLock c(t.dir);
  CHECK(c.locked());
  {
    // One writer per process (a Trainer), beside any shared holders (the app around it).
    const io::DirLock w(t.dir, "model directory", io::DirLock::Role::writer);
    CHECK_THROWS_WITH(io::DirLock(t.dir, "model directory", io::DirLock::Role::writer),
                      Contains("model directory '" + t.dir + "' is in use by another run in this process"));
    const io::DirLock shared(t.dir);
    CHECK(shared.locked());
  }
  const io::DirLock w2(t.dir, "model directory", io::DirLock::Role::writer);  // the first writer ended
  CHECK(w2.locked());
  CHECK_THROWS_WITH(io::DirLock(t.dir + "/missing"), Contains("cannot open model directory"));
}

TEST_CASE("threads of one process taking and dropping one DirLock are never refused", "[atomic_file][threads]") {
  // The last holder's release and another thread's take may cross: the lock it shares must
  // not be one about to close (a first version refused its own process ~1 time in 150).
  TempDir t;
  std::atomic<int> refused{0};
  auto churn = [&] {
    for (int i = 0; i < 20000; ++i) {
      try {
        const io::DirLock l(t.dir);
      } catch (const Error&) {
        ++refused;
      }
    }
  };
  std::thread a(churn), b(churn);
  a.join();
  b.join();
  CHECK(refused == 0);
}

TEST_CASE("a model directory another process is training into, before its first checkpoint, says so",
          "[atomic_file][checkpoint]") {
  TempDir t;
  CHECK_THROWS_WITH(io::choose_checkpoint(t.dir, false, "", {}), Contains("train into it first"));
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // a run holding the directory, as a Trainer's DirLock does
    const int fd = ::open(t.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const char ok = fd >= 0 && ::flock(fd, LOCK_EX) == 0 ? 1 : 0;
    if (::write(ready[1], &ok, 1) != 1) ::_exit(1);
    ::pause();  // until killed
    ::_exit(0);
  }
  char ok = 0;
  REQUIRE(::read(ready[0], &ok, 1) == 1);
  CHECK(ok == 1);
  CHECK_THAT(io::dir_lock_holder(t.dir), Catch::StartsWith("process " + std::to_string(child)));
  CHECK_THROWS_WITH(io::choose_checkpoint(t.dir, false, "", {}),
                    Contains("holds no checkpoint yet: a run (process " + std::to_string(child)) &&
                        Contains("has not written its first one"));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  CHECK(io::dir_lock_holder(t.dir).empty());
  // This process's own lock is not "another run".
  const io::DirLock mine(t.dir);
  CHECK(io::dir_lock_holder(t.dir).empty());
}
