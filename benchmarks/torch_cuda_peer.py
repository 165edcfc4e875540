#!/usr/bin/env python3
"""PyTorch peer of kiln_bench's CUDA suites (`conv_cuda`, `step_cuda`), same shapes, same GPU.

PyTorch runs channels_last with cuDNN benchmark mode on and, by default, strict fp32
(TF32 off, matching kiln's default); --tf32 allows TF32 on both sides. Times come from
CUDA events after warm-up, median of --repeat. Prints JSON: {"rows": [{"name", "ms"}...],
"meta": {...}}; row names match kiln_bench's.
Usage: torch_cuda_peer.py [--batch 64] [--repeat 10] [--tf32] [--json FILE]
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The VGG16 plan and conv table kiln_bench and the CPU peers use.
from torch_vgg16_forward import PLAN as VGG16, vgg16_convs  # noqa: E402


def time_ms(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def make_vgg16(num_classes):
    layers, c = [], 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    features = nn.Sequential(*layers)
    classifier = nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                               nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                               nn.Linear(4096, num_classes))
    return features, classifier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--suites", default="conv_cuda,step_cuda")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_cuda_peer.py: PyTorch sees no GPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    dev = torch.device("cuda")
    n = a.batch
    rows = []
    suites = a.suites.split(",")

    if "conv_cuda" in suites:
        for name, s, ci, co in vgg16_convs():
            x = torch.randn(n, ci, s, s, device=dev).to(memory_format=torch.channels_last)
            w = torch.randn(co, ci, 3, 3, device=dev).to(memory_format=torch.channels_last) * 0.05
            y = F.conv2d(x, w, padding=1)
            dy = torch.randn_like(y)
            rows.append({"name": f"{name}/fwd", "ms": time_ms(lambda: F.conv2d(x, w, padding=1), a.warmup, a.repeat)})
            bwd = torch.ops.aten.convolution_backward
            rows.append({"name": f"{name}/bwd_data", "ms": time_ms(
                lambda: bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False]),
                a.warmup, a.repeat)})
            rows.append({"name": f"{name}/bwd_filter", "ms": time_ms(
                lambda: bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]),
                a.warmup, a.repeat)})
            del x, w, y, dy

    if "step_cuda" in suites:
        features, classifier = make_vgg16(8)
        features = features.to(dev).to(memory_format=torch.channels_last)
        classifier = classifier.to(dev)
        x = torch.randn(n, 3, 224, 224, device=dev).to(memory_format=torch.channels_last)
        labels = torch.randint(0, 8, (n,), device=dev)

        def forward():
            with torch.no_grad():
                features.eval(), classifier.eval()
                return classifier(torch.flatten(features(x), 1))

        fc8 = classifier[6]
        # Phase 1: conv1..fc7 frozen (requires_grad False), dropout on, SGD on fc8 only.
        for p in list(features.parameters()) + list(classifier.parameters()):
            p.requires_grad_(False)
        for p in fc8.parameters():
            p.requires_grad_(True)
        def training_step(opt):
            def step():
                features.train(), classifier.train()
                loss = F.cross_entropy(classifier(torch.flatten(features(x), 1)), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return step

        step_fc8 = training_step(torch.optim.SGD(fc8.parameters(), lr=1e-3))
        all_params = list(features.parameters()) + list(classifier.parameters())
        step_all = training_step(torch.optim.SGD(all_params, lr=1e-5))

        for name, fn, setup in (("vgg16/forward", forward, None), ("vgg16/step_fc8", step_fc8, None),
                                ("vgg16/step_all", step_all, "all")):
            if setup == "all":
                for p in all_params:
                    p.requires_grad_(True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = time_ms(fn, a.warmup, a.repeat)
            peak = torch.cuda.max_memory_allocated()
            rows.append({"name": name, "ms": ms, "img_per_s": n / (ms / 1e3), "peak_bytes": peak})

    out = {"rows": rows, "meta": {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                                  "cudnn": torch.backends.cudnn.version(), "batch": n, "tf32": a.tf32,
                                  "channels_last": True}}
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
