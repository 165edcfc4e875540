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

With --keras-layouts (v1 only) the same weights are also written as Keras's ResNet50 holds
them (layer names conv1_conv, conv2_block1_0_conv, ..., predictions; kernels HWIO and
(in, out); batch norms gamma, beta, moving_mean, moving_variance), as h5py writes them, not
Keras (CI has no Keras; make_real_keras_resnet.py checks the layouts against Keras itself):
  resnet50_v1_keras.h5          tf-keras save_weights: root layer_names (weightless layers
                                too), weight_names "conv1_bn/gamma:0" at nested paths
  resnet50_v1_keras_model.h5    model.save: under model_weights/, layer_names split in two
                                vlen attributes, Keras 3's names without ":0", and each batch
                                norm's weights listed out of order (beta, gamma,
                                moving_variance, moving_mean: roles go by name)
  resnet50_v1_keras3.weights.h5 Keras 3: layers/conv2d_N, batch_normalization_N, dense
                                /vars/i, numbered in Keras's model.layers order (a
                                downsampling block: _1, _2, then the shortcut _0, then _3)
  resnet50_v1_keras3_wrong_order.weights.h5
                                the same with the batch norms numbered in kiln's parameter
                                order (shortcut last): shapes still fit, logits must not
  resnet50_v1_keras_notop.h5    include_top=False: the classic layout without predictions

Standalone it converts a torchvision resnet50 state_dict (torch.save(model.state_dict()))
to kiln's layout (num_batches_tracked dropped; model "resnet50", or "resnet50_v1" with
--variant v1 for a state_dict of the v1 model above):
  python3 make_resnet_reference.py --state-dict resnet50.pth --out-weights resnet50_kiln.h5
(--save-state-dict FILE saves the reference model's state_dict, num_batches_tracked
included, for the test of that conversion.)
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


def write_kiln(path, arrays, root):
    with h5py.File(path, "w") as f:
        f.attrs["kiln_format_version"] = np.int64(1)
        f.attrs["model"] = root
        f.attrs["input_convention"] = "torchvision_rgb"
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


# ---- Keras's names for ResNet50 (keras.applications.resnet) ----

BLOCKS = [3, 4, 6, 3]
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def keras_layers(top=True):
    """[(Keras layer, kiln layer)] of the weighted layers in Keras's model.layers order."""
    out = [("conv1_conv", "conv1"), ("conv1_bn", "bn1")]
    for s, blocks in enumerate(BLOCKS):
        for b in range(blocks):
            for k in ([1, 2, 0, 3] if b == 0 else [1, 2, 3]):
                kiln = f"layer{s + 1}/{b}/" + ("downsample/" if k == 0 else "")
                for kind, idx in (("conv", "0"), ("bn", "1")):
                    out.append((f"conv{s + 2}_block{b + 1}_{k}_{kind}", kiln + (idx if k == 0 else f"{kind}{k}")))
    if top:
        out.append(("predictions", "fc"))
    return out


def keras_weights(arrays, root, kiln):
    """[(Keras weight name, array in Keras's layout)] of one kiln layer."""
    out = []
    bn = f"{root}/{kiln}/running_mean" in arrays
    for role in (["weight", "bias", "running_mean", "running_var"] if bn else ["weight", "bias"]):
        a = arrays[f"{root}/{kiln}/{role}"]
        if bn:
            out.append((BN_NAMES[role], a))
        elif role == "weight":
            out.append(("kernel", np.ascontiguousarray(a.transpose(1, 2, 3, 0) if a.ndim == 4 else a.T)))
        else:
            out.append(("bias", a))
    return out


def all_keras_layer_names(top):
    """The weightless layers Keras lists too, around the weighted ones (not all, nor in order)."""
    names = ["input_1", "conv1_pad"] + [k for k, _ in keras_layers(top)] + ["conv1_relu", "pool1_pad", "pool1_pool"]
    return names + (["avg_pool"] if top else [])


