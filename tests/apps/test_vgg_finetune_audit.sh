#!/usr/bin/env bash
# End-to-end test of `vgg_finetune audit` and of the same checks at the start of `train`, on
# tiny generated data made dirty on purpose: a truncated PNG, garbage and an empty file named
# .jpg, a .webp, a .gif and a macOS ._ file, a copy within train and copies from train in val
# (one under another class), a class only train has. Checks the report's counts, reasons,
# pairs and skipped.txt, that train trains on the usable images only and writes skipped.txt
# into its model directory, and that data train cannot use is refused by both commands.
# Usage: test_vgg_finetune_audit.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune_audit.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_audit_test

D="$W/data"
"$B" _toy-data "$D" --classes 3 --train 4 --val 2 --size 40 || { echo "FAIL toy data"; exit 1; }
"$B" _toy-data "$W/more" --classes 1 --train 1 --val 1 --size 40 --seed 5 || { echo "FAIL toy data"; exit 1; }
head -c 100 "$D/train/c0/img0.png" > "$D/train/c0/cut.png"
printf 'not an image' > "$D/train/c0/garbage.jpg"
: > "$D/train/c1/empty.jpg"
printf 'RIFF\020\0\0\0WEBPVP8 ' > "$D/train/c1/photo.webp"
printf 'GIF89a' > "$D/val/c0/anim.gif"
printf '\0\5\26\7Mac OS X' > "$D/train/c0/._img1.png"
cp "$D/train/c0/img1.png" "$D/train/c0/img1_copy.png"
cp "$D/train/c1/img2.png" "$D/val/c1/from_train.png"
cp "$D/train/c2/img3.png" "$D/val/c0/wrong_class.png"
mkdir "$D/train/c3" && cp "$W/more/train/c0/img0.png" "$D/train/c3/only.png"

# 1. audit DATA --out FILE: counts, reasons, pairs, the file; exit 0 (warnings only).
"$B" audit "$D" --out "$W/skipped.txt" --workers 2 > "$W/audit.log" 2>&1
rc=$?
if [ $rc -eq 0 ] &&
   grep -q "^  train: 14 images in 4 classes: c0 5, c1 4, c2 4, c3 1 (3 more image files found, not usable)$" "$W/audit.log" &&
   grep -q "^  val: 8 images in 3 of 4 classes: c0 3, c1 3, c2 2, c3 0$" "$W/audit.log" &&
   grep -q "^skipped: 6 files (2 failed to decode, 1 empty, 1 macOS ._ file, 1 unsupported .gif, 1 unsupported .webp) -- see $W/skipped.txt$" "$W/audit.log" &&
   grep -q "^  $D/train/c0/cut.png: failed to decode: truncated PNG" "$W/audit.log" &&
   grep -q "^duplicates: 1 train image is an exact copy of another train image" "$W/audit.log" &&
   grep -q "^  $D/train/c0/img1_copy.png = $D/train/c0/img1.png$" "$W/audit.log" &&
   grep -q "^duplicates: 2 val images are exact copies of train images: val accuracy overstates" "$W/audit.log" &&
   grep -q "^  $D/val/c0/wrong_class.png = $D/train/c2/img3.png  (class 'c0' vs 'c2')$" "$W/audit.log" &&
   grep -q "^warning: val has no image of class 'c3'" "$W/audit.log" &&
   grep -q "^train can use this data (read the warnings above)$" "$W/audit.log"; then
  ok "audit: usable counts, 6 skipped files by reason, 3 duplicate pairs, a train-only class"
else
  bad "audit (rc $rc)"; cat "$W/audit.log"
fi
# 1a. --data-dir, as train spells it, is the same audit.
"$B" audit --data-dir "$D" --workers 2 > "$W/audit_flag.log" 2>&1
rc=$?
norm() { grep -v " in [0-9.]* s\|^wrote " "$1" | sed 's/ -- see .*//'; }  # timings, and what --out added
if [ $rc -eq 0 ] && diff <(norm "$W/audit.log") <(norm "$W/audit_flag.log") > /dev/null; then
  ok "audit --data-dir DIR is audit DIR"
