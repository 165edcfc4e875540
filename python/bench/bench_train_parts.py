#!/usr/bin/env python3
"""The small parts of a training step against PyTorch's, on the same float32 tensors in one
process, 2 threads each, best of 7 (docs/performance.md, session 39, has numbers): cross_entropy
forward and forward + backward at a language model's vocabulary and at ImageNet's classes (with
ignored targets and label smoothing; and at ImageNet's plain, the fused kernel, beside the same loss
through the composed path), clip_grad_norm_ over a list of gradients, and an AdamW step
(torch 1.13's default on the CPU, its single-tensor loop, and foreach=True). Each kiln result is
checked against torch's before it is timed.

    PYTHONPATH=build/python /usr/bin/python3 python/bench/bench_train_parts.py
"""
import numpy as np
import torch
import torch.nn.functional as F

import kiln
from bench_select import best_ms  # the same timing: best of 7, in ms


def cross_entropy_rows(rows, n, c, form="ignored + smoothing"):
    """form: "ignored + smoothing" (every 7th target -100, label_smoothing 0.1: the composed path),
    "plain" (the fused kernel) or "plain, weight=ones" (the same loss through the composed path)."""
    torch.manual_seed(0)
    x = torch.randn(n, c) * 3
    t = torch.randint(0, c, (n,))
    if form == "ignored + smoothing":
        t[::7] = -100
    kx, kt = kiln.tensor(x), kiln.tensor(t)
    opts = dict(label_smoothing=0.1) if form == "ignored + smoothing" else {}
    kopts = dict(opts, weight=kiln.ones([c])) if form.endswith("weight=ones") else opts
    got, want = float(kiln.cross_entropy(kx, kt, **kopts)), float(F.cross_entropy(x, t, **opts))
    assert abs(got - want) <= 1e-5 * abs(want), (got, want)
    name = f"cross_entropy [{n}, {c}] {form}"
    rows.append((f"{name} forward", best_ms(lambda: kiln.cross_entropy(kx, kt, **kopts)),
                 best_ms(lambda: F.cross_entropy(x, t, **opts))))
    kxg, xg = kiln.tensor(x, requires_grad=True), x.clone().requires_grad_()

    def kiln_step():
        kiln.cross_entropy(kxg, kt, **kopts).backward()
        kxg.grad = None  # torch's idiom, settable in kiln too

    def torch_step():
        F.cross_entropy(xg, t, **opts).backward()
        xg.grad = None

    rows.append((f"{name} forward + backward", best_ms(kiln_step), best_ms(torch_step)))


def parameters(sizes, seed):
    torch.manual_seed(seed)
    ts = [torch.randn(s) for s in sizes]
    return [p.clone().requires_grad_() for p in ts], [kiln.tensor(p.detach(), requires_grad=True) for p in ts]


def with_gradients(tp, kp, seed):
    torch.manual_seed(seed)
    for p, q in zip(tp, kp):
        g = torch.randn(p.shape)
        p.grad = g.clone()
        q.zero_grad()
        kiln.sum(q * kiln.tensor(g)).backward()


def clip_rows(rows, sizes):
    tp, kp = parameters(sizes, 1)
    with_gradients(tp, kp, 2)
    # Checked against the norm in float64: torch 1.13's float32 sum is 3e-4 off at these sizes.
    exact = np.sqrt(sum(np.sum(p.grad.numpy().astype(np.float64) ** 2) for p in tp))
    got = float(kiln.clip_grad_norm_(kp, 1e9))
    assert abs(got - exact) <= 1e-6 * exact, (got, exact, float(torch.nn.utils.clip_grad_norm_(tp, 1e9)))
    count = sum(p.numel() for p in tp) / 1e6
    rows.append((f"clip_grad_norm_ {len(sizes)} tensors, {count:.1f}M", best_ms(lambda: kiln.clip_grad_norm_(kp, 1.0)),
                 best_ms(lambda: torch.nn.utils.clip_grad_norm_(tp, 1.0))))


def adamw_rows(rows, sizes):
    tp, kp = parameters(sizes, 3)
    with_gradients(tp, kp, 4)
    opt, ref = kiln.AdamW(kp, lr=1e-3, weight_decay=0.1), torch.optim.AdamW(tp, lr=1e-3, weight_decay=0.1)
    opt.step()
    ref.step()
    for p, q in zip(tp, kp):
        np.testing.assert_allclose(q.numpy(), p.detach().numpy(), rtol=1e-6, atol=1e-7)
    fused = torch.optim.AdamW([p.detach().clone().requires_grad_() for p in tp], lr=1e-3, weight_decay=0.1,
                              foreach=True)
    for p, q in zip(fused.param_groups[0]["params"], tp):
        p.grad = q.grad.clone()
    count = sum(p.numel() for p in tp) / 1e6
    kiln_ms = best_ms(opt.step)
    rows.append((f"AdamW step {len(sizes)} tensors, {count:.1f}M", kiln_ms, best_ms(ref.step)))
    rows.append((f"AdamW step {len(sizes)} tensors, {count:.1f}M (torch foreach=True)", kiln_ms, best_ms(fused.step)))


def main():
    torch.set_num_threads(2)
    kiln.set_num_threads(2)
    rows = []
    cross_entropy_rows(rows, 2048, 32000)
    cross_entropy_rows(rows, 4096, 1000)
    cross_entropy_rows(rows, 4096, 1000, "plain")
    cross_entropy_rows(rows, 4096, 1000, "plain, weight=ones")
    sizes = [(4096, 1024), (1024,), (1024, 4096), (4096,)] * 3 + [(32000, 512)]  # a small transformer's
    clip_rows(rows, sizes)
    adamw_rows(rows, sizes)
    print(f"{'op':<70} {'kiln ms':>9} {'torch ms':>9} {'torch/kiln':>10}")
    for name, k, t in rows:
        print(f"{name:<70} {k:9.2f} {t:9.2f} {t / k:9.2f}x")


if __name__ == "__main__":
    main()
