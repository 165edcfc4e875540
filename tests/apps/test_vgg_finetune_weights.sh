#!/usr/bin/env bash
# What users bring as --weights (issue 15): a Keras no-top file (conv layers only, written
# with h5py in Keras's save_weights layout: the full file's fc1/fc2/predictions removed, as
# keras.applications.VGG16(include_top=False) ships), --head avg, --train-from, a file
# shaped as published (fc6 on pool5 at 7x7) at 32 px (pool5 pooled adaptively), and the
# errors where no recipe makes sense. Tiny data, 32 px, 1 epoch of phase 1.
# Usage: test_vgg_finetune_weights.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_vgg_finetune_weights.sh PATH/TO/vgg_finetune}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks vgg_finetune_weights
COMMON=(--image-size 32 --phase1-epochs 1 --phase2-epochs 0 --batch 4 --seed 3 --device cpu)

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 40 > /dev/null || { echo "FAIL toy data"; exit 1; }
"$B" train --data-dir "$W/data" --model-dir "$W/src" "${COMMON[@]}" > "$W/src.log" 2>&1 &&
  "$B" export --model-dir "$W/src" --out "$W/full.h5" --format keras > /dev/null 2>&1 ||
  { echo "FAIL making the source weights"; cat "$W/src.log"; exit 1; }
/usr/bin/python3 - "$W/full.h5" "$W/notop.h5" <<'PY' || { echo "FAIL writing the no-top file with h5py"; exit 1; }
import shutil, sys
import h5py
import numpy as np
src, dst = sys.argv[1], sys.argv[2]
shutil.copy(src, dst)
with h5py.File(dst, "r+") as f:
    names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
    top = [n for n in names if n in ("flatten", "fc1", "fc2", "predictions")]
    assert {"fc1", "fc2", "predictions"} <= set(top), names
    for n in top:
        del f[n]
    f.attrs["layer_names"] = np.array([n.encode() for n in names if n not in top])
PY

# 1. No-top file: conv layers load, fc6 and fc7 are new and train in phase 1 with fc8.
if "$B" train --data-dir "$W/data" --model-dir "$W/a" --weights "$W/notop.h5" "${COMMON[@]}" > "$W/a.log" 2>&1 &&
   grep -q "weights: conv1_1..conv5_3 (13 layers) loaded from .*notop.h5; new (initialised here): fc6, fc7, fc8" "$W/a.log" &&
   grep -q "recipe: phase 1 (fc6..fc8)" "$W/a.log" && grep -q "epoch 1/1 (phase 1: fc6..fc8)" "$W/a.log" &&
   grep -q "26 loaded, 0 skipped, 0 unmapped, 4 missing" "$W/a.log"; then
  ok "a no-top file loads conv1_1..conv5_3 and phase 1 trains fc6..fc8"
else
  bad "no-top file"; cat "$W/a.log"
fi

# 1b. It resumes as it started (the resolved --train-from is in the checkpoint) and the
# trained model evaluates.
"$B" train --data-dir "$W/data" --model-dir "$W/a" --weights "$W/notop.h5" "${COMMON[@]}" --phase1-epochs 2 \
  --allow-changed-config > "$W/a2.log" 2>&1
if grep -q "resuming from" "$W/a2.log" && grep -q "epoch 2/2 (phase 1: fc6..fc8)" "$W/a2.log" &&
   "$B" eval --model-dir "$W/a" --data-dir "$W/data" > "$W/a3.log" 2>&1; then
  ok "a no-top run resumes with the same phase 1 and evaluates"
else
  bad "no-top resume"; cat "$W/a2.log" "$W/a3.log"
fi

# 2. --train-from earlier than needed is a recipe; later than the file allows is an error
#    that names the flag and the layer.
"$B" train --data-dir "$W/data" --model-dir "$W/b" --weights "$W/notop.h5" "${COMMON[@]}" --train-from conv5_3 \
  > "$W/b.log" 2>&1
