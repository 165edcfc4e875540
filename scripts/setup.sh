#!/usr/bin/env bash
# Installs what kiln needs to build (and, with --tests, to run its tests) on Debian 12.
# Installs only packages that are missing; runs apt-get update only when it must.
# Usage: bash scripts/setup.sh [--tests] [--sanitize]      (as root, or with sudo available)
set -euo pipefail

want_tests=0
want_sanitize=0
for arg in "$@"; do
  case "$arg" in
    --tests) want_tests=1 ;;
    --sanitize) want_sanitize=1 ;;
    -h|--help)
      echo "usage: bash scripts/setup.sh [--tests] [--sanitize]"
      echo "  installs cmake, ninja-build, g++, libdnnl-dev (oneDNN) with ocl-icd-opencl-dev,"
      echo "  catch2, libhdf5-dev, libstb-dev, libzip-dev, pkg-config and libgloo-dev (multi-process"
      echo "  training, kiln_dist) via apt-get, each only if missing;"
      echo "  --tests also installs python3-torch, libopenblas0-pthread (the BLAS torch's CPU GEMM"
      echo "  uses, instead of the reference one), python3-numpy, python3-h5py, python3-torchvision"
      echo "  and python3-pil (reference results), openmpi-bin (mpirun, to test it as a launcher), strace"
      echo "  (its fault injection plays a full disk), qemu-user (runs the AVX2 and baseline copies of"
      echo "  kiln's loops, which this CPU may not pick, for ctest clones_agree),"
      echo "  python3-dev and python3-pytest (the Python module's"
      echo "  build and tests), and tensorboard and nanobind from PyPI with pip (each only if"
      echo "  'import' fails; Debian packages neither)."
      echo "  --sanitize also installs clang-14, libclang-rt-14-dev (libFuzzer, sanitizer runtimes)"
      echo "  and libomp-14-dev, for scripts/sanitize.sh and scripts/fuzz.sh."
      exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# ocl-icd-opencl-dev: Debian's oneDNN is built with an OpenCL GPU runtime, so its CMake
# package needs OpenCL; apt only recommends it, and we install without recommends.
# libzip-dev (with pkg-config, which finds it): reading Keras 3 .keras archives.
# libgloo-dev: the collectives of multi-process training (kiln_dist, docs/data_parallel.md);
# without it kiln builds and trains in one process.
build_pkgs=(cmake ninja-build g++ libdnnl-dev ocl-icd-opencl-dev catch2 libhdf5-dev libstb-dev libzip-dev pkg-config libgloo-dev)
# libopenblas0-pthread: Debian's python3-torch calls sgemm_ through libblas.so.3, which the
# libblas.so.3-x86_64-linux-gnu alternative points at; without recommends only the
# reference BLAS (libblas3, ~4 GFLOP/s here) is installed, and kiln_bench --compare's peer
# then runs VGG16's fc6 ~40x slow. This package registers OpenBLAS as that alternative
# (priority 100 over the reference's 10): check with
#   update-alternatives --display libblas.so.3-x86_64-linux-gnu
# python3-dev and python3-pytest: building the Python module kiln and its tests (python_tests).
# openmpi-bin: mpirun only, for the ctest dist_mpirun (kiln links no MPI library).
# strace: its fault injection plays a full disk in test_vgg_finetune.sh (no mount needed).
# qemu-user: qemu-x86_64 poses as CPUs without AVX-512 and without AVX2, so that ctest
# clones_agree runs the copies of kiln's loops this machine's CPU would not pick.
test_pkgs=(python3-torch libopenblas0-pthread python3-numpy python3-h5py python3-torchvision python3-pil python3-dev python3-pytest openmpi-bin strace qemu-user)
sanitize_pkgs=(clang-14 libclang-rt-14-dev libomp-14-dev)
pkgs=("${build_pkgs[@]}")
if [[ $want_tests == 1 ]]; then pkgs+=("${test_pkgs[@]}"); fi
if [[ $want_sanitize == 1 ]]; then pkgs+=("${sanitize_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [[ $status != "install ok installed" ]]; then missing+=("$p"); fi
done

if (( ${#missing[@]} > 0 )); then
  echo "setup.sh: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null; then sudo=(sudo); else
      echo "setup.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all packages present (${pkgs[*]})"
fi

# From PyPI, not in Debian (or too old there): tensorboard (read back by
# tests/reference/read_events.py) and nanobind (builds the Python module kiln, docs/python.md;
# Debian's pybind11 has no DLPack). pip-installed into the system python3 only when not
# importable already.
if [[ $want_tests == 1 ]]; then
  # nanobind: 2.10.1 is the oldest with nb::array_api, which the bindings use (python/CMakeLists.txt).
  pip_missing=()
  declare -A pip_check=([tensorboard]="import tensorboard"
    [nanobind]="import nanobind; v = tuple(map(int, nanobind.__version__.split('.')[:3])); assert v >= (2, 10, 1)")
  for mod in tensorboard nanobind; do
    if /usr/bin/python3 -c "${pip_check[$mod]}" 2>/dev/null; then echo "setup.sh: $mod present"
    else pip_missing+=("$mod"); fi
  done
  if (( ${#pip_missing[@]} > 0 )); then
    echo "setup.sh: installing ${pip_missing[*]} with pip"
    sudo=()
    if [[ $(id -u) != 0 ]]; then
      if command -v sudo >/dev/null; then sudo=(sudo); else
        echo "setup.sh: need root (or sudo) to pip-install ${pip_missing[*]}" >&2; exit 1
      fi
    fi
    if ! /usr/bin/python3 -m pip --version >/dev/null 2>&1; then
      "${sudo[@]}" apt-get update -q
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip
    fi
    "${sudo[@]}" /usr/bin/python3 -m pip install --quiet --upgrade --break-system-packages "${pip_missing[@]}"
  fi
fi

# The peer's BLAS: an alternative set by hand (manual mode) can keep the reference one.
if [[ $want_tests == 1 ]]; then
  blas=$(readlink -f "/usr/lib/$(gcc -print-multiarch)/libblas.so.3" 2>/dev/null || true)
  case "$blas" in
    *openblas*) echo "setup.sh: libblas.so.3 is OpenBLAS ($blas)" ;;
    *) echo "setup.sh: note: libblas.so.3 is '$blas', not OpenBLAS: PyTorch's CPU GEMM will be slow;" \
            "run: update-alternatives --auto libblas.so.3-$(gcc -print-multiarch)" ;;
  esac
fi

# The CUDA toolkit is optional: with it the CUDA backend is compiled, without it kiln is
# CPU-only. scripts/build.sh puts it on PATH too, since this script runs in its own shell.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
  echo "setup.sh: CUDA toolkit found ($(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')): the CUDA backend will be built"
else
  echo "setup.sh: no CUDA toolkit at /usr/local/cuda: kiln will be built CPU-only"
fi