else bad "audit --data-dir"; diff "$W/audit.log" "$W/audit_flag.log" | head; fi
printf '%s\t%s\n' \
  "$D/train/c0/._img1.png" "macOS resource fork (a '._' file, not an image)" \
  "$D/train/c0/garbage.jpg" "failed to decode: not a JPEG, PNG or BMP image (unrecognised first bytes)" \
  "$D/train/c1/empty.jpg" "empty file (0 bytes)" \
  "$D/train/c1/photo.webp" "unsupported format .webp (kiln reads .jpg, .jpeg, .png, .bmp)" \
  "$D/val/c0/anim.gif" "unsupported format .gif (kiln reads .jpg, .jpeg, .png, .bmp)" > "$W/expected.txt"
if [ "$(grep -v '/cut.png	failed to decode: truncated PNG' "$W/skipped.txt")" = "$(cat "$W/expected.txt")" ] &&
   [ "$(wc -l < "$W/skipped.txt")" = 6 ] && [ -f "$D/train/c0/cut.png" ] && [ -f "$D/train/c1/photo.webp" ]; then
  ok "skipped.txt: one 'path<TAB>reason' line per file; nothing moved or deleted"
else
  bad "skipped.txt"; cat "$W/skipped.txt"
fi

# 2. train: the same checks first, trains on the 14 + 8 usable images, skipped.txt in the model dir.
"$B" train --data-dir "$D" --model-dir "$W/m" --image-size 32 --phase1-epochs 1 --phase2-epochs 0 --batch 4 \
  --seed 7 --device cpu > "$W/train.log" 2> "$W/train.err"
rc=$?
if [ $rc -eq 0 ] && grep -q "^  train: 14 images in 4 classes" "$W/train.log" &&
   grep -q "^skipped: 6 files .* -- see $W/m/skipped.txt$" "$W/train.log" &&
   grep -q "final validation: loss .* on 8 images" "$W/train.log" && ! grep -q "cannot" "$W/train.err" &&
   cmp -s "$W/skipped.txt" "$W/m/skipped.txt"; then
  ok "train: audit lines, usable counts, no decode warnings while training, skipped.txt in the model directory"
else
  bad "train on dirty data (rc $rc)"; cat "$W/train.log" "$W/train.err"
fi

# 3. Data train cannot use: a val class train lacks. audit exits 1, train refuses before
# creating its model directory; both in one line on stderr naming the folder.
mkdir "$D/val/c9" && cp "$W/more/val/c0/img0.png" "$D/val/c9/"
for cmd in audit train; do
  if [ $cmd = audit ]; then "$B" audit "$D" > "$W/out.txt" 2> "$W/err.txt"; rc=$?
  else "$B" train --data-dir "$D" --model-dir "$W/r" --image-size 32 --device cpu > "$W/out.txt" 2> "$W/err.txt"; rc=$?; fi
  if [ $rc -eq 1 ] && [ "$(wc -l < "$W/err.txt")" = 1 ] &&
     grep -q "error: .*val has class 'c9' that train has no folder for: .*rename or remove '$D/val/c9'" "$W/err.txt" &&
     grep -q "^error: val has class 'c9'" "$W/out.txt" && [ ! -e "$W/r" ]; then
    ok "$cmd refuses a val class train lacks: $(cat "$W/err.txt")"
  else
    bad "$cmd on a val-only class (rc $rc)"; cat "$W/out.txt" "$W/err.txt"
  fi
done

# 4. Class folders one level too deep (N/train/train/<class>/): named as such, and the folder holding
# all of train's images is not called one to remove.
mkdir -p "$W/nested/train" "$W/nested/val"
cp -r "$W/more/train" "$W/nested/train/" && cp -r "$W/more/val" "$W/nested/val/"
"$B" audit "$W/nested" > "$W/out.txt" 2> "$W/err.txt"
rc=$?
said_nested="^error: class 'train' has no usable image in train ('$W/nested/train/train' holds folders (c0)"
if [ $rc -eq 1 ] && grep -q "$said_nested, not images): class folders nested one level too deep?" "$W/out.txt"; then
  ok "audit names class folders nested one level too deep"
else
  bad "nested class folders"; cat "$W/out.txt" "$W/err.txt"
fi

"$B" audit --help | grep -q "^usage: vgg_finetune audit" || bad "audit --help"
"$B" --help | grep -q "^  audit " || bad "--help lists audit"
end_checks "vgg_finetune audit"
