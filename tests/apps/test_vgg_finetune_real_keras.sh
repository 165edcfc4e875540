#!/usr/bin/env bash
# vgg_finetune train --weights with files written by real Keras (issue 15), not by h5py in
# Keras's layout as test_vgg_finetune_weights.sh does: tests/reference/make_real_keras_vgg.py
# builds keras.applications.VGG16(weights=None, input_shape=(32, 32, 3)) with seeded random
# weights and biases, without and with its top, and saves the no-top one in every HDF5-based
# layout the installed Keras writes (Keras 3: save_weights .weights.h5, model.save .keras and
# legacy .h5; tf-keras: save_weights .h5, model.save .h5, and its .weights.h5 and .keras), the
# full one in the first (in all with KILN_KERAS_ALL_LAYOUTS=1: +8 s a file). Nothing is
# downloaded. Then, on tiny data at 32 px with 1 epoch of phase 1:
#   - every no-top file loads conv1_1..conv5_3 and phase 1 trains fc6..fc8;
#   - for the first no-top file of each Keras, the conv weights kiln trained with (frozen in
#     phase 1, read back with `vgg_finetune export --format keras`) equal Keras's exactly;
#   - --head avg (Keras's pooling='avg') over a no-top file trains fc8 only;
#   - a full file made at 32 px (fc1 (512, 4096)) loads conv1_1..fc7 into the model as built
#     (kiln pools pool5 to 7x7 only when the file's fc6 does not fit otherwise); fc8 is new.
# The interpreter: $KILN_KERAS_PYTHON, else the first of /usr/bin/python3 and python3 that
# imports keras (Keras 3, any backend; $KERAS_BACKEND is honoured) or tf_keras. With neither,
# it says why and exits 77 (ctest: Skipped).
# Run with (2026-12-02, Python 3.11.7, numpy 2.4.6, 2 cores under load ~4): Keras 3.15.1 with
# the numpy backend (41 s), jax 0.10.2 (55 s), and tensorflow-cpu 2.21.0 together with
# tf-keras 2.21.0 (78 s, both writers); all checks passed.
# Usage: test_vgg_finetune_real_keras.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune_real_keras.sh PATH/TO/vgg_finetune}
HELPER="$(cd "$(dirname "$0")/../reference" && pwd)/make_real_keras_vgg.py"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_real_keras
COMMON=(--image-size 32 --phase1-epochs 1 --phase2-epochs 0 --batch 4 --seed 3 --device cpu)

# Keras writes its config under $KERAS_HOME (default ~/.keras): keep it in the temp dir.
# TensorFlow's and JAX's GPU start-up buys nothing here.
keras_env=(env KERAS_HOME="$W/keras_home" TF_CPP_MIN_LOG_LEVEL=3 CUDA_VISIBLE_DEVICES=)
if [ -n "${KILN_KERAS_PYTHON:-}" ]; then candidates=("$KILN_KERAS_PYTHON"); else candidates=(/usr/bin/python3 python3); fi
PY="" why="" full_layouts=first
[ "${KILN_KERAS_ALL_LAYOUTS:-0}" = 1 ] && full_layouts=all
for py in "${candidates[@]}"; do
  "${keras_env[@]}" "$py" "$HELPER" make --out "$W/keras" --full "${full_layouts}" > "$W/make.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then PY=$py; break; fi
  if [ $rc -ne 77 ]; then echo "FAIL writing the weights files with $py's Keras:"; cat "$W/make.log"; exit 1; fi
  why+="$(tail -n 1 "$W/make.log")"$'\n'
done
if [ -z "$PY" ]; then
  printf 'SKIP no Python here imports keras or tf_keras (set KILN_KERAS_PYTHON to one that does):\n%s' "$why"
  exit 77
fi
grep "^writer:\|not written" "$W/make.log" | sed "s|^|$PY: |"

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 40 > /dev/null || { echo "FAIL toy data"; exit 1; }
n=0 compared=""
while IFS=$'\t' read -r -u 3 lib kind layout file ref; do
  n=$((n + 1))
  what="$lib $kind $layout"
  log="$W/run$n.log"
  "$B" train --data-dir "$W/data" --model-dir "$W/m$n" --weights "$file" "${COMMON[@]}" > "$log" 2>&1
  rc=$?
  if [ "$kind" = notop ]; then
    if [ $rc -eq 0 ] && grep -q "weights: conv1_1..conv5_3 (13 layers) loaded from .*$(basename "$file"); new (initialised here): fc6, fc7, fc8" "$log" &&
       grep -q "recipe: phase 1 (fc6..fc8)" "$log" && grep -q "epoch 1/1 (phase 1: fc6..fc8)  train loss [0-9]" "$log"; then
      ok "$what: conv1_1..conv5_3 loaded, phase 1 trains fc6..fc8"
    else
      bad "$what"; cat "$log"; continue
    fi
    # The conv layers are frozen in phase 1: the exported ones must be Keras's, bit for bit.
    case " $compared " in *" $lib "*) continue ;; esac
    compared+=" $lib"
    if "$B" export --model-dir "$W/m$n" --out "$W/export$n.h5" --format keras > "$W/export$n.log" 2>&1 &&
       "${keras_env[@]}" "$PY" "$HELPER" compare --export "$W/export$n.h5" --reference "$ref" > "$W/cmp$n.log" 2>&1; then
      ok "$what: $(cat "$W/cmp$n.log")"
    else
      bad "$what: kiln's conv weights differ from Keras's"; cat "$W/export$n.log" "$W/cmp$n.log"
    fi
  else
    # A top made at 32 px fits the model as built (fc6 follows the image size): fc6 and fc7
    # load, fc8 (1000 classes) is replaced; no adaptive pooling is needed.
    if [ $rc -eq 0 ] && grep -q "weights: conv1_1..fc7 (15 layers) loaded from .*$(basename "$file"); new (initialised here): fc8;" "$log" &&
       ! grep -q "average-pooled adaptively" "$log"; then
      ok "$what: conv1_1..fc7 loaded (a 32-px top fits as built), fc8 new"
    else
      bad "$what: expected conv1_1..fc7 to load"; cat "$log"
    fi
  fi
done 3< "$W/keras/manifest.tsv"
[ $n -gt 0 ] || bad "the helper wrote no weights file"

# --head avg over the first no-top file: global average pooling + a new fc8, nothing else new.
first=$(awk -F'\t' '$2 == "notop" { print $4; exit }' "$W/keras/manifest.tsv")
if [ -n "$first" ] && "$B" train --data-dir "$W/data" --model-dir "$W/avg" --weights "$first" "${COMMON[@]}" --head avg > "$W/avg.log" 2>&1 &&
   grep -q "weights: conv1_1..conv5_3 (13 layers) loaded from .*; new (initialised here): fc8;" "$W/avg.log" &&
   grep -q "recipe: phase 1 (fc8 only)" "$W/avg.log"; then
  ok "--head avg over $(basename "$first"): conv1_1..conv5_3 loaded, phase 1 trains fc8 only"
else
  bad "--head avg"; cat "$W/avg.log"
fi

end_checks "real Keras weights"
