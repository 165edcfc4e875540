#!/usr/bin/env bash
# End-to-end test of the vgg_finetune app on CPU with tiny generated data (2 classes, 32 px,
# 1+1 epochs): train, eval, predict, export, resume bit-for-bit (after an epoch and mid-epoch),
# a resume that changes the recipe refused, bad input giving one-line errors with a non-zero
# exit, SIGKILL at random moments then resume (no half-written file, same final weights and
# metrics rows), Ctrl-C then resume, a second run on a model directory in use refused, a run
# with every new host block filled with NaN bytes (KILN_POISON=1) ending as the plain one, SIGTERM
# at random moments then the same command ending as the uninterrupted run, a full
# disk, a corrupt or cut-short newest checkpoint passed over by eval and train, and the
# TensorBoard events read back with the real tensorboard package.
# Usage: test_vgg_finetune.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_test
COMMON=(--image-size 32 --phase1-epochs 1 --phase2-epochs 1 --batch 4 --seed 7 --device cpu)

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 40 || { echo "FAIL toy data"; exit 1; }
"$B" _toy-data "$W/data3" --classes 3 --train 2 --val 1 --size 40 || { echo "FAIL toy data"; exit 1; }

# 1. Train, uninterrupted (timed: the kill test below picks its moments within this).
t_start=$(date +%s%N)
"$B" train --data-dir "$W/data" --model-dir "$W/a" "${COMMON[@]}" > "$W/a.log" 2>&1
a_rc=$?
run_ms=$(( ($(date +%s%N) - t_start) / 1000000 ))
if [ $a_rc -eq 0 ] &&
   grep -q "epoch 1/1 (phase 1: fc8 only)  train loss .* acc .*%  val loss .* acc .*%  .* img/s" "$W/a.log" &&
   grep -q "epoch 1/1 (phase 2: all layers)" "$W/a.log" && grep -q "confusion matrix" "$W/a.log" &&
   grep -q "RANDOMLY INITIALISED" "$W/a.log" &&
   [ -f "$W/a/classes.txt" ] && [ -f "$W/a/config.txt" ] && [ "$(wc -l < "$W/a/metrics.csv")" = 3 ] &&
   ls "$W/a/events/"events.out.tfevents.* > /dev/null 2>&1; then
  ok "train writes epochs, confusion matrix, classes.txt, config.txt, metrics.csv, events"
else
  bad "train"; cat "$W/a.log"
fi

# 1b. Phase 1 froze conv1..fc7: they are in the phase's frozen file, written once; its
# checkpoint's weights file holds fc8 alone (io/checkpoint.h, state format 3).
frozen_files=$(ls "$W/a/"frozen-phase1-*.weights.h5 2> /dev/null | wc -l)
if [ "$frozen_files" = 1 ] && [ "$(stat -c %s "$W/a/ckpt-000001.weights.h5")" -lt 65536 ] &&
   [ "$(stat -c %s "$W/a/"frozen-phase1-*.weights.h5)" -gt 1000000 ]; then
  ok "phase 1's frozen layers written once (frozen-phase1-*.weights.h5), its checkpoint holds fc8 alone"
else
  bad "frozen file: $frozen_files frozen file(s)"; ls -l "$W/a"
fi

# 1c. Epochs whose printed numbers repeat get one line saying how far they moved (a run at a
# learning rate too small to show, as the demo's phase 1 after its probe, must not read as stalled).
"$B" train --data-dir "$W/data" --model-dir "$W/still" "${COMMON[@]}" --phase1-epochs 3 --phase2-epochs 0 \
  --phase1-lr 1e-12 --no-augment --keep-prob 1 > "$W/still.log" 2>&1
notes=$(grep -c "^  (the same as epoch 1 to the digits shown: val loss moved by .*, train loss by " "$W/still.log")
if [ "$notes" = 1 ] && grep -q "^epoch 3/3 (phase 1" "$W/still.log"; then
  ok "repeated epoch numbers are explained once per phase"
else
  bad "repeated-epoch note: $notes line(s)"; cat "$W/still.log"
fi
rm -rf "$W/still"

# 2. Stop after epoch 1, resume: the final weights equal the uninterrupted run's bit for bit.
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --stop-after-epochs 1 > "$W/b1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" > "$W/b2.log" 2>&1
da=$("$B" _digest --model-dir "$W/a" 2>&1); db=$("$B" _digest --model-dir "$W/b" 2>&1)
if grep -q "resuming from" "$W/b2.log" && grep -q "epochs 2" <<< "$da" && [ "$da" = "$db" ] &&
   grep -q "^stopping after epoch 1 of 2 (phase 1 epoch 1 of 1) as --stop-after-epochs asks" "$W/b1.log"; then
  ok "resume after epoch 1 matches the uninterrupted run ($da)"
else
  bad "resume: '$da' vs '$db'"; cat "$W/b2.log"
fi

# 2a. Mid-epoch: stop after step 1 (phase 1) and step 3 (phase 2), each with a mid-epoch
# checkpoint, then finish; with evaluation and checkpoints every step. Same weights bit for bit.
MID=(--eval-every 1 --checkpoint-every 1)
"$B" train --data-dir "$W/data" --model-dir "$W/m" "${COMMON[@]}" "${MID[@]}" --stop-after-steps 1 > "$W/m1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/m" "${COMMON[@]}" "${MID[@]}" --stop-after-steps 3 > "$W/m2.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/m" "${COMMON[@]}" "${MID[@]}" > "$W/m3.log" 2>&1
dm=$("$B" _digest --model-dir "$W/m" 2>&1)
if grep -q "step 1 (phase 1 epoch 1/1, batch 1/2)  train loss .*  val loss .* acc .*%" "$W/m1.log" &&
   grep -q "skipped the first 1 batch(es) of epoch 1" "$W/m2.log" &&
   grep -q "resuming from .*ckpt-000001-000001.state.h5: 1 epoch(s) and 1 batch(es) of epoch 2 done, step 3" "$W/m3.log" &&
   [ "$da" = "$dm" ]; then
  ok "mid-epoch stop/resume with --eval-every 1 --checkpoint-every 1 matches the uninterrupted run ($dm)"
else
  bad "mid-epoch resume: '$da' vs '$dm'"; cat "$W/m1.log" "$W/m2.log" "$W/m3.log"
fi

