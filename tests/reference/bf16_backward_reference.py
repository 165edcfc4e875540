#!/usr/bin/python3
"""PyTorch's bfloat16 conv2d and linear backward, a reference of tests/kernels/test_bf16_backward.cpp.

Usage: bf16_backward_reference.py DIR. DIR/cases.txt has one line per case, "ID OP STRIDE PAD
BIAS", and float32 .npy files holding values already rounded to bf16, in kiln's layouts
(NHWC, OHWI): ID_x, ID_w, ID_b (when BIAS is 1) and ID_up, the upstream gradient. Each case
runs forward and backward in torch.bfloat16 and writes ID_out, ID_gx, ID_gw and ID_gb
(float32, kiln's layouts). Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def load(d, name):
    # The casts are exact: the values are bf16 already.
    return torch.from_numpy(np.load(os.path.join(d, name))).to(torch.bfloat16)


def save(d, name, t):
    assert t.dtype == torch.bfloat16, (name, t.dtype)
    np.save(os.path.join(d, name), t.float().contiguous().numpy())


def main(d):
    with open(os.path.join(d, "cases.txt")) as f:
        for line in f:
            cid, op, stride, pad, bias = line.split()
            x = load(d, cid + "_x.npy").requires_grad_()
            w = load(d, cid + "_w.npy").requires_grad_()
            b = load(d, cid + "_b.npy").requires_grad_() if int(bias) else None
            up = load(d, cid + "_up.npy")
            if op == "conv2d":  # NHWC / OHWI -> NCHW / OIHW and back
                xc = x.permute(0, 3, 1, 2)
                y = F.conv2d(xc, w.permute(0, 3, 1, 2), b, stride=int(stride), padding=int(pad)).permute(0, 2, 3, 1)
            elif op == "linear":
                y = F.linear(x, w, b)
            else:
                raise SystemExit("bf16_backward_reference.py: unknown op " + op)
            y.backward(up)
            save(d, cid + "_out.npy", y.detach())
            save(d, cid + "_gx.npy", x.grad)
            save(d, cid + "_gw.npy", w.grad)
            if b is not None:
                save(d, cid + "_gb.npy", b.grad)


if __name__ == "__main__":
    main(sys.argv[1])
