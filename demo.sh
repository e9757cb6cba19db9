#!/usr/bin/env bash
# demo.sh: checkpoint a running program, kill it, and bring it back where it was.
#
# Builds cryo (release), starts a small C program that prints "tick N pid P" twice a
# second into a log, checkpoints it with --kill, shows it is gone, restarts it with
# --detach and shows the log carrying on -- with the same pid as the program sees it.
# As root, everything runs as the unprivileged user cryo-test.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
. tests/scripts/common.sh

need gcc setpriv
build_cryo release
user_init

W=${CRYO_DEMO_DIR:-/tmp/cryo-demo}
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

make_workdir "$W"
install -m 0755 target/release/cryo "$W/cryo"
gcc -O2 -o "$W/counter" tests/workloads/ticker.c
chmod 0755 "$W/counter"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

step "1. start a program that counts (as uid $RUN_UID)"
start_bg "$W" counter.log "$W/counter.pid" ./counter 500 0 0
PID=$(cat "$W/counter.pid")
PIDS+=("$PID")
sleep 2.6
show "tail -n 3 counter.log"
tail -n 3 "$W/counter.log"

step "2. checkpoint it, killing it afterwards"
show "cryo checkpoint $PID -o image --kill"
t0=$EPOCHREALTIME
run_as "$W" ./cryo checkpoint "$PID" -o image --kill
t1=$EPOCHREALTIME
echo "took $(elapsed "$t0" "$t1") s; image: $(du -sh "$W/image" | cut -f1)"
show "cryo inspect image"
run_as "$W" ./cryo inspect image || true

step "3. the program is gone"
sleep 1
if alive "$PID"; then
    echo "pid $PID is still running -- that is a bug" >&2
    exit 1
fi
echo "pid $PID: no such process"
n=$(wc -l <"$W/counter.log")
sleep 1
show "tail -n 2 counter.log   # nothing new"
tail -n 2 "$W/counter.log"
[ "$(wc -l <"$W/counter.log")" = "$n" ] || { echo "log still growing?" >&2; exit 1; }

step "4. restart it"
show "cryo restart image --detach --pidfile restored.pid"
run_as "$W" ./cryo restart image --detach --pidfile restored.pid
HOST=$(cat "$W/restored.pid")
PIDS+=("$HOST")
echo "restored: host pid $HOST; $(grep NSpid /proc/"$HOST"/status | tr '\t' ' ') (it still sees itself as $PID)"
sleep 2.6
show "tail -n 8 counter.log   # counting on, same pid"
tail -n 8 "$W/counter.log"

step "5. done"
kill -TERM "$HOST" 2>/dev/null || true
echo "stopped the restored program; files are in $W"
