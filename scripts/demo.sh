#!/usr/bin/env bash
# README command (a): install what is missing, build kiln, and run `vgg_finetune demo`:
# a generated 8-class image dataset and a (randomly initialised) VGG16 weights file, then
# the whole fine-tuning recipe (fc8 alone, then all layers), eval, predict and export.
# On a CPU it is scaled to a few minutes and says what it scaled. Arguments go to the demo
# (e.g. --work-dir DIR, --weights FILE, --full).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh
exec "${KILN_BUILD_DIR:-build}/apps/vgg_finetune/vgg_finetune" demo "$@"
