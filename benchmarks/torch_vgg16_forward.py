#!/usr/bin/env python3
"""PyTorch peer of `kiln_bench --suite vgg16_forward`: the same VGG16 inference shapes,
timed the same way (warm-up, then --repeat runs, median and min/max), in channels_last
with torch.no_grad(). Rows carry kiln's names (conv1_1 .. conv5_3, pool1 .. pool5,
fc6 .. fc8, forward) so kiln_bench --compare can match them.

The net is built from nn.Conv2d / nn.MaxPool2d / nn.Linear as the plan lists them (no
torchvision, no weights downloaded); PyTorch's default initialisation is fine for timing.

    /usr/bin/python3 benchmarks/torch_vgg16_forward.py --plan PLAN --batch 8 --threads 2 --repeat 5 [--json FILE]

PLAN is the model plan as JSON from `kiln_bench --print-plan vgg16` (kiln_bench --compare
passes it); every layer's shape comes from it.

Prints JSON on stdout (or writes it to --json FILE). Exit status 2: torch is not importable.
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # kiln_bench --compare reads exit status 2 as "no torch here"
    print(f"torch_vgg16_forward.py: PyTorch is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_plan  # noqa: E402  (the model plan kiln_bench prints: every shape below comes from it)


def layer_specs(plan):
    """(name, kind, module, input shape NCHW or [N, in]) with the batch left as None, one per
    layer of the plan; kind "fc_last" for the fc without a ReLU (fc8)."""
    specs = []
    for l in plan["layers"]:
        name, c, h = l["name"], l["in_channels"], l["in_size"]
        if l["kind"] == "pool":
            specs.append((name, "pool", nn.MaxPool2d(l["kernel"], l["stride"], l["pad"]), (c, h, h)))
        elif l["kind"] == "conv":
            m = nn.Conv2d(c, l["out_channels"], l["kernel"], l["stride"], l["pad"])
            specs.append((name, "conv", m, (c, h, h)))
        else:
            specs.append((name, "fc" if l["relu"] else "fc_last", nn.Linear(c, l["out_channels"]), (c,)))
    return specs


def cpu_ticks():
    """(busy, total) clock ticks of the whole machine and this process's own ticks, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    t = os.times()
    return sum(v) - v[3] - v[4], sum(v), (t.user + t.system) * os.sysconf("SC_CLK_TCK") + child_ticks()


def child_ticks():
    """Clock ticks of this process's live children (DataLoader workers count as this run's own work)."""
    me, ticks = str(os.getpid()), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:  # field 4, ppid
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def other_load(a, b):
    """Share of the machine's CPU time other processes took between two cpu_ticks(), as kiln_bench."""
    if a is None or b is None or b[1] <= a[1]:
        return 0.0
    return max(0.0, ((b[0] - a[0]) - (b[2] - a[2])) / (b[1] - a[1]))


# As kiln_bench: short kernels run until 200 ms are measured (at most 1000 runs).
MIN_TIMED_MS, MAX_RUNS = 200.0, 1000


def last_level_cache_bytes():
    """The largest cache of CPU 0 (sysfs), as kiln_bench reads it; 32 MiB if unknown."""
    best = 0
    for idx in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{idx}/size") as f:
                v = f.read().strip()
        except OSError:
            continue
        n = int(v.rstrip("KM") or 0) << (10 if v.endswith("K") else 20 if v.endswith("M") else 0)
        best = max(best, n)
    return best or 32 << 20


_evict_buf = None


def set_cold_cache(cold):
    """As kiln_bench --cache cold: read a buffer twice the last-level cache before each timed run."""
    global _evict_buf
    _evict_buf = torch.ones(2 * last_level_cache_bytes() // 4) if cold else None


def time_it(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    ms = []
    before = cpu_ticks()
    # As kiln_bench: evicting costs a few ms, so short kernels stop at a tenth of the runs.
    max_runs = MAX_RUNS // 10 if _evict_buf is not None else MAX_RUNS
    while len(ms) < repeat or (sum(ms) < MIN_TIMED_MS and len(ms) < max_runs):
        if _evict_buf is not None:
            _evict_buf.sum()
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms),
            "other_load": other_load(before, cpu_ticks())}


def write_report(out, path):
    """The JSON report to `path` (written whole, then renamed), or to stdout without one."""
    text = json.dumps(out, indent=2)
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    else:
        print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument("--json", help="write the JSON here instead of stdout")
    kiln_plan.add_argument(ap)
    args = ap.parse_args()
    plan = kiln_plan.load(args.plan, "torch_vgg16_forward.py")

    torch.set_num_threads(args.threads)
    set_cold_cache(args.cache == "cold")
    torch.manual_seed(0)
    n, cl = args.batch, torch.channels_last
    specs = layer_specs(plan)
    for _, _, m, _ in specs:
        m.eval()
        if isinstance(m, nn.Conv2d):
            m.to(memory_format=cl)

    rows = []
    with torch.no_grad():
        for name, kind, m, shape in specs:
            x = torch.empty((n,) + shape).uniform_(-1, 1)
            if x.dim() == 4:
                x = x.contiguous(memory_format=cl)
            if kind == "conv" or kind == "fc":
                # As torchvision's VGG: ReLU(inplace=True) after every conv and fc6/fc7.
                fn = lambda m=m, x=x: F.relu_(m(x))
            else:
                fn = lambda m=m, x=x: m(x)
            y = fn()
            if not torch.isfinite(y).all():
                raise SystemExit(f"torch_vgg16_forward.py: {name} produced non-finite values")
            if y.dim() == 4 and not y.is_contiguous(memory_format=cl):
                print(f"torch_vgg16_forward.py: note: {name} output is not channels_last", file=sys.stderr)
            rows.append({"name": name, "kind": kind.replace("fc_last", "fc"), **time_it(fn, args.warmup, args.repeat)})

        # The whole network, as torchvision's VGG16 at eval time (dropout is the identity).
        layers = []
        for name, kind, m, shape in specs:
            if len(shape) == 1 and not any(isinstance(k, nn.Flatten) for k in layers):  # before the first fc
                layers.append(nn.Flatten())
            layers.append(m)
            if kind in ("conv", "fc"):
                layers.append(nn.ReLU(inplace=True))
        net = nn.Sequential(*layers).eval()
        x = torch.empty((n,) + kiln_plan.input_chw(plan)).uniform_(-1, 1).contiguous(memory_format=cl)
        logits = net(x)
        if not torch.isfinite(logits).all():
            raise SystemExit("torch_vgg16_forward.py: the forward produced non-finite logits")
        fwd = time_it(lambda: net(x), args.warmup, args.repeat)
        rows.append({"name": "forward", "kind": "net", **fwd})

    out = {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "batch": n,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "memory_format": "channels_last",
        "cache": args.cache,
        "rows": rows,
        "summary": {"forward_img_per_s": n / (fwd["median_ms"] * 1e-3)},
    }
    write_report(out, args.json)


if __name__ == "__main__":
    main()
