#!/usr/bin/env python3
"""Writes hand-made hostile files for kiln's HDF5 readers into fuzz/regressions/weights/ and
fuzz/regressions/checkpoint/: one file per refusal or finding in docs/hostile_inputs.md,
each replayed by tests/io/test_hostile_hdf5.cpp (which says what kiln must answer). The
shapes are those of fuzz/tiny_vgg.h. Findings the fuzzers make are saved beside these
under their own names (crash-*, hdf5-*); this script does not touch them.
Run with Debian's Python (h5py, numpy): /usr/bin/python3 fuzz/make_regressions.py"""
import os
import struct

import h5py
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
wdir = os.path.join(here, "regressions", "weights")
cdir = os.path.join(here, "regressions", "checkpoint")
os.makedirs(wdir, exist_ok=True)
os.makedirs(cdir, exist_ok=True)

SHAPES = {  # kiln layout
    "conv1_1/weight": (4, 3, 3, 3), "conv1_1/bias": (4,),
    "conv1_2/weight": (4, 3, 3, 4), "conv1_2/bias": (4,),
    "fc6/weight": (8, 16), "fc6/bias": (8,),
    "fc7/weight": (8, 8), "fc7/bias": (8,),
    "fc8/weight": (3, 8), "fc8/bias": (3,),
}


def kiln_file(name, skip=(), libver="latest"):
    f = h5py.File(os.path.join(wdir, name), "w", libver=libver)
    f.attrs["kiln_format_version"] = np.int64(1)
    f.attrs["model"] = "vgg16"
    for k, shape in SHAPES.items():
        if k not in skip:
            f.create_dataset("vgg16/" + k, data=np.full(shape, 0.25, np.float32))
    return f


# Values stored in another file on disk (here /etc/passwd): HDF5 would read it.
with kiln_file("external_storage.h5", skip=("fc8/bias",)) as f:
    f.create_dataset("vgg16/fc8/bias", (3,), "f4", external=[("/etc/passwd", 0, 12)])

# A virtual dataset mapping another file.
with kiln_file("virtual_dataset.h5", skip=("fc8/bias",)) as f:
    layout = h5py.VirtualLayout(shape=(3,), dtype="f4")
    layout[:] = h5py.VirtualSource("other.h5", "data", shape=(3,))
    f.create_virtual_dataset("vgg16/fc8/bias", layout, fillvalue=0)

# A filter kiln does not read (scale-offset, built into libhdf5).
with kiln_file("scaleoffset_filter.h5", skip=("fc8/bias",)) as f:
    f.create_dataset("vgg16/fc8/bias", data=np.ones(3, np.float32), scaleoffset=2, chunks=(3,))

# An external link in place of a dataset: following it opens another file.
with kiln_file("external_link.h5", skip=("fc8/bias",)) as f:
    f["vgg16/fc8/bias"] = h5py.ExternalLink("/tmp/kiln-elsewhere.h5", "/data")

# A group that is its own descendant, by hard link and by soft link.
with kiln_file("hard_link_cycle.h5") as f:
    f["vgg16/fc8/loop"] = f["vgg16"]
with kiln_file("soft_link_cycle.h5") as f:
    f["vgg16/fc8/loop"] = h5py.SoftLink("/vgg16")

# A float that is not IEEE binary16/32/64 (numpy's 80-bit long double in 16 bytes).
with kiln_file("long_double.h5", skip=("fc8/bias",)) as f:
    f.create_dataset("vgg16/fc8/bias", data=np.ones(3, np.longdouble))

# Datasets declaring 2^40 x 4 floats (16 TiB) and 2^62 x 4 (the count overflows int64),
# never written: chunked, nothing allocated, so the file is small.
with kiln_file("huge_declared.h5") as f:
    f.create_dataset("big", (2**40, 4), "f4", chunks=(1, 4), maxshape=(None, 4))
    f.create_dataset("overflow", (2**62, 4), "f4", chunks=(1, 4), maxshape=(None, 4))

# Contiguous values that end past the end of the file: the file is cut inside the values of
# a 64 KiB dataset written last (raw data that large is allocated at the end of the file)
# and the superblock's end-of-file address lowered to match (a doctored download).
path = os.path.join(wdir, "contiguous_past_eof.h5")
with kiln_file("contiguous_past_eof.h5", libver="earliest") as f:
    f.flush()
    ds = f.create_dataset("tail", data=np.ones(16384, np.float32))
    f.flush()
    offset = ds.id.get_offset()
size = os.path.getsize(path)
assert offset + 65536 == size, (offset, size)
with open(path, "r+b") as fh:
    fh.truncate(offset + 1024)
    fh.seek(40)  # superblock v0: end-of-file address
    fh.write(struct.pack("<Q", offset + 1024))

# Keras 3 names whose numbers do not fit in an int (std::stoi threw std::out_of_range).
with h5py.File(os.path.join(wdir, "keras3_huge_layer_number.h5"), "w", libver="latest") as f:
    f.create_dataset("layers/conv2d_99999999999/vars/0", data=np.zeros((3, 3, 3, 4), np.float32))
with h5py.File(os.path.join(wdir, "keras3_huge_var_number.h5"), "w", libver="latest") as f:
    f.create_dataset("layers/conv2d/vars/99999999999", data=np.zeros((4,), np.float32))


def state_file(name, **override):
    f = h5py.File(os.path.join(cdir, name), "w", libver="latest")
    vlen = h5py.string_dtype()
    attrs = dict(kind="vgg_finetune checkpoint", epochs_done=2, global_step=20, phase=1, val_loss="0.5",
                 val_acc="0.5", arch="vgg16", image_size=64, convention="caffe_bgr", seed=1, init_gen_seed=1,
                 init_gen_offset=0, dropout_gen_seed=2, dropout_gen_offset=0, weights_file="ckpt-000002.weights.h5")
    attrs.update(override)
    for k, v in attrs.items():
        f.attrs[k] = np.int64(v) if isinstance(v, int) else np.array(v, dtype=vlen)
    f.attrs["classes"] = np.array([b"bear", b"owl", b"wolf"])
    f.attrs["int:optimizer|step"] = np.int64(20)
    for k, shape in SHAPES.items():
        f.create_dataset("optimizer/vgg16/" + k + "/momentum", data=np.zeros(shape, np.float32))
    return f


# Not numbers where numbers belong (std::stod threw std::invalid_argument).
state_file("val_loss_not_a_number.h5", val_loss="lots").close()
# An image size no run writes: the app would size a VGG16 from it.
state_file("image_size_huge.h5", image_size=2**40).close()
# A weights file outside the model directory.
state_file("weights_file_escapes.h5", weights_file="../../etc/passwd").close()
# Momentum of fc6 stored transposed: the same number of values, the wrong shape (was
# accepted: only the count was compared, after reading everything).
with state_file("momentum_transposed.h5") as f:
    del f["optimizer/vgg16/fc6/weight/momentum"]
    f.create_dataset("optimizer/vgg16/fc6/weight/momentum", data=np.zeros((16, 8), np.float32))

for d in (wdir, cdir):
    for n in sorted(os.listdir(d)):
        print(os.path.relpath(os.path.join(d, n), here), os.path.getsize(os.path.join(d, n)))
