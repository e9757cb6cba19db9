#!/usr/bin/env bash
# bench/run.sh [MIB]: how fast is cryo compared to copying the same memory?
#
# Builds cryo (release), starts a program that touches MIB MiB (default 1024) of
# anonymous memory and then idles, and measures in the same run:
#   - cryo checkpoint --kill  (wall time)
#   - cryo restart --detach   (wall time, until the tree runs)
#   - image size
#   - memcpy of MIB MiB (pre-faulted buffers)
#   - dd of MIB MiB from /dev/zero to a file on the image's file system (plain, page cache)
# and prints a table with ratios. Measures only; no pass/fail.
# As root, the workload and cryo run as the unprivileged user cryo-test.
# The image is deleted at the end unless CRYO_BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/scripts/common.sh

MIB=${1:-1024}
need gcc setpriv
build_cryo release
user_init

W=${CRYO_BENCH_DIR:-/tmp/cryo-bench}
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$W/dd.out"
    [ -n "${CRYO_BENCH_KEEP:-}" ] || rm -rf "$W/image"
}
trap cleanup EXIT

make_workdir "$W"
install -m 0755 target/release/cryo "$W/cryo"
gcc -O2 -o "$W/memtouch" bench/memtouch.c
gcc -O2 -o "$W/memcpy" bench/memcpy.c
chmod 0755 "$W/memtouch" "$W/memcpy"

echo "bench: $MIB MiB, work dir $W ($(df -hT "$W" | awk 'NR==2 {print $2" on "$7}')), uid $RUN_UID"

# Baselines first, so neither competes with the image's dirty page cache.
cpy=$(run_as "$W" ./memcpy "$MIB")
t0=$(now)
run_as "$W" dd if=/dev/zero of=dd.out bs=1M count="$MIB" status=none
t1=$(now)
ddt=$(elapsed "$t0" "$t1")
rm -f "$W/dd.out"
sync

start_bg "$W" memtouch.log "$W/memtouch.pid" ./memtouch "$MIB"
PID=$(cat "$W/memtouch.pid")
PIDS+=("$PID")
for _ in $(seq 1 600); do
    grep -q '^ready' "$W/memtouch.log" 2>/dev/null && break
    sleep 0.1
done
grep -q '^ready' "$W/memtouch.log" || { echo "memtouch did not get ready" >&2; exit 1; }
rss=$(awk '/^VmRSS/ {print $2}' /proc/"$PID"/status)

t0=$(now)
run_as "$W" ./cryo checkpoint "$PID" -o image --kill
t1=$(now)
ckpt=$(elapsed "$t0" "$t1")
img_bytes=$(du -sb "$W/image" | cut -f1)

t0=$(now)
run_as "$W" ./cryo restart image --detach --pidfile restored.pid
t1=$(now)
rst=$(elapsed "$t0" "$t1")
HOST=$(cat "$W/restored.pid")
PIDS+=("$HOST")
alive "$HOST" || echo "warning: restored pid $HOST is not running" >&2
rss_after=$(awk '/^VmRSS/ {print $2}' /proc/"$HOST"/status 2>/dev/null || echo '?')
kill -KILL "$HOST" 2>/dev/null || true


ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo
printf '%-34s %10s %12s %12s\n' "what ($MIB MiB, RSS ${rss} kB)" "seconds" "vs memcpy" "vs dd"
printf '%-34s %10s %12s %12s\n' "cryo checkpoint --kill" "$ckpt" "$(ratio "$ckpt" "$cpy")" "$(ratio "$ckpt" "$ddt")"
printf '%-34s %10s %12s %12s\n' "cryo restart --detach" "$rst" "$(ratio "$rst" "$cpy")" "$(ratio "$rst" "$ddt")"
printf '%-34s %10s %12s %12s\n' "memcpy" "$cpy" "1.00x" "$(ratio "$cpy" "$ddt")"
printf '%-34s %10s %12s %12s\n' "dd to file (no sync)" "$ddt" "$(ratio "$ddt" "$cpy")" "1.00x"
echo
awk -v b="$img_bytes" -v m="$MIB" 'BEGIN { printf "image size: %.1f MiB (%.2fx of the touched memory)\n", b / 1048576, b / 1048576 / m }'
echo "restored RSS right after restart: ${rss_after} kB"
