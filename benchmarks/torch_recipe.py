#!/usr/bin/env python3
"""PyTorch twin of kiln's seed recipe (`vgg_finetune train` with its defaults at full size;
`vgg_finetune demo --full` runs the same recipe on the demo's data): torchvision's VGG16
from random initialisation, fc8 replaced for the data's classes, phase 1 trains fc8 alone
(conv1..fc7 frozen), phase 2 every layer, evaluation on val after every epoch. Written as a
PyTorch user writes it: ImageFolder + DataLoader (--workers, pin_memory, persistent_workers).

    python3 benchmarks/torch_recipe.py --data W/data --device cuda --seed 1 [--json OUT]

--data is a folder holding train/<class>/*.jpg and val/<class>/*.jpg, e.g. the one
`vgg_finetune demo --work-dir W` writes (W/data) or `vgg_finetune _toy-data DIR`.

The recipe, as kiln's defaults (apps/vgg_finetune/main.cpp train_specs, train.cpp):
  data     shorter side resized to image_size * 256 // 224 (PIL bilinear, antialiased: kiln
           reproduces PIL), then for training a uniformly random image_size crop and a
           horizontal flip with probability 1/2, for evaluation the central crop
           (CenterCrop's rounding); [0, 1] then ImageNet mean/std (torchvision_rgb, kiln's
           convention without --weights); batch 32, reshuffled every epoch, last batch kept
  model    VGG16 as torchvision initialises it (convs Kaiming-normal fan_out, linear
           N(0, 0.01), biases 0); fc8 new with the same N(0, 0.01); dropout 0.5 after fc6
           and fc7 (kiln's --keep-prob 0.5); at image sizes other than 224, fc6 takes pool5
           as it is ((size/32)^2 * 512 inputs), as kiln's fc6 follows the image size
           (torchvision's adaptive pool to 7x7 is dropped there; at 224 it is the identity)
  phase 1  fc8 only, 10 epochs, SGD lr 1e-3; conv1..fc7 requires_grad False, run under
           torch.no_grad() in training (dropout after fc6/fc7 still active: train mode)
  phase 2  every layer, 10 epochs, SGD lr 1e-5; a new optimizer (fresh state) per phase
  SGD      momentum 0 (kiln's default), no schedule (constant lr per phase), weight decay
           5e-4 on weights only (not biases): kiln adds 0.5 * wd * ||w||^2 to the loss, the
           same gradient as SGD's weight_decay in a param group of the weights
  loss     mean cross-entropy; the train loss reported is the cross-entropy alone
  eval     after every epoch on all of val (eval mode, batch 32); with --eval-at-phase-start
           also before each phase (vgg_finetune demo does this; train does not)
  precision fp32 (default): TF32 as kiln's KILN_TF32 (default conv: cuDNN convolutions may
           use TF32, GEMMs strict fp32; --tf32 overrides). --precision bf16-frozen: in
           phase 1 the frozen backbone runs under torch.autocast(bfloat16) and fc8 in fp32
           on its float() output (as benchmarks/torch_cpu_peer.py's step writes it; also in
           phase 1's evaluation); phase 2 freezes nothing, so it is fp32 as kiln's policy

What is not matched exactly, and why:
  - random streams: kiln draws initial weights, dropout masks, the epoch order and each
    crop/flip from Philox keyed by seed, seed+1, seed+2; PyTorch from its own generators
    (torch.manual_seed(seed); the DataLoader's generator from seed + 2). Same distributions,
    other numbers: accuracies agree only in distribution (compare over seeds).
  - flatten order: kiln is channels-last and flattens pool5 as H, W, C (Keras's order),
    torchvision as C, H, W; with random fc6 weights this is a relabelling of inputs.
  - resize: kiln reproduces PIL 9's bilinear filter; a newer Pillow or torchvision's tensor
    path may differ in the last bit of a few pixels.
  - no feature cache: kiln's --no-augment caches pool5 features; the twin runs the full
    forward each step. --head-init probe is kiln's linear probe (train/linear_probe.cpp)
    written again in torch (float64, the same standardisation, folds, strengths and scale:
    linear_probe below); its features come from other random weights, so its fit agrees
    with kiln's only in distribution, as the accuracies do.
  - checkpoints: kiln writes one every epoch (the trainable tensors and optimizer state,
    the frozen ones once per phase, atomically; the last 2 and the best kept). The twin
    writes none unless --checkpoint-dir is given; then it writes the same split with
    torch.save (temporary file, fsync, rename), keeping the last 2 and the best.
  - data audit: kiln decodes every file once before training (train/audit.h) and caches
    decoded images; ImageFolder decodes every image every epoch.
  - demo extras: `vgg_finetune demo` also writes its data, fits a colour baseline, predicts
    and exports; the twin times only its own run (from process start to the final eval).

Wall time is measured from this process's start: /proc/self/stat's start time (clock ticks
since boot, against /proc/uptime), or --start-time EPOCH_S (e.g. `date +%s.%N` taken by the
wrapper before it started python) when given; the JSON says which.

Prints a line per epoch and ends with
    torch_recipe: val accuracy X% after training; wall Y s from process start
Exit status 2: torch or torchvision is not importable.
"""
import time

