#!/usr/bin/env bash
# Configures (once) and builds kiln into build/ with Ninja, Release.
# Extra arguments go to the CMake configure step, e.g. bash scripts/build.sh -DKILN_CUDA=OFF
# Environment: KILN_BUILD_DIR (default: build), KILN_JOBS (default: ninja's choice).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${KILN_BUILD_DIR:-build}
# CMake looks for nvcc on PATH; the CUDA toolkit is optional.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="/usr/local/cuda/bin:$PATH"; fi

# Configure when the build dir is new or when options are given; otherwise ninja re-runs
# CMake by itself if any CMakeLists.txt changed.
if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
jobs=()
if [[ -n ${KILN_JOBS:-} ]]; then jobs=(-j "$KILN_JOBS"); fi
ninja -C "$build_dir" "${jobs[@]}"
