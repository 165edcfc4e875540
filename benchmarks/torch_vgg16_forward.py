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

Before timing, it checks torch's fp32 GEMM against float64 and measures its best rate
(the "blas" member: library, OpenBLAS core, check, probe; see peer_blas_report).

Prints JSON on stdout (or writes it to --json FILE). Exit status 2: torch is not importable;
3: torch's GEMM computes wrong products on this machine (nothing is timed).
"""
import argparse
import ctypes
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


def set_tf32(mode):
    """Where fp32 may use TF32, by kiln's KILN_TF32 names: none, conv (both frameworks'
    default), all. PyTorch 2.9 renamed the switches (fp32_precision 'tf32' or 'ieee') and
    deprecated allow_tf32; the new ones are used where they exist."""
    conv, gemm = mode != "none", mode == "all"
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        cudnn_conv.fp32_precision = "tf32" if conv else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if gemm else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = gemm


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


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _sgemm_library():
    """The file whose sgemm_ libtorch_cpu binds to (dlsym from libtorch_cpu's handle searches
    it and its dependencies in load order, as the loader does; dladdr names the file), or
    None where that cannot be told (torch elsewhere, MKL linked in)."""
    try:
        torch_cpu = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        fn = ctypes.cast(torch_cpu.sgemm_, ctypes.c_void_p)
        libc = ctypes.CDLL(None)
        info = _DlInfo()
        if libc.dladdr(fn, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(info.dli_fname.decode())  # through the alternatives link
    except (OSError, AttributeError):
        pass
    return None


def blas_library():
    """Which BLAS torch's CPU GEMM (F.linear, torch.mm) runs on: the library that provides
    its sgemm_ and, when that is OpenBLAS, its kernel core and build (ctypes). On the
    reference BLAS the peer's fc rows are 10-40x slow: say so."""
    path = _sgemm_library()
    if path is None:
        mkl = torch.backends.mkl.is_available()
        return {"library": "MKL, linked into torch" if mkl else "unknown", "openblas_core": None,
                "openblas_config": None}
    try:
        lib = ctypes.CDLL(path)
        core, config = lib.openblas_get_corename, lib.openblas_get_config
    except (OSError, AttributeError):
        return {"library": path, "openblas_core": None, "openblas_config": None}
    core.restype = config.restype = ctypes.c_char_p
    return {"library": path, "openblas_core": core().decode(), "openblas_config": config().decode()}


# The products the peer checks before timing anything: 512^3 as kiln's limits check, and
# ragged shapes that reach a kernel's edge code (where broken kernels have gone wrong).
CHECK_SHAPES = ((512, 512, 512), (8, 257, 1000), (77, 131, 300))


def check_sgemm():
    """F.linear (x @ w.T, the call the fc rows time) in fp32 against float64, each element
    within 1e-6 + 1e-5 * sum |x_ik w_jk| (the budget kiln_bench's own sgemm check uses).
    Returns (ok, what was found)."""
    gen = torch.Generator().manual_seed(1)
    worst, worst_at = 0.0, ""
    for m, n, k in CHECK_SHAPES:
        x = torch.rand(m, k, generator=gen) * 2 - 1
        w = torch.rand(n, k, generator=gen) * 2 - 1
        got = F.linear(x, w).double()
        ref = x.double() @ w.double().T
        tol = 1e-6 + 1e-5 * (x.double().abs() @ w.double().abs().T)
        used = ((got - ref).abs() / tol).nan_to_num(nan=float("inf"))
        if used.max().item() > worst or not worst_at:
            i = int(used.argmax())
            r, c = divmod(i, n)
            worst = used.max().item()
            worst_at = (f"{m}x{n}x{k}[{r},{c}]: got {got[r, c].item():.7g}, float64 {ref[r, c].item():.7g}, "
                        f"tolerance {tol[r, c].item():.3g}")
    return worst <= 1.0, f"worst {worst:.3g} of the tolerance at {worst_at}"


def sgemm_probe(n=1024):
    """The peer's best fp32 GEMM rate, F.linear n x n x n (the gemm suite's square row):
    after a warm-up, the fastest of 3 runs, or of fewer when they pass 1 s (reference BLAS)."""
    x, w = torch.empty(n, n).uniform_(-1, 1), torch.empty(n, n).uniform_(-1, 1)
    F.linear(x, w)
    ms = []
    before = cpu_ticks()
    while len(ms) < 3 and sum(ms) < 1000.0:
        t0 = time.perf_counter()
        F.linear(x, w)
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"shape": f"F.linear {n}x{n}x{n}", "gflops": 2.0 * n ** 3 / (min(ms) * 1e-3) / 1e9, "min_ms": min(ms),
            "runs": len(ms), "other_load": other_load(before, cpu_ticks())}


def peer_blas_report(script):
    """The "blas" member of a CPU peer's report: the library and OpenBLAS core, the
    OPENBLAS_* variables the peer ran with, the sgemm check and the GEMM probe. Old OpenBLAS
    builds can compute wrong results when they pick their own kernel on a CPU newer than
    they know: a wrong product ends the peer with exit status 3 before anything is timed
    (kiln_bench then refuses the comparison)."""
    with torch.no_grad():
        info = blas_library()
        info["openblas_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")}
        ok, found = check_sgemm()
        info["sgemm_check"] = {"ok": ok, "shapes": ["x".join(map(str, s)) for s in CHECK_SHAPES], "found": found}
        if not ok:
            print(f"{script}: WRONG RESULTS from torch's fp32 GEMM on {info['library']} "
                  f"(OpenBLAS core {info['openblas_core']}): {found}. Timing a BLAS that computes wrong "
                  "products compares nothing; set OPENBLAS_CORETYPE to a core this CPU runs correctly "
                  "(e.g. Haswell) or install a newer OpenBLAS.", file=sys.stderr)
            sys.exit(3)
        info["sgemm_probe"] = sgemm_probe()
    return info


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
    blas = peer_blas_report("torch_vgg16_forward.py")
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
        "blas": blas,
        "rows": rows,
        "summary": {"forward_img_per_s": n / (fwd["median_ms"] * 1e-3)},
    }
    write_report(out, args.json)


if __name__ == "__main__":
    main()
