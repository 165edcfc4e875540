#!/usr/bin/env python3
"""kiln's selections (index_select, gather), their reverses (index_add, scatter_add), the sorts
(sort, topk), argmax, argmin, cumsum, max along a dimension, logsumexp, flip and a stepped slice
against PyTorch's on the same float32 tensors in one
process, 2 threads each, best of 7 (docs/performance.md, sessions 35 to 38, has numbers). Each
kiln result is checked against torch's before it is timed (a sort's values: torch sorts with its
default, stable=False).

    PYTHONPATH=build/python /usr/bin/python3 python/bench/bench_select.py
"""
import time

import numpy as np
import torch

import kiln


def best_ms(fn, runs=7):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    n = 4096  # x is [n, n]
    x = torch.randn(n, n)
    kx = kiln.from_dlpack(x.clone())
    k = lambda t: kiln.from_dlpack(t.clone())  # noqa: E731
    rows = []

    def row(name, kiln_fn, torch_fn):
        np.testing.assert_allclose(np.asarray(kiln_fn()), torch_fn().numpy(), rtol=1e-6, atol=1e-5, err_msg=name)
        rows.append((name, best_ms(kiln_fn), best_ms(torch_fn)))

    for dim in (0, 1):
        idx = torch.randint(0, n, (n // 2,))
        row(f"index_select [{n}, {n}] dim {dim} by {n // 2}", lambda: kiln.index_select(kx, dim, k(idx)),
            lambda: torch.index_select(x, dim, idx))
    for dim in (0, 1):
        idx = torch.randint(0, n, (n, n))
        ki = k(idx)
        row(f"gather [{n}, {n}] dim {dim} by [{n}, {n}]", lambda: kiln.gather(kx, dim, ki),
            lambda: torch.gather(x, dim, idx))
    seg, base = torch.randint(0, n // 4, (n,)), torch.zeros(n // 4, n)
    kseg, kbase = k(seg), k(base)
    row(f"index_add [{n // 4}, {n}] dim 0 by {n} rows", lambda: kiln.index_add(kbase, 0, kseg, kx),
        lambda: torch.index_add(base, 0, seg, x))
    idx, base = torch.randint(0, n // 4, (n, n)), torch.zeros(n, n // 4)
    ki, kbase = k(idx), k(base)
    row(f"scatter_add [{n}, {n // 4}] dim 1 by [{n}, {n}]", lambda: kiln.scatter_add(kbase, 1, ki, kx),
        lambda: torch.scatter_add(base, 1, idx, x))
    xs = x[: n // 8].contiguous()  # [n / 8, n]
    kxs = k(xs)
    for dim in (1, 0):
        row(f"sort [{n // 8}, {n}] dim {dim}", lambda: kiln.sort(kxs, dim).values, lambda: torch.sort(xs, dim).values)
    row(f"topk 5 of [{n // 8}, {n}] dim 1", lambda: kiln.topk(kxs, 5).values, lambda: torch.topk(xs, 5).values)
    for name in ("argmax", "argmin"):
        for dim in (1, 0):
            row(f"{name} [{n}, {n}] dim {dim}", lambda: getattr(kiln, name)(kx, dim),
                lambda: getattr(torch, name)(x, dim))
    for dim in (1, 0):
        row(f"cumsum [{n}, {n}] dim {dim}", lambda: kiln.cumsum(kx, dim), lambda: torch.cumsum(x, dim))
    for dim in (1, 0):
        row(f"max [{n}, {n}] dim {dim} (values)", lambda: kiln.max(kx, dim).values, lambda: torch.max(x, dim).values)
    for dim in (1, 0):
        row(f"logsumexp [{n}, {n}] dim {dim}", lambda: kiln.logsumexp(kx, dim), lambda: torch.logsumexp(x, dim))
    for dim in (1, 0):
        row(f"flip [{n}, {n}] dim {dim}", lambda: kiln.flip(kx, dim), lambda: torch.flip(x, [dim]))
    row(f"x[:, ::2] of [{n}, {n}]", lambda: kx[:, ::2], lambda: x[:, ::2].contiguous())
    print(f"| op | kiln ms | torch {torch.__version__} ms | torch / kiln |\n|---|---:|---:|---:|")
    for name, tk, tt in rows:
        print(f"| {name} | {tk:.2f} | {tt:.2f} | {tt / tk:.2f}x |")


if __name__ == "__main__":
    main()
