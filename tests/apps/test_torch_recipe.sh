#!/usr/bin/env bash
# The PyTorch twin of the seed recipe (benchmarks/torch_recipe.py) and the GPU memory meter
# (benchmarks/gpu_peak_memory.py), so that neither rots before a GPU run uses them. On the
# CPU, on tiny data vgg_finetune writes (2 classes, 4 + 2 images per class, 64 px PNGs):
#   - the twin trains 1 + 1 epochs at 32 px in fp32 (then 2 + 0 in bf16-frozen with
#     channels_last and checkpoints) and ends with its final line; its JSON is sane (2 epochs, accuracies in
#     [0, 1], the classes, the wall from process start);
#   - with --head-init probe, fc8 starts from the linear probe (its line, an evaluation after it);
#   - a data folder without val/ is refused with a message naming it;
#   - torch_fc8_step.py runs its fc8-only step (batch 2, 64 px);
#   - gpu_peak_memory.py: without NVML says "skipped: no NVML" and exits 77 (with NVML it
#     measures a short child instead); --allow-missing passes the child's exit status; its
#     sampling loop, fed a fake NVML, finds the child by pid, falls back when no pid matches,
#     and reads NVML's process entries in both layouts drivers fill (24 and 32 bytes).
# Python: $KILN_TORCH_PYTHON, else /usr/bin/python3; Skipped (77) where it lacks torch or
# torchvision. ~15 s on 2 cores.
# Usage: test_torch_recipe.sh PATH/TO/vgg_finetune
set -u
B=${1:?usage: test_torch_recipe.sh PATH/TO/vgg_finetune}
PY=${KILN_TORCH_PYTHON:-/usr/bin/python3}
BENCH="$(cd "$(dirname "$0")/../../benchmarks" && pwd)"
if ! "$PY" -c "import torch, torchvision" 2> /dev/null; then
  echo "skipped: $PY cannot import torch and torchvision (set KILN_TORCH_PYTHON)"
  exit 77
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
. "$(dirname "$0")/../support/checks.sh"
begin_checks test_torch_recipe

"$B" _toy-data "$W/data" --classes 2 --train 4 --val 2 --size 64 || { echo "FAIL toy data"; exit 1; }
TINY=(--data "$W/data" --device cpu --image-size 32 --epochs1 1 --epochs2 1 --batch 4 --threads 2)

# 1. fp32, 2 workers: the final line and the JSON.
"$PY" "$BENCH/torch_recipe.py" "${TINY[@]}" --workers 2 --json "$W/r.json" > "$W/r.log" 2>&1
rc=$?
if [ $rc -eq 0 ] &&
   tail -1 "$W/r.log" | grep -Eq "^torch_recipe: val accuracy [0-9.]+% after training; wall [0-9.]+ s from process start$" &&
   grep -q "^epoch 1/1 (phase 2: all layers)  train loss [0-9]" "$W/r.log" &&
   "$PY" - "$W/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["classes"] == ["c0", "c1"] and r["train_images"] == 8 and r["val_images"] == 4, r
assert [(e["phase"], e["epoch"]) for e in r["epochs"]] == [(1, 1), (2, 1)], r["epochs"]
assert all(0 <= e["val_acc"] <= 1 and 0 <= e["train_acc"] <= 1 and e["train_loss"] > 0 for e in r["epochs"])
assert r["final_val_acc"] == r["epochs"][-1]["val_acc"] and 0 < r["final_val_loss"] < 50, r
assert 0 < r["wall_s"] < 300 and r["wall_measured_by"].startswith("/proc"), r
PY
then ok "fp32 twin: final line, JSON ($(tail -1 "$W/r.log"))"
else bad "fp32 twin (rc $rc)"; cat "$W/r.log"; fi

# 2. bf16-frozen (phase 1 alone: phase 2 freezes nothing, so it is fp32 as in 1), channels_last,
# no workers, checkpoints every epoch, --start-time.
"$PY" "$BENCH/torch_recipe.py" "${TINY[@]}" --epochs1 2 --epochs2 0 --workers 0 --precision bf16-frozen --channels-last \
  --checkpoint-dir "$W/ck" --eval-at-phase-start --start-time "$(date +%s.%N)" --json "$W/b.json" > "$W/b.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && tail -1 "$W/b.log" | grep -q "^torch_recipe: val accuracy" &&
   [ "$(grep -c "before: val loss" "$W/b.log")" = 1 ] && grep -q "^epoch 2/2 (phase 1: fc8 only)" "$W/b.log" &&
   [ -f "$W/ck/frozen-phase1.pt" ] && [ -f "$W/ck/ckpt-000001.pt" ] && [ -f "$W/ck/ckpt-000002.pt" ] &&
   [ -z "$(find "$W/ck" -name '*.tmp*')" ] &&
   grep -q '"wall_measured_by": "--start-time' "$W/b.json"; then
  ok "bf16-frozen twin with channels_last, checkpoints and --start-time"
else bad "bf16-frozen twin (rc $rc)"; cat "$W/b.log"; ls "$W/ck"; fi

