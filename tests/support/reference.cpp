#include "tests/support/reference.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

namespace kiln::test {

namespace {
// Every folder make_temp_dir made, removed when the test process ends (a test that fails
// or forgets leaves nothing behind); KILN_KEEP_TEST_FILES=1 keeps them for a post-mortem.
struct TempRegistry {
  std::mutex mu;
  std::vector<std::filesystem::path> dirs;
  ~TempRegistry() {
    const char* keep = std::getenv("KILN_KEEP_TEST_FILES");
    if (keep && std::string(keep) == "1") return;
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};
TempRegistry& temp_registry() {
  static TempRegistry r;
  return r;
}
}  // namespace

std::string make_temp_dir(const std::string& tag) {
  namespace fs = std::filesystem;
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
  fs::path p = fs::temp_directory_path() / ("kiln_" + tag + "_" + std::to_string(stamp));
  fs::create_directories(p);
  TempRegistry& r = temp_registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.dirs.push_back(p);
  return p.string();
}

std::string source_path(const std::string& rel) {
  const char* src_env = std::getenv("KILN_SOURCE_DIR");
  return std::string(src_env ? src_env : KILN_SOURCE_DIR) + "/" + rel;
}

void run_reference_script(const std::string& script, const std::string& args) {
  const char* py = std::getenv("KILN_PYTHON");
  const std::string python = py ? py : "/usr/bin/python3";
  const std::string cmd = python + " " + source_path("tests/reference/" + script) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  KILN_CHECK(pipe != nullptr, "could not start ", cmd);
  std::string output;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), static_cast<int>(buf.size()), pipe)) output += buf.data();
  if (pclose(pipe) == 0) return;
  // A missing module is the common cause: name it and where it comes from.
  std::string hint = "the references need PyTorch (apt-get install python3-torch), h5py (python3-h5py) and "
                     "tensorboard (pip); or set KILN_PYTHON to a Python that has them";
  const std::string missing = "No module named '";
  if (const size_t at = output.find(missing); at != std::string::npos) {
    const size_t end = output.find('\'', at + missing.size());
    hint = python + " has no module '" + output.substr(at + missing.size(), end - at - missing.size()) + "': " + hint;
  }
  KILN_FAIL("reference script failed (", cmd, "):\n", output, "\n(", hint, ")");
}

}  // namespace kiln::test
