#!/usr/bin/env python3
"""VGG16 weights in every layout kiln imports, with PyTorch logits to check against.

Builds torchvision.models.vgg16 with seeded random weights (biases random too, so a
bias mapped wrongly shows; each class count N gets its own fc8) and writes, for each requested FORMAT:N:
  kiln          <out>/vgg16_<N>_kiln.h5            kiln's layout (docs/weights_format.md)
  keras         <out>/vgg16_<N>_keras.h5           tf-keras save_weights: layer_names,
                                                   weight_names "block1_conv1/kernel:0"
  keras_nested  <out>/vgg16_<N>_keras_nested.h5    model.save style: model_weights group,
                                                   layer_names split in two vlen attrs,
                                                   "block1_conv1_W_1:0" and nested names
  keras3        <out>/vgg16_<N>_keras3.weights.h5  Keras 3: layers/conv2d/vars/0 ...
plus <out>/input.npy (float32 [B, 224, 224, 3], NHWC) and <out>/logits_<N>.npy (the
model's logits on it in eval mode).

Run by tests/io/test_weights.cpp; standalone it also converts a torchvision VGG16
state_dict to kiln's layout:
  python3 make_vgg_weights.py --out DIR --formats kiln:1000,keras:8 [--seed 0] [--batch 2]
  python3 make_vgg_weights.py --state-dict vgg16.pth --convert-to vgg16_kiln.h5
"""
import argparse
import os

import h5py
import numpy as np
import torch
import torchvision

IMAGE = 224


# torchvision's vgg16: indices of the convs in `features` per block, and of the linears
# in `classifier`.
CONV_INDICES = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
FC_INDICES = [0, 3, 6]


def kiln_arrays(state):
    """{kiln name: array in kiln's layout} from a torchvision VGG16 state_dict."""
    layers = [(f"conv{b + 1}_{i + 1}", f"features.{k}") for b, ks in enumerate(CONV_INDICES) for i, k in enumerate(ks)]
    layers += [(f"fc{6 + i}", f"classifier.{k}") for i, k in enumerate(FC_INDICES)]
    arrays = {}
    for name, key in layers:
        w = state[key + ".weight"].detach().cpu().numpy()
        if w.ndim == 4:
            w = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        elif name == "fc6":
            # Columns from NCHW flatten order (c, h, w) to NHWC flatten order (h, w, c).
            w = w.reshape(w.shape[0], 512, 7, 7).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        arrays[f"vgg16/{name}/weight"] = np.ascontiguousarray(w, dtype=np.float32)
        arrays[f"vgg16/{name}/bias"] = state[key + ".bias"].detach().cpu().numpy().astype(np.float32)
    return arrays


def keras_layer(kiln):
    if kiln.startswith("conv"):
        b, i = kiln[4:].split("_")
        return f"block{b}_conv{i}"
    return {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}[kiln]


def keras_kernels(arrays):
    """[(keras layer, kernel in Keras's layout, bias)] in model order."""
    out = []
    for key in arrays:
        if not key.endswith("/weight"):
            continue
        kiln = key.split("/")[1]
        w = arrays[key]
        k = w.transpose(1, 2, 3, 0) if w.ndim == 4 else w.T  # OHWI -> HWIO; [out,in] -> (in,out)
        out.append((keras_layer(kiln), np.ascontiguousarray(k), arrays[f"vgg16/{kiln}/bias"]))
    return out


def all_keras_layers(weighted):
    """Keras VGG16's full layer list: weightless layers (input, pools, flatten) included."""
    names, have = ["input_1"], {n for n, _, _ in weighted}
    for b, n in enumerate([2, 2, 3, 3, 3], start=1):
        names += [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"]
    names += ["flatten", "fc1", "fc2", "predictions"]
    assert have <= set(names)
    return names


def write_kiln(path, arrays, convention):
    with h5py.File(path, "w") as f:
        f.attrs["kiln_format_version"] = np.int64(1)
        f.attrs["model"] = "vgg16"
        f.attrs["input_convention"] = convention
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def write_keras(path, arrays):
    weighted = {n: (k, b) for n, k, b in keras_kernels(arrays)}
    with h5py.File(path, "w") as f:
        layers = all_keras_layers(keras_kernels(arrays))
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])  # fixed-length 'S'
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.11.0"
        for n in layers:
            g = f.create_group(n)
            if n in weighted:
                k, b = weighted[n]
                g.attrs["weight_names"] = np.array([f"{n}/kernel:0".encode(), f"{n}/bias:0".encode()])
                g.create_dataset(f"{n}/kernel:0", data=k)
                g.create_dataset(f"{n}/bias:0", data=b)
            else:
                g.attrs["weight_names"] = np.array([])  # what Keras writes: an empty float array


