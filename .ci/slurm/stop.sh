#!/usr/bin/env bash
# Stop the one-node test cluster started by .ci/slurm/start.sh.
#
# Idempotent and quiet about it: exits 0 whether or not anything was running.
# Only processes named by the pid files in the state dir are signalled.
#   PNEUMO_SLURM_DIR         state dir (default /tmp/pneumo-slurm)
#   PNEUMO_SLURM_KEEP_MUNGE  if 1, leave munged running (used by start.sh)
set -uo pipefail

STATE_DIR="${PNEUMO_SLURM_DIR:-/tmp/pneumo-slurm}"
KEEP_MUNGE="${PNEUMO_SLURM_KEEP_MUNGE:-0}"

log() { echo "pneumo-slurm: $*" >&2; }

[ -d "$STATE_DIR" ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n env PNEUMO_SLURM_DIR="$STATE_DIR" \
            PNEUMO_SLURM_KEEP_MUNGE="$KEEP_MUNGE" bash "$0" "$@"
    fi
    log "not root and no passwordless sudo; cannot stop daemons"
    exit 0
fi

export SLURM_CONF="$STATE_DIR/slurm.conf"

# Send TERM to the pid in $1, wait up to 15 s, then KILL. Removes the pid file.
stop_pid() {
    local pidfile="$1" name="$2" pid i
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$i" -eq 30 ] && kill -KILL "$pid" 2>/dev/null
            sleep 0.5
        done
    fi
    rm -f "$pidfile"
}

# Cancel jobs first so no slurmstepd (and job) outlives slurmd.
if [ -f "$SLURM_CONF" ] && timeout 5 scontrol ping >/dev/null 2>&1; then
    timeout 10 scancel --full --quiet --partition=debug 2>/dev/null || true
    for _ in $(seq 1 20); do
        [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi

stop_pid "$STATE_DIR/run/slurmd.pid" slurmd
stop_pid "$STATE_DIR/run/slurmctld.pid" slurmctld
if [ "$KEEP_MUNGE" != 1 ]; then
    stop_pid "$STATE_DIR/munge/munged.pid" munged
fi
exit 0
