#!/usr/bin/env bash
# vgg_finetune train --model resnet50 / resnet50_v1 (issue 16): the seed's recipe on a network
# with batch norm, through the same trainer, on tiny generated data (2 classes, 64 px, CPU):
#   - the run says what batch norm does in each phase, calibrates the running statistics of a
#     randomly initialised model before phase 1, and caches phase 1's features at global
#     pooling (avgpool) so only fc runs per step;
#   - frozen batch norm keeps its statistics: with --calibrate-bn off, after phase 1 every
#     running mean is still 0 and every running variance 1 (read back with h5py from an
#     export), and after phase 2 they have moved;
#   - stopped mid-phase-2 and resumed: weights and batch-norm statistics equal the
#     uninterrupted run's bit for bit;
#   - eval, predict and export read the model from the checkpoint (no --model needed);
#   - --train-from layer4 trains stage 4 and fc in phase 1 (10 of 53 batch-norm layers);
#   - --weights with a Keras no-top ResNet50 file loads the backbone, fc is new;
#   - bad combinations are one-line errors: --head avg, an unknown --model, resuming a
#     resnet50 directory with --model vgg16.
# Usage: test_vgg_finetune_resnet.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune_resnet.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_resnet
PY=/usr/bin/python3
COMMON=(--image-size 64 --phase1-epochs 1 --phase2-epochs 1 --batch 4 --seed 5 --device cpu --no-augment)

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 72 || { echo "FAIL toy data"; exit 1; }

# 1. The recipe's lines about batch norm and the feature cache.
"$B" train --data-dir "$W/data" --model-dir "$W/a" "${COMMON[@]}" --model resnet50 > "$W/a.log" 2>&1
rc=$?
if [ $rc -eq 0 ] &&
   grep -q "batch norm: running statistics of all 53 layers estimated on 8 train images" "$W/a.log" &&
   grep -q "phase 1: fc only" "$W/a.log" &&
   grep -q "batch norm: all 53 layers are frozen: they normalise with their running statistics" "$W/a.log" &&
   grep -q "phase 1 mode: avgpool features of 8 train and 4 val images computed once" "$W/a.log" &&
   grep -q "per step only fc run" "$W/a.log" &&
   grep -q "batch norm: all 53 layers train: they normalise with each batch's statistics" "$W/a.log" &&
   grep -q "no dropout in the model" "$W/a.log" &&
   grep -q "epoch 1/1 (phase 2: all layers)" "$W/a.log"; then
  ok "resnet50: batch norm per phase, calibration, features cached at avgpool"
else
  bad "resnet50 train (exit $rc)"; cat "$W/a.log"
fi

# 2. Frozen statistics stay frozen (phase 1), trained ones move (phase 2).
bn_stats() {  # prints "zero_one" when every running mean is 0 and variance 1, else "moved"
  "$PY" - "$1" << 'EOF'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    names = []
    f.visit(lambda n: names.append(n) if n.endswith(("running_mean", "running_var")) else None)
    assert len(names) == 106, len(names)
    same = all(np.all(f[n][()] == (0.0 if n.endswith("mean") else 1.0)) for n in names)
print("zero_one" if same else "moved")
EOF
}
"$B" train --data-dir "$W/data" --model-dir "$W/f" "${COMMON[@]}" --model resnet50 --calibrate-bn off --stop-after-epochs 1 > "$W/f1.log" 2>&1 &&
  "$B" export --model-dir "$W/f" --out "$W/f1.h5" > /dev/null 2>&1
after1=$(bn_stats "$W/f1.h5" 2>&1)
"$B" train --data-dir "$W/data" --model-dir "$W/f" "${COMMON[@]}" --model resnet50 --calibrate-bn off > "$W/f2.log" 2>&1 &&
  "$B" export --model-dir "$W/f" --out "$W/f2.h5" > /dev/null 2>&1
after2=$(bn_stats "$W/f2.h5" 2>&1)
if [ "$after1" = zero_one ] && [ "$after2" = moved ] && ! grep -q "running statistics of all" "$W/f1.log"; then
  ok "frozen batch norm kept its statistics through phase 1; phase 2 moved them"
else
  bad "batch-norm statistics: after phase 1 '$after1', after phase 2 '$after2'"; cat "$W/f1.log" "$W/f2.log"
fi

# 3. Stop mid-phase-2 (step 3: phase 1 is 2 steps), resume: bit for bit, statistics included.
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --model resnet50 --stop-after-steps 3 > "$W/b1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --model resnet50 > "$W/b2.log" 2>&1
da=$("$B" _digest --model-dir "$W/a" 2>&1); db=$("$B" _digest --model-dir "$W/b" 2>&1)
if grep -q "resuming from" "$W/b2.log" && ! grep -q "running statistics of all" "$W/b2.log" && [ "$da" = "$db" ]; then
  ok "resume mid-phase-2 matches the uninterrupted run ($da)"
