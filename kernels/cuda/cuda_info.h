// What CUDA sees at run time. The CUDA backend proper (issue: CUDA backend) builds on
// this; for now it lets tests and apps say whether a GPU is present, and checks that the
// shared Philox math gives the same numbers on the GPU as on the CPU.
#pragma once

#include <cstdint>
#include <string>

#include "core/philox.h"

namespace kiln::cuda {

// Number of usable CUDA devices; 0 when there is no GPU or no driver (never throws).
int device_count();

// "NVIDIA H200 (sm_90, 139.8 GiB)" for device `index`.
std::string device_name(int index);

// Fills host_out[0..n) with philox_uniform(s, i) computed by a CUDA kernel, for tests
// that compare the GPU's stream with the CPU's. Throws kiln::Error on any CUDA failure.
void philox_uniform_on_device(PhiloxState s, int64_t n, float* host_out);

}  // namespace kiln::cuda
