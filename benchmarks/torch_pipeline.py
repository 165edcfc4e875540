#!/usr/bin/env python3
"""PyTorch peer of `kiln_bench --suite pipeline`: torchvision's image pipeline on the same
generated JPEGs, with kiln's row names and timing (one run = one pass over the dataset).

    decode             PIL open + convert("RGB"), one thread
    cold               PIL decode + Resize(256) + RandomCrop(224) + RandomHorizontalFlip
                       + ToTensor + Normalize, one thread
    cached             the same transforms from images already decoded and resized
    loader/wT/cold     ImageFolder + DataLoader (batch 32, shuffle, T persistent workers)
    loader/wT/cached   the same measurement: torchvision has no decode cache, so every
                       epoch decodes (the row exists so the comparison has a peer)

T runs over 1, 2 and os.cpu_count(), as kiln's rows.

    /usr/bin/python3 benchmarks/torch_pipeline.py --dir /tmp/kiln_pipeline_bench [--repeat 5] [--json FILE]

Prints JSON on stdout (or writes it to --json FILE). Exit status 2: torch is not importable.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import torchvision
    import torchvision.datasets as D
    import torchvision.transforms as T
    from PIL import Image
except ImportError as e:  # kiln_bench --compare reads exit status 2 as "no torch here"
    print(f"torch_pipeline.py: torch/torchvision/PIL not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)
from torch_vgg16_forward import set_cold_cache, time_it, write_report

BATCH = 32
NORMALIZE = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--batch", default=str(BATCH), help="accepted for kiln_bench's sake; the loader batch is 32")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="accepted for kiln_bench's sake; see the row list")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument("--json", help="write the JSON here instead of stdout")
    args = ap.parse_args()
    set_cold_cache(args.cache == "cold")

    def load(path):
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")

    full = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), NORMALIZE])
    after_resize = T.Compose([T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), NORMALIZE])
    plain = D.ImageFolder(args.dir)
    paths = [p for p, _ in plain.samples]
    rows = []

    # Single-threaded rows: one process, one torch thread, as kiln's.
    torch.set_num_threads(1)
    rows.append({"name": "decode", **time_it(lambda: [load(p) for p in paths], args.warmup, args.repeat)})
    rows.append({"name": "cold", **time_it(lambda: [full(load(p)) for p in paths], args.warmup, args.repeat)})
    resized = [T.Resize(256)(load(p)) for p in paths]
    rows.append({"name": "cached", **time_it(lambda: [after_resize(im) for im in resized], args.warmup, args.repeat)})

    ds = D.ImageFolder(args.dir, transform=full)
    for w in sorted({1, 2, os.cpu_count() or 1}):
        dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=w,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=True)
        t = time_it(lambda: [None for _ in dl], args.warmup, args.repeat)
        rows.append({"name": f"loader/w{w}/cold", **t})
        rows.append({"name": f"loader/w{w}/cached", **t, "note": "no decode cache: every epoch decodes"})
        del dl

    n = len(paths)
    out = {
        "peer": "torchvision",
        "torch_version": f"{torch.__version__} (torchvision {torchvision.__version__})",
        "images": n,
        "batch": BATCH,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "cache": args.cache,
        "rows": rows,
        "summary": {r["name"] + "_img_per_s": n / (r["median_ms"] * 1e-3) for r in rows},
    }
    write_report(out, args.json)


if __name__ == "__main__":
    main()
