#!/usr/bin/env python3
"""Fails when an OpenMP pragma with `simd` has an `if` clause without a modifier.

Since OpenMP 5.0 an unmodified `if` on a combined construct applies to each construct in it
that takes one, simd included: `#pragma omp parallel for simd if (n > 65536)` then runs the
loop scalar, not only on one thread, whenever the condition is false. kiln's elementwise loops
under 64K elements ran 6-7x slow that way until 2026-12-05 (docs/performance.md). Write
`if (parallel : cond)`.
Usage: check_omp_pragmas.py SOURCE_DIR
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
pragma = re.compile(r"#\s*pragma\s+omp\b(.*)")
unmodified_if = re.compile(r"\bif\s*\((?!\s*(parallel|simd|target|task\w*)\s*:)")
bad = []
for folder in ("core", "kernels", "io", "layers", "train", "dist", "apps", "python", "benchmarks", "check", "tests"):
    for path in sorted((root / folder).rglob("*")):
        if path.suffix not in (".cpp", ".h", ".cc", ".hpp"):
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = pragma.search(line)
            if m and re.search(r"\bsimd\b", m.group(1)) and unmodified_if.search(m.group(1)):
                bad.append(f"{path.relative_to(root)}:{lineno}: 'simd' with an unmodified 'if' turns "
                           f"vectorisation off when the condition is false; write if (parallel : ...)")
for b in bad:
    print(b)
print(f"{len(bad)} OpenMP simd pragma(s) with an unmodified if")
sys.exit(1 if bad else 0)
