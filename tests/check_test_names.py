#!/usr/bin/env python3
"""Fails when a Catch2 TEST_CASE name holds a ';'.

ctest gets one test per TEST_CASE (catch_discover_tests) and splits names at ';' (CMake's
list separator): both halves then run as filters that match nothing and fail. This has
happened three times; the check finds it before a CI run does.
Usage: check_test_names.py SOURCE_DIR
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
pattern = re.compile(r'TEST_CASE\(\s*"((?:[^"\\]|\\.)*)"')
bad = []
for path in sorted((root / "tests").rglob("*.cpp")):
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        for m in pattern.finditer(line):
            if ";" in m.group(1):
                bad.append(f"{path.relative_to(root)}:{lineno}: test name holds ';': {m.group(1)}")
for b in bad:
    print(b)
print(f"{len(bad)} test name(s) with ';'")
sys.exit(1 if bad else 0)
