"""Reads a TensorBoard log directory with the real `tensorboard` package and writes what it
found as JSON, one record per line, for tests/io/test_tensorboard.cpp.

Usage: read_events.py <logdir> <out.json>
Needs: pip install tensorboard (scripts/setup.sh --tests), python3-pil (decodes the PNGs).
"""
import io
import json
import sys

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import (
    IMAGES, SCALARS, EventAccumulator)


def main():
    logdir, out_path = sys.argv[1], sys.argv[2]
    # size_guidance 0: keep every event (the default samples images down to 4).
    acc = EventAccumulator(logdir, size_guidance={SCALARS: 0, IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    lines = []
    for tag in sorted(tags["scalars"]):
        for e in acc.Scalars(tag):
            lines.append({"kind": "scalar", "tag": tag, "step": e.step, "value": e.value})
    for tag in sorted(tags["images"]):
        for e in acc.Images(tag):
            img = Image.open(io.BytesIO(e.encoded_image_string))
            img.load()
            px = img.convert("RGB").tobytes()
            lines.append({"kind": "image", "tag": tag, "step": e.step, "width": e.width,
                          "height": e.height, "format": img.format, "mode": img.mode,
                          "decoded_width": img.size[0], "decoded_height": img.size[1],
                          "byte_sum": sum(px)})
    with open(out_path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
