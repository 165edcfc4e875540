#!/usr/bin/env python3
"""The PyTorch peer's fc8-only training step, alone in its process, so that a measurement
from outside (benchmarks/gpu_peak_memory.py) sees that step's peak GPU memory and nothing
else: VGG16 (8 classes, dropout 0.5 after fc6 and fc7), conv1..fc7 frozen, fc8 trained by
SGD (lr 1e-3, momentum 0.9, as kiln_bench's step suite), --batch new images every step
(uniform in [-1, 1), drawn on the device: a full forward each step, no feature cache).

    python3 benchmarks/gpu_peak_memory.py --json peak.json -- \\
        python3 benchmarks/torch_fc8_step.py --only vgg16/step_fc8@bf16-frozen --device cuda --batch 256 --steps 20

--only takes kiln_bench's row names (`kiln_bench --suite step --only ROW` runs the same row).
vgg16/step_fc8@bf16-frozen (default), the peer settings of the GPU table's memory row:
channels_last, the frozen backbone under torch.inference_mode() and torch.autocast(bfloat16),
fc8 and the loss in fp32 on its float() output, cudnn.benchmark on. --only vgg16/step_fc8: the
same in fp32 (the backbone's output cloned out of inference mode for fc8's backward).

Prints img/s and, for reference only, torch's own counters (max_memory_allocated/reserved);
the row's figure is gpu_peak_memory.py's. Exit status 2: torch is not importable.
"""
import argparse
import os
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
except ImportError as e:
    print(f"torch_fc8_step.py: torch/torchvision not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vgg16_forward import set_tf32  # noqa: E402  (one place for the TF32 switches)

CLASSES = 8


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("vgg16/step_fc8@bf16-frozen", "vgg16/step_fc8"), default="vgg16/step_fc8@bf16-frozen",
                    help="the row, by kiln_bench's name")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps, after --warmup")
    ap.add_argument("--warmup", type=int, default=3, help="steps first (cudnn.benchmark's search runs here)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--tf32", choices=("none", "conv", "all"), default="conv", help="cuda: as kiln's KILN_TF32")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no GPU here")
    dev = torch.device(args.device)
    bf16 = args.only.endswith("@bf16-frozen")
    torch.manual_seed(0)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        set_tf32(args.tf32)
    cl = torch.channels_last
    m = torchvision.models.vgg16(weights=None)
    m.classifier[6] = nn.Linear(m.classifier[6].in_features, CLASSES)
    m.to(dev, memory_format=cl).train()
    backbone = nn.Sequential(m.features, m.avgpool, nn.Flatten(1), m.classifier[:6])
    fc8 = m.classifier[6]
    for p in backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(fc8.parameters(), lr=1e-3, momentum=0.9)
    x = torch.empty(args.batch, 3, args.image_size, args.image_size, device=dev).contiguous(memory_format=cl)
    y = torch.arange(args.batch, device=dev) * 5 % CLASSES

    def step():
        x.uniform_(-1, 1)  # new images every step
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            h = backbone(x)
        h = h.float() if bf16 else h.clone()  # a normal tensor, outside inference mode, for fc8's backward
        loss = F.cross_entropy(fc8(h), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    t0 = time.time()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = time.time() - t0
    line = (f"torch_fc8_step: {args.only}, batch {args.batch}, {args.steps} steps, {args.batch * args.steps / dt:.1f} "
            f"img/s, loss {loss.item():.3f}")
    if args.device == "cuda":
        line += (f"; torch's own counters (reference only): max allocated "
                 f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB, max reserved "
                 f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB")
    print(line, flush=True)


if __name__ == "__main__":
    main()