# 2b. --no-augment: phase 1 from cached pool5 features trains exactly as the full forward does.
"$B" train --data-dir "$W/data" --model-dir "$W/f1" "${COMMON[@]}" --no-augment > "$W/f1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/f2" "${COMMON[@]}" --no-augment --no-feature-cache > "$W/f2.log" 2>&1
d1=$("$B" _digest --model-dir "$W/f1" 2>&1); d2=$("$B" _digest --model-dir "$W/f2" 2>&1)
if grep -q "pool5 features of 8 train and 4 val images computed once" "$W/f1.log" && grep -q "epochs 2" <<< "$d1" &&
   [ "$d1" = "$d2" ]; then
  ok "--no-augment feature cache gives the full forward's weights bit for bit ($d1)"
else
  bad "--no-augment: '$d1' vs '$d2'"; cat "$W/f1.log"
fi

# 3. Eval output parses.
"$B" eval --model-dir "$W/a" --data-dir "$W/data" --device cpu > "$W/eval.log" 2>&1
if grep -Eq "^loss [0-9.]+  accuracy [0-9.]+%  \(4 images\)$" "$W/eval.log" && grep -q "per-class accuracy" "$W/eval.log"; then
  ok "eval"
else
  bad "eval"; cat "$W/eval.log"
fi

# 4. Predict: JSON and CSV parse; an unreadable image is reported, not fatal.
printf 'not a jpeg' > "$W/broken.jpg"
if "$B" predict --model-dir "$W/a" "$W/data/val" "$W/broken.jpg" --top-k 2 --device cpu \
     --json "$W/p.json" --csv "$W/p.csv" > "$W/pred.log" 2>&1 &&
   grep -q "broken.jpg: cannot read" "$W/pred.log" &&
   [ "$(grep -c ',1,c[01],' "$W/p.csv")" = 4 ] &&
   { ! command -v python3 > /dev/null ||
     python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d)==5 and sum('top' in x for x in d)==4 and abs(sum(t['probability'] for t in d[0]['top'])-1)<1e-3" "$W/p.json"; }; then
  ok "predict (json, csv, unreadable image reported)"
else
  bad "predict"; cat "$W/pred.log"
fi

# 5. Export in both layouts; the kiln export imports as --weights for a new run (fc8 skipped).
if "$B" export --model-dir "$W/a" --out "$W/out/a.h5" > /dev/null 2>&1 &&
   "$B" export --model-dir "$W/a" --out "$W/out/a_keras.h5" --format keras > /dev/null 2>&1 &&
   "$B" train --data-dir "$W/data" --model-dir "$W/c" --weights "$W/out/a.h5" "${COMMON[@]}" --phase2-epochs 0 > "$W/c.log" 2>&1 &&
   grep -q "30 loaded, 2 skipped" "$W/c.log"; then
  ok "export kiln/keras; exported weights import for conv1..fc7"
else
  bad "export"; cat "$W/c.log"
fi

# 5a. Disk full (strace injects ENOSPC into the file writes): one failed write, wherever it
# falls, fails the export naming the reason, and no file appears; every write failing ends
# in that error too, not a crash at exit. (A small dataset's failed write surfaced only in a
# destructor: the export "succeeded" with a bias of zeros.)
if command -v strace > /dev/null && strace -o /dev/null true 2> /dev/null; then
  full_ok=1
  for when in 3 5 9 21 33 5+; do
    strace -f -o /dev/null -e trace=pwrite64 -e inject=pwrite64:error=ENOSPC:when=$when \
      "$B" export --model-dir "$W/a" --out "$W/out/full.h5" > "$W/full.log" 2>&1
    rc=$?
    if [ $rc -ne 1 ] || ! grep -q "^vgg_finetune export: error: .*No space left on device" "$W/full.log" ||
       [ -e "$W/out/full.h5" ]; then
      full_ok=0; bad "export with write $when failing: exit $rc"; cat "$W/full.log"
    fi
  done
  [ $full_ok = 1 ] && ok "a failed write (disk full) anywhere in an export is an error, exit 1, no file"
else
  echo "skip disk-full checks: strace is missing or cannot trace here (scripts/setup.sh --tests installs it)"
fi

# 6. Bad input: one line on stderr, non-zero exit, the model directory untouched.
before=$(cd "$W/a" && ls -l --time-style=+%s.%N | md5sum)
expect_error() {
  local what=$1; shift
  "$B" "$@" > "$W/out.txt" 2> "$W/err.txt"; local rc=$?
  if [ $rc -ne 0 ] && [ "$(wc -l < "$W/err.txt")" = 1 ] && grep -q "error: " "$W/err.txt"; then
    ok "$what: $(cat "$W/err.txt")"
  else
    bad "$what (rc $rc)"; cat "$W/err.txt"
  fi
}
touch "$W/a_file"
expect_error "missing folder" train --data-dir "$W/nope" --model-dir "$W/d" "${COMMON[@]}"
expect_error "folder without train/ and val/" train --data-dir "$W/a" --model-dir "$W/d" "${COMMON[@]}"
expect_error "unknown flag" train --data-dir "$W/data" --model-dir "$W/d" --frobnicate "${COMMON[@]}"
expect_error "bad value" train --data-dir "$W/data" --model-dir "$W/d" "${COMMON[@]}" --batch 0
expect_error "value out of range" train --data-dir "$W/data" --model-dir "$W/d" "${COMMON[@]}" --keep-prob 2
expect_error "unwritable model dir" train --data-dir "$W/data" --model-dir "$W/a_file/m" "${COMMON[@]}"
expect_error "other classes" train --data-dir "$W/data3" --model-dir "$W/a" "${COMMON[@]}"
expect_error "other architecture" train --data-dir "$W/data" --model-dir "$W/a" "${COMMON[@]/32/64}"
expect_error "weights that do not fit" train --data-dir "$W/data" --model-dir "$W/e" --weights "$W/out/a.h5" --image-size 64 --device cpu
expect_error "eval without checkpoint" eval --model-dir "$W/data" --data-dir "$W/data"
expect_error "unknown command" frobnicate
after=$(cd "$W/a" && ls -l --time-style=+%s.%N | md5sum)
[ "$before" = "$after" ] && ok "refused runs left the model directory unchanged" || bad "model directory changed"
[ ! -e "$W/e/classes.txt" ] && ok "a refused import writes nothing" || bad "refused import wrote classes.txt"

