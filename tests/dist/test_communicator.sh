#!/usr/bin/env bash
# The communicator across processes (train/communicator.h, dist/): 2-3 ranks of
# kiln_dist_worker on this machine over gloo. Collectives give exact values over the TCP
# and the file rendezvous; launch variables parse (torchrun's, mpirun's) and bad ones are
# one-line errors; a wrong world size and an unreachable rendezvous fail within the
# timeout; a killed rank makes the others fail fast with a clear message, a stalled one
# within KILN_DIST_TIMEOUT. ~15 s. Exit 77 (Skipped) when kiln_dist was not built.
# Usage: test_communicator.sh PATH/TO/kiln_dist_worker|none
set -u
B=${1:?usage: test_communicator.sh PATH/TO/kiln_dist_worker}
if [ "$B" = none ]; then echo "kiln_dist not built (no gloo: install libgloo-dev): skipped"; exit 77; fi
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$(dirname "$0")/../support/checks.sh"
begin_checks kiln_dist_test
unset RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR MASTER_PORT KILN_RENDEZVOUS OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE

# 1. Launch variables.
out=$(env RANK=1 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=29500 "$B" env 2>&1)
[ "$out" = "rank 1 of 2 local 1 launcher torchrun rendezvous tcp:h:29500 timeout 300" ] && ok "torchrun variables" || bad "torchrun variables: $out"
out=$(env OMPI_COMM_WORLD_RANK=2 OMPI_COMM_WORLD_SIZE=4 OMPI_COMM_WORLD_LOCAL_RANK=0 KILN_RENDEZVOUS=file:/x KILN_DIST_TIMEOUT=7 "$B" env 2>&1)
[ "$out" = "rank 2 of 4 local 0 launcher mpirun rendezvous file:/x timeout 7" ] && ok "mpirun variables" || bad "mpirun variables: $out"
out=$("$B" env 2>&1)
[ "$out" = "rank 0 of 1 local 0 launcher single rendezvous  timeout 300" ] && ok "no variables: one process" || bad "single: $out"
check_error() {  # WHAT EXPECTED-SUBSTRING ENV...
  local what=$1 want=$2
  shift 2
  out=$(env "$@" "$B" env 2>&1)
  rc=$?
  if [ $rc = 3 ] && [ "$(echo "$out" | wc -l)" = 1 ] && grep -qF "$want" <<< "$out"; then ok "$what: $out"; else bad "$what (rc $rc): $out"; fi
}
check_error "rank without size" "RANK is set but WORLD_SIZE is not" RANK=0
check_error "empty size" "RANK is set but WORLD_SIZE is not, or is empty" RANK=0 WORLD_SIZE=
check_error "size 0" "WORLD_SIZE=0: a run has one process or more" RANK=0 WORLD_SIZE=0
check_error "rank beyond size" "RANK=2 is not below WORLD_SIZE=2" RANK=2 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=1
check_error "no rendezvous" "no rendezvous is set" RANK=0 WORLD_SIZE=2
check_error "bad port" "port in 1..65535" RANK=0 WORLD_SIZE=2 MASTER_ADDR=h MASTER_PORT=99999
check_error "huge size" "WORLD_SIZE=99999999 is more than kiln takes" RANK=0 WORLD_SIZE=99999999
check_error "torchrun's port" "KILN_RENDEZVOUS=tcp:n0:<free port>" RANK=0 WORLD_SIZE=2 MASTER_ADDR=n0 MASTER_PORT=29500 TORCHELASTIC_USE_AGENT_STORE=True
check_error "bad timeout" "KILN_DIST_TIMEOUT='soon'" KILN_DIST_TIMEOUT=soon

# 2. Collectives: 3 ranks over the TCP store, 2 over a file store.
port=$(free_port)
launch 3 "$W/tcp" env MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=30 "$B" collectives
if [ "$RCS" = "0 0 0" ] && grep -q "rank 2 ok (gloo, 3 ranks)" "$W/tcp.2"; then ok "3 ranks, TCP rendezvous: exact sums, buckets, broadcast, barrier"
else bad "3 ranks TCP ($RCS)"; cat "$W"/tcp.*; fi
launch 2 "$W/file" env KILN_RENDEZVOUS=file:$W/rdv KILN_DIST_TIMEOUT=30 "$B" collectives
if [ "$RCS" = "0 0" ] && grep -q "rank 1 ok" "$W/file.1" && [ -z "$(ls "$W/rdv")" ]; then ok "2 ranks, file rendezvous (its keys removed afterwards)"
else bad "2 ranks file ($RCS)"; cat "$W"/file.*; ls "$W/rdv"; fi

