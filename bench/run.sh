#!/usr/bin/env bash
# bench/run.sh [MIB...|migrate|tree]: how fast is cryo compared to copying the same memory?
#
# Builds cryo (release) and, for each size (default: 1024 and 4096 MiB) of touched
# anonymous memory and for a python3 heap (CRYO_BENCH_PY_MIB, default 512 MiB of
# objects; 0 skips it), measures in the same run:
#   - cryo checkpoint --kill (memory written while stopped), its stop
#   - cryo checkpoint (default: low-freeze, memory written from a snapshot), its stop,
#     and cryo checkpoint --direct (leave running, memory written while stopped), its
#     stop, and cryo checkpoint --precopy (memory copied while it runs), its two
#     stops added up: each the median of CRYO_BENCH_RUNS (default 3) runs, each run
#     right after a dd of as many bytes (the goals compare each with its own dds)
#   - incremental checkpoints, each after 1% of the pages were rewritten, chained
#     (CRYO_BENCH_INC_RUNS, default 5; the median; anonymous memory only)
#   - cryo restart --lazy --detach: until the tree runs, and until every page is in
#   - cryo restart --detach (until the tree runs), twice with --huge-pages on (the
#     second at once after the first, on the huge pages it freed), reading the image
#     back from the page cache (cat), and reading it into fresh anonymous memory (bench/readinto.c:
#     what a restart must do at the least: the kernel zeroes every new page)
#   - image size, and cryo's peak RSS (maxrss) over all of the above
#   - fork of a C program with as much memory (bench/forktime.c: the floor of the
#     low-freeze stop, whose snapshot is a fork): the first, and later ones
#   - memcpy of the same size, dd of the same size to a file next to the image (page
#     cache, no sync; the median of all the runs above, and the run just before
#     --kill), gdb's gcore of the same process where gdb is installed
#   - a tree (CRYO_BENCH_TREE, default 4x256: a shell with 4 children of 256 MiB; 0
#     skips it): low-freeze and --direct checkpoints, and a restart, with its
#     processes handled one after another (--jobs 1) and several at once (the default)
#   - a forked tree (CRYO_BENCH_FORKED, default 4x256: a process of 256 MiB and 3
#     children forked after it wrote it; 0 skips it): checkpoint --kill and low-freeze,
#     image size against the memory of all processes, and a restart
#   - cryo migrate of CRYO_BENCH_MIGRATE_MIB (default 1024; 0 skips it) MiB written at a
#     low rate, to this same host, plain, with --precopy and with --postcopy: the downtime
# and prints, per workload, a table with ratios and the issue's goals next to them.
# Measures only; no pass/fail. As root, the workloads and cryo run as the unprivileged
# user cryo-test. Images are deleted at the end unless CRYO_BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/scripts/common.sh

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1024 4096)
PY_MIB=${CRYO_BENCH_PY_MIB:-512}
INC_RUNS=${CRYO_BENCH_INC_RUNS:-5}
RUNS=${CRYO_BENCH_RUNS:-3}
TREE=${CRYO_BENCH_TREE:-4x256}
FORKED=${CRYO_BENCH_FORKED:-4x256}
MIGRATE_MIB=${CRYO_BENCH_MIGRATE_MIB:-1024}
# `bench/run.sh migrate` or `bench/run.sh tree`: only those figures.
case "${SIZES[0]}" in
    migrate) SIZES=() PY_MIB=0 TREE=0 FORKED=0 ;;
    tree) SIZES=() PY_MIB=0 MIGRATE_MIB=0 ;;
esac
need gcc setpriv python3
build_cryo release
user_init

W=${CRYO_BENCH_DIR:-/tmp/cryo-bench}
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -f "$W/dd.out" "$W"/core.*
    [ -n "${CRYO_BENCH_KEEP:-}" ] || rm -rf "$W"/img-* "$W"/lf-* "$W"/inc-* "$W"/direct-* "$W"/pc-* "$W"/tree-* "$W"/forked-*
}
trap cleanup EXIT