# 6b. A resume that changes the recipe is refused (one line naming the flag and both values),
# config.txt untouched; --allow-changed-config resumes and records the change.
cfg_before=$(md5sum < "$W/b/config.txt")
expect_error "changed recipe on resume" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --phase2-epochs 2
grep -q -- "--phase2-epochs is 2, the run used 1" "$W/err.txt" || bad "changed-recipe error names flag and values"
expect_error "changed lr on resume" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --phase1-lr 0.01
[ "$(md5sum < "$W/b/config.txt")" = "$cfg_before" ] && ok "refused resumes left config.txt unchanged" ||
  bad "config.txt changed by a refused resume"
# A config.txt gone (or overwritten by another file) cannot vouch for the recipe.
mv "$W/b/config.txt" "$W/b_config.bak"
expect_error "resume without config.txt" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --phase2-epochs 2
grep -q "its config.txt is missing (a run of kiln.train writes none), so this resume cannot be checked" "$W/err.txt" || bad "a missing config.txt is not named"
mv "$W/b_config.bak" "$W/b/config.txt"
# --head and --train-from are the checkpoints' model and phase 1: even --allow-changed-config cannot change them
# (a resume took train_from from the checkpoint while config.txt recorded the new value).
expect_error "another --train-from on resume" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" \
  --train-from fc6 --allow-changed-config
grep -q -- "--train-from fc6: phase 1 of the run in '$W/b' trains from fc8" "$W/err.txt" ||
  bad "--train-from on resume: $(cat "$W/err.txt")"
expect_error "another --head on resume" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --head avg \
  --allow-changed-config
grep -q -- "--head avg: the run in '$W/b' was built with --head fc" "$W/err.txt" ||
  bad "--head on resume: $(cat "$W/err.txt")"
expect_error "another --convention on resume" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --convention caffe_bgr
grep -q "trained on torchvision_rgb inputs, which its resume keeps" "$W/err.txt" || bad "--convention on resume not explained"
if "$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --phase1-lr 0.001 > "$W/b3.log" 2>&1 &&
   grep -q "nothing left to train" "$W/b3.log" && [ "$(md5sum < "$W/b/config.txt")" = "$cfg_before" ] &&
   "$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --phase2-epochs 2 --allow-changed-config > "$W/b4.log" 2>&1 &&
   grep -q "recipe changed on resume" "$W/b4.log" && grep -q "epoch 2/2 (phase 2" "$W/b4.log" &&
   grep -q "^# changed on resume at step 4 (--allow-changed-config): --phase2-epochs is 2, the run used 1" "$W/b/config.txt" &&
   grep -q "^phase2-epochs = 2$" "$W/b/config.txt"; then
  ok "same recipe written differently (0.001 for 1e-3) resumes; --allow-changed-config resumes and records the change"
else
  bad "--allow-changed-config"; cat "$W/b3.log" "$W/b4.log" "$W/b/config.txt"
fi
# Phase 1 is over once the run is in phase 2: a new length would run it again after phase 2.
expect_error "--phase1-epochs changed after phase 1" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" \
  --phase1-epochs 3 --phase2-epochs 2 --allow-changed-config
grep -q "phase 1 of the run in '$W/b' is over" "$W/err.txt" || bad "phase 1's end not explained: $(cat "$W/err.txt")"

# 6b'. A switch the run had on (--no-augment) is inherited when left out, and turned off only
# with --no-augment=0 and --allow-changed-config (before, nothing could turn it off).
"$B" train --data-dir "$W/data" --model-dir "$W/na" "${COMMON[@]}" --phase2-epochs 0 --no-augment > "$W/na1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/na" "${COMMON[@]}" --phase2-epochs 0 > "$W/na2.log" 2>&1
grep -q -- "with its recipe ($W/na/config.txt): --no-augment$" "$W/na2.log" || bad "switch not inherited: $(cat "$W/na2.log")"
expect_error "a switch turned off on resume" train --data-dir "$W/data" --model-dir "$W/na" "${COMMON[@]}" --phase2-epochs 0 \
  --no-augment=0
grep -q -- "--no-augment is off, the run used on" "$W/err.txt" || bad "switch turned off: $(cat "$W/err.txt")"
expect_error "a switch given a value it does not take" train --data-dir "$W/data" --model-dir "$W/na" "${COMMON[@]}" \
  --no-augment=maybe
grep -q -- "--no-augment is a switch: give it alone (on), or as --no-augment=1 or --no-augment=0 (off)" "$W/err.txt" ||
  bad "switch value: $(cat "$W/err.txt")"
if "$B" train --data-dir "$W/data" --model-dir "$W/na" "${COMMON[@]}" --phase2-epochs 1 --no-augment=0 \
     --allow-changed-config > "$W/na3.log" 2>&1 &&
   grep -q "recipe changed on resume (--allow-changed-config): --phase2-epochs is 1, the run used 0; --no-augment is off" "$W/na3.log" &&
   grep -q "^epoch 1/1 (phase 2" "$W/na3.log" && ! grep -q "^no-augment" "$W/na/config.txt"; then
  ok "a switch inherited on resume, turned off with --no-augment=0 --allow-changed-config"
else
  bad "switch off on resume"; cat "$W/na3.log" "$W/na/config.txt"
fi
rm -rf "$W/na"

# 6b''. A hand-edited config.txt or classes.txt (found by review): CR LF endings and spaces
# around '=' are read; a line that is no 'key = value', a key twice, a value cut off, or a seed
# the checkpoint was not trained with are refused naming the file; without config.txt the
# checkpoint's own values are taken; classes.txt reordered is named as what changed.
# config_case NAME EDIT PATTERN SAYS: a copy of run b, edited by the command EDIT, resumed; its
# output must match the grep pattern PATTERN (checked as "ok SAYS", else "FAIL NAME").
config_case() {
  rm -rf "$W/cf" && cp -r "$W/b" "$W/cf" && (cd "$W/cf" && eval "$2")
  "$B" train --data-dir "$W/data" --model-dir "$W/cf" --device cpu > "$W/cf.log" 2>&1
  if grep -q -- "$3" "$W/cf.log"; then ok "$4"; else bad "$1"; cat "$W/cf.log"; fi
}
config_case "CR LF config" "sed -i 's/\$/\r/' config.txt classes.txt; sed -i 's/^batch = 4/batch=4  /' config.txt" \
  "^nothing left to train" "config.txt and classes.txt with CR LF endings and 'batch=4  ' read"
