#!/usr/bin/python3
"""PIL / torchvision reference for kiln's image pipeline (tests/io/test_images.cpp).

Usage:
  image_reference.py decode DIR     writes images of every format kiln decodes into DIR
                                    (PIL's encoders, plus a hand-written 16-bit RGB PNG)
                                    and, beside each, PIL's decode as <name>.npy (int32 HWC RGB:
                                    tests/support/npy reads no uint8)
  image_reference.py transform DIR  for each DIR/in_*.png (written by the test): torchvision
                                    Resize(S) with S from DIR/sizes.txt -> <stem>_resized.npy
                                    (int32 HWC), then CenterCrop(C) + ToTensor + Normalize
                                    -> <stem>_input.npy (float32 HWC)
Run with Debian's /usr/bin/python3 (python3-pil 9.4, python3-torchvision 0.14).
"""
import glob
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image
import torchvision.transforms as T


def pattern(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def png16(path, arr16):
    """A 16-bit RGB PNG written by hand: PIL cannot write 16-bit RGB."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def save_ref(d, name, img):
    np.save(os.path.join(d, name + ".npy"), np.asarray(img.convert("RGB"), dtype=np.int32))


def decode(d):
    rgb = Image.fromarray(pattern(61, 47, 1))
    rgb.save(os.path.join(d, "baseline.jpg"), quality=90)
    rgb.save(os.path.join(d, "progressive.jpg"), quality=90, progressive=True)
    rgb.save(os.path.join(d, "rgb.png"))
    rgb.save(os.path.join(d, "rgb.bmp"))
    rgb.convert("L").save(os.path.join(d, "grey.png"))
    rgb.convert("L").save(os.path.join(d, "grey.jpg"), quality=90)
    rgb.convert("P", palette=Image.ADAPTIVE, colors=16).save(os.path.join(d, "palette.png"))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(pattern(61, 47, 2)[:, :, 0]))
    rgba.save(os.path.join(d, "rgba.png"))
    rgb.convert("LA").save(os.path.join(d, "grey_alpha.png"))
    for name in ["baseline.jpg", "progressive.jpg", "rgb.png", "rgb.bmp", "grey.png", "grey.jpg", "palette.png",
                 "rgba.png", "grey_alpha.png"]:
        with Image.open(os.path.join(d, name)) as im:
            save_ref(d, name, im)
    # 16 bit: the reference keeps the high byte (what an 8-bit decode of it means).
    arr16 = (pattern(61, 47, 3).astype(np.uint16) << 8) | pattern(61, 47, 4).astype(np.uint16)
    png16(os.path.join(d, "rgb16.png"), arr16)
    np.save(os.path.join(d, "rgb16.png.npy"), (arr16 >> 8).astype(np.int32))


def transform(d):
    size, crop = [int(v) for v in open(os.path.join(d, "sizes.txt")).read().split()]
    norm = T.Compose([T.CenterCrop(crop), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    for path in sorted(glob.glob(os.path.join(d, "in_*.png"))):
        stem = path[:-4]
        with Image.open(path) as im:
            im = im.convert("RGB")
            resized = T.Resize(size, interpolation=T.InterpolationMode.BILINEAR)(im)
            np.save(stem + "_resized.npy", np.asarray(resized, dtype=np.int32))
            np.save(stem + "_input.npy", norm(resized).permute(1, 2, 0).contiguous().numpy().astype(np.float32))


if __name__ == "__main__":
    {"decode": decode, "transform": transform}[sys.argv[1]](sys.argv[2])
