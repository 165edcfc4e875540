#!/usr/bin/env bash
# Builds kiln for the H200 (sm_90, Release) on this machine and packs what the GPU machine
# needs into .gpu/ (git-ignored), for the device tool's `carry` (64 MiB in all):
#   .gpu/bin/      kiln_tests, kiln_bench, kiln_example, vgg_finetune (stripped)
#   .gpu/libs.tar.xz  libkiln and every non-system library `ldd` lists for any of them
#                  (oneDNN, libgomp, the OpenCL loader, HDF5 with libcurl, gnutls, krb5 and
#                  the rest of its chain), xz-compressed: oneDNN alone is 40 MB unpacked.
# Not packed: the C/C++ runtime (glibc, libstdc++, libgcc_s: the GPU machine's are newer),
# the driver (libcuda), and cuDNN/cuBLAS, which the GPU machine has inside PyTorch's
# install; gpu_check.sh unpacks the libraries, finds those, and stops in its first seconds
# if any library is still missing. The pack itself fails on any "not found" here.
# Then: device `run` with carry [".gpu"] and   bash scripts/gpu_check.sh .gpu
# Environment: KILN_GPU_BUILD (default build-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=/usr/local/cuda/bin:$PATH
B=${KILN_GPU_BUILD:-build-gpu}
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
ninja -C "$B" kiln_tests kiln_bench kiln_example vgg_finetune

bins=("$B"/tests/kiln_tests "$B"/benchmarks/kiln_bench "$B"/apps/kiln_example/kiln_example
      "$B"/apps/vgg_finetune/vgg_finetune)
# Libraries the GPU machine provides itself (see the header).
system_re='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libresolv\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudnn|libcublas|libcublasLt)'

rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp "${bins[@]}" .gpu/bin/
cp -L "$B"/libkiln.so.0 .gpu/lib/
missing=0
for f in "${bins[@]}" "$B"/libkiln.so.0; do
  while read -r name _ path _; do
    if [[ $path == "not" ]]; then echo "gpu_pack: $f needs $name, which is not found here" >&2; missing=1; continue; fi
    [[ $name =~ $system_re || -z $path ]] && continue
    [[ -e .gpu/lib/$name ]] || cp -L "$path" ".gpu/lib/$name"
  done < <(ldd "$f" | grep '=>')
done
(( missing == 0 )) || { echo "gpu_pack: missing libraries (above); nothing packed" >&2; rm -rf .gpu; exit 1; }
strip --strip-unneeded .gpu/lib/* .gpu/bin/* 2>/dev/null || true
tar -C .gpu/lib -cJf .gpu/libs.tar.xz .
rm -rf .gpu/lib
size=$(du -sm .gpu | cut -f1)
echo "gpu_pack: .gpu is ${size} MiB ($(ls .gpu/bin | wc -l) binaries, $(tar -tJf .gpu/libs.tar.xz | grep -c '\.so') libraries)"
(( size < 64 )) || { echo "gpu_pack: .gpu is over the 64 MiB carry limit" >&2; exit 1; }
