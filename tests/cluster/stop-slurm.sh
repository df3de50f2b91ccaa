#!/usr/bin/env bash
# stop-slurm.sh - stop the test cluster that tests/cluster/start-slurm.sh started.
#
# Usage (as root):   bash tests/cluster/stop-slurm.sh
#   Cancels all jobs first (running job steps would otherwise outlive slurmd), then stops
#   slurmd, slurmctld, slurmdbd, MariaDB and munged by the PID files in $XREDUCE_SLURM_ROOT/run.
#   A MariaDB or munged that start-slurm.sh found already running (no PID file of ours) is left
#   alone. Nothing else is touched: packages, /etc/slurm, job state and the accounting DB stay,
#   so the next start-slurm.sh is quick and job ids keep counting.
#   XREDUCE_SLURM_WIPE=1 also deletes the job state and logs (the next start then drops the
#   accounting DB too, as job ids restart at 1).
set -uo pipefail
ROOT=${XREDUCE_SLURM_ROOT:-/var/tmp/xreduce-slurm}
RUN=$ROOT/run
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
log() { printf '[stop-slurm] %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { log "ERROR: must run as root" >&2; exit 1; }
if [ ! -d "$RUN" ]; then log "nothing to stop ($RUN does not exist)"; exit 0; fi
exec 9>"$ROOT/.lock"
flock -w 120 9 || { log "ERROR: another start/stop holds $ROOT/.lock" >&2; exit 1; }

alive() { [ -s "$RUN/$1.pid" ] && [ "$(cat "/proc/$(cat "$RUN/$1.pid")/comm" 2>/dev/null)" = "$1" ]; }
stop_group() {  # stop_group NAME...: SIGTERM all at once, wait <= 15 s each, then SIGKILL
  local n p i pids=() names=()
  for n in "$@"; do
    if alive "$n"; then
      p=$(cat "$RUN/$n.pid"); kill "$p" 2>/dev/null; pids+=("$p"); names+=("$n")
    elif [ -e "$RUN/$n.pid" ]; then
      log "$n: not running (stale PID file removed)"
    fi
    rm -f "$RUN/$n.pid"
  done
  for i in "${!pids[@]}"; do
    p=${pids[$i]}
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -9 "$p"; log "${names[$i]}: pid $p SIGKILLed"
    else log "${names[$i]}: pid $p stopped"; fi
  done
}

if alive slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs
    for _ in $(seq 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi
stop_group slurmd slurmctld slurmdbd   # together: ~2-6 s (slurmctld is the slow one)
stop_group mariadbd
stop_group munged
if [ "${XREDUCE_SLURM_WIPE:-0}" = 1 ]; then
  rm -rf "${ROOT:?}"/slurmctld "${ROOT:?}"/slurmd "${ROOT:?}"/log "${ROOT:?}"/fakegpu
  log "job state and logs wiped: $ROOT"
fi
log "stopped"
