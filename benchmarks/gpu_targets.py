#!/usr/bin/env python3
"""The GPU issue's target table, from what scripts/gpu_check.sh wrote under its $OUT.

    python3 benchmarks/gpu_targets.py OUT_DIR [--markdown FILE]

Reads the kiln_bench JSON files of the check's `targets` section (each kiln row with its
PyTorch twin, the peer's torch.compile rows beside them), the `legacy` section's reruns of
the same rows through cuDNN's other API (kiln only; the `graph` section's in a check from
before graph became the default, 2026-12-04), and, when present, the `memory` and
`recipe` sections' JSON. Prints one line per target: kiln's best time and how it got it,
PyTorch eager and compiled, the ratio to the faster PyTorch row (> 1: kiln faster), the
target and whether it is met. A missing input prints "not measured" and never a number.
Standard library only (it runs on the GPU machine's python3 and on CI's).
"""
import argparse
import json
import os
import sys

# (label, kiln row, file stem, batch, target text, img/s floor or None, ratio floor)
TARGETS = [
    ("fc8-only step, bf16-frozen, batch 256", "vgg16/step_fc8@bf16-frozen", "targets_b256", 256,
     ">= 10,000 img/s and >= 1.3x", 10000.0, 1.3),
    ("full step, bf16, batch 64", "vgg16/step_all@bf16", "targets_b64", 64, ">= 1.1x", None, 1.1),
    ("forward, strict fp32, batch 64", "vgg16/forward", "targets_strict", 64, ">= 0.9x", None, 0.9),
    ("full step, strict fp32, batch 64", "vgg16/step_all", "targets_strict", 64, ">= 0.9x", None, 0.9),
]
# Rows shown for context (TF32 in convolutions: both frameworks' default), no target.
CONTEXT = [
    ("forward, default (TF32 conv), batch 64", "vgg16/forward", "targets_b64", 64),
    ("fc8-only step, default, batch 64", "vgg16/step_fc8", "targets_b64", 64),
    ("full step, default, batch 64", "vgg16/step_all", "targets_b64", 64),
]


