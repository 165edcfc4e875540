#!/usr/bin/env bash
# Builds kiln for the H200 (sm_90, Release) on this machine and packs what the GPU
# machine needs into .gpu/ (git-ignored): the test and benchmark binaries, libkiln, and
# the non-system libraries they load (oneDNN, OpenCL loader, libgomp). cuDNN and cuBLAS
# are NOT packed: the GPU machine has them inside PyTorch's install, and gpu_check.sh
# finds them there. Then: device `run` with carry [".gpu"] and
#   bash scripts/gpu_check.sh .gpu
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH
B=${KILN_GPU_BUILD:-build-gpu}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
ninja -C "$B"
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp "$B"/tests/kiln_tests "$B"/benchmarks/kiln_bench "$B"/apps/kiln_example/kiln_example .gpu/bin/
cp -L "$B"/libkiln.so.0 .gpu/lib/
for lib in libdnnl.so.2 libOpenCL.so.1 libgomp.so.1; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" .gpu/lib/
done
strip --strip-unneeded .gpu/lib/libkiln.so.0 .gpu/bin/* 2>/dev/null || true
du -sh .gpu