make_workdir "$W"
install -m 0755 target/release/cryo "$W/cryo"
gcc -O2 -o "$W/memtouch" bench/memtouch.c
gcc -O2 -o "$W/memcpy" bench/memcpy.c
gcc -O2 -o "$W/readinto" bench/readinto.c
gcc -O2 -o "$W/forktime" bench/forktime.c
gcc -O2 -o "$W/timeit" bench/timeit.c
install -m 0644 bench/pyheap.py "$W/pyheap.py"
install -m 0644 bench/lazy-restart.py "$W/lazy-restart.py"
install -m 0755 bench/local-ssh "$W/local-ssh"
chmod 0755 "$W/memtouch" "$W/memcpy" "$W/readinto" "$W/forktime" "$W/timeit"
have_gcore=$(command -v gcore >/dev/null && echo 1 || echo 0)

echo "bench: work dir $W ($(df -hT "$W" | awk 'NR==2 {print $2" on "$7}')), uid $RUN_UID, $(nproc) CPUs, kernel $(uname -r)"

# timed NAME CMD...: run CMD as the run user; wall seconds in T (CMD's own life,
# bench/timeit.c), peak RSS (KiB) in PEAK, stdout in $W/NAME.out. Peak RSS of cryo
# runs is kept in MAXRSS.
MAXRSS=0
timed() {
    local name=$1
    shift
    run_as "$W" ./timeit "$name.time" "$@" >"$W/$name.out"
    read -r T PEAK <"$W/$name.time"
    if [ "$1" = ./cryo ]; then
        [ "$PEAK" -gt "$MAXRSS" ] && MAXRSS=$PEAK
    fi
    return 0
}
# dd_once MIB: dd of MIB MiB to a file next to the images (page cache, no sync),
# removed and synced after: its time in DDT, and added to ALL_DD.
ALL_DD=()
DD_MIB=
dd_once() {
    run_as "$W" ./timeit dd.time dd if=/dev/zero of=dd.out bs=1M count="$1" status=none
    read -r DDT _ <"$W/dd.time"
    ALL_DD+=("$DDT")
    rm -f "$W/dd.out"
    sync
}

# checkpoint_median NAME DIR ARGS...: `cryo checkpoint $pid -o DIR ARGS --json` RUNS
# times (DIR removed and synced after each), each right after a dd of as many
# bytes ($DD_MIB MiB, where set): T the median time, F the median stop (us), D
# the median of those dd runs. A write's time swings with what the machine freed before it
# (on this kind of machine a first write after much memory was freed can take
# several times as long), so each checkpoint is compared with a dd made in the
# same conditions just before it.
checkpoint_median() {
    local name=$1 dir=$2 i times=() stops=() dds=()
    shift 2
    for i in $(seq 1 "$RUNS"); do
        if [ -n "$DD_MIB" ]; then
            dd_once "$DD_MIB"
            dds+=("$DDT")
        fi
        timed "$name" ./cryo checkpoint "$pid" -o "$dir" "$@" --json
        times+=("$T")
        stops+=("$(json "$name" frozen_us)")
        rm -rf "${W:?}/$dir"
        sync
    done
    T=$(median "${times[@]}")
    F=$(median "${stops[@]}")
    D=$(median "${dds[@]+"${dds[@]}"}")
}
json() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(v if v is not None else "")' "$W/$1.out" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
goal() { # goal LABEL VALUE LIMIT UNIT: "label value (goal <= limit) ok|MISSED"
    awk -v l="$1" -v v="$2" -v m="$3" -v u="$4" 'BEGIN { printf "  %-40s %8.3g%-4s (goal <= %g%s) %s\n", l, v, u, m, u, (v <= m ? "ok" : "MISSED") }'
}

# wait_line FILE PREFIX: until FILE has a line starting with PREFIX.
wait_line() {
    for _ in $(seq 1 1200); do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2
    exit 1
}

# start_ready NAME N CMD...: start CMD (output in NAME.log) and wait until N memtouch
# processes logged "ready"; sets pid to CMD's and adds every pid to PIDS.
start_ready() {
    local name=$1 n=$2
    shift 2
    start_bg "$W" "$name.log" "$W/$name.pid" "$@"
    pid=$(cat "$W/$name.pid")
    PIDS+=("$pid")
    for _ in $(seq 1 1200); do
        [ "$(grep -c '^ready' "$W/$name.log" 2>/dev/null)" -ge "$n" ] && break
        sleep 0.1
    done
    PIDS+=($(awk '/^ready/ { print $NF }' "$W/$name.log"))
}

