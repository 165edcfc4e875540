#!/usr/bin/env python3
"""Runs the Python module's pytest suite (ctest python_tests). Exit 77 (ctest: Skipped) when
this Python lacks pytest or NumPy; 1 when the module kiln, which ctest registers this test
for only once it is built, cannot be imported (PYTHONPATH must point at <build>/python);
otherwise pytest's own exit code."""
import os
import sys


def main() -> int:
    try:
        import numpy  # noqa: F401
        import pytest
    except ImportError as e:
        print(f"python_tests skipped: {sys.executable} lacks {e.name} "
              "(bash scripts/setup.sh --tests installs python3-pytest and python3-numpy)")
        return 77
    try:
        import kiln  # noqa: F401
    except ImportError as e:
        print(f"python_tests FAILED: cannot import kiln ({e}); build with -DKILN_PYTHON=ON "
              "and set PYTHONPATH=<build>/python")
        return 1
    here = os.path.dirname(os.path.abspath(__file__))
    # No cache folder in the source tree; -ra lists skips with their reasons.
    return int(pytest.main(["-q", "-ra", "-p", "no:cacheprovider", here] + sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