config_case "garbage line" "echo garbage >> config.txt" \
  "error: $W/cf/config.txt, line [0-9]*: 'garbage' is not 'key = value'" \
  "a config.txt line that is no 'key = value' refused with its line"
config_case "key twice" "echo 'phase2-epochs = 5' >> config.txt" "line [0-9]*: 'phase2-epochs' is given a second time" \
  "a key given twice in config.txt refused"
config_case "value cut off" "sed -i 's/^seed = .*/seed = /' config.txt" \
  "error: $W/cf/config.txt: 'seed' has no value (cut short, or edited?)" "a recipe value cut off in config.txt refused"
config_case "edited seed" "sed -i 's/^seed = 7/seed = 8/' config.txt" \
  "--seed is 8, the checkpoint ckpt-[0-9]*.state.h5 was trained with 7 (config.txt changed since it was written?)" \
  "a seed edited in config.txt refused against the checkpoint's"
config_case "config.txt gone" "rm config.txt" \
  "with its recipe ($W/cf/ckpt-[0-9]*.state.h5): --image-size 32 --seed 7 --batch 4" \
  "without config.txt the checkpoint's values are taken"
grep -q "its config.txt is missing" "$W/cf.log" && ok "without config.txt the rest is refused" ||
  { bad "config.txt gone: not refused"; cat "$W/cf.log"; }
config_case "classes.txt reordered" "printf 'c1\nc0\n' > classes.txt" \
  "classes.txt lists (c1, c0), the training folder has (c0, c1); its checkpoints were trained on the training folder's" \
  "classes.txt reordered is named as what changed"
rm -rf "$W/cf"

# 6c. Mistakes a newcomer makes (found by reviewing the app from a fresh clone): each refused
# before any work with a line naming it, leaving no model directory, or handled as --help says.
expect_error "a flag's value forgotten" train --data-dir "$W/data" --model-dir --no-augment "${COMMON[@]}"
grep -q "needs a value (DIR), but the next argument is '--no-augment'" "$W/err.txt" || bad "forgotten value not named"
[ ! -e ./--no-augment ] || bad "a folder named --no-augment was created"
expect_error "--weights names a folder" train --data-dir "$W/data" --model-dir "$W/f" --weights "$W/data" "${COMMON[@]}"
grep -q "is a folder" "$W/err.txt" || bad "--weights folder not named as one"
printf 'not weights' > "$W/w.txt"
expect_error "--weights not HDF5" train --data-dir "$W/data" --model-dir "$W/f" --weights "$W/w.txt" "${COMMON[@]}"
head -c 4000 "$W/out/a.h5" > "$W/cut.h5"
expect_error "--weights cut off" train --data-dir "$W/data" --model-dir "$W/f" --weights "$W/cut.h5" "${COMMON[@]}"
grep -q "is truncated: it holds 4000 bytes of the $(stat -c %s "$W/out/a.h5")" "$W/err.txt" || bad "truncation sizes"
expect_error "--weights of another model" train --data-dir "$W/data" --model-dir "$W/f" --weights "$W/out/a.h5" \
  --model vgg19 "${COMMON[@]}"
grep -q "holds vgg16 weights, not vgg19's: pass --model vgg16" "$W/err.txt" ||
  bad "another model's weights: $(cat "$W/err.txt")"
if ! nvidia-smi -L > /dev/null 2>&1; then
  expect_error "--device cuda without a GPU" train --data-dir "$W/data" --model-dir "$W/f" "${COMMON[@]/cpu/cuda}"
