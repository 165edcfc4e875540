#!/usr/bin/python3
"""PyTorch reference trajectories for kiln's optimizers (tests/layers/test_optim.cpp).

Usage: optim_reference.py DIR. DIR holds config.json ({"optimizer": "sgd"|"adam"|"adamw", the
hyper-parameters, "params": P, "steps": S}), the initial parameters p{k}.npy and the
gradient of every step g{s}_{k}.npy, written by the kiln test. This runs torch.optim.SGD or
torch.optim.Adam or torch.optim.AdamW in float64 with those gradients and writes the parameters after each step
as out{s}_{k}.npy. Run with Debian's /usr/bin/python3 (python3-torch 1.13).
"""
import json
import os
import sys

import numpy as np
import torch


def main(d):
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    params = [torch.tensor(np.load(os.path.join(d, f"p{k}.npy")), dtype=torch.float64, requires_grad=True)
              for k in range(c["params"])]
    if c["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"], nesterov=bool(c["nesterov"]),
                              weight_decay=c["weight_decay"])
    elif c["optimizer"] == "adam":
        opt = torch.optim.Adam(params, lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                               weight_decay=c["weight_decay"])
    elif c["optimizer"] == "adamw":
        opt = torch.optim.AdamW(params, lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                                weight_decay=c["weight_decay"])
    else:
        raise SystemExit(f"unknown optimizer {c['optimizer']}")
    for s in range(c["steps"]):
        for k, p in enumerate(params):
            p.grad = torch.tensor(np.load(os.path.join(d, f"g{s}_{k}.npy")), dtype=torch.float64)
        opt.step()
        for k, p in enumerate(params):
            np.save(os.path.join(d, f"out{s}_{k}.npy"), p.detach().numpy())


if __name__ == "__main__":
    main(sys.argv[1])