# 2b. fc8 from the linear probe (kiln's --head-init probe, dropout off), evaluated before and after it.
"$PY" "$BENCH/torch_recipe.py" "${TINY[@]}" --epochs2 0 --workers 0 --head-init probe --keep-prob 1.0 \
  --eval-at-phase-start > "$W/p.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -Eq "^  phase 1: fc8 from a linear probe on 8 x [0-9]+ features: ridge [0-9.e-]+ x [0-9]+, held-out accuracy [0-9.]+%" "$W/p.log" &&
   grep -q "^  phase 1, after the linear probe: val loss" "$W/p.log" && tail -1 "$W/p.log" | grep -q "^torch_recipe: val accuracy"
then ok "probe twin: $(grep 'linear probe on' "$W/p.log" | sed 's/^ *//')"
else bad "probe twin (rc $rc)"; cat "$W/p.log"; fi

# 3. A data folder without val/.
mkdir -p "$W/noval/train/a"
"$PY" "$BENCH/torch_recipe.py" --data "$W/noval" --device cpu > "$W/n.log" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q "must hold val/" "$W/n.log"; then ok "refuses a data folder without val/"
else bad "no val/ (rc $rc)"; cat "$W/n.log"; fi

# 4. The fc8-only step alone.
"$PY" "$BENCH/torch_fc8_step.py" --device cpu --batch 2 --steps 1 --warmup 1 --image-size 64 > "$W/s.log" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -Eq "^torch_fc8_step: vgg16/step_fc8@bf16-frozen, batch 2, 1 steps, [0-9.]+ img/s, loss [0-9.]+" "$W/s.log"
then ok "torch_fc8_step.py: $(cat "$W/s.log")"
else bad "torch_fc8_step.py (rc $rc)"; cat "$W/s.log"; fi

# 5. gpu_peak_memory.py: skipped here (77), or a measurement where NVML exists.
"$PY" "$BENCH/gpu_peak_memory.py" --json "$W/g.json" -- sleep 0.1 > "$W/g.log" 2>&1
rc=$?
if [ $rc -eq 77 ] && grep -q "^gpu_peak_memory: skipped: no NVML" "$W/g.log" && [ ! -f "$W/g.json" ]; then
  ok "gpu_peak_memory.py without NVML: skipped, exit 77"
elif [ $rc -eq 0 ] && grep -q '"samples"' "$W/g.json"; then
  ok "gpu_peak_memory.py with NVML: $(cat "$W/g.log")"
else bad "gpu_peak_memory.py (rc $rc)"; cat "$W/g.log"; fi
"$PY" "$BENCH/gpu_peak_memory.py" --allow-missing -- sh -c 'exit 3' > "$W/g2.log" 2>&1
rc=$?
if [ $rc -eq 3 ]; then ok "gpu_peak_memory.py passes the child's exit status"
else bad "gpu_peak_memory.py --allow-missing (rc $rc, expected 3)"; cat "$W/g2.log"; fi
if "$PY" - "$BENCH" > "$W/f.log" 2>&1 <<'PY'
import os, sys
sys.path.insert(0, sys.argv[1])
import gpu_peak_memory as g
MIB = 1 << 20
class Fake:  # the child holds 300 MiB, then 500; another process 100 MiB throughout
    def __init__(self, see_child):
        self.see_child, self.n = see_child, 0
    def used(self):
        return (1000 + 100 + (500 if self.n > 3 else 300)) * MIB
    def processes(self):
        self.n += 1
        procs = {1: 100 * MIB} if self.see_child else {}
        pid = max(g.descendants(os.getpid()) - {os.getpid()}, default=None)
        if pid is not None:  # the sleeping child, by pid (or a pid NVML cannot map)
            procs[pid if self.see_child else 999999] = (500 if self.n > 3 else 300) * MIB
        return procs
r = g.measure(Fake(True), ["sleep", "0.2"], 0.005)
assert r["rc"] == 0 and r["peak_source"] == "child_pid" and r["peak_mib"] == 500, r
assert r["samples"] >= 5 and r["device_used_peak_mib"] == 1600, r
r = g.measure(Fake(False), ["sleep", "0.2"], 0.005)
assert r["peak_source"] == "all_processes" and r["peak_mib"] == 500 and r["child_peak_mib"] is None, r
# Nvml.processes reads both entry layouts (24 and 32 bytes), by what the driver wrote.
import ctypes, struct
for stride in (24, 32):
    def fill(handle, count_ref, buf, stride=stride):
        entries = [(11, 300 * MIB), (12, 0xFFFFFFFFFFFFFFFF)]
        data = b"".join(struct.pack("<I4xQII", pid, used, 0, 0xFFFFFFFF) + b"\0" * (stride - 24)
                        for pid, used in entries)
        ctypes.memmove(buf, data, len(data))
        count_ref._obj.value = len(entries)
        return 0
    n = g.Nvml.__new__(g.Nvml)
    n.handle, n.procs_fn, n.capacity, n.stride = None, fill, 4, None
    assert n.processes() == {11: 300 * MIB, 12: None} and n.stride == stride, (stride, n.stride)
print("ok", r["samples"], "samples")
PY
then ok "gpu_peak_memory.py's sampling on a fake NVML: by pid, and without a pid match ($(cat "$W/f.log"))"
else bad "gpu_peak_memory.py's sampling"; cat "$W/f.log"; fi

end_checks "torch_recipe / gpu_peak_memory"
