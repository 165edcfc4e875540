#!/usr/bin/env bash
# The sanitizer jobs CI runs after the test suite (CPU-only, each in its own build dir):
#   1. the whole Catch2 suite and the vgg_finetune end-to-end test under AddressSanitizer +
#      UndefinedBehaviorSanitizer (GCC, build-asan/);
#   2. the loader, checkpoint and threaded-convolution tests under ThreadSanitizer (GCC,
#      build-tsan/, a binary of just those tests;
#      OMP_NUM_THREADS=1: libgomp is not TSan-instrumented, and the loader's own threads are
#      what these tests exercise);
#   3. every libFuzzer target over its committed corpus and reproducers, plus a short
#      mutation run with a fixed seed (clang-14, build-fuzz/; scripts/fuzz.sh replay).
# Usage: bash scripts/sanitize.sh [asan|tsan|fuzz ...]   (default: all three)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --sanitize
jobs=("$@")
[[ ${#jobs[@]} -gt 0 ]] || jobs=(asan tsan fuzz)
supp="$PWD/fuzz/lsan.supp"

configure() {  # configure <dir> <sanitizers> <extra cmake args...>
  local dir=$1 san=$2
  shift 2
  [[ -f $dir/build.ninja ]] || cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKILN_SANITIZE="$san" -DKILN_BUILD_BENCHMARKS=OFF "$@"
}

for job in "${jobs[@]}"; do
  start=$SECONDS
  case "$job" in
    asan)
      configure build-asan address,undefined
      targets=(kiln_tests vgg_finetune)
      # The dist tests' worker, where kiln_dist was built (gloo found): ctest runs them too.
      ninja -C build-asan -t query kiln_dist_worker > /dev/null 2>&1 && targets+=(kiln_dist_worker)
      ninja -C build-asan "${targets[@]}"
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS="suppressions=$supp:print_suppressions=0" \
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build-asan --output-on-failure --no-tests=error -j 2 -E '^embed\.|^poisoned_memory$' --timeout 1500
      ;;
    tsan)
      configure build-tsan thread -DKILN_BUILD_APPS=OFF
      ninja -C build-tsan kiln_thread_tests
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" OMP_NUM_THREADS=1 \
        build-tsan/tests/kiln_thread_tests "~[cuda]"
      ;;
    fuzz)
      bash scripts/fuzz.sh replay
      ;;
    *) echo "sanitize.sh: unknown job '$job' (asan, tsan or fuzz)" >&2; exit 2 ;;
  esac
  echo "sanitize.sh: $job passed in $((SECONDS - start)) s"
done