# 2a. A rank that gives up waiting (here: for a third rank that never comes) takes its key
# with it, so the next run in the same directory starts clean.
RANK=0 WORLD_SIZE=3 KILN_RENDEZVOUS=file:$W/rdv2 KILN_DIST_TIMEOUT=1 "$B" collectives > "$W/stale.0" 2>&1
stale_rc=$?
launch 2 "$W/after" env KILN_RENDEZVOUS=file:$W/rdv2 KILN_DIST_TIMEOUT=30 "$B" collectives
if [ $stale_rc != 0 ] && [ "$RCS" = "0 0" ] && [ -z "$(ls "$W/rdv2")" ]; then ok "a rank that timed out leaves no key behind: the next run in its directory works"
else bad "stale keys (rc $stale_rc, then $RCS)"; cat "$W"/stale.0 "$W"/after.*; ls "$W/rdv2"; fi

# 2b. Gradient buckets started from backward's grad-ready hook, sums checked against every rank's own.
port=$(free_port)
launch 2 "$W/buckets" env MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=30 "$B" buckets
if [ "$RCS" = "0 0" ] && grep -q "rank 1 buckets ok" "$W/buckets.1"; then ok "gradient buckets: $(head -1 "$W/buckets.0")"
else bad "gradient buckets ($RCS)"; cat "$W"/buckets.*; fi

# 3. Wrong world size: rank 1 believes in 3 ranks. Both stop within the timeout, one line each.
port=$(free_port)
t0=$(date +%s)
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=3 "$B" collectives > "$W/ws.0" 2>&1 & p0=$!
RANK=1 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=3 "$B" collectives > "$W/ws.1" 2>&1 & p1=$!
wait $p0; rc0=$?; wait $p1; rc1=$?
dt=$(( $(date +%s) - t0 ))
if [ $rc0 = 3 ] && [ $rc1 = 3 ] && [ $dt -le 10 ] && grep -q "disagree\|did not join\|closed the connection" "$W/ws.0" && grep -q "disagree\|did not join\|closed the connection" "$W/ws.1"; then
  ok "wrong world size: both ranks fail in ${dt} s: $(cat "$W/ws.1")"
else bad "wrong world size (rc $rc0 $rc1, ${dt} s)"; cat "$W"/ws.*; fi

# 3b. The same over a file rendezvous, three ranks: the one that stops first keeps its key,
# so the others report the disagreement at once instead of waiting out the timeout.
t0=$(date +%s)
RANK=0 WORLD_SIZE=2 KILN_RENDEZVOUS=file:$W/rdv3 KILN_DIST_TIMEOUT=20 "$B" collectives > "$W/fws.0" 2>&1 & p0=$!
RANK=1 WORLD_SIZE=3 KILN_RENDEZVOUS=file:$W/rdv3 KILN_DIST_TIMEOUT=20 "$B" collectives > "$W/fws.1" 2>&1 & p1=$!
sleep 1
RANK=2 WORLD_SIZE=3 KILN_RENDEZVOUS=file:$W/rdv3 KILN_DIST_TIMEOUT=20 "$B" collectives > "$W/fws.2" 2>&1 & p2=$!
wait $p0; rc0=$?; wait $p1; rc1=$?; wait $p2; rc2=$?
dt=$(( $(date +%s) - t0 ))
if [ "$rc0 $rc1 $rc2" = "3 3 3" ] && [ $dt -le 10 ] && grep -q disagree "$W/fws.0" && grep -q disagree "$W/fws.1" &&
   grep -q disagree "$W/fws.2"; then
  ok "wrong world size, file rendezvous: all 3 ranks say 'disagree' in ${dt} s"
else bad "wrong world size, file rendezvous (rc $rc0 $rc1 $rc2, ${dt} s)"; cat "$W"/fws.*; fi

# 4. Unreachable rendezvous: rank 1 alone, nobody serves the port.
port=$(free_port)
t0=$(date +%s)
out=$(RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=2 "$B" collectives 2>&1); rc=$?
dt=$(( $(date +%s) - t0 ))
if [ $rc = 3 ] && [ $dt -le 6 ] && grep -q "cannot reach the store at 127.0.0.1:$port within 2 s" <<< "$out"; then ok "unreachable rendezvous in ${dt} s: $out"
else bad "unreachable rendezvous (rc $rc, ${dt} s): $out"; fi

# 5. A rank dies mid-run: the other two fail at once (the connection closes), not at the timeout.
port=$(free_port)
t0=$(date +%s)
launch 3 "$W/die" env MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=20 "$B" die
dt=$(( $(date +%s) - t0 ))
# Each survivor names the rank that exited, by its pid (and the other survivor too, when that
# one has already stopped on its own error: "ranks 1 (pid N), 2 (pid M) have exited").
if [ "$RCS" = "3 9 3" ] && [ $dt -le 15 ] &&
   grep -q "rank 0: failed after .* the all-reduce failed: ranks\{0,1\} \(.*, \)\{0,1\}1 (pid [0-9]*)\(, 2 (pid [0-9]*)\)\{0,1\} ha\(s\|ve\) exited" "$W/die.0" &&
   grep -q "rank 2: failed after .* 1 (pid [0-9]*)" "$W/die.2"; then ok "killed rank: the others fail in ${dt} s: $(cat "$W/die.0")"
else bad "killed rank ($RCS, ${dt} s)"; cat "$W"/die.*; fi

