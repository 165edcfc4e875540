#!/usr/bin/env python3
"""Times kiln.fit_linear_probe (train/linear_probe.h) on synthetic features: the fit the
trainer runs before phase 1 with --head-init probe (docs/performance.md, 2026-12-04).

  PYTHONPATH=build/python python3 benchmarks/time_linear_probe.py [ROWS FEATURES CLASSES]

Rows are rectified Gaussians with a one-hot mean shift per class, so the problem is well
posed and its answer stable; 800 x 4096 x 8 is the seed recipe's probe (VGG16's fc7
features of 800 training images). OMP_NUM_THREADS sets the threads. Prints the best of
three fits and what the fit chose.
"""
import sys
import time

import numpy as np

import kiln


def main():
    rows, features, classes = (int(a) for a in (sys.argv[1:4] if len(sys.argv) >= 4 else (800, 4096, 8)))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, rows)
    shift = 1.5 * np.eye(classes, features, dtype=np.float32)[labels]
    x = np.maximum(rng.standard_normal((rows, features)).astype(np.float32) + shift, 0)
    feats = kiln.from_dlpack(x)
    best, fit = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        fit = kiln.fit_linear_probe(feats, labels.tolist(), classes)
        best = min(best, time.perf_counter() - t0)
    print(f"fit_linear_probe {rows} x {features}, {classes} classes: {best:.3f} s (best of 3); "
          f"lambda {fit['lambda_']:g}, held-out accuracy {fit['holdout_acc']:.4f}, scale {fit['scale']:.4f}")


if __name__ == "__main__":
    main()
