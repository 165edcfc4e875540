#!/usr/bin/env python3
"""Checks kiln's floors: no file of a lower floor includes a file of a higher one.

Reads every #include "..." in the tree and compares the floor of the including file with
the floor of the included one against the table below (docs/architecture.md explains it).
Exits 1 listing every violation, 0 when there is none. Run by ctest as include_graph.
Usage: check_include_graph.py [SOURCE_DIR]
"""
import os
import re
import sys

# floor -> the floors its files may include (itself included). kernels/common is its own
# floor: kernel math written once for both backends, which sees only the plain core headers
# in HEADERS_FOR (never the Backend interface or Tensor).
ALLOWED = {
    "core": {"core"},
    "kernels/common": {"kernels/common"},
    "kernels": {"core", "kernels", "kernels/common"},
    "layers": {"core", "layers"},
    "io": {"core", "layers", "io"},
    "train": {"core", "kernels/common", "layers", "io", "train"},
    # dist/: kiln_dist, the multi-process backends of train/communicator.h (docs/data_parallel.md).
    "dist": {"core", "kernels/common", "layers", "io", "train", "dist"},
    "apps": {"core", "kernels/common", "layers", "io", "train", "dist", "apps"},
    # check/: the op table and the comparison helper, for tests/ and benchmarks/ alike.
    "check": {"core", "kernels/common", "layers", "io", "check"},
    # benchmarks/: kiln's public API only (devices, timing and memory through core/backend.h),
    # never a backend's internals in kernels/.
    "benchmarks": {"core", "layers", "io", "train", "apps", "check", "benchmarks"},
    "fuzz": {"core", "kernels/common", "layers", "io", "train", "apps", "fuzz"},
    "python": {"core", "kernels/common", "layers", "io", "train", "python"},
    "tests": None,  # anything
}
HEADERS_FOR = {"kernels/common": {"core/hd.h", "core/philox.h", "core/op_params.h"}}
# The most specific floor wins ("kernels/common" over "kernels").
FLOORS = sorted(ALLOWED, key=len, reverse=True)
SOURCES = (".h", ".hpp", ".cpp", ".cc", ".c", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def floor_of(path):
    for f in FLOORS:
        if path == f or path.startswith(f + "/"):
            return f
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    violations, files = [], 0
    for top in sorted(ALLOWED):
        base = os.path.join(root, top)
        if "/" in top or not os.path.isdir(base):
            continue
        for dirpath, _, names in os.walk(base):
            for name in sorted(names):
                if not name.endswith(SOURCES):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                src = floor_of(path)
                allowed = ALLOWED[src]
                files += 1
                if allowed is None:
                    continue
                with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for inc in INCLUDE.findall(text):
                    dst = floor_of(inc)
                    if dst is None:
                        continue  # a system or third-party header, or a file beside this one
                    if dst not in allowed and inc not in HEADERS_FOR.get(src, ()):
                        extra = sorted(HEADERS_FOR.get(src, ()))
                        violations.append(f"{path}: includes \"{inc}\" ({dst}/), but {src}/ may use only "
                                          f"{', '.join(sorted(allowed) + extra)}")
    for v in violations:
        print(v)
    print(f"include graph: {files} files checked, {len(violations)} violation(s)")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
