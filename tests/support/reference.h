// Running the PyTorch reference scripts in tests/reference/ from a test.
#pragma once

#include <string>

namespace kiln::test {

// A fresh empty directory under the system temp dir, named after `tag`; removed with
// everything in it when the test process exits (KILN_KEEP_TEST_FILES=1 keeps it).
std::string make_temp_dir(const std::string& tag);

// The path of `rel` inside kiln's source tree (KILN_SOURCE_DIR in the environment wins
// over the one compiled in: tests may run from another checkout, as on the GPU machine).
std::string source_path(const std::string& rel);

// Runs tests/reference/<script> with the reference interpreter (KILN_PYTHON, default
// /usr/bin/python3, where Debian's python3-torch lives) and the given arguments. Throws
// kiln::Error with the script's output when it fails.
void run_reference_script(const std::string& script, const std::string& args);

}  // namespace kiln::test
