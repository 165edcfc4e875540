// The HDF5 fuzzers' last check, written once: every file, group, dataset and attribute kiln
// opened for the input must be closed again (io/hdf5.h counts them), whatever the input did.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "io/hdf5.h"

namespace kiln::fuzz {

// Aborts (a finding for libFuzzer) when kiln left HDF5 objects open.
inline void abort_on_open_hdf5_objects() {
  if (const int64_t n = io::h5::open_object_count(); n != 0) {
    std::fprintf(stderr, "kiln left %lld HDF5 objects open\n", static_cast<long long>(n));
    std::abort();
  }
}

}  // namespace kiln::fuzz