# bench_one NAME KIND CMD...: one workload (KIND anon: incremental measured too);
# memcpy and dd move as many bytes as the workload has resident.
bench_one() {
    local name=$1 kind=$2
    shift 2
    MAXRSS=0
    start_bg "$W" "$name.log" "$W/$name.pid" "$@"
    local pid
    pid=$(cat "$W/$name.pid")
    PIDS+=("$pid")
    wait_line "$W/$name.log" ready
    local rss size
    rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
    size=$(( (rss + 1023) / 1024 ))

    local cpy
    cpy=$(run_as "$W" ./memcpy "$size")
    local frk frk_first
    read -r frk_first frk < <(run_as "$W" ./forktime "$size")
    ALL_DD=()
    DD_MIB=$size
    local gct=-
    if [ "$have_gcore" = 1 ]; then
        timed gcore gcore -o core "$pid"
        gct=$T
        rm -f "$W"/core.*
        sync
    fi

    checkpoint_median lf "lf-$name"
    local lf_t=$T lf_frozen=$F
    # Both stops of a pre-copy, added up.
    checkpoint_median pc "pc-$name" --precopy
    local pc_t=$T pc_frozen=$F
    # The parent of the incremental one; starting write tracking costs a
    # scan of all memory while stopped, once.
    timed track ./cryo checkpoint "$pid" -o "lf-$name" --track --json
    local tr_t=$T tr_frozen
    tr_frozen=$(json track frozen_us)

    local inc_t=- inc_bytes=0 inc_frozen=0
    if [ "$kind" = anon ]; then
        # A chain of incremental checkpoints, each after 1% of the pages were
        # rewritten; the median of their times and stops (one small write is
        # easily delayed by the machine's other work).
        local parent="lf-$name" i times=() stops=()
        for i in $(seq 1 "$INC_RUNS"); do
            # The parent's pages are on their way to disk: not this one's work.
            sync
            kill -USR1 "$pid"
            wait_line "$W/$name.log" "dirtied .* round $i\$"
            timed inc ./cryo checkpoint "$pid" -o "inc-$name-$i" --parent "$parent" --json
            times+=("$T")
            stops+=("$(json inc frozen_us)")
            inc_bytes=$(json inc bytes)
            [ -n "$(json inc parent)" ] || echo "warning: incremental checkpoint $i was a full one" >&2
            parent="inc-$name-$i"
        done
        inc_t=$(median "${times[@]}")
        inc_frozen=$(median "${stops[@]}")
    fi
    rm -rf "$W/inc-$name"-* "$W/lf-$name"
    sync

    checkpoint_median direct "direct-$name" --direct
    local dir_t=$T dir_frozen=$F dir_dd=$D

    dd_once "$size"
    DD_MIB=
    local kill_dd=$DDT
    timed kill ./cryo checkpoint "$pid" -o "img-$name" --kill --json
    local kill_t=$T kill_frozen img_bytes
    kill_frozen=$(json kill frozen_us)
    img_bytes=$(du -sb "$W/img-$name" | cut -f1)

    timed restart ./cryo restart "img-$name" --detach --pidfile "$name.restored"
    local rst_t=$T host
    host=$(cat "$W/$name.restored")
    PIDS+=("$host")
    alive "$host" || echo "warning: restored pid $host is not running" >&2
    kill -KILL "$host" 2>/dev/null || true
    # Twice in a row: the second finds the huge pages the first freed still
    # backed by the host, which a balloon's free page reporting takes back.
    local huge_t=()
    for _ in 1 2; do
        while alive "$host"; do sleep 0.01; done
        timed restart-huge ./cryo restart "img-$name" --detach --pidfile "$name.restored" --huge-pages on
        huge_t+=("$T")
        host=$(cat "$W/$name.restored")
        PIDS+=("$host")
        alive "$host" || echo "warning: restored pid $host is not running" >&2
        kill -KILL "$host" 2>/dev/null || true
    done
    local lazy_run lazy_all
    read -r lazy_run lazy_all < <(run_as "$W" python3 lazy-restart.py "img-$name" "$name.lazy")
    host=$(cat "$W/$name.lazy")
    PIDS+=("$host")
    alive "$host" || echo "warning: lazily restored pid $host is not running" >&2
    kill -KILL "$host" 2>/dev/null || true
    timed read sh -c "cat img-$name/pages-*.img > /dev/null"
    local rd_t=$T
    local into_t
    into_t=$(run_as "$W" sh -c "./readinto img-$name/pages-*.img")
    rm -rf "$W/img-$name"

    local gib ddt
    gib=$(awk -v k="$rss" 'BEGIN { printf "%.3f", k / 1048576 }')
    ddt=$(median "${ALL_DD[@]}")
    echo
    echo "== $name: RSS $(mib $((rss * 1024))) MiB =="
    printf '%-40s %9s %10s %8s %9s\n' "what" "seconds" "vs memcpy" "vs dd" "vs gcore"
    row() { printf '%-40s %9s %10s %8s %9s\n' "$1" "$2" "$(ratio "$2" "$cpy")" "$(ratio "$2" "$ddt")" "$( [ "$gct" = - ] && echo - || ratio "$2" "$gct")"; }
    row "cryo checkpoint --kill" "$kill_t"
    row "cryo checkpoint (low-freeze, default)" "$lf_t"
    row "cryo checkpoint --track" "$tr_t"
    row "cryo checkpoint --precopy" "$pc_t"
    row "cryo checkpoint --direct" "$dir_t"
    [ "$inc_t" = - ] || row "incremental checkpoint, 1% rewritten" "$inc_t"
    row "cryo restart --detach" "$rst_t"
    row "restart --huge-pages on" "${huge_t[0]}"
    row "restart --huge-pages on, again at once" "${huge_t[1]}"
    row "cryo restart --lazy: until it runs" "$lazy_run"
    row "cryo restart --lazy: every page in" "$lazy_all"
    row "read the image from the page cache" "$rd_t"
    row "read it into fresh memory (C floor)" "$into_t"
    row "memcpy" "$cpy"
    row "fork of as much memory (C), first" "$frk_first"
    row "fork of as much memory (C), later" "$frk"
    row "dd to a file (no sync), median of ${#ALL_DD[@]}" "$ddt"
    [ "$gct" = - ] || row "gdb gcore" "$gct"
    echo "stopped: --kill $(ms "$kill_frozen") ms, --direct $(ms "$dir_frozen") ms, low-freeze $(ms "$lf_frozen") ms, --precopy (both stops) $(ms "$pc_frozen") ms, --track $(ms "$tr_frozen") ms$( [ "$inc_t" = - ] || echo ", incremental $(ms "$inc_frozen") ms")"
    echo "image: $(mib "$img_bytes") MiB$( [ "$inc_t" = - ] || echo "; incremental image: $(mib "$inc_bytes") MiB"); cryo peak RSS: $(mib $((MAXRSS * 1024))) MiB"
    echo "goals (issue 5):"
    goal "checkpoint --kill / the dd just before" "$(awk -v a="$kill_t" -v b="$kill_dd" 'BEGIN { print a / b }')" 1.2 x
    goal "checkpoint --direct / dd (medians, paired)" "$(awk -v a="$dir_t" -v b="$dir_dd" 'BEGIN { print a / b }')" 1.2 x
    [ "$gct" = - ] || goal "checkpoint --kill / gcore" "$(awk -v a="$kill_t" -v b="$gct" 'BEGIN { print a / b }')" 0.6 x
    [ "$gct" = - ] || goal "checkpoint --direct / gcore" "$(awk -v a="$dir_t" -v b="$gct" 'BEGIN { print a / b }')" 0.6 x
    goal "low-freeze stop per GiB" "$(awk -v f="$lf_frozen" -v g="$gib" 'BEGIN { print f / 1000 / g }')" 20 ms
    echo "  (a fork alone: $(awk -v f="$frk_first" -v g="$gib" 'BEGIN { printf "%.1f", f * 1000 / g }') ms per GiB the first time, $(awk -v f="$frk" -v g="$gib" 'BEGIN { printf "%.1f", f * 1000 / g }') later; the stop, the median of three in a row, is $(ratio "$(ms "$lf_frozen")" "$(awk -v f="$frk" 'BEGIN { print f * 1000 }')") of a later one)"
    goal "--precopy stops per GiB" "$(awk -v f="$pc_frozen" -v g="$gib" 'BEGIN { print f / 1000 / g }')" 20 ms
    goal "restart / read from cache" "$(awk -v a="$rst_t" -v b="$rd_t" 'BEGIN { print a / b }')" 2 x
    echo "  (restart / reading into fresh memory: $(ratio "$rst_t" "$into_t"))"
    goal "restart on huge pages (2nd) / read" "$(awk -v a="${huge_t[1]}" -v b="$rd_t" 'BEGIN { print a / b }')" 2 x
    goal "restart --lazy until it runs / read" "$(awk -v a="$lazy_run" -v b="$rd_t" 'BEGIN { print a / b }')" 2 x
    # The full checkpoint like it: the process runs on, its memory written while stopped.
    [ "$inc_t" = - ] || goal "incremental (1%) / full (--direct)" "$(awk -v a="$inc_t" -v b="$dir_t" 'BEGIN { print 100 * a / b }')" 5 %
    goal "cryo peak RSS" "$(awk -v k="$MAXRSS" 'BEGIN { print k / 1024 }')" 64 MiB
    kill -KILL "$pid" 2>/dev/null || true
}