fi
expect_error "a --train-from layer the model lacks" train --data-dir "$W/data" --model-dir "$W/f" --train-from bogus "${COMMON[@]}"
grep -q "has no layer 'bogus'" "$W/err.txt" || bad "--train-from bogus: $(cat "$W/err.txt")"
[ ! -e "$W/f" ] && ok "refused starts left no model directory" || bad "a refused start left $W/f"
expect_error "export --out a folder" export --model-dir "$W/a" --out "$W/out"
expect_error "export over a checkpoint" export --model-dir "$W/a" --out "$W/a/$(cd "$W/a" && ls ckpt-*.weights.h5 | tail -1)"
# Output files never overwrite what the command reads (each was overwritten before 2026-12-03).
cp "$W/a/classes.txt" "$W/classes.bak"
# said: expect_error's last refusal names TEXT.
said() { grep -q -- "$1" "$W/err.txt" || bad "the refusal does not say '$1': $(cat "$W/err.txt")"; }
expect_error "export over the run's classes.txt" export --model-dir "$W/a" --out "$W/a/classes.txt"
said "would overwrite a file of the run in '$W/a' (classes.txt)"
expect_error "export to a .keras name (Keras reads those as ZIP)" export --model-dir "$W/a" --out "$W/out/a.keras" --format keras
said "Keras opens .keras files as ZIP archives"
cmp -s "$W/a/classes.txt" "$W/classes.bak" || bad "export overwrote classes.txt"
img=$(ls "$W/data/val/"*/* | head -1)
cp "$img" "$W/img.bak"
state=$(cd "$W/a" && ls ckpt-*.state.h5 | tail -1)
cp "$W/a/$state" "$W/state.bak"
expect_error "predict --json over a checkpoint" predict --model-dir "$W/a" "$img" --json "$W/a/$state" --device cpu
said "would overwrite a file of the run in '$W/a' ($state)"
cmp -s "$W/a/$state" "$W/state.bak" || bad "predict overwrote a checkpoint"
expect_error "predict --csv over its input image" predict --model-dir "$W/a" "$img" --csv "$img" --device cpu
said "is one of the files this command reads"
expect_error "audit --out inside the data" audit "$W/data" --out "$img"
said "is inside the data folder '$W/data'"
cmp -s "$img" "$W/img.bak" && ok "predict and audit left their input image as it was" || bad "an input image was overwritten"
mkdir -p "$W/valonly" "$W/trainonly" && cp -r "$W/data/val" "$W/valonly/" && cp -r "$W/data/train" "$W/trainonly/"
if "$B" eval --model-dir "$W/a" --data-dir "$W/valonly" --device cpu > "$W/valonly.log" 2>&1 &&
   grep -q "(4 images)" "$W/valonly.log"; then
  ok "eval on a folder holding only val/ evaluates val/"
else bad "eval on val/ alone"; cat "$W/valonly.log"; fi
expect_error "eval on a folder holding only train/" eval --model-dir "$W/a" --data-dir "$W/trainonly" --device cpu
grep -q "no val/" "$W/err.txt" || bad "train/-only folder not explained"
# A test set without one of the model's classes is scored by the model's numbering; a class
# the model lacks is refused.
mkdir -p "$W/sub/val" && cp -r "$W/data3/val/c0" "$W/data3/val/c2" "$W/sub/val/"
if "$B" train --data-dir "$W/data3" --model-dir "$W/m3" --image-size 32 --phase1-epochs 1 --phase2-epochs 0 \
     --batch 4 --device cpu > "$W/m3.log" 2>&1 &&
   "$B" eval --model-dir "$W/m3" --data-dir "$W/sub" --device cpu > "$W/sub.log" 2>&1 &&
   grep -q "has no folder for c1, of the model's classes" "$W/sub.log" && grep -q "(2 images)" "$W/sub.log" &&
   grep -q "c1 .*no images" "$W/sub.log"; then
  ok "eval on data lacking one of the model's classes scores the others by the model's numbering"
else bad "eval on a subset of the classes"; cat "$W/m3.log" "$W/sub.log"; fi
# One class is "some of them" too (io::image_folder's two-class rule is training's).
mkdir -p "$W/one/val" && cp -r "$W/data3/val/c1" "$W/one/val/"
if "$B" eval --model-dir "$W/m3" --data-dir "$W/one" --device cpu > "$W/one.log" 2>&1 &&
   grep -q "(1 images)" "$W/one.log"; then
  ok "eval on data holding one of the model's classes"
else bad "eval on one class"; cat "$W/one.log"; fi
expect_error "eval on data with a class the model lacks" eval --model-dir "$W/a" --data-dir "$W/data3" --device cpu
grep -q "the data has c2 that the model lacks" "$W/err.txt" || bad "an extra class not named: $(cat "$W/err.txt")"
mkdir -p "$W/data/.ipynb_checkpoints" "$W/data/raw"
if "$B" eval --model-dir "$W/a" --data-dir "$W/data" --device cpu > "$W/extra.log" 2>&1 && grep -q "(4 images)" "$W/extra.log"; then
  ok "eval on a data folder that also holds other folders evaluates its val/"
else bad "eval beside extra folders"; cat "$W/extra.log"; fi
rmdir "$W/data/.ipynb_checkpoints" "$W/data/raw"
(cd "$W/a" && "$B" export --model-dir . --out ckpt-000009.weights.h5 > /dev/null 2> "$W/bare.err")
[ $? -ne 0 ] && [ ! -e "$W/a/ckpt-000009.weights.h5" ] && grep -q "would overwrite a file of the run" "$W/bare.err" &&
  ok "export refuses a checkpoint name in the model directory given as a bare file name" ||
  { bad "export with a bare checkpoint name"; cat "$W/bare.err"; }
expect_error "weights of another model" train --data-dir "$W/data" --model-dir "$W/n1/n2/n3" --model resnet50 \
  --weights "$W/out/a.h5" "${COMMON[@]}"
[ ! -e "$W/n1" ] && ok "a refused start removed the model directory's parents it had made" || bad "left $W/n1 behind"
if "$B" predict --model-dir "$W/a" "$W/data/val" --csv "$W/new/deeper/p.csv" --device cpu > "$W/pnew.log" 2>&1 &&
   [ -s "$W/new/deeper/p.csv" ] && grep -q "^model: .*ckpt-" "$W/pnew.log" &&
   grep -qF -- "--csv: created the folder '$W/new/deeper'" "$W/pnew.log"; then
  ok "predict --csv into a folder that did not exist, saying it created it; the checkpoint used is named"
else bad "predict --csv into a new folder"; cat "$W/pnew.log"; fi
expect_error "a model dir inside the data" train --data-dir "$W/data" --model-dir "$W/data/train/$(ls "$W/data/train" | head -1)/run" "${COMMON[@]}"
expect_error "export from a model dir without checkpoints" export --model-dir "$W/data" --out "$W/nx/ny/a.h5"
[ ! -e "$W/nx" ] && ok "a failed export removed the folders it had made for --out" || bad "left $W/nx behind"
# A missing frozen file: the checkpoints that need it are named; --best refuses, the latest
# loadable one is used with a warning.
cp -r "$W/a" "$W/a2" && rm "$W/a2"/frozen-*.weights.h5
"$B" eval --model-dir "$W/a2" --data-dir "$W/data" --best --device cpu > /dev/null 2> "$W/best.err" &&
  bad "--best chose past an unloadable checkpoint"
tail -1 "$W/best.err" | grep -q "error: --best: 1 checkpoint(s) of .* cannot be loaded" &&
  ok "--best refuses while a checkpoint cannot be loaded" || { bad "--best message"; cat "$W/best.err"; }
if "$B" eval --model-dir "$W/a2" --data-dir "$W/data" --device cpu > "$W/a2.log" 2> "$W/a2.err" &&
   grep -q "cannot be loaded: .*names frozen file" "$W/a2.err" && grep -q "the latest checkpoint that can be loaded" "$W/a2.err"; then
  ok "eval names the checkpoint it cannot load and the one it used"
else bad "eval with a missing frozen file"; cat "$W/a2.err"; fi
# The newest weights file cut short (a copy interrupted): eval, predict and export pass over
# it to the checkpoint before, naming both, as train's resume does.
cp -r "$W/a" "$W/a3" && newest=$(ls "$W/a3"/ckpt-*.weights.h5 | sort | tail -1) && truncate -s 5000 "$newest"
cut_ok=1
"$B" eval --model-dir "$W/a3" --data-dir "$W/data" --device cpu > /dev/null 2> "$W/a3.eval.err"
"$B" predict --model-dir "$W/a3" "$W/data/val" --device cpu > /dev/null 2> "$W/a3.predict.err"
"$B" export --model-dir "$W/a3" --out "$W/a3.h5" > /dev/null 2> "$W/a3.export.err"
for cmd in eval predict export; do
  grep -q "cannot be loaded: .*is truncated" "$W/a3.$cmd.err" && grep -q "the latest checkpoint that can be loaded" "$W/a3.$cmd.err" ||
    { cut_ok=0; bad "$cmd with the newest weights cut short"; cat "$W/a3.$cmd.err"; }
done
[ $cut_ok = 1 ] && [ -s "$W/a3.h5" ] && ok "eval, predict and export pass over a weights file cut short, naming it"
rm -rf "$W/a2" "$W/a3"

# 7. A diverging loss stops with a clear message and keeps the last good checkpoint.
"$B" train --data-dir "$W/data" --model-dir "$W/n" "${COMMON[@]}" --phase2-lr 10 --phase2-epochs 3 > "$W/n.log" 2> "$W/n.err"
rc=$?
if [ $rc -ne 0 ] && grep -q "the loss became" "$W/n.err" && grep -q "last good checkpoint is kept" "$W/n.err" &&
   "$B" _digest --model-dir "$W/n" > /dev/null 2>&1; then
  ok "non-finite loss: $(cat "$W/n.err")"
else
  bad "non-finite loss (rc $rc)"; cat "$W/n.log" "$W/n.err"
fi

# 8. SIGKILL at random moments of a run (checkpoints every step), then resume: every
# checkpoint file left opens, a stale *.tmp is removed by the next run (one is planted to be
# sure), and the final weights equal the uninterrupted run's bit for bit.
for trial in 1 2 3; do
  K="$W/k$trial"
  delay_ms=$(( run_ms * (10 + RANDOM % 80) / 100 ))
  "$B" train --data-dir "$W/data" --model-dir "$K" "${COMMON[@]}" --checkpoint-every 1 > "$W/k$trial.log" 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  kill -9 $pid 2> /dev/null && killed=killed || killed="had finished"
  wait $pid 2> /dev/null
  state="$(ls "$K" 2> /dev/null | grep -c 'state.h5$') checkpoint(s), $(ls "$K" 2> /dev/null | grep -c '\.tmp$') tmp"
  if [ -d "$K" ] && ! "$B" _check-dir --model-dir "$K" --image-size 32 > "$W/k$trial.check" 2>&1; then
    bad "kill $trial after ${delay_ms} ms: a checkpoint file does not open"; cat "$W/k$trial.check"; continue
  fi
  mkdir -p "$K" && printf 'half-written' > "$K/ckpt-000099.state.h5.tmp"
  "$B" train --data-dir "$W/data" --model-dir "$K" "${COMMON[@]}" --checkpoint-every 1 > "$W/k$trial.r.log" 2>&1
  rc=$?
  dk=$("$B" _digest --model-dir "$K" 2>&1)
  if [ $rc -eq 0 ] && grep -q "removed .* stale temporary file(s) left by an interrupted run: .*ckpt-000099.state.h5.tmp" "$W/k$trial.r.log" &&
     [ -z "$(ls "$K" | grep '\.tmp$')" ] && [ "$dk" = "$da" ] && [ "$(cut -d, -f1 "$K/metrics.csv" | tr '\n' ' ')" = "epoch 1 2 " ]; then
    ok "SIGKILL after ${delay_ms} ms ($killed; left $state; $(grep -o 'resuming from [^:]*: [^,]*' "$W/k$trial.r.log" || echo 'no checkpoint yet: started over')): resumed to the same weights"
  else
    bad "kill $trial after ${delay_ms} ms ($killed, $state): rc $rc, '$dk' vs '$da'"; cat "$W/k$trial.r.log"
  fi
done

# 8a. Ctrl-C (SIGINT) stops after the step in progress, or at the epoch's checkpoint when it
# comes during the epoch's end, with a checkpoint there (exit 130); the same command resumes
# from that checkpoint to the uninterrupted run's weights and metrics rows. While the run
# holds its model directory, a second run there is refused, naming the first's process.
# (A script's `cmd &` starts with SIGINT ignored: the first run gets the default back
# through exec from Python, as an interactive shell's job would have it.)
LONG=(--image-size 32 --phase1-epochs 1 --phase2-epochs 5 --batch 4 --seed 7 --device cpu)
wait_for() { for _ in $(seq 600); do grep -q "$1" "$2" && return; sleep 0.05; done; }
t_long=$(date +%s%N)
"$B" train --data-dir "$W/data" --model-dir "$W/ilong" "${LONG[@]}" > "$W/ilong.log" 2>&1
long_ms=$(( ($(date +%s%N) - t_long) / 1000000 ))
d_long=$("$B" _digest --model-dir "$W/ilong" 2>&1)  # the weights every run of LONG must end with
# Every new host block filled with NaN bytes (KILN_POISON=1): a kernel, the loader or the
# checkpoint writer reading memory nobody wrote would leave NaN or other weights.
KILN_POISON=1 "$B" train --data-dir "$W/data" --model-dir "$W/p" "${LONG[@]}" > "$W/p.log" 2>&1
if [ "$("$B" _digest --model-dir "$W/p" 2>&1)" = "$d_long" ]; then
  ok "with every new host block poisoned with NaN bytes, both phases train to the same weights"
else
  bad "KILN_POISON=1 changed the run"; tail -3 "$W/p.log"
fi
rm -rf "$W/p"
/usr/bin/python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$B" train --data-dir "$W/data" --model-dir "$W/i" "${LONG[@]}" > "$W/i1.log" 2>&1 &
pid=$!
wait_for "^epoch 1/5 (phase 2" "$W/i1.log"
kill -STOP $pid  # held mid-run, so the second run surely meets it
"$B" train --data-dir "$W/data" --model-dir "$W/i" "${LONG[@]}" > "$W/i2.log" 2>&1
second_rc=$?
kill -INT $pid
kill -CONT $pid
wait $pid
first_rc=$?
stopped_at=$(grep -o "^stopped by Ctrl-C after step [0-9]* (checkpoint [^)]*)" "$W/i1.log" | sed 's/.*(checkpoint \(.*\))/\1/')
"$B" train --data-dir "$W/data" --model-dir "$W/i" "${LONG[@]}" > "$W/i3.log" 2>&1
rows() { cut -d, -f1-3 "$1/metrics.csv" | tr '\n' ' '; }
if [ $second_rc -eq 1 ] && grep -q "model directory '$W/i' is in use by another run (process $pid (vgg_finetune))" "$W/i2.log" &&
   [ $first_rc -eq 130 ] && [ -n "$stopped_at" ] && grep -q "^resuming from $stopped_at:" "$W/i3.log" &&
   [ "$("$B" _digest --model-dir "$W/i" 2>&1)" = "$d_long" ] &&
   [ "$(rows "$W/i")" = "$(rows "$W/ilong")" ]; then
  ok "Ctrl-C checkpoints where it stops (${stopped_at##*/}) and exits 130, a second run meanwhile is refused, the resume from there ends as the uninterrupted run"
