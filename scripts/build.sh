#!/usr/bin/env bash
# Configures (once) and builds kiln into build/ with Ninja, Release.
# Extra arguments go to the CMake configure step, e.g. bash scripts/build.sh -DKILN_CUDA=OFF
# Environment: KILN_BUILD_DIR (default: build), KILN_JOBS (default: ninja's choice),
# KILN_PYTHON (the Python the module kiln is built for; default /usr/bin/python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir=${KILN_BUILD_DIR:-build}
# CMake looks for nvcc on PATH; the CUDA toolkit is optional.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="/usr/local/cuda/bin:$PATH"; fi

# The Python module (docs/python.md) is built when that Python imports nanobind
# (scripts/setup.sh --tests installs it) and -DKILN_PYTHON=... is not given: the ctest
# python_tests then runs with the rest. KILN_PYTHON=none leaves the option as it is.
python=${KILN_PYTHON:-/usr/bin/python3}
python_args=()
if [[ " $* " != *" -DKILN_PYTHON="* ]] && ! grep -qs '^KILN_PYTHON:BOOL=ON' "$build_dir/CMakeCache.txt" \
   && [[ $python != none ]] && "$python" -c "import nanobind" 2> /dev/null; then
  # An older nanobind fails the configure (python/CMakeLists.txt) with a line naming the fix.
  python_args=(-DKILN_PYTHON=ON "-DPython_EXECUTABLE=$python")
fi

# Configure when the build dir is new or when options are given; otherwise ninja re-runs
# CMake by itself if any CMakeLists.txt changed.
if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 || ${#python_args[@]} -gt 0 ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${python_args[@]}" "$@"
fi
jobs=()
if [[ -n ${KILN_JOBS:-} ]]; then jobs=(-j "$KILN_JOBS"); fi
ninja -C "$build_dir" "${jobs[@]}"