def write_keras_classic(path, arrays, root, top=True):
    """tf-keras save_weights: fixed-length strings, names "<layer>/<weight>:0" at nested paths."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in all_keras_layer_names(top)])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        weighted = dict(keras_layers(top))
        for n in all_keras_layer_names(top):
            g = f.create_group(n)
            if n not in weighted:
                g.attrs["weight_names"] = np.array([])
                continue
            ws = keras_weights(arrays, root, weighted[n])
            g.attrs["weight_names"] = np.array([f"{n}/{w}:0".encode() for w, _ in ws])
            for w, a in ws:
                g.create_dataset(f"{n}/{w}:0", data=a)


def write_keras_model(path, arrays, root):
    """model.save: model_weights/, chunked vlen layer_names, Keras 3's names without ':0',
    batch-norm weights listed out of order."""
    vlen = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Functional"}'
        mw = f.create_group("model_weights")
        names = all_keras_layer_names(True)
        mw.attrs["layer_names0"] = np.array(names[: len(names) // 2], dtype=vlen)
        mw.attrs["layer_names1"] = np.array(names[len(names) // 2:], dtype=vlen)
        weighted = dict(keras_layers(True))
        for n in names:
            g = mw.create_group(n)
            ws = keras_weights(arrays, root, weighted[n]) if n in weighted else []
            if len(ws) == 4:
                ws = [ws[1], ws[0], ws[3], ws[2]]
            g.attrs["weight_names"] = np.array([f"{n}/{w}" for w, _ in ws], dtype=vlen)
            for w, a in ws:
                g.create_dataset(f"{n}/{w}", data=a)


def write_keras3(path, arrays, root, bn_order="keras"):
    """Keras 3 .weights.h5: class-named groups numbered in Keras's order (bn_order "kiln":
    the batch norms in kiln's parameter order instead, a deliberately wrong file)."""
    layers = keras_layers(True)
    convs = [k for n, k in layers if n.endswith("_conv")]
    bns = [k for n, k in layers if n.endswith("_bn")]
    if bn_order == "kiln":  # the shortcut's batch norm after bn3, as kiln orders parameters
        bns = ["bn1"] + [k for k in bns if k != "bn1" and not k.endswith("downsample/1")]
        bns = [x for k in bns for x in ([k, k.replace("bn3", "downsample/1")] if k.endswith("/0/bn3") else [k])]
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        g = f.create_group("layers")
        g.create_group("input_layer/vars")
        g.create_group("zero_padding2d/vars")
        for cls, kilns in (("conv2d", convs), ("batch_normalization", bns), ("dense", ["fc"])):
            for i, kiln in enumerate(kilns):
                v = g.create_group((cls if i == 0 else f"{cls}_{i}") + "/vars")
                for j, (_, a) in enumerate(keras_weights(arrays, root, kiln)):
                    v.create_dataset(str(j), data=a)


def write_keras_layouts(out, arrays, root):
    write_keras_classic(os.path.join(out, "resnet50_v1_keras.h5"), arrays, root)
    write_keras_model(os.path.join(out, "resnet50_v1_keras_model.h5"), arrays, root)
    write_keras3(os.path.join(out, "resnet50_v1_keras3.weights.h5"), arrays, root)
    write_keras3(os.path.join(out, "resnet50_v1_keras3_wrong_order.weights.h5"), arrays, root, bn_order="kiln")
    write_keras_classic(os.path.join(out, "resnet50_v1_keras_notop.h5"), arrays, root, top=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--variant", choices=["v1", "v1_5"], default="v1_5")
    p.add_argument("--image", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keras-layouts", action="store_true", help="v1: also write Keras's layouts (see the top)")
    p.add_argument("--state-dict", help="convert this torchvision resnet50 state_dict ...")
    p.add_argument("--out-weights", help="... to this file in kiln's layout")
    p.add_argument("--save-state-dict", help="also torch.save the reference model's state_dict here (to test the above)")
    args = p.parse_args()
    root = "resnet50_v1" if args.variant == "v1" else "resnet50"
    if args.state_dict or args.out_weights:
        if not (args.state_dict and args.out_weights):
            p.error("--state-dict and --out-weights go together")
        write_kiln(args.out_weights, kiln_arrays(torch.load(args.state_dict, map_location="cpu"), root), root)
        return
    if not args.out:
        p.error("--out is required (or --state-dict with --out-weights)")
    if args.keras_layouts and args.variant != "v1":
        p.error("--keras-layouts needs --variant v1 (Keras's ResNet50 is v1)")
    torch.manual_seed(args.seed)  # torchvision initialises the convs from the global generator
    gen = torch.Generator().manual_seed(args.seed)
    model = make_model(args.variant, args.classes, gen)
    randomise_batch_norm(model, args.image, gen)
    x = torch.randn(args.batch, 3, args.image, args.image, generator=gen)
    with torch.no_grad():
        logits = model.double()(x.double()).numpy()
    os.makedirs(args.out, exist_ok=True)
    arrays = kiln_arrays(model.float().state_dict(), root)
    write_kiln(os.path.join(args.out, f"resnet50_{args.variant}_kiln.h5"), arrays, root)
    if args.save_state_dict:
        torch.save(model.state_dict(), args.save_state_dict)
    if args.keras_layouts:
        write_keras_layouts(args.out, arrays, root)
    np.save(os.path.join(args.out, f"input_{args.variant}.npy"),
            np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1), dtype=np.float32))
    np.save(os.path.join(args.out, f"logits_{args.variant}.npy"), logits.astype(np.float64))


if __name__ == "__main__":
    main()
