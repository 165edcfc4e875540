#!/usr/bin/env python3
"""ResNet-50 (v1.5 as torchvision builds it, or v1 as Keras does) with random weights and
non-trivial batch-norm statistics, in kiln's weights layout, with PyTorch's logits.

v1 is torchvision's model changed as Keras's ResNet50 differs: the stride of a
downsampling block in conv1 (1x1) instead of conv2 (3x3), every conv with a bias, BN eps
1.001e-5. Running statistics come from a few batches in training mode (so means are not
0 and variances not 1, but activations stay in range through 16 blocks), then BN weights
and biases are drawn at random. Logits are computed in float64.

Writes <out>/resnet50_<variant>_kiln.h5 (kiln format 1: model "resnet50" or
"resnet50_v1", names are the state_dict keys with '/' for '.' under that root, convs
OHWI), <out>/input_<variant>.npy (float32 [B, S, S, 3] NHWC) and <out>/logits_<variant>.npy. Run by tests/layers/test_resnet.cpp:
  python3 make_resnet_reference.py --out DIR --variant v1_5 [--image 64] [--batch 2]
"""
import argparse
import os

import h5py
import numpy as np
import torch
import torchvision


def make_model(variant, classes, gen):
    model = torchvision.models.resnet50(weights=None, num_classes=classes)
    if variant == "v1":
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                stride = block.conv2.stride
                block.conv2.stride = (1, 1)
                block.conv1.stride = stride
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias = torch.nn.Parameter(0.1 * torch.randn(m.out_channels, generator=gen))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 1.001e-5
    with torch.no_grad():
        model.fc.weight.normal_(0, 0.05, generator=gen)
        model.fc.bias.normal_(0, 0.1, generator=gen)
    return model


def randomise_batch_norm(model, size, gen):
    """Running statistics from data (cumulative over 3 batches), then random affine terms."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, size, size, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
    model.eval()


def kiln_arrays(state, root):
    arrays = {}
    for key, t in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        a = t.detach().cpu().numpy().astype(np.float32)
        if a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        arrays[root + "/" + key.replace(".", "/")] = np.ascontiguousarray(a)
    return arrays


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--variant", choices=["v1", "v1_5"], default="v1_5")
    p.add_argument("--image", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)  # torchvision initialises the convs from the global generator
    gen = torch.Generator().manual_seed(args.seed)
    model = make_model(args.variant, args.classes, gen)
    randomise_batch_norm(model, args.image, gen)
    x = torch.randn(args.batch, 3, args.image, args.image, generator=gen)
    with torch.no_grad():
        logits = model.double()(x.double()).numpy()
    os.makedirs(args.out, exist_ok=True)
    with h5py.File(os.path.join(args.out, f"resnet50_{args.variant}_kiln.h5"), "w") as f:
        f.attrs["kiln_format_version"] = np.int64(1)
        root = "resnet50_v1" if args.variant == "v1" else "resnet50"
        f.attrs["model"] = root
        f.attrs["input_convention"] = "torchvision_rgb"
        for k, v in kiln_arrays(model.float().state_dict(), root).items():
            f.create_dataset(k, data=v)
    np.save(os.path.join(args.out, f"input_{args.variant}.npy"),
            np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1), dtype=np.float32))
    np.save(os.path.join(args.out, f"logits_{args.variant}.npy"), logits.astype(np.float64))


if __name__ == "__main__":
    main()
