#!/usr/bin/env python3
"""PyTorch peer of kiln_bench's CPU kernel suites (gemm, pool, softmax_ce, elementwise,
sgd, copy): the same shapes, threads and timing method (warm-up, then --repeat runs and at
least 200 ms, median and min/max, the other processes' CPU share). Rows carry kiln's names
so `kiln_bench --suite NAME --compare` matches them.

Where kiln writes into preallocated outputs, the peer does too (out= or in-place variants)
where PyTorch has one; dropout allocates its mask and output in PyTorch (F.dropout).

    /usr/bin/python3 benchmarks/torch_cpu_peer.py --suite gemm --threads 2 --repeat 5 [--json FILE]

Prints JSON on stdout (or writes it to --json FILE). Exit status 2: torch is not importable.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # kiln_bench --compare reads exit status 2 as "no torch here"
    print(f"torch_cpu_peer.py: PyTorch is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)
from torch_vgg16_forward import time_it, write_report  # same timing and report as kiln_bench's vgg16 peer


def gemm():
    rows = []
    for name, fin, fout in [("fc6", 25088, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]:
        w = torch.empty(fout, fin).uniform_(-1, 1)
        for n in (1, 8, 64):
            x = torch.empty(n, fin).uniform_(-1, 1)
            rows.append((f"{name}/b{n}", lambda x=x, w=w: F.linear(x, w)))
        del w
    for s in (1024, 2048):
        x, w = torch.empty(s, s).uniform_(-1, 1), torch.empty(s, s).uniform_(-1, 1)
        rows.append((f"square{s}", lambda x=x, w=w: F.linear(x, w)))
    return rows


def pool():
    rows = []
    cl = torch.channels_last
    for name, h, c in [("pool1", 224, 64), ("pool2", 112, 128), ("pool3", 56, 256), ("pool4", 28, 512), ("pool5", 14, 512)]:
        x = torch.empty(8, c, h, h).uniform_(-1, 1).contiguous(memory_format=cl)
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        dy = torch.empty_like(y).uniform_(-1, 1)
        rows.append((f"{name}/fwd", lambda x=x: F.max_pool2d(x, 2, 2, return_indices=True)))
        # What autograd runs for max_pool2d's backward.
        rows.append((f"{name}/bwd", lambda dy=dy, x=x, idx=idx: torch.ops.aten.max_pool2d_with_indices_backward(
            dy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)))
    return rows


def softmax_ce():
    rows = []
    for k in (8, 1000):
        for n in (64, 256, 1024):
            logits = torch.empty(n, k).uniform_(-4, 4)
            labels = (torch.arange(n, dtype=torch.int64) * 7919) % k
            rows.append((f"ce_fwd/{n}x{k}", lambda lg=logits, lb=labels: F.cross_entropy(lg, lb)))
            # Backward as autograd runs it for cross_entropy = nll_loss(log_softmax):
            # nll_loss_backward, then _log_softmax_backward_data, from the saved log-softmax.
            ls = F.log_softmax(logits, 1)
            one, tw = torch.ones(()), torch.tensor(float(n))

            def bwd(ls=ls, lb=labels, one=one, tw=tw):
                g = torch.ops.aten.nll_loss_backward(one, ls, lb, None, 1, -100, tw)
                return torch.ops.aten._log_softmax_backward_data(g, ls, 1, torch.float32)
            rows.append((f"ce_bwd/{n}x{k}", bwd))
    return rows


def elementwise():
    rows = []
    for name, shape in [("conv1_2", (8, 224, 224, 64)), ("conv3_3", (8, 56, 56, 256)), ("conv5_3", (8, 14, 14, 512)),
                        ("fc6", (8, 4096))]:
        a, b = torch.empty(shape).uniform_(-1, 1), torch.empty(shape).uniform_(-1, 1)
        out = torch.empty(shape)
        rows.append((f"relu/{name}", lambda a=a, out=out: torch.clamp_min(a, 0, out=out)))
        rows.append((f"relu_bwd/{name}", lambda a=a, b=b, out=out: torch.ops.aten.threshold_backward.grad_input(
            b, a, 0, grad_input=out)))
        rows.append((f"dropout/{name}", lambda a=a: F.dropout(a, 0.5, training=True)))
        rows.append((f"add/{name}", lambda a=a, b=b, out=out: torch.add(a, b, out=out)))
    return rows


def sgd():
    convs = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    shapes, c = [], 3
    for o in convs:
        shapes += [(o, 3, 3, c), (o,)]
        c = o
    for fin, fout in [(25088, 4096), (4096, 4096), (4096, 1000)]:
        shapes += [(fout, fin), (fout,)]
    params = []
    for s in shapes:
        p = torch.empty(s).uniform_(-0.1, 0.1).requires_grad_()
        p.grad = torch.empty(s).uniform_(-0.01, 0.01)
        params.append(p)
    rows = []
    # foreach=True: PyTorch's multi-tensor update. Frozen parameters are left out of the
    # optimizer, as a fine-tuning run would.
    for name, ps in [("sgd/all", params), ("sgd/fc8_only", params[-2:])]:
        opt = torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=True)
        opt.step()  # creates the momentum buffers
        rows.append((name, lambda opt=opt: opt.step()))
    return rows


def copy():
    rows = []
    for mib in (1, 16, 256):
        n = mib * (1 << 20) // 4
        src, dst = torch.empty(n).uniform_(-1, 1), torch.zeros(n)
        rows.append((f"copy/{mib}MiB", lambda s=src, d=dst: d.copy_(s)))
    return rows


SUITES = {"gemm": gemm, "pool": pool, "softmax_ce": softmax_ce, "elementwise": elementwise, "sgd": sgd, "copy": copy}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", required=True, choices=sorted(SUITES))
    ap.add_argument("--batch", type=int, default=8, help="accepted for kiln_bench's sake; these suites fix their shapes")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the JSON here instead of stdout")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with torch.no_grad():
        for name, fn in SUITES[args.suite]():
            rows.append({"name": name, **time_it(fn, args.warmup, args.repeat)})
    out = {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "suite": args.suite,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "rows": rows,
        "summary": {},
    }
    write_report(out, args.json)


if __name__ == "__main__":
    main()
