#!/usr/bin/env python3
"""Fails when the profiler's ProfilingBackend does not override every Backend virtual.

While a kiln::Profiler runs, backend_for() returns ProfilingBackend (core/profiler.cpp),
which forwards each call to the real backend. A virtual it does not override silently
takes Backend's default instead of the real backend's: conv2d_forward_relu_trains did, so a
profiled GPU step ran relu(conv2d) where the timed step ran the fused node, and the profile
described another computation than the row it explained. The compiler cannot see this;
this check does.
Usage: check_backend_forwarding.py SOURCE_DIR
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")


def class_body(text, header):
    """The text of the class opened by `header`, up to its closing brace."""
    start = text.index(header)
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    raise SystemExit(f"unbalanced braces after {header!r}")


backend = class_body((root / "core/backend.h").read_text(), "class Backend {")
virtuals = sorted(set(re.findall(r"virtual\s+[^;{(]*?\b(\w+)\s*\(", backend)) - {"Backend"})  # the destructor
profiling = class_body((root / "core/profiler.cpp").read_text(), "class ProfilingBackend final : public Backend {")
overridden = set(re.findall(r"\b(\w+)\s*\([^;{]*\)\s*(?:const\s*)?override", profiling))
missing = [v for v in virtuals if v not in overridden]
for m in missing:
    print(f"core/profiler.cpp: ProfilingBackend does not override Backend::{m}: under a Profiler the real "
          f"backend's {m} is never called")
print(f"backend forwarding: {len(virtuals)} Backend virtuals, {len(missing)} not forwarded by ProfilingBackend")
sys.exit(1 if missing or not virtuals else 0)
