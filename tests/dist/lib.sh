# Helpers for the multi-process tests: a free TCP port and starting N ranks of a command
# with torchrun-style variables. Sourced, not run.

# A port nobody listens on now (the kernel's pick, released at once).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# launch N LOGPREFIX COMMAND...: starts ranks 0..N-1 of COMMAND in the background with RANK,
# WORLD_SIZE, LOCAL_RANK (plus whatever the caller exported), stdout+stderr of rank r in
# LOGPREFIX.r; waits for all and leaves their exit codes in RCS (space-separated).
launch() {
  local n=$1 log=$2
  shift 2
  local pids=() r
  for ((r = 0; r < n; r++)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r "$@" > "$log.$r" 2>&1 &
    pids+=($!)
  done
  RCS=""
  for r in "${pids[@]}"; do
    wait "$r"
    RCS="$RCS $?"
  done
  RCS=${RCS# }
}
