// What CUDA sees at run time, for tests, apps and benchmarks to report which GPU ran.
#pragma once

#include <string>

namespace kiln::cuda {

// Number of usable CUDA devices; 0 when there is no GPU or no driver (never throws).
int device_count();

// "NVIDIA H200 (sm_90, 139.8 GiB)" for device `index`.
std::string device_name(int index);

}  // namespace kiln::cuda
