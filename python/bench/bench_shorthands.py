#!/usr/bin/env python3
"""torch's shorthands that kiln composes of its own ops (gelu approximate="tanh", softplus with a beta,
tril, repeat, isfinite(x).all(), add with alpha) against PyTorch's fused kernels on the same float32
tensors in one process, 2 threads each, best of 7 (docs/performance.md, session 41, has numbers and
the prediction). Each kiln result is checked against torch's before it is timed.

    PYTHONPATH=build/python /usr/bin/python3 python/bench/bench_shorthands.py
"""
import numpy as np
import torch

import kiln
from bench_select import best_ms  # the same timing: best of 7, in ms

F = torch.nn.functional


def main():
    torch.set_num_threads(2)
    kiln.set_num_threads(2)
    torch.manual_seed(0)
    n = 4096  # x is [n, n]
    x = torch.randn(n, n)
    kx = kiln.from_dlpack(x.clone())
    rows = []

    def row(name, kiln_fn, torch_fn, atol=1e-6):
        np.testing.assert_allclose(np.asarray(kiln_fn()), torch_fn().numpy(), rtol=1e-5, atol=atol, err_msg=name)
        rows.append((name, best_ms(kiln_fn), best_ms(torch_fn)))

    row(f"gelu tanh [{n}, {n}]", lambda: kiln.gelu(kx, approximate="tanh"), lambda: F.gelu(x, approximate="tanh"))
    row(f"softplus beta 2 threshold 1 [{n}, {n}]", lambda: kiln.softplus(kx, 2.0, 1.0), lambda: F.softplus(x, 2.0, 1.0))
    row(f"tril [{n}, {n}]", lambda: kiln.tril(kx), lambda: torch.tril(x))
    half = x[: n // 2, : n // 2].contiguous()
    khalf = kiln.from_dlpack(half.clone())
    row(f"repeat [{n // 2}, {n // 2}] by (2, 2)", lambda: khalf.repeat(2, 2), lambda: half.repeat(2, 2))
    row(f"isfinite(x).all() [{n}, {n}]", lambda: kiln.isfinite(kx).all(), lambda: torch.isfinite(x).all().float())
    y = torch.randn(n, n)
    ky = kiln.from_dlpack(y.clone())
    row(f"add alpha 0.5 [{n}, {n}]", lambda: kiln.add(kx, ky, alpha=0.5), lambda: torch.add(x, y, alpha=0.5))

    xg = x.clone().requires_grad_()
    kg = kiln.from_dlpack(x.clone()).requires_grad_()

    def kiln_step():
        kg.grad = None
        kiln.gelu(kg, approximate="tanh").sum().backward()
        return kg.grad

    def torch_step():
        xg.grad = None
        F.gelu(xg, approximate="tanh").sum().backward()
        return xg.grad

    row(f"gelu tanh forward + backward [{n}, {n}]", kiln_step, torch_step, atol=1e-5)

    print(f"{'op':44s} {'kiln ms':>9s} {'torch ms':>9s} {'kiln/torch speed':>17s}")
    for name, k_ms, t_ms in rows:
        print(f"{name:44s} {k_ms:9.2f} {t_ms:9.2f} {t_ms / k_ms:16.2f}x")


if __name__ == "__main__":
    main()