else
  bad "Ctrl-C: second run rc $second_rc, first rc $first_rc, stopped at '$stopped_at'"; cat "$W/i2.log"; tail -3 "$W/i1.log"; tail -3 "$W/i3.log"
fi
# Started with SIGINT ignored (a script's background job), a run keeps ignoring it; SIGTERM
# stops it the same way.
"$B" train --data-dir "$W/data" --model-dir "$W/j" "${LONG[@]}" > "$W/j.log" 2>&1 &
pid=$!
wait_for "^epoch 1/1 (phase 1" "$W/j.log"
kill -INT $pid
sleep 0.5
kill -0 $pid 2> /dev/null && alive=1 || alive=0
kill -TERM $pid
wait $pid
term_rc=$?
if [ $alive = 1 ] && [ $term_rc -eq 130 ] && grep -q "^stopped by SIGTERM after step [0-9]* (checkpoint .*state.h5)" "$W/j.log"; then
  ok "an ignored SIGINT stays ignored; SIGTERM checkpoints and exits 130"
else
  bad "SIGINT ignored / SIGTERM: alive after INT $alive, rc $term_rc"; tail -3 "$W/j.log"
fi
# SIGTERM at random moments of the two-phase run (start-up, phase 1, the phase change while
# its checkpoint is written in the background, phase 2): before training starts it ends the
# process (143, nothing to keep); after, the run stops after its step with a checkpoint (130).
# Either way the same command then ends with the uninterrupted run's weights. A failing
# trial's logs are kept in the test's output. (These trials found a handler that ran inside
# oneDNN's GEMM corrupting the heap about once in three CI runs: kernels/cpu/onednn.h.)
for trial in 1 2 3; do
  delay_ms=$(( long_ms * (3 + RANDOM % 67) / 100 ))  # the first run's time has the cold start in it
  rm -rf "$W/t"
  "$B" train --data-dir "$W/data" --model-dir "$W/t" "${LONG[@]}" > "$W/t1.log" 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  kill -TERM $pid 2> /dev/null
  wait $pid
  rc=$?
  "$B" train --data-dir "$W/data" --model-dir "$W/t" "${LONG[@]}" > "$W/t2.log" 2>&1
  rc2=$?
  case $rc in
    130) said=$(grep -o "^stopped by SIGTERM after step [0-9]*" "$W/t1.log") ;;
    143) said="ended before training started" ;;
    0) said=$(grep -q "^final validation" "$W/t1.log" && echo "had finished") ;;
    *) said="" ;;
  esac
  if [ -n "$said" ] && [ $rc2 -eq 0 ] &&
     [ "$("$B" _digest --model-dir "$W/t" 2>&1)" = "$d_long" ]; then
    ok "SIGTERM after ${delay_ms} ms of ${long_ms}: ${said}, rc $rc; the same command ends as the uninterrupted run"
  else
    bad "SIGTERM after ${delay_ms} ms: rc $rc, resume rc $rc2"; cat "$W/t1.log"; tail -5 "$W/t2.log"
  fi
