// Minimal .npy reader/writer (format 1.0, little-endian, C order) for exchanging inputs
// and references with the PyTorch scripts in tests/reference/.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace kiln::test {

// Writes a host copy of t (float32 -> '<f4', int64 -> '<i8', int32 -> '<i4').
void write_npy(const std::string& path, const Tensor& t);

// Reads a .npy of '<f4', '<f8', '<i8' or '<i4' as doubles, with its shape.
std::vector<double> read_npy(const std::string& path, std::vector<int64_t>* shape = nullptr);

}  // namespace kiln::test