# bench_migrate MIB: `cryo migrate` of MIB MiB rewritten at a low rate
# (CRYO_BENCH_DIRTY pages a second, default 1000: 4 MiB/s), plain, with
# --precopy and with --postcopy, to this same host through bench/local-ssh (a stand-in for ssh that
# runs the command here: the transport is a pipe, where a real link adds its own
# time per byte). Downtime: from the last freeze to the tree running "there"
# (with --postcopy, its memory still coming: the time until every page is there
# is shown too).
bench_migrate() {
    local mib=$1 rate=${CRYO_BENCH_DIRTY:-1000} mode pid
    echo
    echo "== migrate: $mib MiB, $rate pages/s rewritten, to this host over a pipe =="
    printf '%-28s %12s %10s %8s %s\n' "mode" "downtime ms" "total s" "rounds" "MiB per round"
    for mode in plain precopy postcopy; do
        start_bg "$W" "mig-$mode.log" "$W/mig-$mode.pid" ./memtouch "$mib" "$rate"
        pid=$(cat "$W/mig-$mode.pid")
        PIDS+=("$pid")
        wait_line "$W/mig-$mode.log" ready
        timed "mig-$mode" ./cryo migrate "$pid" --to localhost --ssh-command ./local-ssh --remote-cryo ./cryo --json \
            $( [ "$mode" = plain ] || echo "--$mode" )
        PIDS+=("$(json "mig-$mode" remote_pid)")
        kill -KILL "$(json "mig-$mode" remote_pid)" 2>/dev/null || true
        python3 - "$W/mig-$mode.out" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rounds = r.get("rounds") or [{"pages_bytes": r["stream_bytes"]}]
sizes = ", ".join("%.1f" % (x["pages_bytes"] / 2**20) for x in rounds)
post = r.get("postcopy")
if post:
    sizes += "; %.1f of them after it ran there, every page there after %.3f s" % (post["after_running"] / 2**20, post["complete_us"] / 1e6)
print("%-28s %12.1f %10.3f %8d %s" % ("migrate --" + sys.argv[2] if sys.argv[2] != "plain" else "migrate", r["downtime_us"] / 1000, r["total_us"] / 1e6, len(rounds), sizes))
PY
    done
    goal "downtime with --precopy" "$(awk -v u="$(json mig-precopy downtime_us)" 'BEGIN { print u / 1000 }')" 100 ms
    goal "downtime with --postcopy" "$(awk -v u="$(json mig-postcopy downtime_us)" 'BEGIN { print u / 1000 }')" 100 ms
}