else
  bad "resume: '$da' vs '$db'"; cat "$W/b1.log" "$W/b2.log"
fi

# 4. eval, predict, export take the model from the checkpoint.
if "$B" eval --model-dir "$W/a" --data-dir "$W/data" --device cpu > "$W/e.log" 2>&1 && grep -q "accuracy" "$W/e.log" &&
   "$B" predict --model-dir "$W/a" "$W/data/val/c0" --device cpu > "$W/p.log" 2>&1 && grep -q "img0.png" "$W/p.log" &&
   "$B" export --model-dir "$W/a" --out "$W/x.h5" > "$W/x.log" 2>&1 &&
   "$PY" -c "import h5py,sys; f=h5py.File(sys.argv[1]); assert f.attrs['model']=='resnet50'; assert f['resnet50/fc/weight'].shape==(2,2048)" "$W/x.h5"; then
  ok "eval, predict and export of a resnet50 model directory"
else
  bad "eval/predict/export"; cat "$W/e.log" "$W/p.log" "$W/x.log"
fi

# 5. --train-from layer4: stage 4 and fc train in phase 1; the cache cuts before layer4.
"$B" train --data-dir "$W/data" --model-dir "$W/t" "${COMMON[@]}" --model resnet50_v1 --train-from layer4 \
  --phase2-epochs 0 > "$W/t.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "phase 1: layer4/0/conv1..fc" "$W/t.log" &&
   grep -q "batch norm: 43 of 53 layers are frozen" "$W/t.log" && grep -q "per step only layer4..fc run" "$W/t.log"; then
  ok "--train-from layer4 (resnet50_v1): stage 4 trains, 43 batch-norm layers frozen, cache cut before layer4"
else
  bad "--train-from layer4 (exit $rc)"; cat "$W/t.log"
fi

# 6. --weights: a Keras no-top ResNet50 file (tf-keras layout, written by h5py from the v1
# reference model) loads the whole backbone into resnet50_v1; fc is new; the statistics come
# from the file, so --calibrate-bn auto leaves them; Keras's caffe preprocessing is taken.
if "$PY" "$(dirname "$0")/../reference/make_resnet_reference.py" --out "$W/ref" --variant v1 --image 64 \
     --batch 1 --classes 10 --keras-layouts > "$W/ref.log" 2>&1; then
  "$B" train --data-dir "$W/data" --model-dir "$W/k" "${COMMON[@]}" --model resnet50_v1 --phase2-epochs 0 \
    --weights "$W/ref/resnet50_v1_keras_notop.h5" > "$W/k.log" 2>&1
  rc=$?
  if [ $rc -eq 0 ] && grep -q "weights: conv1..layer4/2/bn3 (106 layers) loaded from .*notop.h5; new (initialised here): fc" "$W/k.log" &&
     grep -q "caffe_bgr preprocessing (recorded by the weights file)" "$W/k.log" &&
     ! grep -q "running statistics of all" "$W/k.log" && grep -q "phase 1 mode: avgpool features" "$W/k.log"; then
    ok "--weights: a Keras no-top ResNet50 file loads conv1..layer4 (106 layers), fc is new, no calibration"
  else
    bad "--weights Keras no-top (exit $rc)"; cat "$W/k.log"
  fi
else
  bad "make_resnet_reference.py --keras-layouts"; cat "$W/ref.log"
fi

# 7. One-line errors.
expect_error() {  # expect_error NAME PATTERN ARGS...
  local name=$1 pat=$2
  shift 2
  "$B" "$@" > "$W/err.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] && [ "$(wc -l < "$W/err.log")" -le 12 ] && grep -q "$pat" "$W/err.log"; then ok "$name"
  else bad "$name (exit $rc)"; cat "$W/err.log"; fi
}
expect_error "--head avg on resnet50 is refused" "resnet50 has no head 'avg' (its heads: fc)" \
  train --data-dir "$W/data" --model-dir "$W/h" "${COMMON[@]}" --model resnet50 --head avg
expect_error "an unknown --model lists the known ones" "resnet50_v1" \
  train --data-dir "$W/data" --model-dir "$W/u" --model resnet34 --device cpu
expect_error "a resnet50 model dir refuses --model vgg16" "trained with model resnet50, not this run's vgg16" \
  train --data-dir "$W/data" --model-dir "$W/a" --image-size 64 --batch 4 --seed 5 --device cpu --no-augment \
  --phase1-epochs 1 --phase2-epochs 1 --model vgg16

end_checks "resnet app"
