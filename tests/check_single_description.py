#!/usr/bin/env python3
"""Checks that VGG's layer list is written in one place only: layers/models/vgg.cpp.

Everything else (the model spec registry, io's Keras name map, kiln_bench's suites, the
PyTorch peer scripts) must read it from there -- as vgg_plan(), the ModelSpec, or the JSON
that `kiln_bench --print-plan` prints -- so a change to the model is one edit. This scans
kiln's sources and scripts (tests/, fuzz/, docs and build folders aside: fixtures and prose
may spell shapes out) for the forms a restated layer list takes, and exits 1 naming each
file and line, 0 when there is none. Run by ctest as single_description.
Usage: check_single_description.py [SOURCE_DIR]
"""
import os
import re
import sys

HOME = "layers/models/vgg.cpp"
SKIP_DIRS = {"tests", "fuzz", "docs", ".git", ".ci", "third_party", "cmake"}
SUFFIXES = (".h", ".hpp", ".cpp", ".cc", ".c", ".cu", ".cuh", ".py", ".sh")

# A list separator, optionally with a pool marker (0, "M" or 'M') in between.
SEP = r"""\s*,\s*(?:(?:0|"M"|'M')\s*,\s*)?"""


def seq(*numbers):
    return r"(?<![\w.])" + SEP.join(str(n) for n in numbers) + r"(?![\w.])"


# name -> pattern: the ways VGG16's layers have been restated in this tree before.
PATTERNS = {
    # The conv channel list, with or without pool markers: 64, 64, ("M",) 128, 128 ...
    "conv channel list": re.compile(seq(64, 64, 128, 128)),
    "conv channel list (blocks 3..5)": re.compile(seq(256, 256, 256, 512, 512, 512)),
    # Convs per block, the table itself: {2, 2, 3, 3, 3}.
    "convs-per-block table": re.compile(seq(2, 2, 3, 3, 3)),
    # The fc sizes: (25088, 4096), (4096, 4096).
    "fc size list": re.compile(r"(?<![\w.])(?:25088|4096)\s*,\s*4096(?![\w.])"),
    # Pool inputs and activations spelled out: (224, 64), (112, 128), (56, 256), (14, 512)
    # and their NCHW twins (64, 224) ...
    "activation shape table": re.compile(
        r"(?<![\w.])(?:(?:224|112)\s*,\s*(?:64|128)|(?:56|28|14)\s*,\s*(?:256|512)|"
        r"(?:64|128)\s*,\s*(?:224|112)|(?:256|512)\s*,\s*(?:56|28|14))(?![\w.])"),
    # torchvision's module indices of VGG16's convs: features.0, 2, 5, 7, 10, 12, 14 ...
    "torchvision index list": re.compile(seq(10, 12, 14) + "|" + seq(0, 2, 5, 7)),
}
# Six or more distinct VGG conv names ("conv1_1" ... or Keras's "block1_conv1" ...) in
# one file is a written-out list of them.
CONV_NAME = re.compile(r"\b(?:conv[1-5]_[1-4]|block[1-5]_conv[1-4])\b")
MAX_CONV_NAMES = 5


def sources(root):
    for dirpath, dirnames, names in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        top = rel_dir.split(os.sep)[0]
        if rel_dir != "." and (top in SKIP_DIRS or top.startswith("build") or top.startswith(".")):
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in sorted(names):
            if name.endswith(SUFFIXES):
                yield os.path.normpath(os.path.join(rel_dir, name))


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    found, files = [], 0
    for path in sources(root):
        if path == HOME:
            continue
        files += 1
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for what, pattern in PATTERNS.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{path}:{line}: {what}: {m.group(0)!r}")
        names = sorted(set(CONV_NAME.findall(text)))
        if len(names) > MAX_CONV_NAMES:
            found.append(f"{path}: {len(names)} VGG conv names written out ({', '.join(names)})")
    # The home must still hold the table, or a move would pass unnoticed.
    with open(os.path.join(root, HOME), encoding="utf-8", errors="replace") as f:
        if not PATTERNS["convs-per-block table"].search(f.read()):
            found.append(f"{HOME}: VGG16's convs-per-block table is not here any more: update HOME in {__file__}")
    for f in found:
        print(f)
    print(f"single description: {files} files checked; VGG's layer list lives in {HOME}; "
          f"{len(found)} restatement(s) elsewhere" + ("" if not found else
                                                      " -- read shapes from vgg_plan() / the ModelSpec / "
                                                      "kiln_bench --print-plan instead"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
