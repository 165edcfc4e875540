#!/usr/bin/env bash
# kiln_bench end to end, tiny and untimed in spirit (speed is never asserted; --cache warm:
# evicting the last-level cache before each of a small row's thousands of runs took most of
# 15 minutes on a 2-core Sapphire Rapids with a large L3): every CPU
# suite (the op table's too, --suite ops) runs at batch 1 with one repeat, every row's check must pass (kiln_bench exits 1
# otherwise), --compare must find a PyTorch row for every kiln row, and the JSON must hold
# what the chart script reads; a weak peer is flagged and a wrong one refused; bad
# arguments are one-line errors with exit status 2, given before any timing.
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
if "$B" --suite all --batch 1 --repeat 1 --warmup 0 --cache warm --threads 2 --compare --data "$W/jpegs" --json "$W/all.json" \
     > "$W/all.log" 2>&1; then
  ok "kiln_bench --suite all --compare: every check passed"
else
  bad "kiln_bench --suite all --compare (exit $?)"; tail -30 "$W/all.log"
fi

# 2. The JSON: every suite present, every row checked, timed and matched by a peer row.
if "$PY" - "$W/all.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
want = {"vgg16_forward", "conv", "step", "gemm", "pool", "norm", "softmax_ce", "elementwise", "sgd", "copy", "pipeline", "ops"}
# Suites with no PyTorch peer (ops: the op table's cases, checked against the CPU instead).
no_peer = {"ops"}
got = {s["suite"] for s in j["suites"]}
assert want <= got, f"suites missing from the JSON: {sorted(want - got)}"
for s in j["suites"]:
    assert s["rows"], f"{s['suite']}: no rows"
    for r in s["rows"]:
        assert r["check_ok"] and r["median_ms"] > 0, f"{s['suite']}/{r['name']}: {r}"
        # Variant rows ("name@how": kiln's other way of doing the op) have no PyTorch twin.
        assert "@" in r["name"] or s["suite"] in no_peer or r.get("torch_median_ms", 0) > 0, \
            f"{s['suite']}/{r['name']}: no PyTorch time"
sgd = next(s for s in j["suites"] if s["suite"] == "sgd")
assert {"sgd/all", "sgd/all@per_tensor"} <= {r["name"] for r in sgd["rows"]}
# The precision policy's step row, next to PyTorch's autocast over the same backbone
# (skipped by kiln_bench on CPUs without native bf16).
if "avx512_bf16" in open("/proc/cpuinfo").read():
    st = {r["name"]: r for r in next(s for s in j["suites"] if s["suite"] == "step")["rows"]}
    assert st["vgg16/step_fc8@bf16-frozen"].get("torch_median_ms", 0) > 0, sorted(st)
conv = next(s for s in j["suites"] if s["suite"] == "conv")
names = {r["name"] for r in conv["rows"]}
assert len(names) == 52 and {"conv5_3/b1/bwd_filter", "conv5_3/b1/fwd@bf16"} <= names, sorted(names)[:5]
# ops: one row per op-table case, named op/<case>, with the case's FLOPs and bytes.
ops = {r["name"]: r for r in next(s for s in j["suites"] if s["suite"] == "ops")["rows"]}
assert len(ops) >= 40 and all(n.startswith("op/") for n in ops), sorted(ops)[:5]
for n in ("op/conv2d/k3_s1_p1_bias", "op/linear/bias", "op/batch_norm2d/train_2x3x5x4", "op/add/tensor"):
    assert ops[n]["flops"] > 0 and ops[n]["bytes"] > 0, ops[n]
assert ops["op/reshape/infer"]["bytes"] == 0, ops["op/reshape/infer"]  # a view moves no data
# The report says what made it, and its numbers are exact: bytes as integers, no GFLOP/s
# (null, not 0) for rows without FLOPs.
import re
assert re.fullmatch(r"[0-9a-f]{40}|unknown", j["kiln_commit"]), j["kiln_commit"]
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", j["timestamp_utc"]), j["timestamp_utc"]
assert "--suite all" in j["command"] and j["options"]["batch"] == 1, (j["command"], j["options"])
cp = {r["name"]: r for r in next(s for s in j["suites"] if s["suite"] == "copy")["rows"]}
assert cp["copy/1MiB"]["bytes"] == 2097152 and isinstance(cp["copy/1MiB"]["bytes"], int), cp["copy/1MiB"]
assert cp["copy/1MiB"]["gflops"] is None and cp["copy/1MiB"]["fraction_of_peak"] is None, cp["copy/1MiB"]
# The peer's caveat travels with its row (torchvision has no decode cache).
pipe = {r["name"]: r for r in next(s for s in j["suites"] if s["suite"] == "pipeline")["rows"]}
assert "decode cache" in pipe["loader/w1/cached"].get("torch_note", ""), pipe["loader/w1/cached"]
# Every CPU peer but the image pipeline's names its BLAS and measured its GEMM.
for s in j["suites"]:
    if s["suite"] != "pipeline" and s["suite"] not in no_peer:
        p = s["peer"]
        assert p.get("blas") and p.get("sgemm_gflops", 0) > 0 and "weak" in p, f"{s['suite']}: peer {p}"
