#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and a kiln build packed by
# scripts/gpu_pack.sh, run every test (CPU and CUDA cases) and the short CUDA benchmark
# next to PyTorch on the same GPU, then print a table. Logs go to $OUT (or /tmp/kiln_gpu).
#
# Usage (from the repository root): bash scripts/gpu_check.sh [PACK_DIR=.gpu]
#
# What we learned about running on the lent H200 (keep this list current):
# - The machine has the driver, nvcc 13.0, python3 with torch 2.11+cu130 and cuDNN 9 /
#   cuBLAS 13 as pip packages under site-packages/nvidia/...; it has no network.
# - Binaries built on the Debian 12 dev machine are carried in .gpu/ with every non-system
#   library ldd lists (libs.tar.xz: oneDNN, libgomp, OpenCL loader, HDF5 and its chain);
#   cuDNN/cuBLAS come from PyTorch's install via LD_LIBRARY_PATH. stb_image is compiled
#   into libkiln since 2026-12-02 (no libstb.so). Any library still missing stops the check
#   at once with its name (the 2026-12-02 pack was NOT yet run on a GPU).
# - Run 1 (2026-11-29): build + carry worked as above; all 41 test cases passed there
#   (4966 assertions, torch 2.11 as the reference). The whole suite plus the benchmark
#   took 337 s, so the check now runs only the [cuda] cases (FULL=1 runs everything).
# - cuDNN's heuristics picked very slow strict-fp32 algorithms for some VGG shapes
#   (conv1_2 backward-data 492 ms vs 4.7 ms for PyTorch's Find); the benchmark therefore
#   uses exhaustive search, as PyTorch's cudnn.benchmark does.
# - The repository is copied to another path there: KILN_SOURCE_DIR tells the tests and
#   kiln_bench where the reference scripts are; KILN_PYTHON=python3 picks its PyTorch.
# - Added 2026-11-30 on a machine without a GPU, NOT yet run on one: the memory-bound
#   suites on the device (gemm, pool, softmax_ce, elementwise, sgd, copy with H2D/D2H
#   pinned and pageable; CUDA-event timing, L2 overwritten between runs) and the conv_cuda
#   variant rows (the other algorithm search, "@find"/"@heuristic"), which double that
#   suite's time. The PyTorch peer of the memory suites uses torch.set_default_device
#   (PyTorch 2.0+).
set -uo pipefail
PACK=${1:-.gpu}
OUT=${OUT:-/tmp/kiln_gpu}
mkdir -p "$OUT"
START=$(date +%s)
echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"

SITE=$(python3 -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null)
LIBDIRS=""
for pat in 'libcudnn.so.9*' 'libcublas.so.13*' 'libcublasLt.so.13*'; do
  f=$(find "$SITE/nvidia" -name "$pat" 2>/dev/null | head -1)
  [[ -n "$f" ]] && LIBDIRS="$LIBDIRS:$(dirname "$f")" || echo "warning: $pat not found under $SITE/nvidia"
done
# gpu_pack.sh ships the libraries xz-compressed (oneDNN alone is 40 MB unpacked).
LIB="$OUT/lib"
mkdir -p "$LIB"
if [[ -f "$PACK/libs.tar.xz" ]]; then tar -C "$LIB" -xJf "$PACK/libs.tar.xz"; else LIB="$PWD/$PACK/lib"; fi
export LD_LIBRARY_PATH="$LIB$LIBDIRS:${LD_LIBRARY_PATH:-}"
export KILN_SOURCE_DIR=$PWD KILN_PYTHON=python3 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# Stop in the first seconds, not minutes later, when a binary cannot load.
MISSING=0
for b in "$PACK"/bin/*; do
  if ldd "$b" | grep "not found" | sed "s|^|$(basename "$b"): |"; then MISSING=1; fi
done
if (( MISSING )); then echo "gpu_check: libraries missing on this machine (above); stopping before any test"; exit 2; fi

stamp() { echo "-- $(( $(date +%s) - START )) s"; }
echo "== CUDA tests (every [cuda] case, conv algorithms by heuristics, then by exhaustive search)"
"$PACK/bin/kiln_tests" "[cuda]" --reporter compact 2>&1 | tee "$OUT/tests_cuda.log" | tail -25
TESTS_RC=${PIPESTATUS[0]}
KILN_CONV_SEARCH=exhaustive "$PACK/bin/kiln_tests" "[cuda]" --reporter compact 2>&1 | tee "$OUT/tests_cuda_exhaustive.log" | tail -25
(( TESTS_RC |= PIPESTATUS[0] ))
stamp
if [[ "${FULL:-0}" == 1 ]]; then
  echo "== the whole suite (CPU cases too): FULL=1"
  "$PACK/bin/kiln_tests" --reporter compact 2>&1 | tee "$OUT/tests.log" | tail -25
  (( TESTS_RC |= PIPESTATUS[0] ))
  stamp
fi

echo "== benchmarks (kiln, then PyTorch, same GPU, batch ${BATCH:-64}, strict fp32)"
timeout 360 "$PACK/bin/kiln_bench" --device cuda --suite conv_cuda,step_cuda --batch "${BATCH:-64}" \
  --warmup 2 --repeat "${REPEAT:-5}" --conv-search "${CONV_SEARCH:-exhaustive}" --compare --json "$OUT/bench.json" \
  2>&1 | tee "$OUT/bench.log"
BENCH_RC=${PIPESTATUS[0]}
stamp
echo "== memory-bound kernels, GEMM and copies on the device (kiln, then PyTorch; %roof of the measured copy bandwidth)"
timeout 240 "$PACK/bin/kiln_bench" --device cuda --suite gemm,pool,softmax_ce,elementwise,sgd,copy \
  --repeat "${REPEAT:-5}" --compare --json "$OUT/bench_mem.json" 2>&1 | tee "$OUT/bench_mem.log"
(( BENCH_RC |= PIPESTATUS[0] ))
stamp
if [[ "${TF32:-0}" == 1 ]]; then
  echo "== VGG16 steps with TF32 allowed on both sides: TF32=1"
  KILN_ALLOW_TF32=1 timeout 120 "$PACK/bin/kiln_bench" --device cuda --suite step_cuda --batch "${BATCH:-64}" \
    --warmup 2 --repeat "${REPEAT:-5}" --compare --json "$OUT/bench_tf32.json" 2>&1 | tee "$OUT/bench_tf32.log" | tail -8
  stamp
fi
echo "== done in $(( $(date +%s) - START )) s: tests rc=$TESTS_RC, bench rc=$BENCH_RC"
exit $(( TESTS_RC != 0 || BENCH_RC != 0 ))
