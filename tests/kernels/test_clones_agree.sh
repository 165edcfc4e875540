#!/bin/bash
# kiln's own CPU loops are compiled three times (KILN_CPU_CLONES, core/hd.h: AVX-512, AVX2 with
# FMA, the x86-64 baseline) and the loader runs the one this CPU can: CI's machine runs only the
# first, so the other two -- what most desktop CPUs run -- would go untested, and their promise
# to give the same bits unchecked. This runs every op case, and large cases that reach the loops'
# threads and tails (the hidden [.clone_digests] case prints a CRC32C of each output and
# gradient), natively, then under qemu's user-mode emulator posing as a CPU that picks the AVX2
# copy and as one that picks the baseline, and compares.
# NaNs are compared as NaN, not by their bits: qemu's NaN propagation is not the hardware's (its
# operations return the default NaN), and the copies may give a NaN of either sign.
# Usage: test_clones_agree.sh KILN_TESTS three|one (whether libkiln was built with the copies:
# not under KILN_SANITIZE or KILN_NATIVE). Exit 77 (skipped) with one copy, off x86-64, without
# qemu-x86_64 (Debian's qemu-user), or where qemu emulates no AVX2 (before 7.2) nor runs at all.
set -u
tests=$1
copies=${2:-three}
[ "$copies" = three ] || { echo "SKIPPED: this libkiln has one copy of each loop (KILN_SANITIZE or KILN_NATIVE)"; exit 77; }
[ "$(uname -m)" = x86_64 ] || { echo "SKIPPED: the clones are x86-64's"; exit 77; }
command -v qemu-x86_64 > /dev/null || { echo "SKIPPED: qemu-x86_64 not installed (apt-get install qemu-user)"; exit 77; }
tmp=$(mktemp -d /tmp/kiln_clones_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=2

# run NAME [EMULATOR...]: the digests into $tmp/NAME, the copy the CPU picked into $tmp/NAME.isa.
run() {
  local name=$1
  shift
  if ! "$@" "$tests" "[.clone_digests]" > "$tmp/$name.out" 2> "$tmp/$name.err"; then
    echo "FAILED: the digest run ($name: $*) did not finish:"
    tail -n 20 "$tmp/$name.out" "$tmp/$name.err"
    exit 1
  fi
  # conv2d, linear and matmul are oneDNN's arithmetic, whose kernels differ by ISA (another
  # blocking sums in another order): their accuracy is the op table's to check, natively.
  grep '^digest ' "$tmp/$name.out" | grep -v -E '^digest (conv2d|linear|matmul)/' > "$tmp/$name"
  sed -n 's/^clones //p' "$tmp/$name.out" > "$tmp/$name.isa"
  # Cases a CPU cannot run (oneDNN's bf16 kernels need AVX-512) are refused with kiln's message.
  grep '^refused ' "$tmp/$name.out" | cut -c1-160 | sed "s/^/  $name: /"
  # Any other refusal would drop its case from the comparison on every CPU alike: a failure.
  # The native run refuses nothing; an emulated one only oneDNN's bf16 products.
  local unexpected
  if [ "$name" = native ]; then
    unexpected=$(grep '^refused ' "$tmp/$name.out")
  else
    unexpected=$(grep '^refused ' "$tmp/$name.out" | grep -v -E '^refused (conv2d|linear|matmul)/bf16')
  fi
  if [ -n "$unexpected" ]; then
    echo "FAILED: the $name run refused cases it should run (their digests would not be compared):"
    echo "$unexpected" | cut -c1-200
    exit 1
  fi
}

run native
[ "$(cat "$tmp/native.isa")" = none ] && { echo "SKIPPED: this build has one copy of each loop"; exit 77; }
echo "native: $(cat "$tmp/native.isa"), $(wc -l < "$tmp/native") op cases of kiln's own loops (oneDNN's left out)"
status=0
compared=0
# qemu 7.2's "max" CPU has AVX2 and FMA but no AVX-512; without AVX2 the baseline copy runs.
for spec in "max x86-64-v3" "max,-avx2 default"; do
  set -- $spec
  run "$2" qemu-x86_64 -cpu "$1"
  picked=$(cat "$tmp/$2.isa")
  if [ "$picked" != "$2" ]; then
    # An older qemu emulates no AVX2: its "max" picks the baseline copy. Anything else is wrong.
    if [ "$2" = x86-64-v3 ] && [ "$picked" = default ]; then
      echo "SKIPPED the $2 copy: $(qemu-x86_64 --version | head -n 1) emulates no AVX2 (7.2 and later do)"
      continue
    fi
    echo "FAILED: qemu -cpu $1 picked the $picked copy, not $2: the comparison would prove nothing"
    status=1
    continue
  fi
  compared=$((compared + 1))
  if cmp -s "$tmp/native" "$tmp/$2"; then
    echo "$2 copy (qemu -cpu $1): the same bits in all $(wc -l < "$tmp/$2") op cases"
  else
    echo "FAILED: the $2 copy (qemu -cpu $1) differs from $(cat "$tmp/native.isa") in these cases (other bits, or missing):"
    diff "$tmp/native" "$tmp/$2" | grep '^[<>]' | cut -d' ' -f3 | sort -u | head -40
    status=1
  fi
done
[ $status = 0 ] && [ $compared = 0 ] && { echo "SKIPPED: no other copy could be run here"; exit 77; }
exit $status