_T_IMPORT = time.time()  # before the heavy imports: import time is part of the wall

import argparse
import json
import os
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torchvision
    import torchvision.datasets as D
    import torchvision.transforms as T
except ImportError as e:
    print(f"torch_recipe.py: torch/torchvision not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vgg16_forward import set_tf32  # noqa: E402  (one place for the TF32 switches, shared by the peers)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchvision_rgb (io/convention.cpp)


def process_age_s():
    """Seconds since this process started, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def wall_since_start(args):
    """(seconds, how measured) from process start (or the wrapper's stamp) to now."""
    if args.start_time is not None:
        return time.time() - args.start_time, "--start-time (the wrapper's clock before python started)"
    age = process_age_s()
    if age is not None:
        return age, "/proc/self/stat start time (10 ms ticks)"
    return time.time() - _T_IMPORT, "time.time() at import (no /proc: interpreter start not counted)"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder holding train/ and val/, a folder per class in each")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs1", type=int, default=10, help="phase 1 epochs (kiln --phase1-epochs)")
    ap.add_argument("--epochs2", type=int, default=10, help="phase 2 epochs (kiln --phase2-epochs)")
    ap.add_argument("--lr1", type=float, default=1e-3, help="phase 1 lr (kiln --phase1-lr)")
    ap.add_argument("--lr2", type=float, default=1e-5, help="phase 2 lr (kiln --phase2-lr)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="on weights, not biases")
    ap.add_argument("--keep-prob", type=float, default=0.5, help="dropout keep probability after fc6, fc7")
    ap.add_argument("--image-size", type=int, default=224, help="a multiple of 32, as kiln's")
    ap.add_argument("--no-augment", action="store_true", help="central crops, no flips, in training too")
    ap.add_argument("--head-init", choices=("random", "probe"), default="random",
                    help="probe: fc8 starts as kiln's linear probe (--head-init probe), fitted on fc7's features of "
                         "the training images' central crops before phase 1")
    ap.add_argument("--precision", choices=("fp32", "bf16-frozen"), default="fp32")
    ap.add_argument("--tf32", choices=("none", "conv", "all"), default=os.environ.get("KILN_TF32", "conv"),
                    help="cuda: where fp32 may use TF32, as kiln's KILN_TF32 (default: $KILN_TF32, else conv)")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--channels-last", action="store_true", help="model and batches in channels_last")
    ap.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                    help="cudnn.benchmark (default: on with --device cuda)")
    ap.add_argument("--eval-at-phase-start", action="store_true",
                    help="also evaluate before each phase, as vgg_finetune demo does")
    ap.add_argument("--checkpoint-dir", help="write a checkpoint every epoch, as kiln's train does")
    ap.add_argument("--start-time", type=float, help="the wrapper's time.time() before it started this process")
    ap.add_argument("--json", help="write a JSON report here")
    args = ap.parse_args()
    if args.image_size % 32 or args.image_size < 32:
        ap.error(f"--image-size must be a multiple of 32, got {args.image_size}")
    if not 0 < args.keep_prob <= 1:
        ap.error(f"--keep-prob must be in (0, 1], got {args.keep_prob}")
    if args.epochs1 < 0 or args.epochs2 < 0 or args.epochs1 + args.epochs2 == 0:
        ap.error("--epochs1 and --epochs2 must be >= 0, not both 0")
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(args.data, split)):
            ap.error(f"--data '{args.data}' must hold {split}/ (a folder per class)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no GPU here")
    return args


