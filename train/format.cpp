// See format.h.
#include "train/format.h"

#include <cstdio>

namespace kiln {

std::string format_number(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

}  // namespace kiln
