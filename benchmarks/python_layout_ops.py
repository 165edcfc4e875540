"""kiln's layout ops (permute, transpose, softmax along a dimension) against PyTorch's, as a user
calls them from Python: each side allocates its output every call. One process, 2 threads, the
mean of 10 calls after one, warm cache; each result checked against torch's first.

  PYTHONPATH=build/python /usr/bin/python3 benchmarks/python_layout_ops.py

Numbers go to docs/performance.md (session 31). torch's times swing with its allocator (a fresh
25 MB output per call), so compare ratios from one run, and rerun before trusting one row.
"""
import time

import numpy as np
import torch

import kiln


def mean_ms(f, n=10):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


def main():
    torch.set_num_threads(2)
    # An activation the size of VGG16's conv3_3 output at batch 8, NHWC, and its [N H W, C] view.
    n, h = 8, 56
    c = 256
    x_np = np.random.default_rng(0).standard_normal((n, h, h, c), dtype=np.float32)
    x2_np = x_np.reshape(n * h * h, c)
    s4, s2 = f"[{n},{h},{h},{c}]", f"[{n * h * h},{c}]"
    xk, xt = kiln.from_dlpack(torch.from_numpy(x_np)), torch.from_numpy(x_np)
    x2k, x2t = kiln.from_dlpack(torch.from_numpy(x2_np)), torch.from_numpy(x2_np)
    cases = [
        (f"permute {s4} (0,3,1,2), NHWC to NCHW", lambda: kiln.permute(xk, [0, 3, 1, 2]),
         lambda: xt.permute(0, 3, 1, 2).contiguous()),
        (f"permute {s2} (1,0)", lambda: kiln.permute(x2k, [1, 0]), lambda: x2t.t().contiguous()),
        (f"permute {s4} (3,0,1,2)", lambda: kiln.permute(xk, [3, 0, 1, 2]),
         lambda: xt.permute(3, 0, 1, 2).contiguous()),
        (f"permute {s4} (0,2,1,3), runs", lambda: kiln.permute(xk, [0, 2, 1, 3]),
         lambda: xt.permute(0, 2, 1, 3).contiguous()),
        (f"softmax {s2} dim 0", lambda: kiln.softmax(x2k, 0), lambda: torch.softmax(x2t, 0)),
        (f"softmax {s4} dim 1", lambda: kiln.softmax(xk, 1), lambda: torch.softmax(xt, 1)),
        (f"softmax {s4} dim -1", lambda: kiln.softmax(xk, -1), lambda: torch.softmax(xt, -1)),
    ]
    print(f"{'op':48s} {'kiln ms':>9s} {'torch ms':>9s} {'torch/kiln':>10s}")
    for name, kiln_op, torch_op in cases:
        got, want = np.asarray(kiln_op()), torch_op().numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-7):
            raise SystemExit(f"{name}: kiln's result differs from torch's")
        k, t = mean_ms(kiln_op), mean_ms(torch_op)
        print(f"{name:48s} {k:9.3f} {t:9.3f} {t / k:10.2f}")


if __name__ == "__main__":
    main()
