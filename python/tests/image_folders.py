"""Tiny generated folder data sets (<root>/<split>/<class>/<i>.png) for the trainer's tests:
two classes told apart by their dominant colour."""
import os

import numpy as np


def write_folder(root, split, per_class, rng):
    from PIL import Image  # callers importorskip PIL first
    for cls, channel in (("red", 0), ("blue", 2)):
        os.makedirs(os.path.join(root, split, cls))
        for i in range(per_class):
            px = rng.integers(0, 60, size=(40, 40, 3), dtype=np.uint8)
            px[..., channel] = rng.integers(180, 255, size=(40, 40), dtype=np.uint8)
            Image.fromarray(px).save(os.path.join(root, split, cls, f"{i}.png"))


def write_splits(root, train_per_class, val_per_class, seed):
    """train/ and val/ under root, drawn from one generator seeded `seed`; returns their paths."""
    rng = np.random.default_rng(seed)
    write_folder(root, "train", train_per_class, rng)
    write_folder(root, "val", val_per_class, rng)
    return os.path.join(root, "train"), os.path.join(root, "val")
