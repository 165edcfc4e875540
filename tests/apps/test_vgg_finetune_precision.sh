#!/usr/bin/env bash
# vgg_finetune --precision (issue 17, docs/precision.md) on tiny generated data (2 classes,
# 64 px, CPU):
#   - train --precision bf16-frozen says per phase what runs in bf16 (phase 1: 15 of 16
#     weight layers, fp32 from fc8; phase 2: nothing frozen, all fp32), caches bf16 features
#     (half the MiB of the fp32 run's), records the policy in config.txt and the checkpoint;
#   - a resume that changes --precision is refused, naming the flag;
#   - eval and predict take the checkpoint's policy, eval --compare-precision measures the
#     same weights both ways; an unknown policy is a one-line error;
#   - --precision bf16 trains both phases with every weight layer in bf16;
#   - an fp32 run on a CPU with native bf16 suggests bf16-frozen (phase 1 only).
# Usage: test_vgg_finetune_precision.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune_precision.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_precision
COMMON=(--image-size 64 --phase1-epochs 1 --phase2-epochs 1 --batch 4 --seed 5 --device cpu --no-augment)

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 72 || { echo "FAIL toy data"; exit 1; }

# 1. bf16-frozen: the lines per phase, the bf16 feature cache, config and checkpoint.
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --precision bf16-frozen > "$W/b.log" 2>&1
rc=$?
"$B" train --data-dir "$W/data" --model-dir "$W/f" "${COMMON[@]}" > "$W/f.log" 2>&1
rcf=$?
mib() { sed -n 's/.*computed once ([0-9.]* s, \([0-9.]*\) KiB).*/\1/p' "$1" | head -1; }  # KiB: tiny data
if [ $rc -eq 0 ] && [ $rcf -eq 0 ] &&
   grep -q "precision: bf16-frozen: 15 of 16 weight layers in bf16, fp32 from vgg16/fc8" "$W/b.log" &&
   grep -q "precision: bf16-frozen: all 16 weight layers in fp32 (nothing is frozen in this phase)" "$W/b.log" &&
   grep -q "^precision = bf16-frozen$" "$W/b/config.txt" &&
   /usr/bin/python3 - "$(mib "$W/b.log")" "$(mib "$W/f.log")" <<'PY'
import sys
b, f = float(sys.argv[1]), float(sys.argv[2])
assert f > 0 and abs(b - f / 2) <= 0.5 + 0.01 * f, (b, f)
PY
then ok "bf16-frozen: per-phase lines, bf16 feature cache at half the fp32 KiB ($(mib "$W/b.log") vs $(mib "$W/f.log")), config.txt"
else bad "bf16-frozen run (rc $rc/$rcf)"; grep -E "precision|mode|error" "$W/b.log" "$W/f.log" | head; fi

# 2. A resume that changes the policy is refused; one that leaves --precision out takes the
#    run's (config.txt) and resumes (nothing left to do).
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --precision fp32 > "$W/r.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q -- "--precision is fp32, the run used bf16-frozen" "$W/r.log"; then
  ok "resume with another --precision refused"
else bad "resume with another --precision (rc $rc)"; tail -3 "$W/r.log"; fi
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" > "$W/r2.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q -- "with its recipe ($W/b/config.txt): --precision bf16-frozen$" "$W/r2.log" &&
   grep -q "^nothing left to train" "$W/r2.log"; then
  ok "resume without --precision takes the run's, and says so"
else bad "resume without --precision (rc $rc)"; tail -3 "$W/r2.log"; fi

# 3. eval and predict take the checkpoint's policy; --compare-precision; a bad name.
"$B" eval --model-dir "$W/b" --data-dir "$W/data" --device cpu > "$W/e.log" 2>&1
rc=$?
"$B" eval --model-dir "$W/b" --data-dir "$W/data" --device cpu --compare-precision bf16-frozen > "$W/c.log" 2>&1
rcc=$?
"$B" predict --model-dir "$W/b" --device cpu "$W/data/val" > "$W/p.log" 2>&1
rcp=$?
if [ $rc -eq 0 ] && [ $rcc -eq 0 ] && [ $rcp -eq 0 ] &&
   grep -q "^precision: bf16-frozen: 15 of 16 weight layers in bf16, fp32 from vgg16/fc8" "$W/e.log" &&
   grep -q "^precision: bf16-frozen: 15 of 16" "$W/p.log" &&
   grep -q "^precision: fp32: all 16 weight layers in fp32" "$W/c.log" &&
   grep -qE "^    pool5 +[0-9.]+e-0[2-4]$" "$W/c.log" &&
   grep -q "top-1 agrees on" "$W/c.log" && grep -q "accuracy: fp32" "$W/c.log"; then
  ok "eval/predict use the checkpoint's policy; eval --compare-precision reports per layer"
else bad "eval/predict precision (rc $rc/$rcc/$rcp)"; head -5 "$W/e.log" "$W/c.log" "$W/p.log"; fi
"$B" train --data-dir "$W/data" --model-dir "$W/x" "${COMMON[@]}" --precision fp16 > "$W/x.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "precision" "$W/x.log" && grep -q "bf16-frozen" "$W/x.log" && [ ! -e "$W/x/config.txt" ]; then
  ok "an unknown --precision is refused before any work"
else bad "--precision fp16 (rc $rc)"; cat "$W/x.log"; fi

# 4. bf16: every layer in bf16 in both phases (phase 2's backward through all of VGG16 in bf16,
# into fp32 master weights), with augmentation (full forward each step).
"$B" train --data-dir "$W/data" --model-dir "$W/h" --image-size 64 --phase1-epochs 1 --phase2-epochs 1 --batch 4 \
  --seed 5 --device cpu --precision bf16 > "$W/h.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c "precision: bf16: all 16 weight layers in bf16" "$W/h.log")" = 2 ] &&
   grep -q "^epoch 1/1 (phase 2: all layers)  train loss [0-9]" "$W/h.log"; then
  ok "--precision bf16 trains both phases"
else bad "--precision bf16 (rc $rc)"; grep -E "precision|epoch|error" "$W/h.log"; fi

# 5. The hint, where this CPU computes bf16 natively.
if grep -q "avx512_bf16" /proc/cpuinfo; then
  if [ "$(grep -c -- "--precision bf16-frozen would run the 15 frozen layers" "$W/f.log")" = 1 ]; then
    ok "fp32 on a CPU with native bf16 suggests bf16-frozen once (phase 1)"
  else bad "no (or repeated) bf16-frozen hint"; grep precision "$W/f.log"; fi
fi

end_checks "vgg_finetune --precision"
