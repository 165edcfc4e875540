#!/usr/bin/env python3
"""Compares the weights of two model directories' latest checkpoints (ckpt-*.weights.h5).

Prints the largest absolute difference over every tensor, relative to the largest weight
magnitude, and exits 0 when it is within --tol, 1 otherwise (2: nothing to compare).
Usage: compare_weights.py DIR_A DIR_B [--tol 1e-5]
"""
import argparse
import glob
import os
import sys

import h5py
import numpy as np


def latest(d):
    files = sorted(glob.glob(os.path.join(d, "ckpt-*.weights.h5")))
    if not files:
        sys.exit(f"compare_weights: no ckpt-*.weights.h5 in {d}")
    return files[-1]


def tensors(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, np.array(obj)) if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    ta, tb = tensors(latest(args.a)), tensors(latest(args.b))
    if not ta or set(ta) != set(tb):
        print(f"compare_weights: different tensors: {sorted(set(ta) ^ set(tb))[:5]}")
        return 2
    diff = max(float(np.max(np.abs(ta[k].astype(np.float64) - tb[k]))) for k in ta)
    scale = max(float(np.max(np.abs(ta[k]))) for k in ta)
    rel = diff / scale
    print(f"{len(ta)} tensors, max |a - b| {diff:.3g}, max |a| {scale:.3g}, relative {rel:.3g} (tolerance {args.tol:g})")
    return 0 if rel <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