def load(out, stem):
    path = os.path.join(out, stem + ".json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            run = json.load(f)
        run["_file"] = stem  # which section wrote it (api_label)
        return run
    except (OSError, ValueError) as e:
        print(f"gpu_targets.py: cannot read {path}: {e}", file=sys.stderr)
        return None


ANY_BATCH = False  # --any-batch: a dry run at small batches (KILN_CHECK_DEVICE=cpu) fills the table too


def batch_of(report, batch):
    """The batch the file was measured at (a rerun at another --batch must not pass for this row)."""
    got = ((report or {}).get("options") or {}).get("batch")
    if got is not None and got != batch and not ANY_BATCH:
        print(f"gpu_targets.py: a file measured batch {got}, the row needs {batch}: not used", file=sys.stderr)
        return False
    return True


def kiln_ms(report, row):
    """(median ms, torch eager ms, torch compiled ms) of kiln's `row` in one kiln_bench JSON."""
    if not report:
        return None, None, None
    k = t = c = None
    for r in report.get("rows", []):
        if r.get("name") == row:
            k, t = r.get("median_ms"), r.get("torch_median_ms")
    for r in (report.get("peer") or {}).get("rows", []):
        if r.get("name") == row + "+compile":
            c = r.get("median_ms")
    return k, t, c


def api_label(run):
    """Which cuDNN API a kiln_bench JSON ran on: its options say since 2026-12-04; before,
    the check's main sections ran on legacy (then the default) and its `graph` section not."""
    if not run:
        return "-"
    if run.get("options", {}).get("device", "cuda") == "cpu":  # a dry run on the CPU: no cuDNN
        return "CPU"
    api = run.get("options", {}).get("conv_api")
    if api is None:
        api = "graph" if run.get("_file", "").startswith("graph_") else "legacy"
    if api != "graph":
        return "legacy conv API"
    # KILN_CONV_FUSE=0 (the `fuse` section; its JSON says so since session 18).
    return "cuDNN graph API" + ("" if run.get("options", {}).get("conv_fuse", True) else ", conv + bias + ReLU unfused")


def fmt_ms(ms, batch):
    return "not measured" if ms is None else f"{ms:.2f} ms ({batch / (ms * 1e-3):,.0f} img/s)"


def target_line(out, label, row, stem, batch, target, floor, ratio_floor):
    # The `legacy` section's reruns; a check from before 2026-12-04 (legacy the default) has
    # the `graph` section's instead.
    suffix = stem.split("_", 1)[1]
    main_run = load(out, stem)
    other_run = load(out, "legacy_" + suffix) or load(out, "graph_" + suffix)
    unfused_run = load(out, "fuse_" + suffix)  # the `fuse` section: KILN_CONV_FUSE=0
    main_run = main_run if batch_of(main_run, batch) else None
    other_run = other_run if batch_of(other_run, batch) else None
    unfused_run = unfused_run if batch_of(unfused_run, batch) else None
    _, torch_eager, torch_compiled = kiln_ms(main_run, row)
    if ANY_BATCH and main_run:  # a dry run: rates at the batch actually run
        batch = main_run.get("options", {}).get("batch", batch)
    # kiln's best configuration of its own switches: KILN_CONV_API, KILN_CONV_FUSE, and the
    # step recorded as a CUDA graph where the suite has that row ("+graph").
    options = []
    for run in (main_run, other_run, unfused_run):
        api = api_label(run)
        for name, how in ((row, api), (row + "+graph", api + ", CUDA graph")):
            ms = kiln_ms(run, name)[0]
            if ms:
                options.append((ms, how))
    best = min(options) if options else (None, "-")
    peers = [ms for ms in (torch_eager, torch_compiled) if ms]
    ratio = min(peers) / best[0] if best[0] and peers else None
    met = "not measured"
    if ratio is not None:
        ok = ratio >= ratio_floor and (floor is None or batch / (best[0] * 1e-3) >= floor)
        met = "MET" if ok else "missed"
    return (f"| {label} | {fmt_ms(best[0], batch)} via {best[1]} | {fmt_ms(torch_eager, batch)} | "
            f"{fmt_ms(torch_compiled, batch)} | {'-' if ratio is None else f'{ratio:.2f}x'} | {target} | {met} |")


def memory_line(out):
    m = load(out, "memory")
    if not m:
        return "| peak GPU memory, fc8-only step (NVML, outside) | not measured | | | | <= PyTorch's | not measured |"
    k, t = m.get("kiln_peak_mib"), m.get("torch_peak_mib")
    met = "MET" if k is not None and t is not None and k <= t else ("missed" if k and t else "not measured")
    kt = "not measured" if k is None else f"{k:.0f} MiB"
    tt = "not measured" if t is None else f"{t:.0f} MiB"
    ratio = f"{t / k:.2f}x" if k and t else "-"
    return f"| peak GPU memory, fc8-only step (NVML, outside) | {kt} | {tt} | | {ratio} | <= PyTorch's | {met} |"


def recipe_line(out):
    r = load(out, "recipe")
    if not r:
        return "| seed recipe end to end (3 seeds) | not measured | | | | >= 3x | not measured |"
    k, t = r.get("kiln_wall_s"), r.get("torch_wall_s")
    ka, ta = r.get("kiln_accuracy", ""), r.get("torch_accuracy", "")
    ratio = t / k if k and t else None
    met = "not measured" if ratio is None else ("MET" if ratio >= 3.0 else "missed")
    head = {"probe": ", fc8 from the probe", "random": ", fc8 from random"}.get(r.get("head_init"), "")
    return (f"| seed recipe end to end ({r.get('seeds', '?')} seeds{head}) | {k} s, val {ka} | {t} s, val {ta} | | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | >= 3x | {met} |")


def determinism_lines(out):
    """What KILN_DETERMINISTIC=1 costs: the `determinism` section's steps, both under heuristic
    search, kiln only (the evidence for the default, docs/gpu.md)."""
    off, on = load(out, "determinism_off"), load(out, "determinism_on")
    lines = ["| KILN_DETERMINISTIC (batch 64, heuristic search) | default | deterministic | | cost | | |",
             "|---|---|---|---|---:|---|---|"]
    for label, row in (("fc8-only step", "vgg16/step_fc8"), ("full step", "vgg16/step_all")):
        a, b = kiln_ms(off, row)[0], kiln_ms(on, row)[0]
        batch = ((off or on or {}).get("options") or {}).get("batch", 64)
        cost = f"{(b / a - 1) * 100:+.1f}%" if a and b else "-"
        lines.append(f"| {label} | {fmt_ms(a, batch)} | {fmt_ms(b, batch)} | | {cost} | | |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the check's output folder ($OUT)")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--any-batch", action="store_true", help="accept files measured at other batches (dry runs)")
    ap.add_argument("--determinism", action="store_true", help="print only what KILN_DETERMINISTIC=1 costs")
    args = ap.parse_args()
    global ANY_BATCH
    ANY_BATCH = args.any_batch
    if args.determinism:
        print("\n".join(determinism_lines(args.out)[2:]))
        return
    lines = ["| target row | kiln (best of its switches) | PyTorch eager | PyTorch torch.compile | "
             "ratio to faster PyTorch | target | |",
             "|---|---|---|---|---:|---|---|"]
    lines += [target_line(args.out, *t) for t in TARGETS]
    lines += [recipe_line(args.out), memory_line(args.out)]
    lines += ["", "| context row | kiln | PyTorch eager | | ratio | | |", "|---|---|---|---|---:|---|---|"]
    for label, row, stem, batch in CONTEXT:
        run = load(args.out, stem)
        k, t, _ = kiln_ms(run if batch_of(run, batch) else None, row)
        if ANY_BATCH and run:
            batch = run.get("options", {}).get("batch", batch)
        ratio = f"{t / k:.2f}x" if k and t else "-"
        lines.append(f"| {label} | {fmt_ms(k, batch)} | {fmt_ms(t, batch)} | | {ratio} | | |")
    if load(args.out, "determinism_off") or load(args.out, "determinism_on"):
        lines += [""] + determinism_lines(args.out)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
