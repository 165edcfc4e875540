// Damaging files on purpose, for the tests of kiln's checksums.
#pragma once

#include <string>

#include "core/tensor.h"

namespace kiln::test {

// Overwrites the first float of `t`'s values where they lie in the file at `path` (found by
// their first 16 bytes, which must occur once there), as a bad disk or a stray write would.
void overwrite_first_float(const std::string& path, const Tensor& t, float value);

}  // namespace kiln::test
