#!/usr/bin/env python3
"""PyTorch peer of kiln_bench's suites (conv, step, gemm, pool, norm, softmax_ce,
elementwise, sgd, copy; on the CPU or, with --device cuda, the GPU): the same shapes, threads and timing method (warm-up, then --repeat runs and at
least 200 ms, median and min/max, the other processes' CPU share). Rows carry kiln's names
so `kiln_bench --suite NAME --compare` matches them.

Where kiln writes into preallocated outputs, the peer does too (out= or in-place variants)
where PyTorch has one; dropout allocates its mask and output in PyTorch (F.dropout).

    /usr/bin/python3 benchmarks/torch_cpu_peer.py --suite gemm --plan PLAN --threads 2 --repeat 5 [--json FILE]

PLAN is the model plan as JSON from `kiln_bench --print-plan vgg16` (kiln_bench --compare
passes it): the VGG16 shapes of gemm, pool, elementwise, sgd, conv and step come from it.

On the CPU it first checks torch's fp32 GEMM against float64 and measures its best rate
(the "blas" member, as torch_vgg16_forward.py's peer_blas_report).

Prints JSON on stdout (or writes it to --json FILE). Exit status 2: torch is not importable;
3: torch's GEMM computes wrong products on this machine (nothing is timed).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # kiln_bench --compare reads exit status 2 as "no torch here"
    print(f"torch_cpu_peer.py: PyTorch is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)
from torch_vgg16_forward import peer_blas_report, set_cold_cache, set_tf32, time_it, write_report  # shared peers
import kiln_plan  # noqa: E402  (the model plan kiln_bench prints: the VGG16 shapes below come from it)

# The plan (--plan), read in main() for the suites that time VGG16's shapes.
PLAN = None
PLAN_SUITES = {"gemm", "pool", "elementwise", "sgd", "conv", "step"}


def gemm():
    rows = []
    for name, fin, fout in [(l["name"], l["in_channels"], l["out_channels"]) for l in kiln_plan.layers(PLAN, "fc")]:
        w = torch.empty(fout, fin).uniform_(-1, 1)
        for n in (1, 8, 64):
            x = torch.empty(n, fin).uniform_(-1, 1)
            rows.append((f"{name}/b{n}", lambda x=x, w=w: F.linear(x, w)))
        del w
    for s in (1024, 2048):
        x, w = torch.empty(s, s).uniform_(-1, 1), torch.empty(s, s).uniform_(-1, 1)
        rows.append((f"square{s}", lambda x=x, w=w: F.linear(x, w)))
    return rows


def pool():
    rows = []
    cl = torch.channels_last
    cases = [(l["name"], l["in_size"], l["in_channels"], 2, 2, 0) for l in kiln_plan.layers(PLAN, "pool")]
    # suite_pool.cpp's ResNet stem row, from torchvision's resnet50: conv1's output at 224 px
    # into its maxpool.
    import torchvision
    r = torchvision.models.resnet50()
    c1, mp = r.conv1, r.maxpool
    side = (224 + 2 * c1.padding[0] - c1.kernel_size[0]) // c1.stride[0] + 1
    cases.append(("resnet50.maxpool", side, c1.out_channels, mp.kernel_size, mp.stride, mp.padding))
    for name, h, c, k, s, p in cases:
        x = torch.empty(8, c, h, h).uniform_(-1, 1).contiguous(memory_format=cl)
        y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        dy = torch.empty_like(y).uniform_(-1, 1)
        rows.append((f"{name}/fwd", lambda x=x, k=k, s=s, p=p: F.max_pool2d(x, k, s, p, return_indices=True)))
        # What autograd runs for max_pool2d's backward.
        rows.append((f"{name}/bwd", lambda dy=dy, x=x, idx=idx, k=k, s=s, p=p:
                     torch.ops.aten.max_pool2d_with_indices_backward(dy, x, [k, k], [s, s], [p, p], [1, 1], False, idx)))
    return rows


def norm():
    """batch_norm2d's rows: aten's native batch norm (what F.batch_norm and autograd run),
    channels_last, training forward (statistics, running update, normalisation) and
    backward (dx, dgamma, dbeta), inference forward."""
    rows = []
    cl = torch.channels_last
    # Bottleneck outputs: 4 x the stage's width, as kiln's suite_norm.cpp.
    for name, h, c in [("bn_conv2_56x56x256", 56, 4 * 64), ("bn_conv4_14x14x1024", 14, 4 * 256),
                       ("bn_conv5_7x7x2048", 7, 4 * 512)]:
        x = torch.empty(8, c, h, h).uniform_(-3.2, 7.2).contiguous(memory_format=cl)
        dy = torch.empty_like(x).uniform_(-1, 1)
        g, b = torch.empty(c).uniform_(0.5, 1.5), torch.empty(c).uniform_(-1, 1)
        rm, rv = torch.zeros(c), torch.ones(c)
        _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5)
        rows.append((f"{name}/train_fwd", lambda x=x, g=g, b=b, rm=rm, rv=rv: torch.ops.aten.native_batch_norm(
            x, g, b, rm, rv, True, 0.1, 1e-5)))
        rows.append((f"{name}/train_bwd", lambda dy=dy, x=x, g=g, rm=rm, rv=rv, sm=save_mean, si=save_invstd:
                     torch.ops.aten.native_batch_norm_backward(dy, x, g, rm, rv, sm, si, True, 1e-5, [True, True, True])))
        rows.append((f"{name}/eval_fwd", lambda x=x, g=g, b=b, rm=rm, rv=rv: F.batch_norm(x, rm, rv, g, b, False)))
    return rows


def softmax_ce():
    rows = []
    for k in (8, 1000):
        for n in (64, 256, 1024):
            logits = torch.empty(n, k).uniform_(-4, 4)
            labels = (torch.arange(n, dtype=torch.int64) * 7919) % k
            rows.append((f"ce_fwd/{n}x{k}", lambda lg=logits, lb=labels: F.cross_entropy(lg, lb)))
            # Backward as autograd runs it for cross_entropy = nll_loss(log_softmax):
            # nll_loss_backward, then _log_softmax_backward_data, from the saved log-softmax.
            ls = F.log_softmax(logits, 1)
            one, tw = torch.ones(()), torch.tensor(float(n))

            def bwd(ls=ls, lb=labels, one=one, tw=tw):
                g = torch.ops.aten.nll_loss_backward(one, ls, lb, None, 1, -100, tw)
                return torch.ops.aten._log_softmax_backward_data(g, ls, 1, torch.float32)
            rows.append((f"ce_bwd/{n}x{k}", bwd))
    return rows


def elementwise():
    rows = []
    # The outputs of these layers at batch 8, as kiln_bench's elementwise suite.
    for name in ("conv1_2", "conv3_3", "conv5_3", "fc6"):
        shape = kiln_plan.output_shape(kiln_plan.layer(PLAN, name), 8)
        a, b = torch.empty(shape).uniform_(-1, 1), torch.empty(shape).uniform_(-1, 1)
        out = torch.empty(shape)
        rows.append((f"relu/{name}", lambda a=a, out=out: torch.clamp_min(a, 0, out=out)))
        rows.append((f"relu_bwd/{name}", lambda a=a, b=b, out=out: torch.ops.aten.threshold_backward.grad_input(
            b, a, 0, grad_input=out)))
        rows.append((f"dropout/{name}", lambda a=a: F.dropout(a, 0.5, training=True)))
        rows.append((f"add/{name}", lambda a=a, b=b, out=out: torch.add(a, b, out=out)))
        rows.append((f"div/{name}", lambda a=a, b=b, out=out: torch.div(a, b, out=out)))
        c = shape[-1]
        bias, sums = b.reshape(-1, c)[0].clone(), torch.empty(c)
        rows.append((f"add_channel/{name}", lambda a=a, bias=bias, out=out: torch.add(a, bias, out=out)))
        rows.append((f"sum_channel/{name}", lambda a=a, c=c, sums=sums: torch.sum(a.reshape(-1, c), 0, out=sums)))
        last = torch.empty(a.numel() // c, 1)
        rows.append((f"sum_last/{name}", lambda a=a, c=c, o=last: torch.sum(a.reshape(-1, c), 1, keepdim=True, out=o)))
        rows.append((f"transpose/{name}", lambda a=a, c=c, out=out: out.view(c, -1).copy_(a.view(-1, c).t())))
        if name == "conv3_3":  # the unary math ops, as kiln_bench: log and sqrt on |a| + 0.1
            pos = a.abs() + 0.1
            for op, f, x in (("exp", torch.exp, a), ("log", torch.log, pos), ("sqrt", torch.sqrt, pos),
                             ("tanh", torch.tanh, a), ("sigmoid", torch.sigmoid, a), ("gelu", torch._C._nn.gelu, a),
                             ("silu", torch._C._nn.silu, a), ("abs", torch.abs, a),
                             ("softplus", torch._C._nn.softplus, a)):
                rows.append((f"{op}/{name}", lambda f=f, x=x, out=out: f(x, out=out)))
            # The selections, joins, where, permute and powers, as kiln_bench's OneSizeRows.
            a2, b2 = a.reshape(-1, c), b.reshape(-1, c)
            amax_out, cat_out = torch.empty(a2.shape[0]), torch.empty(a2.shape[0], 2 * c)
            gen = torch.Generator().manual_seed(7)
            gamma = torch.empty(c).uniform_(0.5, 1.5, generator=gen)
            beta = torch.empty(c).uniform_(-1, 1, generator=gen)
            rows.append((f"maximum/{name}", lambda a=a, b=b, out=out: torch.maximum(a, b, out=out)))
            rows.append((f"amax_channel/{name}", lambda a2=a2, o=amax_out: torch.amax(a2, 1, out=o)))
            rows.append((f"concat_channel/{name}", lambda a2=a2, b2=b2, o=cat_out: torch.cat([a2, b2], 1, out=o)))
            perm_out = torch.empty(a.shape[0], a.shape[2], a.shape[1], a.shape[3])
            rows.append((f"permute_0213/{name}", lambda a=a, o=perm_out: o.copy_(a.permute(0, 2, 1, 3))))
            mask = a > 0
            rows.append((f"where/{name}", lambda m=mask, a=a, b=b, out=out: torch.where(m, a, b, out=out)))
            rows.append((f"pow_square/{name}", lambda a=a, out=out: torch.pow(a, 2, out=out)))
            rows.append((f"pow/{name}", lambda pos=pos, out=out: torch.pow(pos, 1.5, out=out)))
            e_row = b.reshape(-1, c)[0] * 2.0
            rows.append((f"pow_row/{name}", lambda pos=pos, e=e_row, out=out: torch.pow(pos, e, out=out)))
            rows.append((f"layer_norm/{name}", lambda a2=a2, c=c, g=gamma, bt=beta: F.layer_norm(a2, (c,), g, bt)))
        # The random fills in place, into the same preallocated output (torch's default generator).
        rows.append((f"fill_uniform/{name}", lambda out=out: out.uniform_(0, 1)))
        rows.append((f"fill_normal/{name}", lambda out=out: out.normal_(0, 1)))
    return rows


def sgd():
    params = []
    for s in kiln_plan.param_shapes(PLAN):
        p = torch.empty(s).uniform_(-0.1, 0.1).requires_grad_()
        p.grad = torch.empty(s).uniform_(-0.01, 0.01)
        params.append(p)
    rows = []
    # foreach=True: PyTorch's multi-tensor update. Frozen parameters are left out of the
    # optimizer, as a fine-tuning run would.
    # Adam the same way (foreach=True was PyTorch 1.13's faster Adam here: 468 against 608 ms
    # for VGG16's fc layers, 2 threads); step() creates the momentum buffers and moments.
    for kind in ("sgd", "adam"):
        for name, ps in [(f"{kind}/all", params), (f"{kind}/fc8_only", params[-2:])]:
            opt = (torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, foreach=True) if kind == "sgd"
                   else torch.optim.Adam(ps, lr=1e-3, weight_decay=5e-4, foreach=True))
            opt.step()
            rows.append((name, lambda opt=opt: opt.step()))
    return rows


def copy():
    rows = []
    for mib in (1, 16, 256):
        n = mib * (1 << 20) // 4
        src, dst = torch.empty(n).uniform_(-1, 1), torch.zeros(n)
        rows.append((f"copy/{mib}MiB", lambda s=src, d=dst: d.copy_(s)))
    if DEVICE == "cuda":  # across the bus, blocking, as kiln's Tensor::copy_from
        n = (256 << 20) // 4
        for kind, pin in (("pinned", True), ("pageable", False)):
            host = torch.empty(n, device="cpu", pin_memory=pin).uniform_(-1, 1)
            dev = torch.empty(n)
            rows.append((f"h2d_{kind}/256MiB", lambda h=host, d=dev: d.copy_(h)))
            rows.append((f"d2h_{kind}/256MiB", lambda h=host, d=dev: h.copy_(d)))
    return rows


DEVICE = "cpu"
COLD = True


def time_it_cuda(fn, warmup, repeat):
    """As kiln_bench on a GPU: CUDA events around each run; with a cold cache, 256 MiB
    written on the device first (past the L2), outside the events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    evict = torch.empty(64 << 20) if COLD else None
    ms = []
    while len(ms) < repeat or (sum(ms) < 200.0 and len(ms) < (100 if COLD else 1000)):
        if evict is not None:
            evict.zero_()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    ms.sort()
    med = ms[len(ms) // 2] if len(ms) % 2 else 0.5 * (ms[len(ms) // 2 - 1] + ms[len(ms) // 2])
    return {"median_ms": med, "min_ms": ms[0], "max_ms": ms[-1], "runs": len(ms), "other_load": 0.0}


# Kernel families of a profiled step (first match wins), so that kiln's --profile table and the
# peer's can be compared by family: cuDNN's Hopper kernels say fprop/dgrad/wgrad in their names,
# inductor's say triton_.
PROFILE_FAMILIES = (
    ("conv backward-data", ("dgrad",)),
    ("conv backward-filter", ("wgrad",)),
    ("conv backward (CPU: both)", ("convolution_backward",)),
    ("conv forward", ("fprop", "conv", "implicit_gemm", "winograd")),
    ("gemm (linear)", ("gemm", "nvjet", "cublas", "cutlass", "addmm", "aten::mm", "linear", "matmul")),
    ("pooling", ("pool",)),
    ("fused by torch.compile", ("triton",)),
    ("optimizer", ("multi_tensor", "sgd", "foreach")),
    ("relu / threshold", ("relu", "threshold", "clamp")),
    ("layout, casts, copies", ("copy", "nchw", "nhwc", "transpose", "cast", "to_copy", "convert")),
)


def profile_step(name, fn, top, steps=3):
    """KILN_PEER_PROFILE=N: the row's step under torch.profiler after its timing, printed to
    stderr (kiln_bench --compare passes it through): per step, each kernel family's time, then
    the N kernels (on the CPU, ops) taking the most. These are the kernels' own run times as the
    step runs, where kiln's --profile times each op alone with the device drained around it."""
    from torch.profiler import ProfilerActivity, profile
    gpu = DEVICE == "cuda"
    fn()
    if gpu:
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
        for _ in range(steps):
            fn()
        if gpu:
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = ("self_device_time_total" if hasattr(events[0], "self_device_time_total")
            else "self_cuda_time_total") if gpu else "self_cpu_time_total"
    # On a GPU only the kernels' (and copies') own entries: an op's "self device time" is
    # its kernels' again.
    kind = torch.autograd.DeviceType.CUDA if gpu else torch.autograd.DeviceType.CPU
    kernels = [(getattr(e, attr) / 1e3 / steps, e.count / steps, e.key) for e in events
               if getattr(e, "device_type", kind) == kind]
    kernels = sorted([k for k in kernels if k[0] > 0], reverse=True)
    total = sum(k[0] for k in kernels)
    families = {}
    for ms, _, key in kernels:
        low = key.lower()
        fam = next((f for f, words in PROFILE_FAMILIES if any(w in low for w in words)), "other")
        families[fam] = families.get(fam, 0.0) + ms
    out = [f"    peer profile of {name}: {total:.3f} ms of {'kernels' if gpu else 'ops'} per step "
           f"(torch.profiler, {steps} steps)"]
    for fam, ms in sorted(families.items(), key=lambda kv: -kv[1]):
        out.append(f"      {fam:<28} {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    out.append(f"      {'kernel' if gpu else 'op':<90} {'calls':>6} {'ms':>9}  share")
    for ms, calls, key in kernels[:top]:
        out.append(f"      {key[:90]:<90} {calls:6.0f} {ms:9.3f}  {100 * ms / total:4.1f}%")
    if len(kernels) > top:
        out.append(f"      ({len(kernels) - top} more)")
    print("\n".join(out), file=sys.stderr, flush=True)


def conv(batches, args, rows, summary):
    """Forward (with bias), backward-data, backward-filter (with the bias gradient): the
    calls autograd makes for F.conv2d, in channels_last (PyTorch's fast CPU layout)."""
    cl = torch.channels_last
    conv_bwd = torch.ops.aten.convolution_backward
    with torch.no_grad():
        for n in batches or [1, 8, 64]:
            fwd_ms = all_ms = 0.0
            for name, h, c, o in kiln_plan.convs(PLAN):
                x = torch.empty(n, c, h, h).uniform_(-1, 1).contiguous(memory_format=cl)
                w = torch.empty(o, c, 3, 3).normal_(0, (2.0 / (9 * c)) ** 0.5).contiguous(memory_format=cl)
                b = torch.empty(o).uniform_(-0.1, 0.1)
                dy = torch.empty(n, o, h, h).uniform_(-1, 1).contiguous(memory_format=cl)
                stem = f"{name}/b{n}/"
                fns = [
                    ("fwd", lambda x=x, w=w, b=b: F.conv2d(x, w, b, 1, 1)),
                    ("bwd_data", lambda x=x, w=w, dy=dy: conv_bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0],
                                                                 1, [True, False, False])),
                    ("bwd_filter", lambda x=x, w=w, dy=dy, o=o: conv_bwd(dy, x, w, [o], [1, 1], [1, 1], [1, 1], False,
                                                                         [0, 0], 1, [False, True, True])),
                ]
                for pas, fn in fns:
                    t = time_it(fn, args.warmup, args.repeat)
                    rows.append({"name": stem + pas, **t})
                    fwd_ms += t["median_ms"] if pas == "fwd" else 0.0
                    all_ms += t["median_ms"]
                del x, w, b, dy
            summary[f"b{n}_fwd_ms"] = fwd_ms
            summary[f"b{n}_fwd_bwd_ms"] = all_ms


