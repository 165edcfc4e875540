#!/usr/bin/env bash
# kiln_bench end to end, tiny and untimed in spirit (speed is never asserted): every CPU
# suite runs at batch 1 with one repeat, every row's check must pass (kiln_bench exits 1
# otherwise), --compare must find a PyTorch row for every kiln row, and the JSON must hold
# what the chart script reads; bad arguments are one-line errors with exit status 2.
# Usage: test_kiln_bench.sh PATH/TO/kiln_bench
set -u
B=${1:?usage: test_kiln_bench.sh PATH/TO/kiln_bench}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
PY=${KILN_PYTHON:-/usr/bin/python3}
W=$(mktemp -d /tmp/kiln_bench_test.XXXXXX)
trap 'rm -rf "$W"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# 1. Every suite, with its peer, into one JSON file.
if "$B" --suite all --batch 1 --repeat 1 --warmup 0 --threads 2 --compare --data "$W/jpegs" --json "$W/all.json" \
     > "$W/all.log" 2>&1; then
  ok "kiln_bench --suite all --compare: every check passed"
else
  bad "kiln_bench --suite all --compare (exit $?)"; tail -30 "$W/all.log"
fi

# 2. The JSON: every suite present, every row checked, timed and matched by a peer row.
if "$PY" - "$W/all.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
want = {"vgg16_forward", "conv", "step", "gemm", "pool", "norm", "softmax_ce", "elementwise", "sgd", "copy", "pipeline"}
got = {s["suite"] for s in j["suites"]}
assert want <= got, f"suites missing from the JSON: {sorted(want - got)}"
for s in j["suites"]:
    assert s["rows"], f"{s['suite']}: no rows"
    for r in s["rows"]:
        assert r["check_ok"] and r["median_ms"] > 0, f"{s['suite']}/{r['name']}: {r}"
        # Variant rows ("name@how": kiln's other way of doing the op) have no PyTorch twin.
        assert "@" in r["name"] or r.get("torch_median_ms", 0) > 0, f"{s['suite']}/{r['name']}: no PyTorch time"
sgd = next(s for s in j["suites"] if s["suite"] == "sgd")
assert {"sgd/all", "sgd/all@per_tensor"} <= {r["name"] for r in sgd["rows"]}
conv = next(s for s in j["suites"] if s["suite"] == "conv")
names = {r["name"] for r in conv["rows"]}
assert len(names) == 39 and "conv5_3/b1/bwd_filter" in names, sorted(names)[:5]
PYEOF
then ok "JSON: all suites, all rows checked, timed and compared"; else bad "JSON contents"; fi

# 3. The chart from that JSON (the SVG docs/performance.md embeds).
if "$PY" "$HERE/benchmarks/plot_roofline.py" "$W/all.json" -o "$W/chart.svg" > "$W/plot.log" 2>&1 &&
   grep -q "<svg" "$W/chart.svg"; then
  ok "plot_roofline.py writes an SVG"
else
  bad "plot_roofline.py"; cat "$W/plot.log"
fi

# 4. Bad arguments: one line naming the problem, exit status 2.
check_bad() {  # expected-text args...
  local want=$1; shift
  "$B" "$@" > "$W/bad.log" 2>&1
  local rc=$?
  if [ $rc -eq 2 ] && grep -q -- "$want" "$W/bad.log"; then ok "rejects $* ($want)"; else bad "$* gave exit $rc: $(head -2 "$W/bad.log")"; fi
}
check_bad "unknown suite 'nope'" --suite nope
check_bad "--cache must be cold or warm" --cache tepid
check_bad "only conv sweeps a list" --suite gemm --batch 1,8
check_bad "--batch" --batch 0

[ $fails -eq 0 ] && echo "all kiln_bench checks passed" || { echo "$fails kiln_bench check(s) FAILED"; exit 1; }