# bench_tree N MIB: a shell with N memtouch children of MIB MiB each:
# checkpoint in low-freeze mode and with --direct, and restart, the processes
# handled one after another (--jobs 1) and several at once (the default); each
# the median of RUNS.
bench_tree() {
    local n=$1 mib=$2 pid mode one many
    start_ready tree "$n" bash -c 'for i in $(seq 1 "$1"); do ./memtouch "$2" & done; wait' tree "$n" "$mib"
    echo
    echo "== tree: $n processes of $mib MiB under a shell =="
    printf '%-40s %9s %9s %9s\n' "what (seconds; stop ms)" "--jobs 1" "default" "speed-up"
    for mode in low-freeze direct; do
        checkpoint_median "tree-$mode-1" "tree-$mode" --jobs 1 $( [ "$mode" = direct ] && echo --direct )
        one=$T
        local stop_one=$F
        checkpoint_median "tree-$mode" "tree-$mode" $( [ "$mode" = direct ] && echo --direct )
        many=$T
        printf '%-40s %9s %9s %9s\n' "cryo checkpoint ($mode)" "$one" "$many" "$(ratio "$one" "$many")"
        printf '%-40s %9s %9s\n' "  stopped" "$(ms "$stop_one")" "$(ms "$F")"
    done
    timed tree-kill ./cryo checkpoint "$pid" -o tree-img --kill --json
    local jobs times host r
    for jobs in 1 0; do
        times=()
        for r in $(seq 1 "$RUNS"); do
            timed tree-restart ./cryo restart tree-img --detach --pidfile tree.restored $( [ "$jobs" = 0 ] || echo --jobs "$jobs" )
            times+=("$T")
            host=$(cat "$W/tree.restored")
            PIDS+=("$host")
            kill -KILL $(cat /proc/"$host"/task/*/children 2>/dev/null) "$host" 2>/dev/null || true
            sleep 0.5
        done
        [ "$jobs" = 1 ] && one=$(median "${times[@]}") || many=$(median "${times[@]}")
    done
    printf '%-40s %9s %9s %9s\n' "cryo restart --detach" "$one" "$many" "$(ratio "$one" "$many")"
    rm -rf "$W/tree-img"
}

# bench_forked N MIB: a process of MIB MiB and N-1 children forked after it wrote
# it, sharing it copy-on-write: checkpoints store the shared pages once.
bench_forked() {
    local n=$1 mib=$2 pid host
    start_ready forked "$n" ./memtouch "$mib" 0 $((n - 1))
    echo
    echo "== forked tree: $n processes sharing $mib MiB since a fork ($((n * mib)) MiB of private memory in all) =="
    printf '%-40s %9s %9s %9s\n' "what" "seconds" "stop ms" "image MiB"
    checkpoint_median forked-lf forked-lf
    printf '%-40s %9s %9s\n' "cryo checkpoint (low-freeze)" "$T" "$(ms "$F")"
    timed forked-kill ./cryo checkpoint "$pid" -o forked-img --kill --json
    printf '%-40s %9s %9s %9s\n' "cryo checkpoint --kill" "$T" "$(ms "$(json forked-kill frozen_us)")" "$(mib "$(json forked-kill bytes)")"
    timed forked-restart ./cryo restart forked-img --detach --pidfile forked.restored
    printf '%-40s %9s\n' "cryo restart --detach" "$T"
    host=$(cat "$W/forked.restored")
    PIDS+=("$host")
    kill -KILL $(cat /proc/"$host"/task/*/children 2>/dev/null) "$host" 2>/dev/null || true
    rm -rf "$W/forked-img"
}

for size in "${SIZES[@]+"${SIZES[@]}"}"; do
    bench_one "anon-$size" anon ./memtouch "$size"
done
if [ "$PY_MIB" != 0 ]; then
    bench_one "python3-heap" python /usr/bin/python3 pyheap.py "$PY_MIB"
fi
[ "$TREE" = 0 ] || bench_tree "${TREE%x*}" "${TREE#*x}"
[ "$FORKED" = 0 ] || bench_forked "${FORKED%x*}" "${FORKED#*x}"
[ "$MIGRATE_MIB" = 0 ] || bench_migrate "$MIGRATE_MIB"
