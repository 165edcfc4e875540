#!/usr/bin/env bash
# Installs what is missing, builds kiln, and trains the small example convnet
# on generated images; it prints its loss falling. Arguments go to kiln_example
# (see: bash scripts/run_example.sh --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh
exec "${KILN_BUILD_DIR:-build}/apps/kiln_example/kiln_example" "$@"
