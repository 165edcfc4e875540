// Running the PyTorch reference scripts in tests/reference/ from a test.
#pragma once

#include <string>

namespace kiln::test {

// A fresh empty directory under the system temp dir, named after `tag`.
std::string make_temp_dir(const std::string& tag);

// Runs tests/reference/<script> with the reference interpreter (KILN_PYTHON, default
// /usr/bin/python3, where Debian's python3-torch lives) and the given arguments. Throws
// kiln::Error with the script's output when it fails.
void run_reference_script(const std::string& script, const std::string& args);

}  // namespace kiln::test
