#!/usr/bin/env bash
# Two rows of the GPU comparison (docs/torch_recipe.md), for scripts/gpu_check.sh on a machine
# with one CUDA GPU, PyTorch and torchvision; run from anywhere (paths are from the repo root):
#   ROWS=a  the seed recipe end to end on the data of a `vgg_finetune demo --full` already
#           run (DEMO_DATA: gpu_check's demo section writes it), per seed: `vgg_finetune train`
#           (224 px, 10 + 10 epochs, augmentation; HEAD_INIT=probe, the default: fc8 starts as
#           the linear probe and dropout is off, as `demo --full` runs it from random weights,
#           so that both accuracies mean something; HEAD_INIT=random: train's defaults, fc8 from
#           random with dropout, near chance from random weights), then
#           benchmarks/torch_recipe.py with the same seed and recipe; both timed by
#           this script's clock from just before the process starts to its exit (the last
#           evaluation and checkpoint); then mean, min, max, sd over seeds and the wall ratio.
#           A seed starts only if the mean seconds a seed took so far fit in what is left of
#           BUDGET.
#   ROWS=b  peak GPU memory of the fc8-only step (bf16-frozen, batch 256), each framework
#           alone in its process, both measured from outside by gpu_peak_memory.py (NVML).
# Logs and JSON go to $OUT; data and checkpoints (GBs) to /tmp, removed after each seed.
# Environment: OUT (required), DEMO_DATA (for a), ROWS ("a b"), SEEDS ("1 2 3"), HEAD_INIT (probe), BUDGET (150 s for a), VF
# (vgg_finetune), KB (kiln_bench), PY (a Python with torch), DEV (cuda), TWIN_EXTRA (more
# torch_recipe.py flags), RUN_LIMIT (90 s: timeout of each run), END (the epoch second by which
# every run must be over: gpu_check's deadline; each run's timeout is cut to it).
set -u
: "${OUT:?set OUT to the folder for logs and JSON}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VF=${VF:-$ROOT/build/apps/vgg_finetune/vgg_finetune}; KB=${KB:-$ROOT/build/benchmarks/kiln_bench}
PY=${PY:-python3}; DEV=${DEV:-cuda}; TWIN_EXTRA=${TWIN_EXTRA:-}; ROWS=${ROWS:-a b}; SEEDS=${SEEDS:-1 2 3}
BUDGET=${BUDGET:-150}; RUN_LIMIT=${RUN_LIMIT:-90}; HEAD_INIT=${HEAD_INIT:-probe}
case $HEAD_INIT in
  probe) KILN_HEAD=(--head-init probe --keep-prob 1); TWIN_HEAD=(--head-init probe --keep-prob 1.0) ;;
  random) KILN_HEAD=(); TWIN_HEAD=() ;;
  *) echo "gpu_recipe_rows: HEAD_INIT is probe or random, not '$HEAD_INIT'"; exit 2 ;;