b_rc=$?
"$B" train --data-dir "$W/data" --model-dir "$W/c" --weights "$W/notop.h5" "${COMMON[@]}" --train-from fc7 \
  > "$W/c.log" 2>&1
c_rc=$?
if [ $b_rc -eq 0 ] && grep -q "recipe: phase 1 (conv5_3..fc8)" "$W/b.log" && [ $c_rc -ne 0 ] &&
   grep -q "error: --train-from fc7 would leave fc6 frozen at its random initialisation: .* use --train-from fc6" "$W/c.log" &&
   ! grep -q "\[apps/\|\[io/\|\[train/" "$W/c.log"; then
  ok "--train-from conv5_3 trains conv5_3..fc8; --train-from fc7 with a no-top file is refused, naming the flag"
else
  bad "--train-from"; cat "$W/b.log" "$W/c.log"
fi

# 3. --head avg with the full file: fc6 and fc7 of the file are not used, fc8 is 512 -> 2.
if "$B" train --data-dir "$W/data" --model-dir "$W/d" --weights "$W/full.h5" "${COMMON[@]}" --head avg > "$W/d.log" 2>&1 &&
   grep -q "new (initialised here): fc8" "$W/d.log" && grep -q "recipe: phase 1 (fc8 only)" "$W/d.log" &&
   "$B" predict --model-dir "$W/d" "$W/data/val" > "$W/d2.log" 2>&1; then
  ok "--head avg trains global pooling + fc8 over the file's conv layers, and predicts"
else
  bad "--head avg"; cat "$W/d.log" "$W/d2.log"
fi

# 3b. A file shaped as published (fc6 takes pool5 at 7x7: 25088 inputs) at --image-size 32:
#     pool5 (1x1 here) is pooled adaptively to 7x7, and fc6 and fc7 load.
/usr/bin/python3 - "$W/full.h5" "$W/published.h5" <<'PY' || bad "writing the published-shaped file with h5py"
import shutil, sys
import h5py
import numpy as np
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    g = f["fc1"]
    name = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]][0]
    assert g[name].shape == (512, 4096), g[name].shape  # Keras kernel (in, out) at 32 px
    del g[name]
    g.create_dataset(name, data=np.random.default_rng(0).normal(0, 0.01, (25088, 4096)).astype(np.float32))
PY
if "$B" train --data-dir "$W/data" --model-dir "$W/p" --weights "$W/published.h5" "${COMMON[@]}" > "$W/p.log" 2>&1 &&
   grep -q "weights: conv1_1..fc7 (15 layers) loaded from .*published.h5; new (initialised here): fc8;" "$W/p.log" &&
   grep -q "fc6: the file's fc6 expects pool5 at 7x7 (224 px); at 32 px pool5 is 1x1, so it is average-pooled adaptively" "$W/p.log" &&
   "$B" predict --model-dir "$W/p" "$W/data/val" > "$W/p2.log" 2>&1; then
  ok "a published-shaped fc6 at --image-size 32: pool5 pooled adaptively to 7x7, fc6 and fc7 load, predict works"
else
  bad "published fc6 at 32 px"; cat "$W/p.log" "$W/p2.log"
fi

# 4. A file with none of the model's layers is an error a user can act on.
/usr/bin/python3 -c "import h5py,sys; f=h5py.File(sys.argv[1],'w'); f.attrs['layer_names']=[b'dense']; g=f.create_group('dense'); g.attrs['weight_names']=[b'dense/kernel:0']; g.create_dataset('dense/kernel:0', data=[[1.0]])" "$W/other.h5"
if ! "$B" train --data-dir "$W/data" --model-dir "$W/e" --weights "$W/other.h5" "${COMMON[@]}" > "$W/e.log" 2>&1 &&
   grep -q "error: .*other.h5" "$W/e.log" && [ "$(wc -l < "$W/e.log")" -le 20 ]; then
  ok "a weights file for another model is refused with its name"
else
  bad "foreign file"; cat "$W/e.log"
fi

end_checks "vgg_finetune weights"
