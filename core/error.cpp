#include "core/error.h"

#include <cstring>

namespace kiln::detail {

void throw_error(const char* file, int line, const std::string& message) {
  // Keep only the path below the repository root so messages stay short.
  const char* short_file = file;
  for (const char* anchor : {"/core/", "/kernels/", "/layers/", "/io/", "/train/", "/apps/", "/benchmarks/", "/fuzz/",
                             "/tests/"}) {
    if (const char* p = std::strstr(file, anchor)) {
      short_file = p + 1;
      break;
    }
  }
  throw Error(message, std::string(short_file) + ":" + std::to_string(line));
}

}  // namespace kiln::detail
