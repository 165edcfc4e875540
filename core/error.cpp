#include "core/error.h"

#include <string_view>

namespace kiln::detail {

namespace {

// The repository root as the build spelled it: __FILE__ of this file less "core/error.cpp".
// CMake compiles every kiln source (libkiln, the Python module, apps, tests) by its absolute
// path under that root, so stripping it leaves "python/src/tensor.cpp" as it leaves
// "core/ops_nn.cpp", wherever the checkout lives (a root holding "/core/" included).
constexpr std::string_view repository_root() {
  constexpr std::string_view self = __FILE__, tail = "core/error.cpp";
  return self.size() >= tail.size() && self.substr(self.size() - tail.size()) == tail
             ? self.substr(0, self.size() - tail.size())
             : std::string_view();
}

// `file` below the repository root. A file compiled elsewhere (kiln's headers in another
// project) is cut at the first of kiln's top-level folders in its path instead.
std::string_view relative_path(std::string_view file) {
  constexpr std::string_view root = repository_root();
  if (!root.empty() && file.substr(0, root.size()) == root) return file.substr(root.size());
  for (const char* anchor : {"/core/", "/kernels/", "/layers/", "/io/", "/train/", "/python/", "/apps/",
                             "/benchmarks/", "/check/", "/dist/", "/fuzz/", "/tests/"}) {
    if (const size_t at = file.find(anchor); at != std::string_view::npos) return file.substr(at + 1);
  }
  return file;
}

}  // namespace

void throw_error(const char* file, int line, const std::string& message) {
  throw Error(message, std::string(relative_path(file)) + ":" + std::to_string(line));
}

}  // namespace kiln::detail
