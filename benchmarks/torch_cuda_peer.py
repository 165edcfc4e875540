#!/usr/bin/env python3
"""PyTorch peer of kiln_bench's CUDA suites (`conv_cuda`, `step_cuda`), same shapes, same GPU.

PyTorch runs channels_last with cuDNN benchmark mode on and, by default, strict fp32
(TF32 off, matching kiln's default); --tf32 allows TF32 on both sides. Times come from
CUDA events after warm-up, median of --repeat. Prints JSON: {"rows": [{"name", "ms"}...],
"meta": {...}}; row names match kiln_bench's.
Usage: torch_cuda_peer.py --plan PLAN [--batch 64] [--repeat 10] [--tf32] [--json FILE]
PLAN: the model plan as JSON from `kiln_bench --print-plan vgg16` (kiln_bench passes it).
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
# The model plan kiln_bench prints (--plan): every VGG16 shape below comes from it.
import kiln_plan  # noqa: E402


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


def make_vgg16(plan, num_classes):
    """torchvision's layout (features, classifier) from the plan, the head sized for num_classes."""
    features, classifier = [], []
    for l in plan["layers"]:
        if l["kind"] == "pool":
            features.append(nn.MaxPool2d(l["kernel"], l["stride"], l["pad"]))
        elif l["kind"] == "conv":
            features += [nn.Conv2d(l["in_channels"], l["out_channels"], l["kernel"], l["stride"], l["pad"]),
                         nn.ReLU(inplace=True)]
        else:
            out = l["out_channels"] if l["relu"] else num_classes
            classifier.append(nn.Linear(l["in_channels"], out))
            classifier += [nn.ReLU(inplace=True)] if l["relu"] else []
            classifier += [nn.Dropout(0.5)] if l["dropout"] else []
    return nn.Sequential(*features), nn.Sequential(*classifier)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--suites", default="conv_cuda,step_cuda")
    kiln_plan.add_argument(ap)
    a = ap.parse_args()
    plan = kiln_plan.load(a.plan, "torch_cuda_peer.py")
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
        for name, s, ci, co in kiln_plan.convs(plan):
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
        features, classifier = make_vgg16(plan, 8)
        features = features.to(dev).to(memory_format=torch.channels_last)
        classifier = classifier.to(dev)
        x = torch.randn((n,) + kiln_plan.input_chw(plan), device=dev).to(memory_format=torch.channels_last)
        labels = torch.randint(0, 8, (n,), device=dev)

        def forward():
            with torch.no_grad():
                features.eval(), classifier.eval()
                return classifier(torch.flatten(features(x), 1))

        fc8 = classifier[-1]
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
