#!/usr/bin/env python3
"""kiln's in-place methods (x.add_, x.mul_, x.addcmul_, x.zero_, x.copy_, x.clamp_, x.sigmoid_) against
PyTorch's on the same float32 tensors in one process, 2 threads each, best of 7 (docs/performance.md,
session 42, has numbers and the prediction). Every op is bandwidth-bound: the table prints each one's
bytes moved by the one-pass form and the GB/s that gives. Before timing, each kiln op's result is
checked against torch's from the same starting values.

    PYTHONPATH=build/python /usr/bin/python3 python/bench/bench_in_place.py
"""
import numpy as np
import torch

import kiln
from bench_select import best_ms  # the same timing: best of 7, in ms


def main():
    torch.set_num_threads(2)
    kiln.set_num_threads(2)
    torch.manual_seed(0)
    n = 4096  # x is [n, n], 64 MiB
    x, y, z = torch.randn(n, n), torch.randn(n, n), torch.rand(n, n) + 1.0
    kx, ky, kz = (kiln.from_dlpack(t.clone()) for t in (x, y, z))
    row_vector, k_row = torch.randn(n), None
    k_row = kiln.from_dlpack(row_vector.clone())
    tensor_bytes = 4 * n * n
    rows = []

    def row(name, kiln_fn, torch_fn, tensors_moved):
        # the same start on both sides, one call each, compared; then timed (x drifts alike on both)
        start = x.clone()
        kx.copy_(kiln.from_dlpack(start.clone()))
        kiln_fn()
        torch_fn()
        np.testing.assert_allclose(np.asarray(kx), x.numpy(), rtol=2e-6, atol=1e-6, err_msg=name)
        rows.append((name, best_ms(kiln_fn), best_ms(torch_fn), tensors_moved * tensor_bytes))
        x.copy_(start)

    row("x.add_(y)", lambda: kx.add_(ky), lambda: x.add_(y), 3)
    row("x.add_(row) (broadcast [n])", lambda: kx.add_(k_row), lambda: x.add_(row_vector), 2)
    row("x.mul_(1.0001)", lambda: kx.mul_(1.0001), lambda: x.mul_(1.0001), 2)
    row("x += y", lambda: kx.__iadd__(ky), lambda: x.__iadd__(y), 3)
    row("x.add_(y, alpha=-0.01)", lambda: kx.add_(ky, alpha=-0.01), lambda: x.add_(y, alpha=-0.01), 3)
    row("x.addcmul_(y, z, value=0.001)", lambda: kx.addcmul_(ky, kz, value=0.001),
        lambda: x.addcmul_(y, z, value=0.001), 4)
    row("x.addcdiv_(y, z, value=-0.01)", lambda: kx.addcdiv_(ky, kz, value=-0.01),
        lambda: x.addcdiv_(y, z, value=-0.01), 4)
    row("x.clamp_(-1, 1)", lambda: kx.clamp_(-1.0, 1.0), lambda: x.clamp_(-1.0, 1.0), 2)
    row("x.sigmoid_()", lambda: kx.sigmoid_(), lambda: x.sigmoid_(), 2)
    row("x.copy_(y)", lambda: kx.copy_(ky), lambda: x.copy_(y), 2)
    row("x.zero_()", lambda: kx.zero_(), lambda: x.zero_(), 1)

    print(f"[{n}, {n}] float32, 2 threads; GB/s from the one-pass form's bytes")
    print(f"{'op':32s} {'MB moved':>9s} {'kiln ms':>8s} {'GB/s':>6s} {'torch ms':>9s} {'GB/s':>6s} "
          f"{'kiln/torch speed':>17s}")
    for name, k_ms, t_ms, moved in rows:
        print(f"{name:32s} {moved / 1e6:9.0f} {k_ms:8.2f} {moved / k_ms / 1e6:6.1f} {t_ms:9.2f} "
              f"{moved / t_ms / 1e6:6.1f} {t_ms / k_ms:16.2f}x")


if __name__ == "__main__":
    main()