def vgg_net():
    """The plan's VGG for 8 classes, as kiln's spec builds it: (net, head, backbone)."""
    from torch_vgg16_forward import layer_specs
    import torch.nn as nn
    layers = []
    for l, (name, kind, m, shape) in zip(PLAN["layers"], layer_specs(PLAN)):
        if len(shape) == 1 and not any(isinstance(k, nn.Flatten) for k in layers):  # before the first fc
            layers.append(nn.Flatten())
        if kind == "fc_last":  # the head, for 8 classes
            m = nn.Linear(m.in_features, 8)
        layers.append(m)
        if kind in ("conv", "fc"):
            layers.append(nn.ReLU(inplace=True))
        if l["dropout"]:
            layers.append(nn.Dropout(0.5))
    net = nn.Sequential(*layers)
    return net, layers[-1], net[:-1]


def resnet_net(v1):
    """torchvision's resnet50 (v1.5) for 8 classes, or v1 (kiln's resnet50_v1, Keras's): the
    stride of each downsampling block moved from its 3x3 to its first 1x1 convolution (v1's
    convolution biases are left out: a bias add per conv, a little less work for the peer)."""
    import torch.nn as nn
    import torchvision
    net = torchvision.models.resnet50(num_classes=8)
    if v1:
        for stage in (net.layer2, net.layer3, net.layer4):
            stage[0].conv1.stride, stage[0].conv2.stride = stage[0].conv2.stride, (1, 1)
    backbone = nn.Sequential(*list(net.children())[:-1], nn.Flatten())
    return net, net.fc, backbone


