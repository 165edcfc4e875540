#!/usr/bin/env python3
"""One VGG16 training step from Python against the same step from C++ (kiln_bench --suite
step), alternating in one run: batch 8 at 224 px, 8 classes, SGD momentum 0.9, softmax
cross-entropy, random inputs; the phase-1 step (conv1_1..fc7 frozen, fc8 trains: the feature
cache off, every step runs the whole forward) and optionally the phase-2 step (every layer).
Each round runs kiln_bench once (its median of --repeat steps) and the same steps from Python
(median of as many); docs/python.md has numbers.

    PYTHONPATH=build/python python3 python/bench/bench_step.py build/benchmarks/kiln_bench --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import kiln

CLASSES = 8


def python_steps(batch, phase, steps, warmup):
    """Times `steps` steps as suite_step.cpp builds them: the model from seed 11 (dropout 12)."""
    spec = kiln.find_model_spec("vgg16")
    model = kiln.build_model("vgg16", num_classes=CLASSES, seed=11)
    model.train()
    if phase == 1:
        for scope in spec.backbone_scopes:
            model.freeze(scope)
    sgd = kiln.SGD(model, lr=1e-3 if phase == 1 else 1e-5, momentum=0.9)
    kiln.manual_seed(13)
    x = kiln.uniform([batch, 224, 224, 3], -1.0, 1.0)
    labels = kiln.from_dlpack(np.array([(i * 5) % CLASSES for i in range(batch)], dtype=np.int64))

    def step():
        loss = kiln.softmax_cross_entropy(model(x), labels)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        return loss

    for _ in range(warmup):
        assert np.isfinite(step().item())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def cpp_steps(bench, batch, threads, repeat, warmup, cache):
    """kiln_bench --suite step's rows: {name: (median, min, max) ms}."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "step.json")
        subprocess.run([bench, "--suite", "step", "--batch", str(batch), "--threads", str(threads), "--repeat",
                        str(repeat), "--warmup", str(warmup), "--cache", cache, "--json", out], check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            doc = json.load(f)
    rows = {}

    def walk(node):  # the rows, wherever the suite puts them
        if isinstance(node, dict):
            if "name" in node and "median_ms" in node:
                rows[node["name"]] = (node["median_ms"], node["min_ms"], node["max_ms"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kiln_bench", help="the built kiln_bench (build/benchmarks/kiln_bench)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="timed steps per round, each side")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads, both sides (kiln_bench's default)")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold",
                    help="kiln_bench's: cold evicts the last-level cache before each timed step (Python's never are)")
    ap.add_argument("--phase", type=int, choices=(1, 2), action="append", help="1: fc8 only (default); 2: all")
    a = ap.parse_args()
    phases = a.phase or [1]
    kiln.set_num_threads(a.threads)
    print(f"load before: {os.getloadavg()}")
    names = {1: "vgg16/step_fc8", 2: "vgg16/step_all"}
    for r in range(1, a.rounds + 1):
        cpp = cpp_steps(a.kiln_bench, a.batch, a.threads, a.repeat, a.warmup, a.cache)
        for phase in phases:
            py = python_steps(a.batch, phase, a.repeat, a.warmup)
            med, lo, hi = cpp[names[phase]]
            pm = statistics.median(py)
            print(f"round {r} {names[phase]} batch {a.batch}: C++ median {med:.0f} ms ({lo:.0f}..{hi:.0f}), "
                  f"Python median {pm:.0f} ms ({min(py):.0f}..{max(py):.0f}), Python/C++ {pm / med:.3f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