done
rm -rf "$W/i" "$W/ilong" "$W/j" "$W/t"

# 8b. Checksums. A float of the newest checkpoint's conv1_2 weights overwritten with 3e38:
# eval refuses in one line naming the file and the tensor; train warns, sets that checkpoint
# aside (kept as *.corrupt), resumes from the previous one -- made a version-1 checkpoint
# without checksums and with one full weights file, as an older kiln wrote it -- and ends with
# the uninterrupted run's weights. A directory whose only checkpoint is corrupt (conv1_2 in
# its phase's frozen file) is refused, not started over.
if /usr/bin/python3 -c "import h5py" 2> /dev/null; then
  cp -r "$W/a" "$W/z"
  mkdir "$W/y" && cp "$W/a/classes.txt" "$W/a/config.txt" "$W/a/"ckpt-000001.* "$W/a/"frozen-* "$W/y/"
  /usr/bin/python3 - "$W/z" "$W/y" << 'EOF'
import h5py, numpy as np, sys
z, y = sys.argv[1], sys.argv[2]
T = "vgg16/conv1_2/weight"
def files_of(d, stem):  # the checkpoint's weights file, and its frozen file (state format 3) if any
    with h5py.File(f"{d}/{stem}.state.h5", "r") as s:
        frozen = s.attrs.get("frozen_file", b"")
        frozen = frozen.decode() if isinstance(frozen, bytes) else str(frozen)
    return [f"{d}/{stem}.weights.h5"] + ([f"{d}/{frozen}"] if frozen else [])
def holder(d, stem):  # whichever of them holds conv1_2
    for p in files_of(d, stem):
        with h5py.File(p, "r") as f:
            if T in f:
                return p
for d, stem in ((z, "ckpt-000002"), (y, "ckpt-000001")):
    with h5py.File(holder(d, stem), "r+") as f:
        f[T][0, 0, 0, 0] = np.float32(3e38)
# ckpt-000001 of z as kiln wrote it before checksums: one full weights file, no versions.
weights, *frozen = files_of(z, "ckpt-000001")
with h5py.File(weights, "r+") as f:
    def copy(name, o):  # returns None: visititems stops at the first other value
        if isinstance(o, h5py.Dataset):
            f.create_dataset(name, data=o[...])
    for p in frozen:
        with h5py.File(p, "r") as g:
            g.visititems(copy)
    f.attrs["kiln_format_version"] = np.int64(1)
    f.visititems(lambda name, o: o.attrs.__delitem__("crc32c") if "crc32c" in o.attrs else None)
with h5py.File(z + "/ckpt-000001.state.h5", "r+") as f:
    for a in ("state_format_version", "frozen_file", "frozen_digest", "weights_digest"):
        if a in f.attrs:
            del f.attrs[a]
