#!/usr/bin/env bash
# End-to-end test of the vgg_finetune app on CPU with tiny generated data (2 classes, 32 px,
# 1+1 epochs): train, eval, predict, export, resume bit-for-bit, and bad input giving one-line
# errors with a non-zero exit. Usage: test_vgg_finetune.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
W=$(mktemp -d /tmp/vgg_finetune_test.XXXXXX)
trap 'rm -rf "$W"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
COMMON=(--image-size 32 --phase1-epochs 1 --phase2-epochs 1 --batch 4 --seed 7 --device cpu)

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 40 || { echo "FAIL toy data"; exit 1; }
"$B" _toy-data "$W/data3" --classes 3 --train 2 --val 1 --size 40 || { echo "FAIL toy data"; exit 1; }

# 1. Train, uninterrupted.
if "$B" train --data-dir "$W/data" --model-dir "$W/a" "${COMMON[@]}" > "$W/a.log" 2>&1 &&
   grep -q "epoch 1/1 (phase 1: fc8 only)  train loss .* acc .*%  val loss .* acc .*%  .* img/s" "$W/a.log" &&
   grep -q "epoch 1/1 (phase 2: all layers)" "$W/a.log" && grep -q "confusion matrix" "$W/a.log" &&
   grep -q "RANDOMLY INITIALISED" "$W/a.log" &&
   [ -f "$W/a/classes.txt" ] && [ -f "$W/a/config.txt" ] && [ "$(wc -l < "$W/a/metrics.csv")" = 3 ] &&
   ls "$W/a/events/"events.out.tfevents.* > /dev/null 2>&1; then
  ok "train writes epochs, confusion matrix, classes.txt, config.txt, metrics.csv, events"
else
  bad "train"; cat "$W/a.log"
fi

# 2. Stop after epoch 1, resume: the final weights equal the uninterrupted run's bit for bit.
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" --stop-after-epochs 1 > "$W/b1.log" 2>&1
"$B" train --data-dir "$W/data" --model-dir "$W/b" "${COMMON[@]}" > "$W/b2.log" 2>&1
da=$("$B" _digest --model-dir "$W/a" 2>&1); db=$("$B" _digest --model-dir "$W/b" 2>&1)
if grep -q "resuming from" "$W/b2.log" && grep -q "epochs 2" <<< "$da" && [ "$da" = "$db" ]; then
  ok "resume after epoch 1 matches the uninterrupted run ($da)"
else
  bad "resume: '$da' vs '$db'"; cat "$W/b2.log"
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

# 7. A diverging loss stops with a clear message and keeps the last good checkpoint.
"$B" train --data-dir "$W/data" --model-dir "$W/n" "${COMMON[@]}" --phase2-lr 10 --phase2-epochs 3 > "$W/n.log" 2> "$W/n.err"
rc=$?
if [ $rc -ne 0 ] && grep -q "the loss became" "$W/n.err" && grep -q "last good checkpoint is kept" "$W/n.err" &&
   "$B" _digest --model-dir "$W/n" > /dev/null 2>&1; then
  ok "non-finite loss: $(cat "$W/n.err")"
else
  bad "non-finite loss (rc $rc)"; cat "$W/n.log" "$W/n.err"
fi

"$B" --help > /dev/null && for c in train eval predict export demo; do "$B" $c --help | grep -q "^usage: vgg_finetune $c" || bad "$c --help"; done
echo "$fails failure(s)"
[ $fails -eq 0 ]