PYEOF
then ok "JSON: all suites, all rows checked, timed and compared"; else bad "JSON contents"; fi
if grep -q "^loader/w1/cached .*(torch: no decode cache" "$W/all.log"; then ok "the pipeline peer's note is printed"
else bad "the pipeline peer's note is missing"; grep -m2 "^loader/w1/cached " "$W/all.log"; fi
# The OpenBLAS pins of this environment, if any, are removed for the peer only.
if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then
  if grep -q "running the PyTorch peer: env -u OPENBLAS_" "$W/all.log" && grep -q "^peer BLAS: " "$W/all.log"; then
    ok "the peer runs without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE and names its BLAS"
  else bad "peer environment or BLAS line missing"; grep -m3 "PyTorch peer" "$W/all.log"; fi
fi

# 1a. The step suite on ResNet-50 (--model): kiln's rows and torchvision's, matched by name,
# with the head-only step's batch norms frozen on both sides.
if "$B" --suite step --model resnet50 --batch 1 --repeat 1 --warmup 0 --cache warm --threads 2 --compare --json "$W/resnet.json" \
     > "$W/resnet.log" 2>&1 &&
   "$PY" - "$W/resnet.json" <<'PYEOF'
import json, sys
st = {r["name"]: r for r in json.load(open(sys.argv[1]))["rows"]}  # one suite: its rows at the top
for n in ("resnet50/forward", "resnet50/step_fc", "resnet50/step_all"):
    assert st[n]["check_ok"] and st[n]["torch_median_ms"] > 0 and st[n]["flops"] > 7e9, (n, st.get(n))
PYEOF
then ok "kiln_bench --suite step --model resnet50 --compare: rows checked and matched by PyTorch's"
else bad "step suite on resnet50"; tail -20 "$W/resnet.log"; fi

# 1b. A weak peer (torch on the reference BLAS, ~30x under the sgemm limit) is flagged on
# every compared row; a peer whose GEMM computes wrong products is refused. The copy suite
# keeps these cheap (about 5 s together): the peer checks and probes its GEMM first.
REFBLAS=/usr/lib/x86_64-linux-gnu/blas/libblas.so.3
if [ -e "$REFBLAS" ]; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$(dirname "$REFBLAS")" "$PY" > "$W/py_refblas"
  chmod +x "$W/py_refblas"
  KILN_PYTHON="$W/py_refblas" "$B" --suite copy --repeat 1 --warmup 0 --cache warm --compare --json "$W/weak.json" \
    > "$W/weak.log" 2>&1
  rows=$(grep -c "^copy/.* WEAK PEER$" "$W/weak.log")
  if [ "$rows" = 3 ] && grep -q "WARNING: WEAK PEER in copy" "$W/weak.log" &&
     "$PY" -c "import json,sys; p=json.load(open(sys.argv[1]))['peer']; assert p['weak'] and 'not OpenBLAS' in p['blas'], p" "$W/weak.json"; then
    ok "a peer on the reference BLAS is flagged WEAK PEER on every row"
  else bad "weak peer not flagged ($rows rows marked)"; tail -12 "$W/weak.log"; fi
else
  echo "skip the weak-peer check: no reference BLAS at $REFBLAS"
fi
cat > "$W/bad_gemm.py" <<'PYEOF'
# Runs a peer script with F.linear off by 1%: a BLAS that computes wrong products.
import runpy, sys
import torch.nn.functional as F
_linear = F.linear
F.linear = lambda x, w, b=None: _linear(x, w, b) * 1.01
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
PYEOF
printf '#!/bin/sh\nexec %s %s "$@"\n' "$PY" "$W/bad_gemm.py" > "$W/py_badgemm"
chmod +x "$W/py_badgemm"
KILN_PYTHON="$W/py_badgemm" "$B" --suite copy --repeat 1 --warmup 0 --cache warm --compare --profile 1 \
  --json "$W/refused.json" > "$W/refused.log" 2>&1
