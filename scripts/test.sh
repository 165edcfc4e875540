#!/usr/bin/env bash
# README command (b): install what is missing (test tools included), build kiln and its
# tests, and run every test with ctest. Exits non-zero when anything fails.
# Extra arguments go to ctest, e.g. bash scripts/test.sh -R embed
# Environment: KILN_TEST_JOBS (default 2), KILN_TEST_TIMEOUT (seconds per test, default 1500).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --tests
bash scripts/build.sh
ctest --test-dir "${KILN_BUILD_DIR:-build}" --output-on-failure --no-tests=error \
  -j "${KILN_TEST_JOBS:-2}" --timeout "${KILN_TEST_TIMEOUT:-1500}" "$@"
