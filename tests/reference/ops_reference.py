#!/usr/bin/python3
"""PyTorch reference for kiln's op table (check/op_cases.cpp).

Usage: ops_reference.py DIR. DIR holds manifest.json and the inputs as .npy, written by
the kiln test "ops match PyTorch". For each case this computes, in float64, the op's
output and the gradient of sum(output * upstream) w.r.t. each differentiable input, and
writes them beside the inputs. kiln's layouts (NHWC activations, OHWI filters) are
permuted to PyTorch's NCHW/OIHW and back here.
Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def nchw(t):
    return t.permute(0, 3, 1, 2)


def nhwc(t):
    return t.permute(0, 2, 3, 1)


def run_op(op, p, x, extras):
    if op == "conv2d":
        b = x[2] if int(p["bias"]) else None
        y = F.conv2d(nchw(x[0]), nchw(x[1]), b, stride=int(p["stride"]), padding=int(p["pad"]))
        return nhwc(y)
    if op == "max_pool2d":
        y = F.max_pool2d(nchw(x[0]), int(p["kernel"]), int(p["stride"]), int(p["pad"]))
        return nhwc(y)
    if op == "adaptive_avg_pool2d":
        y = F.adaptive_avg_pool2d(nchw(x[0]), (int(p["out_h"]), int(p["out_w"])))
        return nhwc(y)
    if op == "batch_norm2d":
        # Inputs x, [gamma, beta,] running_mean, running_var; F.batch_norm updates the
        # running statistics in place, as kiln does (main saves them for "updated").
        affine = int(p["affine"])
        g, b = (x[1], x[2]) if affine else (None, None)
        rm, rv = x[-2], x[-1]
        y = F.batch_norm(nchw(x[0]), rm, rv, g, b, training=bool(int(p["training"])),
                         momentum=p["momentum"], eps=p["eps"])
        return nhwc(y)
    if op == "linear":
        return F.linear(x[0], x[1], x[2] if len(x) > 2 else None)
    if op == "relu":
        return torch.relu(x[0])
    if op in ("exp", "log", "sqrt", "tanh", "sigmoid", "abs", "neg"):
        return getattr(torch, op)(x[0])
    if op in ("gelu", "silu", "softplus"):
        return getattr(F, op)(x[0])
    if op == "vector_norm":
        dims = [int(p[f"d{i}"]) for i in range(int(p["ndims"]))]
        order = p["p"] if p["p"] != 0 else float("inf")  # 0 stands for inf (JSON has none)
        return torch.linalg.vector_norm(x[0], ord=order, dim=dims, keepdim=bool(int(p["keepdim"])))
    if op in ("tril", "triu"):
        return getattr(torch, op)(x[0], int(p["diagonal"]))
    if op == "gelu_tanh":
        return F.gelu(x[0], approximate="tanh")
    if op == "softplus_beta":
        return F.softplus(x[0], p["beta"], p["threshold"])
    if op in ("mse_loss", "l1_loss"):
        return getattr(F, op)(x[0], x[1])
    if op == "transpose":
        return x[0].transpose(-2, -1)
    if op == "matmul":
        return torch.matmul(x[0], x[1])
    if op in ("maximum", "minimum"):
        return getattr(torch, op)(x[0], x[1])
    if op == "clamp":
        return torch.clamp(x[0], p["lo"], p["hi"])
    if op in ("gt", "ge", "lt", "le", "eq", "ne"):  # kiln's masks are 0/1 in the operands' dtype
        return getattr(torch, op)(x[0], x[1]).to(torch.float64)
    if op in ("gt_scalar", "ge_scalar", "lt_scalar", "le_scalar", "eq_scalar", "ne_scalar"):
        return getattr(torch, op[:2])(x[0], p["s"]).to(torch.float64)
    if op in ("sum_dims", "mean_dims", "amax", "amin", "logsumexp"):
        dims = [int(p[f"d{i}"]) for i in range(int(p["ndims"]))]
        return getattr(torch, op.removesuffix("_dims"))(x[0], dims, keepdim=bool(int(p["keepdim"])))
    if op in ("var_dims", "std_dims"):
        dims = [int(p[f"d{i}"]) for i in range(int(p["ndims"]))]
        return getattr(torch, op.removesuffix("_dims"))(x[0], dims, unbiased=bool(int(p["correction"])))
    if op == "transpose_dims":
        return x[0].transpose(int(p["d0"]), int(p["d1"]))
    if op in ("softmax_dim", "log_softmax_dim"):
        return getattr(torch, op.removesuffix("_dim"))(x[0], int(p["dim"]))
    if op == "permute":
        return x[0].permute([int(p[f"d{i}"]) for i in range(int(p["ndims"]))])
    if op == "narrow":
        return x[0].narrow(int(p["dim"]), int(p["start"]), int(p["length"]))
    if op == "concat":
        return torch.cat(x, int(p["dim"]))
    if op == "stack":
        return torch.stack(x, int(p["dim"]))
    if op == "embedding":
        return F.embedding(x[1], x[0])
    if op == "index_select":
        return torch.index_select(x[0], int(p["dim"]), x[1])
    if op == "gather":
        return torch.gather(x[0], int(p["dim"]), x[1].long())
    if op == "index_add":
        return torch.index_add(x[0], int(p["dim"]), x[2], x[1])
    if op == "scatter_add":
        return torch.scatter_add(x[0], int(p["dim"]), x[2].long(), x[1])
    if op in ("sort", "argsort"):
        s = torch.sort(x[0], dim=int(p["dim"]), descending=bool(p["descending"]), stable=True)
        return s.values if op == "sort" else s.indices
    if op == "cumsum":
        return torch.cumsum(x[0], int(p["dim"]))
    if op in ("max_dim", "min_dim"):
        return getattr(torch, op[:3])(x[0], dim=int(p["dim"]), keepdim=bool(p["keepdim"])).values
    if op == "flip":
        return torch.flip(x[0], [int(p[f"d{i}"]) for i in range(int(p["ndims"]))])
    if op in ("argmax", "argmin"):
        return getattr(torch, op)(x[0], dim=int(p["dim"]), keepdim=bool(p["keepdim"]))
    if op == "topk":
        return torch.topk(x[0], int(p["k"]), dim=int(p["dim"]), largest=bool(p["largest"])).values
    if op == "layer_norm":
        return F.layer_norm(x[0], (x[0].shape[-1],), x[1], x[2], p["eps"])
    if op == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(x[0], x[1])
    if op == "dropout":
        return x[0] * extras[0] / p["keep"]
    if op == "cast":  # kiln's Tensor::to between bf16 and f32: exact on bf16 values
        return x[0]
    if op == "flatten":
        return x[0].reshape(x[0].shape[0], -1)
    if op == "reshape":
        return x[0].reshape(int(p["d0"]), int(p["d1"]))
    if op == "slice":
        return x[0][int(p["begin"]):int(p["end"])]
    if op == "softmax_cross_entropy":
        return F.cross_entropy(x[0], x[1].long())
    if op in ("cross_entropy", "nll_loss"):
        target = x[1] if x[1].is_floating_point() else x[1].long()  # probabilities, or class indices
        options = dict(weight=x[2] if int(p["weighted"]) else None,
                       reduction=["mean", "sum", "none"][int(p["reduction"])])
        if op == "nll_loss":
            return F.nll_loss(x[0], target, **options)
        return F.cross_entropy(x[0], target, label_smoothing=p["label_smoothing"], **options)
    if op == "softmax":
        return torch.softmax(x[0], -1)
    if op == "log_softmax":
        return torch.log_softmax(x[0], -1)
    if op in ("add", "sub", "mul", "div"):
        return {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}[op](x[0], x[1])
    if op in ("sum_to", "broadcast_to"):
        shape = [int(p[f"d{i}"]) for i in range(int(p["rank"]))]
        return x[0].sum_to_size(shape) if op == "sum_to" else x[0].expand(shape)
    if op == "add_scalar":
        return x[0] + p["s"]
    if op == "sub_scalar":
        return x[0] - p["s"]
    if op == "mul_scalar":
        return x[0] * p["s"]
    if op == "div_scalar":
        return x[0] / p["s"]
    if op == "rsub_scalar":
        return p["s"] - x[0]
    if op == "rdiv_scalar":
        return p["s"] / x[0]
    if op == "pow_scalar":
        return x[0] ** p["p"]
    if op == "rpow_scalar":
        return p["s"] ** x[0]
    if op == "pow":
        return torch.pow(x[0], x[1])
    if op == "where":  # kiln's mask: nonzero (NaN included) is true
        return torch.where(x[0] != 0, x[1], x[2])
    if op == "masked_fill":
        return x[0].masked_fill(x[1] != 0, p["value"])
    if op == "sum":
        return x[0].sum()
    if op == "mean":
        return x[0].mean()
    if op == "l2_penalty":
        return p["scale"] * sum((w * w).sum() for w in x) / 2
    raise SystemExit(f"ops_reference.py: unknown op {op!r}")


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.json")) as f:
        cases = json.load(f)
    for c in cases:
        xs = []
        for name, diff in zip(c["inputs"], c["differentiable"]):
            a = np.load(os.path.join(d, name))
            t = torch.from_numpy(a.astype(np.float64) if a.dtype.kind == "f" else a)
            if diff:
                t.requires_grad_(True)
            xs.append(t)
        extras = [torch.from_numpy(np.load(os.path.join(d, n)).astype(np.float64)) for n in c["extras"]]
        out = run_op(c["op"], c["params"], xs, extras)
        up = torch.from_numpy(np.load(os.path.join(d, c["upstream"])).astype(np.float64))
        if out.requires_grad:  # the comparisons and an integer concat have no gradient
            (out * up).sum().backward()
        np.save(os.path.join(d, c["id"] + "_out.npy"), out.detach().contiguous().numpy())
        for i in c.get("updated", []):
            np.save(os.path.join(d, f"{c['id']}_updated{i}.npy"), xs[i].detach().contiguous().numpy())
        for i, t in enumerate(xs):
            if c["differentiable"][i]:
                np.save(os.path.join(d, f"{c['id']}_grad{i}.npy"), t.grad.contiguous().numpy())
    print(f"ops_reference.py: {len(cases)} cases, torch {torch.__version__}")


if __name__ == "__main__":
    main()
