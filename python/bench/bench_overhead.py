#!/usr/bin/env python3
"""Per-call overhead of kiln's Python binding on tiny tensors, against PyTorch's own per-op
overhead in the same process (docs/python.md has numbers). The tensors are so small that the
arithmetic is negligible: what is timed is the call from Python into the engine and back.

    PYTHONPATH=build/python OMP_NUM_THREADS=1 /usr/bin/python3 python/bench/bench_overhead.py
"""
import argparse
import timeit

import numpy as np
import torch

import kiln


def per_call_us(fn, number):
    best = min(timeit.repeat(fn, number=number, repeat=5))  # best of 5: the least disturbed run
    return best / number * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000, help="calls per timed run")
    n = ap.parse_args().number
    torch.set_num_threads(1)
    ka, kb = kiln.ones([4]), kiln.full([4], 2.0)
    ta, tb = torch.ones(4), torch.full((4,), 2.0)
    kx, kw = kiln.ones([1, 4]), kiln.ones([3, 4])
    tx, tw = torch.ones(1, 4), torch.ones(3, 4)
    kg = kiln.ones([4])
    kg.requires_grad = True
    tg = torch.ones(4, requires_grad=True)
    arr = np.ones(4, dtype=np.float32)
    rows = [
        ("add [4]", lambda: kiln.add(ka, kb), lambda: torch.add(ta, tb)),
        ("a * 2.0 [4] (operator)", lambda: ka * 2.0, lambda: ta * 2.0),
        ("relu [4]", lambda: kiln.relu(ka), lambda: torch.relu(ta)),
        ("linear [1,4] x [3,4]", lambda: kiln.linear(kx, kw), lambda: torch.nn.functional.linear(tx, tw)),
        ("sum(x * x).backward() [4]", lambda: kiln.sum(kg * kg).backward(), lambda: (tg * tg).sum().backward()),
        ("from_dlpack(numpy [4])", lambda: kiln.from_dlpack(arr), lambda: torch.from_dlpack(arr)),
        ("shape (attribute read)", lambda: ka.shape, lambda: ta.shape),
    ]
    print(f"{'call':28s} {'kiln us':>9s} {'torch us':>9s} {'ratio':>6s}")
    for name, k, t in rows:
        ku, tu = per_call_us(k, n), per_call_us(t, n)
        print(f"{name:28s} {ku:9.2f} {tu:9.2f} {ku / tu:6.2f}")
    print(f"(best of 5 runs of {n} calls each; kiln {kiln.__file__}, torch {torch.__version__}, numpy {np.__version__})")


if __name__ == "__main__":
    main()
