#!/usr/bin/env bash
# Builds kiln for the H200 (sm_90, Release) on this machine and packs what the GPU machine
# needs into .gpu/ (git-ignored), for the device tool's `carry` (64 MiB in all):
#   .gpu/bin/      kiln_tests, kiln_bench, kiln_example, vgg_finetune (stripped)
#   .gpu/libs.tar.xz  libkiln and every non-system library `ldd` lists for any of them
#                  (oneDNN, libgomp, the OpenCL loader, HDF5 with libcurl, gnutls, krb5 and
#                  the rest of its chain), xz-compressed: oneDNN alone is 40 MB unpacked.
#   .gpu/python/kiln  the Python module for the GPU machine's Python 3.12, built with the
#                  interpreter scripts/gpu_python.sh makes runnable here (needs network; when
#                  that fails the pack has no module, saying so, and gpu_check.sh skips its
#                  python section). KILN_GPU_PYTHON=PATH uses that interpreter, =none packs none.
#   .gpu/PACKED_FROM  the commit built (and whether the tree had uncommitted changes), which
#                  gpu_check.sh prints in its first lines: a pack older than HEAD runs old code.
# Not packed: the C/C++ runtime (glibc, libstdc++, libgcc_s: the GPU machine's are newer),
# the driver (libcuda), and cuDNN/cuBLAS, which the GPU machine has inside PyTorch's
# install; gpu_check.sh unpacks the libraries, finds those, and stops in its first seconds
# if any library is still missing. The pack itself fails on any "not found" here.
# Then: device `run` with carry [".gpu"] and   bash scripts/gpu_check.sh .gpu
# Environment: KILN_GPU_BUILD (default build-gpu), KILN_GPU_PYTHON (above).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH
B=${KILN_GPU_BUILD:-build-gpu}
py=${KILN_GPU_PYTHON:-}
if [[ -z $py ]]; then
  py=$(bash scripts/gpu_python.sh 2> "${TMPDIR:-/tmp}/kiln_gpu_python.log" | tail -1) || {
    echo "gpu_pack: no Python 3.12 here (${TMPDIR:-/tmp}/kiln_gpu_python.log): packing no Python module" >&2
    py=none
  }
fi
targets=(kiln_tests kiln_bench kiln_example vgg_finetune)
if [[ $py == none ]]; then python_args=(-DKILN_PYTHON=OFF)
else python_args=(-DKILN_PYTHON=ON "-DPython_EXECUTABLE=$py"); targets+=(_kiln _kiln_stub); fi
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${python_args[@]}" >/dev/null
ninja -C "$B" "${targets[@]}"

bins=("$B"/tests/kiln_tests "$B"/benchmarks/kiln_bench "$B"/apps/kiln_example/kiln_example
      "$B"/apps/vgg_finetune/vgg_finetune)
# Libraries the GPU machine provides itself (see the header).
system_re='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libresolv\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudnn|libcublas|libcublasLt)'

rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp "${bins[@]}" .gpu/bin/
# libkiln under its SONAME (libkiln.so.0.N while kiln is 0.x: CMakeLists.txt), the name the binaries load.
soname=$(readelf -d "$B"/libkiln.so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ -n $soname && -e $B/$soname ]] || { echo "gpu_pack: no SONAME found in $B/libkiln.so" >&2; exit 1; }
cp -L "$B/$soname" .gpu/lib/
missing=0
modules=()
[[ $py != none ]] && modules=("$B"/python/kiln/_kiln*.so)
for f in "${bins[@]}" "$B/$soname" "${modules[@]}"; do
  while read -r name _ path _; do
    if [[ $path == "not" ]]; then echo "gpu_pack: $f needs $name, which is not found here" >&2; missing=1; continue; fi
    [[ $name =~ $system_re || -z $path ]] && continue
    [[ -e .gpu/lib/$name ]] || cp -L "$path" ".gpu/lib/$name"
  done < <(ldd "$f" | grep '=>')
done
(( missing == 0 )) || { echo "gpu_pack: missing libraries (above); nothing packed" >&2; rm -rf .gpu; exit 1; }
if [[ $py != none ]]; then
  mkdir -p .gpu/python
  cp -r "$B"/python/kiln .gpu/python/
  rm -rf .gpu/python/kiln/__pycache__
fi
strip --strip-unneeded .gpu/lib/* .gpu/bin/* .gpu/python/kiln/*.so 2>/dev/null || true
tar -C .gpu/lib -cJf .gpu/libs.tar.xz .
rm -rf .gpu/lib
# What the binaries were built from: gpu_check.sh prints it first (a stale pack runs old code).
dirty=$([[ -n $(git status --porcelain -uno 2>/dev/null) ]] && echo ' + uncommitted changes' || true)
echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty (packed $(date -u '+%Y-%m-%d %H:%M UTC'))" \
  > .gpu/PACKED_FROM
size=$(du -sm .gpu | cut -f1)
module=$([[ $py == none ]] && echo "no Python module" || echo "the Python module for $("$py" -c 'import sys; print(sys.version.split()[0])')")
echo "gpu_pack: built from $(cat .gpu/PACKED_FROM)"
echo "gpu_pack: .gpu is ${size} MiB ($(ls .gpu/bin | wc -l) binaries, $(tar -tJf .gpu/libs.tar.xz | grep -c '\.so') libraries, $module)"
(( size < 64 )) || { echo "gpu_pack: .gpu is over the 64 MiB carry limit" >&2; exit 1; }
