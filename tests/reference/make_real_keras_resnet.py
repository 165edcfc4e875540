#!/usr/bin/env python3
"""ResNet-50 weights files written by real Keras, and Keras's logits, for the test "ResNet-50 v1
loads the files real Keras writes and gives Keras's logits" (tests/layers/test_resnet.cpp).

  make_real_keras_resnet.py --out DIR [--seed N] [--batch 2]

With whichever of Keras 3 (`import keras`) and tf-keras (`import tf_keras`) import, builds
keras.applications.ResNet50(weights=None, classes=10, input_shape=(64, 64, 3),
classifier_activation=None) (logits, not softmax), gives every conv and dense kernel and bias
seeded random values (Keras initialises biases to zero, which would hide a bias loaded into
the wrong layer), sets each batch norm's moving statistics from data (one training-mode call
with momentum 0 on a random batch, so means are not 0 and variances not 1 but activations
stay in range through 16 blocks), then draws gamma and beta at random. It saves the model
in every HDF5-based layout that Keras writes, and the same backbone as
ResNet50(include_top=False) (no `predictions`), and the logits of the full model on a fixed
NHWC input in inference mode. Nothing is downloaded. Writes:
  DIR/manifest.tsv   library, kind (full|notop), layout, file, logits .npy (full) or "-"
  DIR/input.npy      float32 [B, 64, 64, 3] NHWC (no preprocessing: the model's own input)
  DIR/<lib>_logits.npy   float64 [B, 10]
Exit 77 (and why, on stderr) when neither keras nor tf_keras imports.

Keras 3's backend: as make_real_keras_vgg.py chooses it ($KERAS_BACKEND, else the first of
numpy, tensorflow, jax, torch that is installed).

Keras's stem is ZeroPadding2D(3) + a 7x7/2 'valid' conv, and ZeroPadding2D(1) + a 3x3/2
'valid' max pool after the ReLU; kiln's is a pad-3 conv and a pad-1 max pool (padding that
never wins a max): this test is what shows they agree.

Measured (2026-12-02, Python 3.11.7, h5py 3.16.0, 2 cores), all files loading with every
tensor and kiln's logits within the test's tolerance (1e-4 x mean |logit| + 1e-4 relative):
  - Keras 3.15.1, numpy backend (numpy 2.4.6, jax 0.10.2, scipy 1.17.1): .weights.h5, legacy
    .h5 (model.save) and .keras of the full model, .weights.h5 and legacy .h5 of the no-top
    one; worst element 3.3e-5 relative (|diff| 1.0e-3 on -30.6; mean |logit| 833);
  - Keras 3.15.1, tensorflow backend (tensorflow-cpu 2.21.0): the same files; 3.1e-5;
  - tf-keras 2.21.0: save_weights .h5, model.save .h5 and .weights.h5, full and no-top;
    largest |diff| 2.3e-4 (1.9e-3 relative on the smallest logit, 0.125; mean |logit| 416).
The no-top files load every backbone tensor bit-equal to the full file's (fc missing). The
Keras 3 files number conv2d_N/batch_normalization_N in Keras's model.layers order, which
puts a downsampling block's shortcut (_0) after _2 and before _3.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_real_keras_vgg import import_keras2, import_keras3  # noqa: E402 - one home for choosing a Keras

IMAGE = 64
CLASSES = 10


def build(keras, top):
    extra = {"classes": CLASSES, "classifier_activation": None} if top else {}
    return keras.applications.ResNet50(include_top=top, weights=None, input_shape=(IMAGE, IMAGE, 3), **extra)


def randomise(keras, model, rng, x):
    """Random kernels and biases; batch-norm statistics from x; then random gamma and beta."""
    import numpy as np
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            k, b = layer.get_weights()
            scale = np.sqrt(2.0 / np.prod(k.shape[:-1]))
            layer.set_weights([(rng.standard_normal(k.shape) * scale).astype(np.float32),
                               (rng.standard_normal(b.shape) * 0.1).astype(np.float32)])
    for layer in bns:
        layer.momentum = 0.0  # one training-mode call: moving statistics = this batch's
    model(x, training=True)
    for layer in bns:
        layer.momentum = 0.99
        _, _, mean, var = layer.get_weights()
        gamma = rng.uniform(0.5, 1.5, mean.shape).astype(np.float32)
        beta = (rng.standard_normal(mean.shape) * 0.2).astype(np.float32)
        layer.set_weights([gamma, beta, mean, var])
    for layer in bns:  # data-driven, so not the initial 0 and 1
        _, _, mean, var = layer.get_weights()
        assert np.abs(mean).max() > 1e-3 and np.abs(var - 1).max() > 1e-3, layer.name


def layouts(major, top):
    """(layout label, file suffix, writer) for each HDF5-based layout this Keras writes."""
    if major == 3:
        out = [("save_weights .weights.h5", ".weights.h5", lambda m, p: m.save_weights(p)),
               ("model.save .h5 (legacy HDF5)", ".h5", lambda m, p: m.save(p))]
        if top:
            out.append(("model.save .keras", ".keras", lambda m, p: m.save(p)))
        return out
    return [("save_weights .h5 (legacy HDF5)", "_w.h5", lambda m, p: m.save_weights(p)),
            ("model.save .h5 (legacy HDF5)", "_m.h5", lambda m, p: m.save(p)),
            ("save_weights .weights.h5", ".weights.h5", lambda m, p: m.save_weights(p))]


def write_library(keras, major, name, args, x, manifest):
    import numpy as np
    label = f"{name} {keras.__version__}" + (f" ({keras.backend.backend()})" if major == 3 else "")
    print(f"writer: {label}")
    full = build(keras, True)
    randomise(keras, full, np.random.default_rng(args.seed), x)
    logits_path = os.path.join(args.out, f"{name}_logits.npy")
    np.save(logits_path, np.asarray(full(x, training=False), dtype=np.float64))
    notop = build(keras, False)
    for layer in notop.layers:  # the same backbone, by layer name
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    for kind, model, ref in (("full", full, logits_path), ("notop", notop, "-")):
        for layout, suffix, write in layouts(major, kind == "full"):
            path = os.path.join(args.out, f"{name}_{kind}{suffix}")
            try:
                write(model, path)
            except Exception as e:  # noqa: BLE001 - a layout this version cannot write
                print(f"  not written: {kind} {layout}: {type(e).__name__}: {e}")
                continue
            manifest.append("\t".join([label, kind, layout, path, ref]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    keras3, why3 = import_keras3()
    keras2, why2 = import_keras2()
    if keras3 is None and keras2 is None:
        print(f"{sys.executable}: neither Keras 3 nor tf-keras imports: {why3}; {why2}", file=sys.stderr)
        return 77
    import numpy as np
    os.makedirs(args.out, exist_ok=True)
    x = np.random.default_rng(args.seed + 1).standard_normal((args.batch, IMAGE, IMAGE, 3)).astype(np.float32)
    np.save(os.path.join(args.out, "input.npy"), x)
    manifest = []
    if keras3 is not None:
        write_library(keras3, 3, "keras3", args, x, manifest)
    if keras2 is not None:
        write_library(keras2, 2, "tf_keras" if keras2.__name__ == "tf_keras" else "keras2", args, x, manifest)
    with open(os.path.join(args.out, "manifest.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
