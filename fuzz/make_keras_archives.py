#!/usr/bin/env python3
"""Writes the seeds of fuzz_keras_archive (fuzz/corpus/keras_archive/) and its hand-made
reproducers (fuzz/regressions/keras_archive/): Keras 3 `.keras` archives as model.save()
lays them out (config.json, metadata.json, model.weights.h5), the weights being
fuzz/corpus/weights/keras3.weights.h5 (fuzz/tiny_vgg.h's shapes, made by make_seeds.py).
Each reproducer is one refusal in io/keras_archive.cpp; tests/io/test_keras_archive.cpp
says what kiln must answer for it. An encrypted member is made by that test with libzip
(Python's zipfile cannot write one). Standard library only, plus Keras when importable for
one seed that Keras writes itself: python3 fuzz/make_keras_archives.py"""
import json
import os
import struct
import warnings
import zipfile

here = os.path.dirname(os.path.abspath(__file__))
seeds = os.path.join(here, "corpus", "keras_archive")
regs = os.path.join(here, "regressions", "keras_archive")
os.makedirs(seeds, exist_ok=True)
os.makedirs(regs, exist_ok=True)
with open(os.path.join(here, "corpus", "weights", "keras3.weights.h5"), "rb") as f:
    WEIGHTS = f.read()
# What Keras 3 writes beside the weights, cut to the fields a reader might look at.
CONFIG = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"name": "vgg16", "layers": []}})
METADATA = json.dumps({"keras_version": "3.3.3", "date_saved": "2026-12-02@08:00:00"})
WEIGHTS_MEMBER = "model.weights.h5"
FIXED_TIME = (2026, 12, 2, 8, 0, 0)  # the same bytes on every run


def archive(path, members, method=zipfile.ZIP_STORED):
    """members: [(name, bytes)], written in order with one compression method."""
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, FIXED_TIME), data, compress_type=method)


def keras(path, method=zipfile.ZIP_STORED, weights=WEIGHTS):
    archive(path, [("metadata.json", METADATA), ("config.json", CONFIG), (WEIGHTS_MEMBER, weights)], method)


def patch_sizes(path, compressed=None, uncompressed=None):
    """Rewrites the weights member's declared sizes in its local and central headers."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(WEIGHTS_MEMBER)
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        local = info.header_offset
        # Local header: compressed size at +18, uncompressed at +22.
        if compressed is not None:
            struct.pack_into("<I", data, local + 18, compressed)
        if uncompressed is not None:
            struct.pack_into("<I", data, local + 22, uncompressed)
        # Central directory entry of the same member: compressed at +20, uncompressed at +24.
        central = 0
        while True:
            central = data.index(b"PK\x01\x02", central)
            (offset,) = struct.unpack_from("<I", data, central + 42)
            if offset == local:
                break
            central += 4
        if compressed is not None:
            struct.pack_into("<I", data, central + 20, compressed)
        if uncompressed is not None:
            struct.pack_into("<I", data, central + 24, uncompressed)
        f.seek(0)
        f.write(data)


# ---- seeds: what Keras writes (stored), and deflate as a re-zipped archive has ----
keras(os.path.join(seeds, "keras3_stored.keras"))
keras(os.path.join(seeds, "keras3_deflated.keras"), zipfile.ZIP_DEFLATED)

# ---- reproducers ----
# A zip that is no .keras file: no weights member.
archive(os.path.join(regs, "no_weights_member.zip"), [("config.json", CONFIG), ("metadata.json", METADATA)])
# Two members of one name (zipfile warns, writes both): which one is meant is a guess.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    archive(os.path.join(regs, "duplicate_member.keras"), [(WEIGHTS_MEMBER, WEIGHTS), (WEIGHTS_MEMBER, WEIGHTS)])
# Cut in half, as an interrupted download: the end-of-directory record is gone.
keras(os.path.join(regs, "truncated.keras"), zipfile.ZIP_DEFLATED)
with open(os.path.join(regs, "truncated.keras"), "r+b") as f:
    f.truncate(len(f.read()) // 2)
# bzip2: a method Keras never writes (libzip would decompress it with libbz2).
keras(os.path.join(regs, "bzip2_member.keras"), zipfile.ZIP_BZIP2)
# A member that declares ~3.75 GiB (under kiln's 4 GiB limit) but inflates to 7 KB: the
# reader must not allocate what the header says, and must notice the difference.
keras(os.path.join(regs, "declared_size_lies.keras"), zipfile.ZIP_DEFLATED)
patch_sizes(os.path.join(regs, "declared_size_lies.keras"), uncompressed=0xF0000000)
# A stored member whose declared compressed and stored sizes disagree.
keras(os.path.join(regs, "stored_sizes_disagree.keras"))
patch_sizes(os.path.join(regs, "stored_sizes_disagree.keras"), uncompressed=len(WEIGHTS) - 100)
# One flipped byte in the stored weights: the CRC no longer matches.
keras(os.path.join(regs, "crc_mismatch.keras"))
with open(os.path.join(regs, "crc_mismatch.keras"), "r+b") as f:
    data = bytearray(f.read())
    at = data.index(WEIGHTS[:64]) + 4096
    data[at] ^= 0xFF
    f.seek(0)
    f.write(data)
# A weights member that is not HDF5.
keras(os.path.join(regs, "member_not_hdf5.keras"), weights=b"not an HDF5 file\n" * 64)

# What Keras itself writes, when Keras is importable (the committed seed came from Keras 3.15.1,
# KERAS_BACKEND=jax): fuzz/tiny_vgg.h's layers as a Sequential, saved with model.save().
try:
    import keras

    tiny = keras.Sequential([
        keras.Input((2, 2, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(3),
    ], name="tiny")
    tiny.save(os.path.join(seeds, f"keras_{keras.__version__}_model_save.keras"))
except ImportError:
    print("keras not importable: the model.save() seed is left as committed")

for d in (seeds, regs):
    for n in sorted(os.listdir(d)):
        print(os.path.relpath(os.path.join(d, n), here), os.path.getsize(os.path.join(d, n)))
