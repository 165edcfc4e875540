#!/usr/bin/env python3
"""Writes the h5py-made seeds of fuzz_weights (fuzz/corpus/weights/): a Keras 3
`.weights.h5` (layers/<class name>/vars/<i>), which kiln cannot write, and a Keras classic
file as model.save() lays it out (model_weights/, layer_names split into layer_names0/1,
variable-length weight_names, gzip+shuffle+fletcher32 chunked datasets, a float16 and a
float64 kernel), so the fuzzer starts inside those paths too. The shapes are those of
fuzz/tiny_vgg.h. kiln's own layouts come from fuzz_make_seeds (make_seeds.cpp).
Run with Debian's Python (h5py, numpy): /usr/bin/python3 fuzz/make_seeds.py"""
import os

import h5py
import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "weights")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(11)

# (keras 3 class name, keras classic name, kernel shape (Keras layout), bias size)
LAYERS = [
    ("conv2d", "block1_conv1", (3, 3, 3, 4), 4),
    ("conv2d_1", "block1_conv2", (3, 3, 4, 4), 4),
    ("dense", "fc1", (16, 8), 8),
    ("dense_1", "fc2", (8, 8), 8),
    ("dense_2", "predictions", (8, 3), 3),
]


def values(shape):
    return rng.uniform(-0.5, 0.5, shape).astype(np.float32)


# libver="latest": compact (link-message) groups and the newer superblock and chunk
# indexes, which both keep the seeds small and cover the other half of HDF5's formats.
with h5py.File(os.path.join(out, "keras3.weights.h5"), "w", libver="latest") as f:
    for cls, _, kshape, nbias in LAYERS:
        g = f.create_group(f"layers/{cls}/vars")
        g.create_dataset("0", data=values(kshape))
        g.create_dataset("1", data=values((nbias,)))
    f.create_group("optimizer/vars")  # Keras 3 writes one; kiln ignores it

with h5py.File(os.path.join(out, "keras_model_save.h5"), "w", libver="latest") as f:
    mw = f.create_group("model_weights")
    names = [np.bytes_(k) for _, k, _, _ in LAYERS]
    mw.attrs["layer_names0"] = np.array(names[:3])
    mw.attrs["layer_names1"] = np.array(names[3:] + [np.bytes_("flatten")])
    mw.attrs["backend"] = "tensorflow"
    vlen = h5py.string_dtype()
    for i, (_, name, kshape, nbias) in enumerate(LAYERS):
        g = mw.create_group(name)
        g.attrs.create("weight_names", [f"{name}/kernel:0", f"{name}/bias:0"], dtype=vlen)
        dtype = {0: np.float16, 2: np.float64}.get(i, np.float32)
        g.create_dataset(f"{name}/kernel:0", data=values(kshape).astype(dtype), compression="gzip",
                         shuffle=True, fletcher32=True, chunks=True)
        g.create_dataset(f"{name}/bias:0", data=values((nbias,)))
    # A layer without weights: Keras writes an empty float array as its weight_names.
    mw.create_group("flatten").attrs["weight_names"] = np.zeros((0,), np.float32)

for n in sorted(os.listdir(out)):
    print(n, os.path.getsize(os.path.join(out, n)))