def write_keras_nested(path, arrays):
    weighted = {n: (k, b) for n, k, b in keras_kernels(arrays)}
    vlen = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = '{"class_name": "Functional"}'
        mw = f.create_group("model_weights")
        layers = all_keras_layers(keras_kernels(arrays))
        half = len(layers) // 2
        mw.attrs["layer_names0"] = np.array(layers[:half], dtype=vlen)
        mw.attrs["layer_names1"] = np.array(layers[half:], dtype=vlen)
        for n in layers:
            g = mw.create_group(n)
            if n not in weighted:
                g.attrs["weight_names"] = np.array([], dtype=vlen)
                continue
            k, b = weighted[n]
            if n.startswith("block"):  # Keras 1 / Theano-era flat names
                names = [f"{n}_W_1:0", f"{n}_b_1:0"]
            else:  # a layer inside a nested model: two levels of groups
                names = [f"vgg16/{n}/kernel:0", f"vgg16/{n}/bias:0"]
            g.attrs["weight_names"] = np.array(names, dtype=vlen)
            g.create_dataset(names[0], data=k)
            g.create_dataset(names[1], data=b)


def write_keras3(path, arrays):
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        layers = f.create_group("layers")
        layers.create_group("input_layer/vars")
        convs = denses = 0
        for n, k, b in keras_kernels(arrays):
            if k.ndim == 4:
                cls, convs = ("conv2d" if convs == 0 else f"conv2d_{convs}"), convs + 1
            else:
                cls, denses = ("dense" if denses == 0 else f"dense_{denses}"), denses + 1
            g = layers.create_group(f"{cls}/vars")
            g.create_dataset("0", data=k)
            g.create_dataset("1", data=b)
        for i in range(5):
            layers.create_group(("max_pooling2d" if i == 0 else f"max_pooling2d_{i}") + "/vars")
        layers.create_group("flatten/vars")


WRITERS = {
    "kiln": ("vgg16_{n}_kiln.h5", lambda p, a: write_kiln(p, a, "torchvision_rgb")),
    "keras": ("vgg16_{n}_keras.h5", write_keras),
    "keras_nested": ("vgg16_{n}_keras_nested.h5", write_keras_nested),
    "keras3": ("vgg16_{n}_keras3.weights.h5", write_keras3),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--formats", default="kiln:1000,keras:8,keras_nested:8,keras3:8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--state-dict", help="convert this torchvision VGG16 state_dict ...")
    ap.add_argument("--convert-to", help="... to this file in kiln's layout")
    args = ap.parse_args()
    torch.set_num_threads(2)

    if args.state_dict:
        state = torch.load(args.state_dict, map_location="cpu")
        write_kiln(args.convert_to, kiln_arrays(state), "torchvision_rgb")
        return

    os.makedirs(args.out, exist_ok=True)
    x = np.random.RandomState(args.seed).standard_normal((args.batch, IMAGE, IMAGE, 3)).astype(np.float32)
    np.save(os.path.join(args.out, "input.npy"), x)
    wanted = {}
    for item in args.formats.split(","):
        fmt, n = item.split(":")
        wanted.setdefault(int(n), []).append(fmt)
    # One model (its construction and conv forward dominate the run time); each class
    # count gets its own seeded fc8 head on the same conv1..fc7.
    torch.manual_seed(args.seed)
    model = torchvision.models.vgg16(num_classes=1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.05, 0.05)
    model.eval()
    with torch.no_grad():
        features = torch.flatten(model.avgpool(model.features(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())), 1)
    head_1000 = model.classifier[6]
    for n, fmts in sorted(wanted.items()):
        model.classifier[6] = head_1000
        if n != 1000:
            torch.manual_seed(args.seed + n)
            model.classifier[6] = torch.nn.Linear(4096, n)
            with torch.no_grad():
                model.classifier[6].bias.uniform_(-0.05, 0.05)
        model.eval()
        with torch.no_grad():
            logits = model.classifier(features)
        np.save(os.path.join(args.out, f"logits_{n}.npy"), logits.numpy().astype(np.float32))
        arrays = kiln_arrays(model.state_dict())
        for fmt in fmts:
            name, write = WRITERS[fmt]
            write(os.path.join(args.out, name.format(n=n)), arrays)

if __name__ == "__main__":
    main()
