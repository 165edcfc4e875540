#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_image (fuzz/corpus/image/): one tiny file per variant
of JPEG, PNG and BMP that kiln decodes, so the fuzzer starts inside every code path.
Run with Debian's Python (PIL, numpy): /usr/bin/python3 fuzz/make_image_seeds.py
Files are deterministic and a few hundred bytes each; they are committed."""
import io
import os
import sys

import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "image")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def pattern(w, h, c):
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 17) % 256
    planes = [(base + 60 * i + rng.integers(0, 20, (h, w))) % 256 for i in range(c)]
    return np.stack(planes, -1).astype(np.uint8)


def save(name, img, **kw):
    buf = io.BytesIO()
    img.save(buf, **kw)
    with open(os.path.join(out, name), "wb") as f:
        f.write(buf.getvalue())


rgb = Image.fromarray(pattern(13, 9, 3), "RGB")
grey = Image.fromarray(pattern(11, 7, 1)[..., 0], "L")
rgba = Image.fromarray(pattern(9, 6, 4), "RGBA")
save("baseline_420.jpg", rgb, format="JPEG", quality=80, subsampling=2)
save("baseline_444.jpg", rgb, format="JPEG", quality=95, subsampling=0)
save("baseline_422_optimized.jpg", rgb, format="JPEG", quality=70, subsampling=1, optimize=True)
save("progressive.jpg", rgb, format="JPEG", quality=85, progressive=True)
save("grey.jpg", grey, format="JPEG", quality=90)
save("cmyk.jpg", rgb.convert("CMYK"), format="JPEG", quality=90)
save("rgb.png", rgb, format="PNG")
save("grey.png", grey, format="PNG")
save("grey_1bit.png", grey.convert("1"), format="PNG")
save("grey_alpha.png", Image.fromarray(pattern(7, 5, 2), "LA"), format="PNG")
save("rgba.png", rgba, format="PNG")
save("palette_trns.png", rgb.convert("P", palette=Image.ADAPTIVE, colors=16), format="PNG", transparency=3)
save("palette_4bit.png", rgb.convert("P", palette=Image.ADAPTIVE, colors=16), format="PNG", bits=4)
save("interlaced.png", rgb, format="PNG", interlace=1)
save("grey16.png", Image.fromarray((pattern(6, 5, 1)[..., 0].astype(np.uint16) * 257), "I;16"), format="PNG")
save("rgb.bmp", rgb, format="BMP")
save("grey.bmp", grey, format="BMP")
save("mono.bmp", grey.convert("1"), format="BMP")
save("palette.bmp", rgb.convert("P", palette=Image.ADAPTIVE, colors=16), format="BMP")
save("rgba.bmp", rgba, format="BMP")
print(f"wrote {len(os.listdir(out))} seeds to {out}", file=sys.stderr)