if grep -q "WRONG RESULTS from torch's fp32 GEMM" "$W/refused.log" && grep -q "comparison REFUSED" "$W/refused.log" &&
   ! grep -q "^kiln vs pytorch" "$W/refused.log" &&
   "$PY" -c "import json,sys; p=json.load(open(sys.argv[1]))['peer']; assert p['refused'] and not p['ok'], p" "$W/refused.json"; then
  ok "a peer whose GEMM is wrong is refused"
else bad "wrong-GEMM peer not refused"; tail -12 "$W/refused.log"; fi
# The copy suite reads no --batch (not in its JSON) and its rows call the backend directly:
# --profile says so once instead of printing empty tables.
if [ "$(grep -c "no op records to show" "$W/refused.log")" = 1 ] && ! grep -q "profile: 0 calls" "$W/refused.log" &&
   "$PY" -c "import json,sys; o=json.load(open(sys.argv[1]))['options']; assert 'batch' not in o, o" \
     "$W/refused.json"; then
  ok "copy: no batch in the JSON, --profile says once that there are no op records"
else bad "copy's JSON options or its --profile note"; grep -m3 "profile" "$W/refused.log"; fi

# 3. The chart from that JSON (the SVG docs/performance.md embeds).
if "$PY" "$HERE/benchmarks/plot_roofline.py" "$W/all.json" -o "$W/chart.svg" > "$W/plot.log" 2>&1 &&
   grep -q "<svg" "$W/chart.svg"; then
  ok "plot_roofline.py writes an SVG"
else
  bad "plot_roofline.py"; cat "$W/plot.log"
fi

# 4. Bad arguments: one line naming the problem, exit status 2, before any timing (no limits line).
check_bad() {  # expected-text args...
  local want=$1; shift
  "$B" "$@" > "$W/bad.log" 2>&1
  local rc=$?
  if [ $rc -eq 2 ] && grep -q -- "$want" "$W/bad.log" && ! grep -q "^limits:" "$W/bad.log"; then ok "rejects $* ($want)"
  else bad "$* gave exit $rc: $(head -2 "$W/bad.log")"; fi
}
check_bad "unknown suite 'nope'" --suite nope
check_bad "--cache must be cold or warm" --cache tepid
check_bad "only conv sweeps a list" --suite step --batch 1,8
check_bad "suite gemm times its own fixed shapes" --suite gemm --batch 1
check_bad "--repeat expects an integer from 1 to" --repeat 4294967296
check_bad "--threads expects an integer from 1 to" --threads 2147483648
check_bad "--batch expects an integer from 1 to" --suite step --batch 99999999999999999999
check_bad "no row 'vgg16/step_nope' (vgg16: vgg16/forward, vgg16/step_fc8," --suite step --only vgg16/step_nope
check_bad "--json needs a file path" --suite copy --json ''
check_bad "--json $W/nope/x.json: folder $W/nope does not exist" --suite copy --json "$W/nope/x.json"
check_bad "--json $W: is a folder" --suite copy --json "$W"
mkdir -p "$W/user_files" && echo mine > "$W/user_files/notes.txt"
check_bad "was not made by kiln_bench" --suite pipeline --data "$W/user_files"
check_bad "suite ops has no PyTorch peer" --suite ops --compare
KILN_PYTHON="$W/no_such_python" check_bad "interpreter $W/no_such_python not found" --suite copy --compare
KILN_PYTHON=/bin/false check_bad "PyTorch is not importable by /bin/false" --suite copy --compare
check_bad "folder $W/nope does not exist" --suite copy --threads 4096 --json "$W/nope/x.json"
grep -q "warning: --threads 4096 is more than the" "$W/bad.log" && ok "--threads past the CPUs: a warning" ||
  bad "no warning for --threads 4096: $(head -2 "$W/bad.log")"
check_bad "--batch" --batch 0
check_bad "--device must be cpu or cuda" --device gpu
check_bad "unknown model 'nope'" --suite step --model nope
check_bad "use it with --suite step" --suite gemm --model resnet50
# No GPU work either way: a CPU-only kiln refuses cuda, a CUDA one then the suite name.
check_bad "built without CUDA\|unknown suite 'nope'" --device cuda --suite nope

[ $fails -eq 0 ] && echo "all kiln_bench checks passed" || { echo "$fails kiln_bench check(s) FAILED"; exit 1; }
