#!/usr/bin/python3
"""PyTorch's bfloat16 conv2d and linear, the reference of tests/kernels/test_bf16.cpp.

Usage: bf16_reference.py DIR. DIR/cases.txt has one line per case, "ID OP STRIDE PAD BIAS",
and the inputs as float32 .npy holding values already rounded to bf16 (ID_x, ID_w, ID_b),
in kiln's layouts (NHWC, OHWI). Each case runs in torch.bfloat16 and writes ID_out.npy
(float32, NHWC for conv2d). Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def load(d, name):
    # The casts are exact: the values are bf16 already.
    return torch.from_numpy(np.load(os.path.join(d, name))).to(torch.bfloat16)


def main(d):
    with open(os.path.join(d, "cases.txt")) as f:
        for line in f:
            cid, op, stride, pad, bias = line.split()
            x, w = load(d, cid + "_x.npy"), load(d, cid + "_w.npy")
            b = load(d, cid + "_b.npy") if int(bias) else None
            if op == "conv2d":
                y = F.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), b, stride=int(stride), padding=int(pad))
                y = y.permute(0, 2, 3, 1)
            elif op == "linear":
                y = F.linear(x, w, b)
            else:
                raise SystemExit("bf16_reference.py: unknown op " + op)
            assert y.dtype == torch.bfloat16, y.dtype
            np.save(os.path.join(d, cid + "_out.npy"), y.float().contiguous().numpy())


if __name__ == "__main__":
    main(sys.argv[1])
