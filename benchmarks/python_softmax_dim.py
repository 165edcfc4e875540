"""kiln's softmax along a dimension other than the last, in place (the CPU's Backend::softmax_inner),
against the same op as the last dimension's kernel between two permutations, and torch.softmax;
best of 7 calls after one, 2 threads; each result checked against torch's first.

  PYTHONPATH=build/python /usr/bin/python3 benchmarks/python_softmax_dim.py

Numbers go to docs/performance.md (session 31).
"""
import time, numpy as np, torch, kiln
torch.set_num_threads(2)
def best(f, n=7):
    f(); ts = []
    for _ in range(n):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return min(ts) * 1e3
rng = np.random.default_rng(0)
n, h = 8, 56  # VGG16's conv3_3 activation at batch 8, NHWC
c = 256
for shape, d in [((n, h, h, c), 1), ((n * h * h, c), 0), ((64, 1000, 49), 1), ((8, 1000, 1, 1), 1)]:
    x = rng.standard_normal(shape, dtype=np.float32)
    kx, tx = kiln.from_dlpack(torch.from_numpy(x)), torch.from_numpy(x)
    r = len(shape); order = [i for i in range(r) if i != d] + [d]; back = [order.index(i) for i in range(r)]
    new = lambda: kiln.softmax(kx, d)
    old = lambda: kiln.permute(kiln.softmax(kiln.permute(kx, order), -1), back)
    tt = lambda: torch.softmax(tx, d)
    assert np.allclose(np.from_dlpack(new()), tt().numpy(), rtol=1e-5, atol=1e-7)
    print(f"{str(shape):20s} dim {d}: in place {best(new):8.3f} ms  permuted {best(old):8.3f} ms  "
          f"torch {best(tt):8.3f} ms")