def step(batches, args, rows, summary):
    """The plan's model (VGG16 unless kiln_bench --model said otherwise; 8 classes) in
    channels_last: inference, a step with the backbone frozen (requires_grad=False; ResNet's
    batch norms in eval mode, on running statistics, as kiln's frozen ones) and the head
    trained, a step training everything; SGD momentum 0.9, as kiln_bench's step suite. Each
    step again in kiln's lower precision as a PyTorch user writes it (the GPU issue's peer
    settings): bf16-frozen = the frozen backbone under inference_mode and bf16 autocast, the
    head and the loss in fp32; bf16 = the whole step under bf16 autocast.
    KILN_PEER_COMPILE=1 (PyTorch 2+) adds each of those again through torch.compile
    ("+compile", PyTorch's own variant: kiln has no such row)."""
    n = batches[0] if batches else 8
    import torch.nn as nn
    model = PLAN["model"]
    head_name = PLAN["head_scope"].rstrip("/").rsplit("/", 1)[-1]  # "fc8", "fc"
    if model.startswith("vgg"):
        net, head, backbone = vgg_net()
    elif model in ("resnet50", "resnet50_v1"):
        net, head, backbone = resnet_net(model == "resnet50_v1")
    else:
        print(f"torch_cpu_peer.py: no PyTorch peer for model {model}", file=sys.stderr)
        sys.exit(1)
    net = net.to(memory_format=torch.channels_last)
    x = torch.empty((n,) + kiln_plan.input_chw(PLAN)).uniform_(-1, 1).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(n) * 5) % 8
    only = set(filter(None, os.environ.get("KILN_PEER_ONLY", "").split(",")))  # kiln_bench --only
    want = lambda name: not only or name in only  # noqa: E731
    profile_top = int(os.environ.get("KILN_PEER_PROFILE", "0") or 0)  # profile_step's N

    def timed(name, fn, key):
        if not want(name.removesuffix("+compile")):  # a compiled row goes with its eager one
            return
        t = time_it(fn, args.warmup, args.repeat)
        rows.append({"name": name, **t})
        summary[key + "_img_per_s"] = n / (t["median_ms"] * 1e-3)
        if profile_top > 0:
            try:
                profile_step(name, fn, profile_top)
            except Exception as e:  # noqa: BLE001  (a profiler failure costs the profile, not the row)
                print(f"torch_cpu_peer.py: profile of {name} failed: {e}", file=sys.stderr)

    net.eval()
    with torch.no_grad():
        timed(f"{model}/forward", lambda: net(x), "forward")
    compile_too = os.environ.get("KILN_PEER_COMPILE") == "1" and hasattr(torch, "compile")
    for phase, name in ((1, f"{model}/step_{head_name}"), (2, f"{model}/step_all")):
        net.train()
        for p in net.parameters():
            p.requires_grad_(phase == 2)
        for p in head.parameters():
            p.requires_grad_(True)
        if phase == 1:  # frozen batch norms normalise with their running statistics
            for m in backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-3 if phase == 1 else 1e-5, momentum=0.9)
        key = f"step_{head_name}" if phase == 1 else "step_all"

        def one_step(opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        timed(name, one_step, key)

        def bf16_frozen_step(body, opt=opt):
            opt.zero_grad(set_to_none=True)
            with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
                h = body(x)
            # A copy outside inference_mode: the head's backward saves its input.
            F.cross_entropy(head(h.to(torch.float32, copy=True)), y).backward()
            opt.step()

        def bf16_step(model, opt=opt):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        low, run, body = (("@bf16-frozen", bf16_frozen_step, backbone) if phase == 1 else ("@bf16", bf16_step, net))
        timed(name + low, lambda run=run, body=body: run(body), key + low.replace("@", "_").replace("-", "_"))
        if compile_too and want(name + low):  # the compiled twin goes with its eager row
            try:  # compiled in the first (untimed) warm-up call
                compiled = torch.compile(body)
                timed(name + low + "+compile", lambda run=run, c=compiled: run(c),
                      key + low.replace("@", "_").replace("-", "_") + "_compiled")
            except Exception as e:  # noqa: BLE001  (a compiler failure costs the row, not the run)
                print(f"torch_cpu_peer.py: torch.compile row {name + low} failed: {e}", file=sys.stderr)


# Suites that take --batch themselves (conv: a list; step: one size) and fill rows and summary.
BATCHED = {"conv": conv, "step": step}

SUITES = {"gemm": gemm, "pool": pool, "norm": norm, "softmax_ce": softmax_ce, "elementwise": elementwise, "sgd": sgd, "copy": copy}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", required=True, choices=sorted(list(SUITES) + list(BATCHED)))
    ap.add_argument("--batch", default="default",
                    help="conv: a list such as 1,8,64 (default); step: one size (default 8); others fix their shapes")
    ap.add_argument("--cache", choices=("cold", "warm"), default="cold")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: every suite here on the GPU, timed with CUDA events")
    ap.add_argument("--tf32", choices=("none", "conv", "all"), default="conv",
                    help="cuda: where TF32 is allowed, as kiln's KILN_TF32 (kiln_bench passes its mode); conv is "
                         "both frameworks' default")
    ap.add_argument("--conv-search", choices=("exhaustive", "heuristic"), default="exhaustive",
                    help="cuda: exhaustive is cudnn.benchmark = True, as kiln_bench's default")
    ap.add_argument("--json", help="write the JSON here instead of stdout")
    kiln_plan.add_argument(ap)
    args = ap.parse_args()

    global DEVICE, COLD, PLAN, time_it
    if args.suite in PLAN_SUITES:
        PLAN = kiln_plan.load(args.plan, "torch_cpu_peer.py")
    torch.set_num_threads(args.threads)
    # On the CPU: check torch's GEMM and measure its rate before timing (exit 3 if wrong).
    blas = peer_blas_report("torch_cpu_peer.py") if args.device == "cpu" else None
    torch.manual_seed(0)
    COLD = args.cache == "cold"
    set_cold_cache(COLD and args.device == "cpu")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("torch_cpu_peer.py: --device cuda: PyTorch sees no GPU", file=sys.stderr)
            sys.exit(1)
        DEVICE = "cuda"
        torch.set_default_device("cuda")  # PyTorch 2.0+: every factory below makes GPU tensors
        # TF32 as kiln's mode (conv: PyTorch's own default); cuDNN's algorithms by search
        # (Find) or its heuristics, as kiln_bench --conv-search.
        set_tf32(args.tf32)
        torch.backends.cudnn.benchmark = args.conv_search == "exhaustive"
        time_it = time_it_cuda
    batches = None if args.batch == "default" else [int(b) for b in args.batch.split(",")]
    rows, summary = [], {}
    if args.suite in BATCHED:
        BATCHED[args.suite](batches, args, rows, summary)
    else:
        with torch.no_grad():
            for name, fn in SUITES[args.suite]():
                rows.append({"name": name, **time_it(fn, args.warmup, args.repeat)})
    out = {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "suite": args.suite,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "cache": args.cache,
        "device": args.device,
        "rows": rows,
        "summary": summary,
    }
    if blas is not None:
        out["blas"] = blas
    write_report(out, args.json)


if __name__ == "__main__":
    main()
