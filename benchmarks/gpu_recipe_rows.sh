#!/usr/bin/env bash
# Two rows of the GPU comparison (docs/torch_recipe.md), for scripts/gpu_check.sh on a machine
# with one CUDA GPU, PyTorch and torchvision; run from anywhere (paths are from the repo root):
#   ROWS=a  the seed recipe end to end, per seed: `vgg_finetune demo --full` (it writes its
#           data to W/data, then trains), then benchmarks/torch_recipe.py on that data with
#           the same seed; both walls from process start; then mean, min, max, sd over seeds
#           and the wall ratio. A seed starts only if the mean seconds a seed took so far fit
#           in what is left of BUDGET. DEMO_LOG + DEMO_DATA: a `demo --full` already run (the
#           seed 1 of gpu_check's demo section) stands for kiln's seed 1 (its wall then is the
#           log's "demo done in N s", which starts after flag parsing).
#   ROWS=b  peak GPU memory of the fc8-only step (bf16-frozen, batch 256), each framework
#           alone in its process, both measured from outside by gpu_peak_memory.py (NVML).
# Logs and JSON go to $OUT; data and checkpoints (GBs) to /tmp, removed after each seed.
# Environment: OUT (required), ROWS ("a b"), SEEDS ("1 2 3"), BUDGET (150 s for a), VF
# (vgg_finetune), KB (kiln_bench), PY (a Python with torch), DEV (cuda), TWIN_EXTRA (more
# torch_recipe.py flags), RUN_LIMIT (90 s: timeout of each run).
set -u
: "${OUT:?set OUT to the folder for logs and JSON}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VF=${VF:-$ROOT/build/apps/vgg_finetune/vgg_finetune}; KB=${KB:-$ROOT/build/benchmarks/kiln_bench}
PY=${PY:-python3}; DEV=${DEV:-cuda}; TWIN_EXTRA=${TWIN_EXTRA:-}; ROWS=${ROWS:-a b}; SEEDS=${SEEDS:-1 2 3}
BUDGET=${BUDGET:-150}; RUN_LIMIT=${RUN_LIMIT:-90}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
rc_all=0

if [[ " $ROWS " == *" a "* ]]; then
  rm -f "$OUT"/kiln_recipe_s*.log "$OUT"/torch_recipe_s*.json "$OUT/recipe_walls.txt"  # no stale seeds
  t_a=$SECONDS; done_seeds=0
  for s in $SEEDS; do
    left=$((BUDGET - (SECONDS - t_a)))
    if (( done_seeds > 0 && (SECONDS - t_a) / done_seeds > left )); then
      echo "(a) seed $s not started: $left s left of $BUDGET, a seed took $(( (SECONDS - t_a) / done_seeds )) s"; break
    fi
    W=/tmp/recipe_s$s; rm -rf "$W"
    if [[ $s == 1 && -n ${DEMO_LOG:-} && -n ${DEMO_DATA:-} ]]; then
      cp "$DEMO_LOG" "$OUT/kiln_recipe_s1.log"; data=$DEMO_DATA; rc=0
      wall=$(grep -o 'demo done in [0-9.]* s' "$DEMO_LOG" | grep -o '[0-9.]*' || echo "?")
    else
      t0=$(now); timeout "$RUN_LIMIT" "$VF" demo --full --device "$DEV" --seed "$s" --work-dir "$W" \
        > "$OUT/kiln_recipe_s$s.log" 2>&1
      rc=$?; wall=$(since "$t0"); data=$W/data
    fi
    echo "kiln $s $rc $wall" >> "$OUT/recipe_walls.txt"
    echo "(a) kiln  seed $s: rc $rc, wall $wall s; $(grep -E '^summary' "$OUT/kiln_recipe_s$s.log")"
    # shellcheck disable=SC2086  # TWIN_EXTRA: flags, split on purpose
    timeout "$RUN_LIMIT" "$PY" "$ROOT/benchmarks/torch_recipe.py" --data "$data" --device "$DEV" --seed "$s" \
      --workers 8 --channels-last --eval-at-phase-start --checkpoint-dir "$W/torch_ckpt" --start-time "$(now)" \
      $TWIN_EXTRA --json "$OUT/torch_recipe_s$s.json" > "$OUT/torch_recipe_s$s.log" 2>&1
    trc=$?
    echo "(a) torch seed $s: rc $trc, $(tail -1 "$OUT/torch_recipe_s$s.log")"
    (( rc_all |= rc | trc ))
    rm -rf "$W"; done_seeds=$((done_seeds + 1))
  done
  "$PY" - "$OUT" <<'PY'
import glob, json, re, statistics as st, sys
out = sys.argv[1]
walls, acc = {"kiln": [], "torch": []}, {"kiln": [], "torch": []}
for line in open(f"{out}/recipe_walls.txt"):
    _, seed, rc, wall = line.split()
    if rc == "0":
        walls["kiln"].append(float(wall))
        log = open(f"{out}/kiln_recipe_s{seed}.log").read()
        acc["kiln"] += [float(m) for m in re.findall(r"^summary: val accuracy ([0-9.]+)%", log, re.M)]
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
PY
fi

if [[ " $ROWS " == *" b "* ]]; then
  timeout "$RUN_LIMIT" "$PY" "$ROOT/benchmarks/gpu_peak_memory.py" --json "$OUT/peak_torch_fc8.json" -- \
    "$PY" "$ROOT/benchmarks/torch_fc8_step.py" --only vgg16/step_fc8@bf16-frozen --device "$DEV" --batch 256 --steps 20
  rc=$?; (( rc_all |= rc ))
  timeout "$RUN_LIMIT" "$PY" "$ROOT/benchmarks/gpu_peak_memory.py" --json "$OUT/peak_kiln_fc8.json" -- \
    "$KB" --suite step --device "$DEV" --batch 256 --only vgg16/step_fc8@bf16-frozen
  rc=$?; (( rc_all |= rc ))
  "$PY" - "$OUT" <<'PY'
import json, os, sys
r = {n: json.load(open(f"{sys.argv[1]}/peak_{n}_fc8.json")) for n in ("kiln", "torch")
     if os.path.exists(f"{sys.argv[1]}/peak_{n}_fc8.json")}
if len(r) == 2 and all("peak_mib" in v for v in r.values()):
    k, t = r["kiln"]["peak_mib"], r["torch"]["peak_mib"]
    print(f"(b) fc8-only step peak (NVML, from outside): kiln {k:.0f} MiB ({r['kiln']['peak_source']}), PyTorch "
          f"{t:.0f} MiB ({r['torch']['peak_source']}): kiln {'<=' if k <= t else '>'} PyTorch")
PY
fi
exit "$rc_all"