EOF
  # eval passes over it to the one before, naming the file and the tensor (as train does).
  if "$B" eval --model-dir "$W/z" --data-dir "$W/data" --device cpu > /dev/null 2> "$W/zeval.err" &&
     grep -q "ckpt-000002.weights.h5' is corrupt: tensor 'vgg16/conv1_2/weight' fails its checksum (stored 0x" "$W/zeval.err" &&
     grep -q "using '.*ckpt-000001.state.h5', the latest checkpoint that can be loaded" "$W/zeval.err"; then
    ok "eval passes over a corrupt checkpoint to the one before, naming the file and the tensor"
  else bad "eval on a corrupt checkpoint"; cat "$W/zeval.err"; fi
  "$B" train --data-dir "$W/data" --model-dir "$W/z" "${COMMON[@]}" > "$W/z.log" 2> "$W/z.err"
  rc=$?
  dz=$("$B" _digest --model-dir "$W/z" 2>&1)
  if [ $rc -eq 0 ] && [ "$(wc -l < "$W/z.err")" = 1 ] &&
     grep -q "^warning: checkpoint '.*ckpt-000002.state.h5' is damaged, not resuming from it: file '.*ckpt-000002.weights.h5' is corrupt: tensor 'vgg16/conv1_2/weight' fails its checksum .*kept as ckpt-000002.state.h5.corrupt, ckpt-000002.weights.h5.corrupt$" "$W/z.err" &&
     grep -q "resuming from .*ckpt-000001.state.h5 (the newest intact checkpoint): 1 epoch(s) done" "$W/z.log" &&
     [ -f "$W/z/ckpt-000002.weights.h5.corrupt" ] && [ "$dz" = "$da" ]; then
    ok "corrupt newest checkpoint: train resumed from the previous (checksum-less, version 1) one: $(cat "$W/z.err")"
  else
    bad "resume past a corrupt checkpoint (rc $rc): '$dz' vs '$da'"; cat "$W/z.log" "$W/z.err"
  fi
  before=$(ls "$W/y" | md5sum)
  expect_error "no intact checkpoint" train --data-dir "$W/data" --model-dir "$W/y" "${COMMON[@]}"
  grep -q "holds 1 checkpoint(s) and none is intact .*tensor 'vgg16/conv1_2/weight'" "$W/err.txt" &&
    [ "$(ls "$W/y" | md5sum)" = "$before" ] && ok "a refused run left the damaged checkpoint as it was" ||
    bad "no intact checkpoint: message or directory"
else
  bad "checksums: /usr/bin/python3 lacks h5py (scripts/setup.sh --tests installs it)"
fi

# 8c. A checkpoint file that cannot be read (its permissions) is not damaged: train stops,
# naming it, and sets nothing aside (it renamed the newest to *.corrupt and retrained an epoch).
# Needs another user than root, who reads any file: run as nobody where that can run the app.
P=$(mktemp -d /tmp/kiln_perm.XXXXXX)
chmod 755 "$P"
cp -r "$W/a" "$P/m" && cp -r "$W/data" "$P/data"
if [ "$(id -u)" = 0 ] && command -v runuser > /dev/null && chown -R nobody "$P" 2> /dev/null &&
   runuser -u nobody -- "$B" --help > /dev/null 2>&1; then
  newest=$(ls "$P/m/"ckpt-*.weights.h5 | tail -1)
  chown root "$newest" && chmod 600 "$newest"
  before=$(ls "$P/m" | md5sum)
  runuser -u nobody -- "$B" train --data-dir "$P/data" --model-dir "$P/m" "${COMMON[@]}" > "$P/log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && grep -q "error: cannot read '$newest': Permission denied; the run's files are left as they are" "$P/log" &&
     [ "$(ls "$P/m" | md5sum)" = "$before" ]; then
    ok "an unreadable checkpoint file stops train, named, with nothing set aside"
  else bad "unreadable checkpoint (rc $rc)"; cat "$P/log"; ls "$P/m"; fi
else
  echo "skip an unreadable checkpoint file: needs root to run the app as 'nobody' (runuser), which this machine cannot"
fi
rm -rf "$P"

# 8d. Only the run's own temporaries are removed: a user's notes.tmp in the model directory stays.
echo "mine" > "$W/a/notes.tmp"
: > "$W/a/config.txt.tmp4242"
if "$B" train --data-dir "$W/data" --model-dir "$W/a" "${COMMON[@]}" > "$W/tmp.log" 2>&1 &&
   grep -q "removed 1 stale temporary file(s) left by an interrupted run: config.txt.tmp4242" "$W/tmp.log" &&
   [ "$(cat "$W/a/notes.tmp")" = mine ] && [ ! -e "$W/a/config.txt.tmp4242" ]; then
  ok "a run removes its own temporaries and leaves the user's *.tmp files"
else bad "temporaries"; cat "$W/tmp.log"; ls "$W/a"; fi
rm -f "$W/a/notes.tmp"

# 9. TensorBoard: the run's event files read back with the real tensorboard package.
if /usr/bin/python3 -c "import tensorboard, PIL" 2> /dev/null; then
  for run in a m; do
    /usr/bin/python3 "$HERE/../reference/read_events.py" "$W/$run/events" "$W/ev_$run.json" 2> "$W/ev_$run.err"
    if /usr/bin/python3 - "$W/ev_$run.json" "$run" << 'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
scal = {}
for r in recs:
    if r["kind"] == "scalar":
        scal.setdefault(r["tag"], []).append(r["step"])
need = ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "learning_rate", "images_per_second"]
missing = [t for t in need if t not in scal]
assert not missing, f"missing scalars {missing}, have {sorted(scal)}"
assert scal["train/loss"] == [2, 4], scal["train/loss"]
# run m evaluated every step too (mid-epoch at steps 1 and 3), run a once per epoch
assert scal["val/accuracy"] == ([1, 2, 3, 4] if sys.argv[2] == "m" else [2, 4]), scal["val/accuracy"]
imgs = [r for r in recs if r["kind"] == "image" and r["tag"] == "val/confusion_matrix"]
assert imgs and imgs[-1]["format"] == "PNG" and imgs[-1]["width"] == 32 and imgs[-1]["height"] == 32, imgs
EOF
    then
      ok "tensorboard reads run $run: loss, accuracy, learning_rate, images_per_second scalars and the confusion-matrix image"
    else
      bad "tensorboard read-back of run $run"; cat "$W/ev_$run.err"
    fi
  done
else
  bad "tensorboard read-back: /usr/bin/python3 lacks tensorboard or PIL (scripts/setup.sh --tests installs them)"
fi

"$B" --help > /dev/null && for c in train eval predict export demo; do "$B" $c --help | grep -q "^usage: vgg_finetune $c" || bad "$c --help"; done
end_checks "vgg_finetune"
