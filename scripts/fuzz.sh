#!/usr/bin/env bash
# The libFuzzer targets in fuzz/ (one per parser of bytes kiln did not write), built with
# clang-14 into build-fuzz/ with AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer.
#   bash scripts/fuzz.sh build            configure (once) and build every target
#   bash scripts/fuzz.sh replay           every target over its committed corpus and
#                                         reproducers, then (but for the libhdf5 targets) a
#                                         short mutation run with a fixed -seed and -runs
#                                         (what CI runs: same result every time)
#   bash scripts/fuzz.sh run TARGET [SECONDS] [JOBS]
#                                         a campaign (default 600 s, JOBS forked workers, going
#                                         on past crashes) from the committed corpus; new inputs
#                                         go to build-fuzz/corpus/TARGET (not committed), crashes
#                                         to build-fuzz/crashes/TARGET
# Targets: the names of fuzz/fuzz_*.cpp without prefix (image, weights, checkpoint, ...).
# docs/hostile_inputs.md explains the corpora, the findings and how to add a reproducer.
# Environment: KILN_FUZZ_DIR (default build-fuzz).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=${KILN_FUZZ_DIR:-build-fuzz}
targets=()
for f in fuzz/fuzz_*.cpp; do t=${f#fuzz/fuzz_}; targets+=("${t%.cpp}"); done

# Leaks: on, with libhdf5's own error-path leaks suppressed (fuzz/lsan.supp) so kiln's are caught.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1

build() {
  if [[ ! -f $dir/build.ninja ]]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
      -DKILN_FUZZ=ON -DKILN_SANITIZE=address,undefined \
      -DKILN_BUILD_TESTS=OFF -DKILN_BUILD_BENCHMARKS=OFF -DKILN_BUILD_APPS=OFF
  fi
  ninja -C "$dir" "${targets[@]/#/fuzz_}"
}

dict_of() {  # the target's dictionary flag, if it has one
  local d
  for d in "fuzz/dict/$1.dict" ; do [[ -f $d ]] && echo "-dict=$d"; done
  return 0
}

# Targets whose parser is libhdf5: a few thousand mutations of their corpus already crash
# inside libhdf5 1.10.8 (fuzz/known_hdf5_crashes/, docs/hostile_inputs.md), which kiln cannot
# fix, so CI replays their corpus and reproducers without mutating them.
no_mutation=" weights checkpoint "

replay() {
  local t dirs
  for t in "${targets[@]}"; do
    dirs=("fuzz/corpus/$t")
    [[ -d fuzz/regressions/$t ]] && dirs+=("fuzz/regressions/$t")
    echo "fuzz.sh: replaying fuzz_$t over ${dirs[*]}"
    "$dir/fuzz/fuzz_$t" -runs=0 "${dirs[@]}" 2>&1 | tail -n 2
    [[ $no_mutation == *" $t "* ]] && continue
    # A fixed seed and run count: the same mutations on every CI run of this commit.
    local scratch
    scratch=$(mktemp -d)
    cp -r "fuzz/corpus/$t/." "$scratch/"
    "$dir/fuzz/fuzz_$t" -seed=1 -runs="${KILN_FUZZ_REPLAY_RUNS:-3000}" -rss_limit_mb=2048 $(dict_of "$t") \
      "$scratch" 2>&1 | tail -n 1
    rm -rf "$scratch"
  done
  echo "fuzz.sh: replay passed (${#targets[@]} targets)"
}

run() {
  local t=$1 secs=${2:-600} jobs=${3:-1}
  mkdir -p "$dir/corpus/$t" "$dir/crashes/$t"
  "$dir/fuzz/fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
    -fork="$jobs" -ignore_crashes=1 -artifact_prefix="$dir/crashes/$t/" $(dict_of "$t") \
    "$dir/corpus/$t" "fuzz/corpus/$t"
}

case "${1:-}" in
  build) build ;;
  replay) build; replay ;;
  run) [[ $# -ge 2 ]] || { echo "usage: bash scripts/fuzz.sh run TARGET [SECONDS] [JOBS]" >&2; exit 2; }
       build; run "$2" "${3:-600}" "${4:-1}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
