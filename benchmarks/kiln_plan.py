"""The model plan kiln_bench measures, for the PyTorch peer scripts: `kiln_bench
--print-plan vgg16` prints it as JSON (kiln_bench --compare passes it as --plan FILE), and
the peers read every shape from it instead of restating the model's layer list, whose one
home is kiln's layers/models/vgg.cpp.
"""
import json
import os
import subprocess
import sys


def add_argument(ap):
    """Adds --plan to an argparse parser."""
    ap.add_argument("--plan", help="the model plan as JSON (kiln_bench --print-plan vgg16 > FILE); "
                                   "default: run $KILN_BENCH --print-plan vgg16")


def load(path, who):
    """The plan from `path`, or from `$KILN_BENCH --print-plan vgg16` without one; exits
    with a message naming `who` when neither works."""
    try:
        if path:
            with open(path) as f:
                return json.load(f)
        bench = os.environ.get("KILN_BENCH")
        if bench:
            return json.loads(subprocess.run([bench, "--print-plan", "vgg16"], check=True, capture_output=True,
                                             text=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        sys.exit(f"{who}: could not read the model plan ({e})")
    sys.exit(f"{who}: no model plan: pass --plan FILE (made by `kiln_bench --print-plan vgg16 > FILE`) "
             "or set KILN_BENCH to kiln_bench's path")


def layers(plan, kind=None):
    """The plan's layers (dicts), in order; only those of `kind` ("conv", "pool", "fc") when given."""
    return [l for l in plan["layers"] if kind is None or l["kind"] == kind]


def layer(plan, name):
    """The layer named `name` ("conv3_3")."""
    for l in plan["layers"]:
        if l["name"] == name:
            return l
    sys.exit(f"the model plan of {plan['model']} has no layer {name!r}")


def convs(plan):
    """(name, input side, in channels, out channels) of each conv, as kiln_bench's conv suites."""
    return [(l["name"], l["in_size"], l["in_channels"], l["out_channels"]) for l in layers(plan, "conv")]


def output_shape(l, n):
    """A layer's output at batch n: (n, side, side, channels) for maps (NHWC numbers), (n, features) for fc."""
    return (n, l["out_channels"]) if l["kind"] == "fc" else (n, l["out_size"], l["out_size"], l["out_channels"])


def input_chw(plan):
    """The network's input (channels, height, width): RGB at the plan's image size (a
    model without a layer list, ResNet-50, has one too)."""
    return 3, plan["image_size"], plan["image_size"]


def param_shapes(plan):
    """PyTorch-order parameter shapes ((out, kernel, kernel, in) for convs as kiln's OHWI,
    (out, in) for fc; each followed by its bias), in the plan's order."""
    shapes = []
    for l in plan["layers"]:
        if l["kind"] == "conv":
            shapes += [(l["out_channels"], l["kernel"], l["kernel"], l["in_channels"]), (l["out_channels"],)]
        elif l["kind"] == "fc":
            shapes += [(l["out_channels"], l["in_channels"]), (l["out_channels"],)]
    return shapes
