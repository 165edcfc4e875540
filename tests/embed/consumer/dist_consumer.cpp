// dist_consumer: an installed kiln's multi-process component, used from another project.
// Registers kiln::dist's backends and requires "gloo" among the communicator backends.
// Exit status 0 only then.
#include <cstdio>
#include <string>

#include "dist/dist.h"
#include "train/communicator.h"

int main() {
  kiln::dist::register_backends();
  std::string names;
  bool gloo = false;
  for (const std::string& b : kiln::communicator_backends()) {
    names += " " + b;
    gloo = gloo || b == "gloo";
  }
  std::printf("communicator backends:%s\n", names.c_str());
  return gloo ? 0 : 1;
}
