#!/usr/bin/env bash
# README command (a): install what is missing, build kiln, and run `vgg_finetune demo`:
# a generated 8-class image dataset (classes differ by shape and pattern, not colour) and a
# randomly initialised VGG16 (not pretrained), then a colour-only baseline and the whole
# fine-tuning recipe (fc8 alone, then all layers) with accuracy before and after each phase,
# eval, a prediction per class and export. On a 2-core CPU it is scaled to a minute or two
# (more beside other jobs, docs/demo.md; fc8 starts as a linear probe on the frozen
# features) and says what it scaled. Arguments go to the demo (e.g. --work-dir DIR,
# --weights FILE, --full, --seed N).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
bash scripts/build.sh
exec "${KILN_BUILD_DIR:-build}/apps/vgg_finetune/vgg_finetune" demo "$@"