esac
now() { date +%s.%N; }
# The timeout of the next run: RUN_LIMIT, cut to what is left before END.
limit() {
  local l=$RUN_LIMIT r
  if [[ -n ${END:-} ]]; then r=$(( END - $(date +%s) )); (( r < l )) && l=$(( r > 1 ? r : 1 )); fi
  echo "$l"
}
# add_rc RC: a run's status into the script's; 77 (a tool that cannot run here, e.g. no NVML)
# is a skip, and the script exits 77 only when nothing failed.
skipped=0
add_rc() { if (( $1 == 77 )); then skipped=1; else (( rc_all |= $1 )); fi; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
rc_all=0

if [[ " $ROWS " == *" a "* ]]; then
  rm -f "$OUT"/kiln_recipe_s*.log "$OUT"/torch_recipe_s*.json "$OUT/recipe_walls.txt"  # no stale seeds
  t_a=$SECONDS; done_seeds=0
  D=${DEMO_DATA:-}
  [[ -d $D/train && -d $D/val ]] || { echo "(a) needs DEMO_DATA, the data of a demo --full run (gpu_check: SECTIONS=demo,recipe)"; exit 2; }
  for s in $SEEDS; do
    left=$((BUDGET - (SECONDS - t_a)))
    if (( done_seeds > 0 && (SECONDS - t_a) / done_seeds > left )); then
      echo "(a) seed $s not started: $left s left of $BUDGET, a seed took $(( (SECONDS - t_a) / done_seeds )) s"; break
    fi
    W=/tmp/recipe_s$s; rm -rf "$W"
    t0=$(now); timeout -k 10 "$(limit)" "$VF" train --train-dir "$D/train" --val-dir "$D/val" --model-dir "$W/kiln" \
      --device "$DEV" --seed "$s" "${KILN_HEAD[@]}" > "$OUT/kiln_recipe_s$s.log" 2>&1
    rc=$?; wall=$(since "$t0")
    echo "kiln $s $rc $wall" >> "$OUT/recipe_walls.txt"
    echo "(a) kiln  seed $s: rc $rc, wall $wall s; $(grep -E '^final validation' "$OUT/kiln_recipe_s$s.log")"
    echo "(a) kiln  seed $s $(grep -E '^time: ' "$OUT/kiln_recipe_s$s.log")"  # where the wall time went
    # shellcheck disable=SC2086  # TWIN_EXTRA: flags, split on purpose
    timeout -k 10 "$(limit)" "$PY" "$ROOT/benchmarks/torch_recipe.py" --data "$D" --device "$DEV" --seed "$s" \
      --workers 8 --channels-last --checkpoint-dir "$W/torch_ckpt" --start-time "$(now)" "${TWIN_HEAD[@]}" \
      $TWIN_EXTRA --json "$OUT/torch_recipe_s$s.json" > "$OUT/torch_recipe_s$s.log" 2>&1
    trc=$?
    echo "(a) torch seed $s: rc $trc, $(tail -1 "$OUT/torch_recipe_s$s.log")"
    add_rc "$rc"; add_rc "$trc"
    rm -rf "$W"; done_seeds=$((done_seeds + 1))
  done
  "$PY" - "$OUT" "$HEAD_INIT" <<'PY'
import glob, json, re, statistics as st, sys
out, head_init = sys.argv[1], sys.argv[2]
walls, acc = {"kiln": [], "torch": []}, {"kiln": [], "torch": []}
for line in open(f"{out}/recipe_walls.txt"):
    _, seed, rc, wall = line.split()
    if rc == "0":
        walls["kiln"].append(float(wall))
        log = open(f"{out}/kiln_recipe_s{seed}.log").read()
        acc["kiln"] += [float(m) for m in re.findall(r"^final validation: loss [0-9.]+, accuracy ([0-9.]+)%", log, re.M)]
for f in sorted(glob.glob(f"{out}/torch_recipe_s*.json")):
    r = json.load(open(f))
    acc["torch"].append(100 * r["final_val_acc"])
    walls["torch"].append(r["wall_s"])
def spread(v):
    return f"{st.mean(v):.1f} (min {min(v):.1f}, max {max(v):.1f}{f', sd {st.stdev(v):.1f}' if len(v) > 1 else ''})"
for n in ("kiln", "torch"):
    if acc[n] and walls[n]:
        print(f"(a) {n}: {len(acc[n])} seed(s): val accuracy % {spread(acc[n])}; wall s {spread(walls[n])}")
if walls["kiln"] and walls["torch"]:
    print(f"(a) wall ratio torch / kiln (means): {st.mean(walls['torch']) / st.mean(walls['kiln']):.2f}x (target >= 3)")
# For benchmarks/gpu_targets.py: the means, and the accuracies with their spread.
json.dump({"seeds": min(len(walls["kiln"]), len(walls["torch"])), "head_init": head_init,
           "kiln_wall_s": round(st.mean(walls["kiln"]), 1) if walls["kiln"] else None,
           "torch_wall_s": round(st.mean(walls["torch"]), 1) if walls["torch"] else None,
           "kiln_accuracy": spread(acc["kiln"]) + "%" if acc["kiln"] else None,
           "torch_accuracy": spread(acc["torch"]) + "%" if acc["torch"] else None},
          open(f"{out}/recipe.json", "w"))
PY
fi

if [[ " $ROWS " == *" b "* ]]; then
  timeout -k 10 "$(limit)" "$PY" "$ROOT/benchmarks/gpu_peak_memory.py" --json "$OUT/peak_torch_fc8.json" -- \
    "$PY" "$ROOT/benchmarks/torch_fc8_step.py" --only vgg16/step_fc8@bf16-frozen --device "$DEV" --batch 256 --steps 20
  add_rc $?
  timeout -k 10 "$(limit)" "$PY" "$ROOT/benchmarks/gpu_peak_memory.py" --json "$OUT/peak_kiln_fc8.json" -- \
    "$KB" --suite step --device "$DEV" --batch 256 --only vgg16/step_fc8@bf16-frozen
  add_rc $?
  "$PY" - "$OUT" <<'PY'
import json, os, sys
r = {n: json.load(open(f"{sys.argv[1]}/peak_{n}_fc8.json")) for n in ("kiln", "torch")
     if os.path.exists(f"{sys.argv[1]}/peak_{n}_fc8.json")}
if len(r) == 2 and all("peak_mib" in v for v in r.values()):
    k, t = r["kiln"]["peak_mib"], r["torch"]["peak_mib"]
    print(f"(b) fc8-only step peak (NVML, from outside): kiln {k:.0f} MiB ({r['kiln']['peak_source']}), PyTorch "
          f"{t:.0f} MiB ({r['torch']['peak_source']}): kiln {'<=' if k <= t else '>'} PyTorch")
    json.dump({"kiln_peak_mib": k, "torch_peak_mib": t}, open(f"{sys.argv[1]}/memory.json", "w"))
PY
fi
(( rc_all == 0 && skipped )) && exit 77
exit "$rc_all"
