#!/usr/bin/python3
"""torchvision's image pipeline, the peer of kiln_pipeline_bench: ImageFolder (PIL decode)
+ Resize(256) + RandomCrop(224) + RandomHorizontalFlip + ToTensor + Normalize, batched by
DataLoader with the given worker counts. Prints images/s per epoch (every epoch decodes:
torchvision has no decode cache).
Usage: torch_pipeline.py --dir DIR [--batch 32] [--epochs 3] [--workers 1,2]
"""
import argparse
import time

import torch
import torchvision.datasets as D
import torchvision.transforms as T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    tf = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = D.ImageFolder(a.dir, transform=tf)
    print(f"torchvision {__import__('torchvision').__version__}, torch {torch.__version__}: "
          f"{len(ds)} images, batch {a.batch}")
    print(f"  {'workers':<8} {'epoch 0':<14} {'later epochs':<14}")
    for w in [int(v) for v in a.workers.split(",")]:
        dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=w,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=w > 0)
        rates = []
        for _ in range(a.epochs):
            t0 = time.perf_counter()
            for _x, _y in dl:
                pass
            rates.append(len(ds) / (time.perf_counter() - t0))
        later = sum(rates[1:]) / max(len(rates) - 1, 1)
        print(f"  {w:<8} {rates[0]:<14.1f} {later:<14.1f}")


if __name__ == "__main__":
    main()
