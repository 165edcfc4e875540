#!/usr/bin/env bash
# mpirun as a launcher: Open MPI sets OMPI_COMM_WORLD_*, kiln reads them (no MPI library is
# linked; the ranks meet through a file rendezvous and reduce over gloo). ~3 s. Skipped (77)
# without kiln_dist or without Open MPI's mpirun (Debian: openmpi-bin).
# Usage: test_mpirun.sh PATH/TO/kiln_dist_worker|none
set -u
B=${1:?usage: test_mpirun.sh PATH/TO/kiln_dist_worker}
if [ "$B" = none ]; then echo "kiln_dist not built (no gloo): skipped"; exit 77; fi
if ! command -v mpirun > /dev/null; then echo "no mpirun (Debian: openmpi-bin): skipped"; exit 77; fi
. "$(dirname "$0")/../support/checks.sh"
begin_checks kiln_mpirun_test
unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT
root=()
if [ "$(id -u)" = 0 ]; then root=(--allow-run-as-root); fi
out=$(timeout 60 mpirun -np 2 "${root[@]}" --oversubscribe -x KILN_RENDEZVOUS=file:$W/rdv -x KILN_DIST_TIMEOUT=30 \
      "$B" collectives 2>&1)
rc=$?
if [ $rc = 0 ] && grep -q "rank 0 ok (gloo, 2 ranks)" <<< "$out" && grep -q "rank 1 ok (gloo, 2 ranks)" <<< "$out"; then
  echo "ok   mpirun -np 2: both ranks reduce exactly"
  exit 0
fi
echo "FAIL mpirun -np 2 (rc $rc): $out"
exit 1
