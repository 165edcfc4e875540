#!/usr/bin/env python3
"""VGG16 weights files written by real Keras, for tests/apps/test_vgg_finetune_real_keras.sh.

  make_real_keras_vgg.py make --out DIR [--seed N] [--full first|all]
      With whichever of Keras 3 (`import keras`) and tf-keras (`import tf_keras`) import,
      builds keras.applications.VGG16(weights=None, input_shape=(32, 32, 3)) without its top
      and with it (classes=1000), gives every weight and bias seeded random values (Keras
      initialises biases to zero, which would hide a bias loaded into the wrong layer), and
      saves the no-top model in every HDF5-based layout that Keras version writes, the full
      one (150 MB a file) in the first of them, or in all with --full all. Nothing is
      downloaded. Writes DIR/manifest.tsv (library, kind notop|full, layout, file, reference)
      and, per model, DIR/<model>.npz: the model's own weights, to compare an import with.
      Exit 77 (and why, on stderr) when neither keras nor tf_keras imports.
  make_real_keras_vgg.py compare --export FILE.h5 --reference MODEL.npz
      Checks that every conv layer of the reference is in FILE.h5 (a Keras-layout HDF5 file,
      e.g. written by `vgg_finetune export --format keras`) with exactly the same values.

Keras 3's backend: $KERAS_BACKEND when set, else the first installed of numpy (needs scipy),
tensorflow, jax, torch: the files Keras writes do not depend on the backend, and numpy builds
VGG16 in a second where jax takes ten.
"""
import argparse
import importlib
import importlib.util
import os
import sys

IMAGE = 32
CLASSES = 1000


def choose_backend():
    """Sets $KERAS_BACKEND, unless set, to the fastest installed backend (see the top)."""
    if "KERAS_BACKEND" in os.environ:
        return
    for backend, needs in (("numpy", ["numpy", "scipy"]), ("tensorflow", ["tensorflow"]), ("jax", ["jax"]),
                           ("torch", ["torch"])):
        if all(importlib.util.find_spec(n) for n in needs):
            os.environ["KERAS_BACKEND"] = backend
            return


def import_keras3():
    """keras (3.x) or None, and a line saying why not."""
    choose_backend()
    try:
        keras = importlib.import_module("keras")
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return None, f"import keras failed ({type(e).__name__}: {e})"
    if not keras.__version__.startswith("3."):
        return None, f"keras {keras.__version__} is not Keras 3"
    return keras, ""


def import_keras2():
    """tf_keras (or keras 2.x when tf_keras is absent) or None, and a line saying why not."""
    try:
        return importlib.import_module("tf_keras"), ""
    except Exception as e:  # noqa: BLE001
        why = f"import tf_keras failed ({type(e).__name__}: {e})"
    try:
        keras = importlib.import_module("keras")
    except Exception:  # noqa: BLE001 - already reported by import_keras3
        return None, why
    if keras.__version__.startswith("2."):
        return keras, ""
    return None, why


def randomise(model, rng):
    """Seeded random values for every weight (He-scaled) and bias (N(0, 0.1))."""
    import numpy as np
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        new = []
        for w in values:
            scale = np.sqrt(2.0 / np.prod(w.shape[:-1])) if w.ndim > 1 else 0.1
            new.append((rng.standard_normal(w.shape) * scale).astype(np.float32))
        layer.set_weights(new)


def reference(model):
    """{'<layer>/<i>': value} of every weighted layer, as the model holds them."""
    return {f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())}


def layouts(keras, major):
    """(layout label, file suffix, writer) for each HDF5-based layout this Keras writes."""
    out = []
    if major == 3:
        out.append(("save_weights .weights.h5", ".weights.h5", lambda m, p: m.save_weights(p)))
        out.append(("model.save .keras", ".keras", lambda m, p: m.save(p)))
        out.append(("model.save .h5 (legacy HDF5)", ".h5", lambda m, p: m.save(p)))
    else:
        out.append(("save_weights .h5 (legacy HDF5)", "_w.h5", lambda m, p: m.save_weights(p)))
        out.append(("model.save .h5 (legacy HDF5)", "_m.h5", lambda m, p: m.save(p)))
        # tf-keras 2.13+ also writes Keras 3's layouts (its "Keras v3" format).
        out.append(("save_weights .weights.h5", ".weights.h5", lambda m, p: m.save_weights(p)))
        out.append(("model.save .keras", ".keras", lambda m, p: m.save(p)))
    return out


def write_library(keras, major, name, out_dir, args, manifest):
    import numpy as np
    label = f"{name} {keras.__version__}"
    if major == 3:
        label += f" ({keras.backend.backend()})"
    print(f"writer: {label}")
    for kind, top in (("notop", False), ("full", True)):
        extra = {"classes": CLASSES} if top else {}
        model = keras.applications.VGG16(include_top=top, weights=None, input_shape=(IMAGE, IMAGE, 3), **extra)
        randomise(model, np.random.default_rng(args.seed + (1 if top else 0)))
        stem = os.path.join(out_dir, f"{name}_{kind}")
        np.savez(stem + ".npz", **reference(model))
        todo = layouts(keras, major)
        for layout, suffix, write in todo[:1] if top and args.full == "first" else todo:
            path = stem + suffix
            try:
                write(model, path)
            except Exception as e:  # noqa: BLE001 - a layout this version cannot write
                print(f"  not written: {kind} {layout}: {type(e).__name__}: {e}")
                continue
            manifest.append("\t".join([label, kind, layout, path, stem + ".npz"]))


def make(args):
    os.makedirs(args.out, exist_ok=True)
    keras3, why3 = import_keras3()
    keras2, why2 = import_keras2()
    if keras3 is None and keras2 is None:
        print(f"{sys.executable}: neither Keras 3 nor tf-keras imports: {why3}; {why2}", file=sys.stderr)
        return 77
    manifest = []
    if keras3 is not None:
        write_library(keras3, 3, "keras3", args.out, args, manifest)
    if keras2 is not None:
        write_library(keras2, 2, "tf_keras" if keras2.__name__ == "tf_keras" else "keras2", args.out, args, manifest)
    with open(os.path.join(args.out, "manifest.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    return 0


def compare(args):
    import h5py
    import numpy as np
    ref = np.load(args.reference)
    convs = sorted({k.split("/")[0] for k in ref.files if k.startswith("block")})
    problems, n = [], 0
    with h5py.File(args.export, "r") as f:
        for layer in convs:
            if layer not in f:
                problems.append(f"{layer}: not in {args.export}")
                continue
            names = [x.decode() if isinstance(x, bytes) else x for x in f[layer].attrs["weight_names"]]
            for i, wname in enumerate(names):
                got, want = f[layer][wname][...], ref[f"{layer}/{i}"]
                n += 1
                if got.shape != want.shape or not np.array_equal(got, want):
                    diff = np.abs(got - want).max() if got.shape == want.shape else "shape"
                    problems.append(f"{layer}/{wname}: {got.shape} vs Keras's {want.shape}, max |diff| {diff}")
    if problems or n != 2 * len(convs) or len(convs) != 13:
        print("\n".join(problems) or f"{n} arrays in {len(convs)} conv layers compared", file=sys.stderr)
        return 1
    print(f"{len(convs)} conv layers ({n} arrays) equal to Keras's values")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--full", choices=["first", "all"], default="first")
    c = sub.add_parser("compare")
    c.add_argument("--export", required=True)
    c.add_argument("--reference", required=True)
    args = p.parse_args()
    return make(args) if args.cmd == "make" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