# 6. A rank stalls (alive, silent): the other fails at KILN_DIST_TIMEOUT (2 s).
port=$(free_port)
RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=2 "$B" stall > "$W/stall.1" 2>&1 & p1=$!
t0=$(date +%s)
RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=2 "$B" stall > "$W/stall.0" 2>&1; rc0=$?
dt=$(( $(date +%s) - t0 ))
kill $p1 2> /dev/null; wait $p1 2> /dev/null
if [ $rc0 = 3 ] && [ $dt -le 8 ] && grep -q "rank 0: failed after [2-4]\.[0-9] s" "$W/stall.0" &&
   grep -q "all are still running, so one hung" "$W/stall.0"; then ok "stalled rank: timeout after ${dt} s: $(cat "$W/stall.0")"
else bad "stalled rank (rc $rc0, ${dt} s)"; cat "$W"/stall.*; fi

# 7. Found by review: a store that accepts and never answers (another program on the port)
# held a rank forever; two processes as one rank, or a process joining a run that has all its
# ranks (a second run on its MASTER_PORT), merged silently.
port=$(free_port)
python3 -c "import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $port)); s.listen(4); c, _ = s.accept(); time.sleep(20)" & listener=$!
sleep 0.5
t0=$(date +%s)
out=$(RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=2 timeout 30 "$B" collectives 2>&1); rc=$?
dt=$(( $(date +%s) - t0 ))
kill $listener 2> /dev/null; wait $listener 2> /dev/null
if [ $rc = 3 ] && [ $dt -le 6 ] && grep -q "the store at 127.0.0.1:$port did not answer within 2 s" <<< "$out"; then
  ok "a store that never answers: an error in ${dt} s: $out"
else bad "silent store (rc $rc, ${dt} s): $out"; fi
# The rule under the next case, without its timing: of two processes claiming a key (a
# rank's place), exactly the first gets it, on both stores.
port=$(free_port)
tcp=$(KILN_RENDEZVOUS=tcp:127.0.0.1:$port KILN_DIST_TIMEOUT=5 timeout 30 "$B" claim 2>&1)
file=$(KILN_RENDEZVOUS=file:$W/claims KILN_DIST_TIMEOUT=5 timeout 30 "$B" claim 2>&1)
want="claims: a 1 0, b 1 0, a after release 1"
if [ "$tcp" = "$want" ] && [ "$file" = "$want" ] && [ -z "$(ls "$W/claims")" ]; then
  ok "a key claimed twice goes to the first claimant only, and a released one to the next: TCP and file stores"
else bad "claims: tcp '$tcp', file '$file', left: $(ls "$W/claims" 2>&1)"; fi
port=$(free_port)
for r in 0 1 1; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=5 timeout 30 "$B" collectives > "$W/dup.$r.$RANDOM" 2>&1 &
done
wait
# Which message depends on timing: the second joined before the run had all its ranks, or after.
if grep -q "another process (pid [0-9]*), running on this machine, joined as rank 1 at tcp:127.0.0.1:$port first\|has all its ranks already: .* or this rank was started twice" \
   "$W"/dup.1.*; then ok "a rank started twice is named: $(grep -h error "$W"/dup.1.*)"
else bad "a rank started twice"; cat "$W"/dup.*; fi
# A rank killed while it waited (kill -9: no chance to take its keys away) leaves its claim in a
# file rendezvous directory; the next process for that rank is told it is a dead run's, by pid.
RANK=1 WORLD_SIZE=2 KILN_RENDEZVOUS=file:$W/rdv_killed KILN_DIST_TIMEOUT=60 "$B" collectives > /dev/null 2>&1 & pk=$!
# Two files: its claim is written (the join value comes after it).
for _ in $(seq 100); do [ "$(ls "$W/rdv_killed" 2> /dev/null | wc -l)" -ge 2 ] && break; sleep 0.05; done
kill -9 $pk; wait $pk 2> /dev/null
out=$(RANK=1 WORLD_SIZE=2 KILN_RENDEZVOUS=file:$W/rdv_killed KILN_DIST_TIMEOUT=5 timeout 30 "$B" collectives 2>&1); rc=$?
if [ $rc = 3 ] && grep -q "held by a process of an earlier run (pid $pk) that has exited: .* empty '$W/rdv_killed'" <<< "$out"; then
  ok "a killed run's claim is named as such: $out"
else bad "a killed run's claim (rc $rc): $out"; fi
port=$(free_port)
launch_late() { RANK=$1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port KILN_DIST_TIMEOUT=4 timeout 30 "$B" "$2"; }
launch_late 0 stall > "$W/late.0" 2>&1 & p0=$!
launch_late 1 stall > "$W/late.1" 2>&1 & p1=$!
sleep 1.5
out=$(launch_late 1 collectives 2>&1); rc=$?
kill $p1 2> /dev/null; wait $p0 $p1 2> /dev/null
if [ $rc = 3 ] && grep -q "the run at tcp:127.0.0.1:$port has all its ranks already" <<< "$out"; then ok "a late joiner is refused: $out"
else bad "late joiner (rc $rc): $out"; fi

end_checks "communicator"