def build_vgg16(num_classes, image_size, keep_prob):
    """torchvision's VGG16 (its initialisation), fc8 for num_classes, dropout 1 - keep_prob;
    fc6 sized for pool5 at this image size (kiln's), the adaptive pool dropped off 224 px."""
    m = torchvision.models.vgg16(weights=None)
    side = image_size // 32
    fc6, fc8 = m.classifier[0], m.classifier[6]
    new = [6]
    if side != 7:  # torchvision's fc6 reads pool5 pooled to 7x7
        m.avgpool = nn.Identity()
        m.classifier[0] = nn.Linear(fc6.in_features // 49 * side * side, fc6.out_features)
        new.append(0)
    m.classifier[6] = nn.Linear(fc8.in_features, num_classes)
    for i in new:  # torchvision's own rule for its linear layers, as kiln's Init::normal_0_01
        nn.init.normal_(m.classifier[i].weight, 0, 0.01)
        nn.init.zeros_(m.classifier[i].bias)
    for i in (2, 5):
        m.classifier[i].p = 1.0 - keep_prob
    backbone = nn.Sequential(m.features, m.avgpool, nn.Flatten(1), m.classifier[:6])
    return m, backbone, m.classifier[6]


def loaders(args):
    resize = args.image_size * 256 // 224  # train/api.cpp resize_for_crop
    norm = T.Normalize(MEAN, STD)
    evaluate = T.Compose([T.Resize(resize), T.CenterCrop(args.image_size), T.ToTensor(), norm])
    train = evaluate if args.no_augment else T.Compose(
        [T.Resize(resize), T.RandomCrop(args.image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    tr = D.ImageFolder(os.path.join(args.data, "train"), transform=train)
    va = D.ImageFolder(os.path.join(args.data, "val"), transform=evaluate)
    if tr.classes != va.classes:
        sys.exit(f"torch_recipe.py: train/ has classes {tr.classes}, val/ has {va.classes}")
    common = dict(batch_size=args.batch, num_workers=args.workers, pin_memory=args.device == "cuda",
                  persistent_workers=args.workers > 0, drop_last=False)
    g = torch.Generator()
    g.manual_seed(args.seed + 2)
    # The probe reads the training images as kiln's does: central crops, in folder order.
    probe = (torch.utils.data.DataLoader(D.ImageFolder(os.path.join(args.data, "train"), transform=evaluate),
                                         shuffle=False, **{**common, "persistent_workers": False})
             if args.head_init == "probe" else None)
    return (tr, va, torch.utils.data.DataLoader(tr, shuffle=True, generator=g, **common),
            torch.utils.data.DataLoader(va, shuffle=False, **common), probe)


def linear_probe(feats, labels, classes, lambdas=(3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0), folds=5):
    """kiln's fit_linear_probe (train/linear_probe.cpp) in float64: ridge regression to one-hot
    targets centred on the fitted rows' class frequencies, on features standardised over all
    rows (sd floored at a tenth of the typical one, constant features sd 1); the strength
    (a multiple of the feature count) chosen by k-fold accuracy (row i of each class in fold
    i % folds; ties to the lower squared error); the scores scaled by the 2^(k/4), k in
    [0, 40], that minimises the held-out cross-entropy. Returns (weight [classes, d], bias,
    multiple, held-out accuracy)."""
    x, labels = feats.double(), labels.to(feats.device)
    n, d = x.shape
    mu = x.mean(0)
    sd = ((x - mu) ** 2).mean(0).sqrt()
    varying = sd > 1e-12
    typical = sd[varying].pow(2).mean().sqrt() if bool(varying.any()) else torch.ones((), dtype=x.dtype)
    sd = torch.where(varying, torch.clamp(sd, min=float(0.1 * typical)), torch.ones_like(sd))
    z = (x - mu) / sd
    onehot = F.one_hot(labels, classes).double()
    gram = z @ z.T if n <= d else None  # the dual (n x n) system where rows are fewer than features

    def fit(rows, lam):
        ybar = onehot[rows].mean(0)
        y = onehot[rows] - ybar
        zr = z[rows]
        if gram is not None:
            k = gram[rows][:, rows] + lam * torch.eye(len(rows), dtype=x.dtype, device=x.device)
            w = zr.T @ torch.cholesky_solve(y, torch.linalg.cholesky(k))
        else:
            g = zr.T @ zr + lam * torch.eye(d, dtype=x.dtype, device=x.device)
            w = torch.cholesky_solve(zr.T @ y, torch.linalg.cholesky(g))
        return w, ybar

    seen, fold_of = [0] * classes, []
    for c in labels.tolist():
        fold_of.append(seen[c] % folds)
        seen[c] += 1
    fold_of = torch.tensor(fold_of, device=x.device)
    best = None  # (correct, -err, multiple, scores)
    for mult in lambdas:
        correct, err, scores = 0, 0.0, torch.zeros(n, classes, dtype=x.dtype, device=x.device)
        for f in range(folds):
            held, rest = (fold_of == f).nonzero().flatten(), (fold_of != f).nonzero().flatten()
            if len(held) == 0 or len(rest) < 2:
                continue
            w, ybar = fit(rest, mult * d)
            sc = z[held] @ w + ybar
            scores[held] = sc
            correct += int((sc.argmax(1) == labels[held]).sum())
            err += float(((sc - onehot[held]) ** 2).sum())
        if best is None or correct > best[0] or (correct == best[0] and -err > best[1]):
            best = (correct, -err, mult, scores)
    correct, _, mult, scores = best
    ce = [float(F.cross_entropy(scores * 2 ** (k / 4), labels, reduction="sum")) for k in range(41)]
    scale = 2 ** (min(range(41), key=lambda k: (ce[k], k)) / 4)
    w, ybar = fit(torch.arange(n, device=x.device), mult * d)
    w = w / sd[:, None]  # the standardisation folded in: score = w^T (x - mu) / sd + ybar
    return scale * w.T, scale * (ybar - mu @ w), mult, correct / n


class Twin:
    def __init__(self, args, num_classes):
        self.args = args
        self.dev = torch.device(args.device)
        self.model, self.backbone, self.head = build_vgg16(num_classes, args.image_size, args.keep_prob)
        self.mf = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model.to(self.dev, memory_format=self.mf)
        self.phase = 0
        self.opt = None

    def batch(self, x, y):
        x = x.to(self.dev, non_blocking=True).contiguous(memory_format=self.mf)
        return x, y.to(self.dev, non_blocking=True)

    def autocast(self):
        on = self.args.precision == "bf16-frozen" and self.phase == 1
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=on)

    def start_phase(self, phase, lr):
        """Freezing as kiln's recipe_phases, and a new SGD (kiln builds one per phase)."""
        self.phase = phase
        for p in self.model.parameters():
            p.requires_grad_(phase == 2)
        for p in self.head.parameters():
            p.requires_grad_(True)
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if not n.endswith("bias")], "weight_decay": self.args.weight_decay},
                  {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}]
        self.opt = torch.optim.SGD(groups, lr=lr, momentum=self.args.momentum)

    def logits(self, x):
        if self.phase == 1:  # the frozen part as inference, no graph; fc8 in fp32
            with torch.no_grad(), self.autocast():
                h = self.backbone(x)
            return self.head(h.float())
        return self.head(self.backbone(x))

    def fit_head(self, loader):
        """fc8 as kiln's --head-init probe: fitted on fc7's features (the frozen backbone in
        evaluation mode, under phase 1's precision) of every training image."""
        self.model.eval()
        feats, labels = [], []
        with torch.inference_mode():
            for x, y in loader:
                x, y = self.batch(x, y)
                with self.autocast():
                    feats.append(self.backbone(x).float())
                labels.append(y)
        feats, labels = torch.cat(feats), torch.cat(labels)
        w, b, mult, held_acc = linear_probe(feats, labels, self.head.out_features)
        with torch.no_grad():
            self.head.weight.copy_(w.float())
            self.head.bias.copy_(b.float())
        return len(labels), feats.shape[1], mult, held_acc

    def train_epoch(self, loader):
        self.model.train()
        loss_sum = torch.zeros((), device=self.dev)
        correct = torch.zeros((), dtype=torch.int64, device=self.dev)
        seen = 0
        for x, y in loader:
            x, y = self.batch(x, y)
            out = self.logits(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            # Summed on the device: no host sync per step (kiln syncs for its progress line).
            loss_sum += loss.detach() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
        return loss_sum.item() / seen, correct.item() / seen, seen

    def evaluate(self, loader):
        self.model.eval()
        loss_sum = torch.zeros((), device=self.dev, dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64, device=self.dev)
        seen = 0
        with torch.inference_mode():
            for x, y in loader:
                x, y = self.batch(x, y)
                with self.autocast():
                    h = self.backbone(x)
                out = self.head(h.float())
                loss_sum += F.cross_entropy(out, y, reduction="sum").double()
                correct += (out.argmax(1) == y).sum()
                seen += y.numel()
        return loss_sum.item() / seen, correct.item() / seen


class Checkpoints:
    """--checkpoint-dir: kiln's split (train/trainer.cpp, io/checkpoint.h): the frozen tensors
    once per phase, every epoch the trainable ones with the optimizer state; last 2 + best kept."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.kept, self.best, self.best_acc = [], None, -1.0

    def _save(self, obj, name):
        path = os.path.join(self.folder, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def frozen(self, twin, phase):
        state = {n: p.detach() for n, p in twin.model.named_parameters() if not p.requires_grad}
        if state:
            self._save(state, f"frozen-phase{phase}.pt")

    def epoch(self, twin, epoch, val_acc):
        state = {"model": {n: p.detach() for n, p in twin.model.named_parameters() if p.requires_grad},
                 "optimizer": twin.opt.state_dict(), "epoch": epoch, "phase": twin.phase, "val_acc": val_acc}
        path = self._save(state, f"ckpt-{epoch:06d}.pt")
        self.kept.append(path)
        if val_acc > self.best_acc:
            self.best, self.best_acc = path, val_acc
        while len(self.kept) > 2:
            old = self.kept.pop(0)
            if old != self.best:
                os.remove(old)


def set_backends(args):
    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        set_tf32(args.tf32)
        torch.backends.cudnn.benchmark = True if args.cudnn_benchmark is None else args.cudnn_benchmark


def run(args):
    set_backends(args)
    tr, va, train_loader, val_loader, probe_loader = loaders(args)
    twin = Twin(args, len(tr.classes))
    ckpt = Checkpoints(args.checkpoint_dir) if args.checkpoint_dir else None
    print(f"torch_recipe: torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name(0) + ')' if args.device == 'cuda' else ''}; {len(tr)} train and "
          f"{len(va)} val images in {len(tr.classes)} classes; {args.image_size} px, batch {args.batch}, "
          f"{args.precision}, seed {args.seed}, {args.workers} workers", flush=True)
    phases = [(1, "fc8 only", args.epochs1, args.lr1), (2, "all layers", args.epochs2, args.lr2)]
    epochs, phase_s, epoch_no, val = [], {}, 0, None
    for phase, name, n_epochs, lr in phases:
        if n_epochs == 0:
            continue
        t_phase = time.time()
        twin.start_phase(phase, lr)
        if ckpt:
            ckpt.frozen(twin, phase)
        if args.eval_at_phase_start:
            vl, va_acc = twin.evaluate(val_loader)
            print(f"  phase {phase}, before: val loss {vl:.3f} acc {100 * va_acc:.1f}%", flush=True)
        if phase == 1 and probe_loader is not None:
            t0 = time.time()
            rows, dim, mult, held_acc = twin.fit_head(probe_loader)
            print(f"  phase 1: fc8 from a linear probe on {rows} x {dim} features: ridge {mult:g} x {dim}, "
                  f"held-out accuracy {100 * held_acc:.1f}% ({time.time() - t0:.1f} s)", flush=True)
            if args.eval_at_phase_start:
                vl, va_acc = twin.evaluate(val_loader)
                print(f"  phase 1, after the linear probe: val loss {vl:.3f} acc {100 * va_acc:.1f}%", flush=True)
        for e in range(1, n_epochs + 1):
            t0 = time.time()
            tl, ta, seen = twin.train_epoch(train_loader)
            ips = seen / max(time.time() - t0, 1e-9)
            val = twin.evaluate(val_loader)
            epoch_no += 1
            print(f"epoch {e}/{n_epochs} (phase {phase}: {name})  train loss {tl:.3f} acc {100 * ta:.1f}%  "
                  f"val loss {val[0]:.3f} acc {100 * val[1]:.1f}%  {ips:.1f} img/s", flush=True)
            epochs.append({"phase": phase, "epoch": e, "train_loss": tl, "train_acc": ta, "val_loss": val[0],
                           "val_acc": val[1], "train_img_per_s": ips, "seconds": time.time() - t0})
            if ckpt:
                ckpt.epoch(twin, epoch_no, val[1])
        if args.device == "cuda":
            torch.cuda.synchronize()
        phase_s[str(phase)] = time.time() - t_phase
    return tr, va, epochs, phase_s, val


def main():
    args = parse_args()
    t_main = time.time()
    tr, va, epochs, phase_s, val = run(args)
    wall, how = wall_since_start(args)
    print(f"torch_recipe: val accuracy {100 * val[1]:.1f}% after training; wall {wall:.1f} s from process start",
          flush=True)
    if args.json:
        report = {
            "framework": "pytorch", "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
            "device": args.device, "device_name": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "classes": tr.classes, "train_images": len(tr), "val_images": len(va),
            "epochs": epochs, "phase_seconds": phase_s,
            "final_val_loss": val[0], "final_val_acc": val[1],
            "wall_s": wall, "wall_measured_by": how,
            "import_s": t_main - _T_IMPORT,
            "torch_max_memory_allocated_mib": (torch.cuda.max_memory_allocated() / 2**20
                                               if args.device == "cuda" else None),
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
