# Shell helpers shared by demo.sh and bench/run.sh (sourced, not executed).
#
# When run as root, processes are started as the unprivileged user cryo-test (created on
# first use, like the Rust test harness does), because cryo is meant for ordinary users
# and root here is not a fair stand-in (see tests/src/lib.rs).

CRYO_TEST_USER=cryo-test

# need TOOL...: install missing tools with apt-get when root, else fail with a hint.
need() {
    local missing=() t
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "missing: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
        exit 1
    fi
}

# build_cryo PROFILE: builds cryo-cli (debug|release); prints nothing else.
build_cryo() {
    if command -v rustup >/dev/null 2>&1 &&
        ! rustup target list --installed | grep -qx x86_64-unknown-none; then
        rustup target add x86_64-unknown-none
    fi
    if [ "$1" = release ]; then cargo build --release -p cryo-cli; else cargo build -p cryo-cli; fi
}

# user_init: sets RUN_UID/RUN_GID (creating cryo-test when root).
user_init() {
    if [ "$(id -u)" = 0 ]; then
        if ! getent passwd "$CRYO_TEST_USER" >/dev/null; then
            local g=--user-group
            getent group "$CRYO_TEST_USER" >/dev/null && g="--gid=$CRYO_TEST_USER"
            flock /tmp/cryo-tests-useradd.lock useradd --system --no-create-home \
                --home-dir /nonexistent --shell /usr/sbin/nologin "$g" "$CRYO_TEST_USER"
        fi
        RUN_UID=$(id -u "$CRYO_TEST_USER")
        RUN_GID=$(id -g "$CRYO_TEST_USER")
    else
        RUN_UID=$(id -u)
        RUN_GID=$(id -g)
    fi
}

# make_workdir DIR: fresh 0755 dir owned by the run user.
make_workdir() {
    rm -rf "$1"
    mkdir -p "$1"
    chmod 0755 "$1"
    [ "$(id -u)" = 0 ] && chown "$RUN_UID:$RUN_GID" "$1"
    return 0
}

# run_as DIR CMD...: run CMD in DIR as the run user with a clean environment.
run_as() {
    local dir=$1
    shift
    local envv=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$dir" LANG=C)
    [ -n "${CRYO_LOG:-}" ] && envv+=(CRYO_LOG="$CRYO_LOG")
    if [ "$(id -u)" = 0 ]; then
        (cd "$dir" && setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "${envv[@]}" "$@")
    else
        (cd "$dir" && "${envv[@]}" "$@")
    fi
}

# start_bg DIR LOG PIDFILE CMD...: start CMD as the run user in its own session,
# stdout+stderr to DIR/LOG (opened without O_APPEND), stdin /dev/null; its pid goes to PIDFILE.
start_bg() {
    local dir=$1 log=$2 pidfile=$3
    shift 3
    # Without job control a background child is not a group leader, so setsid(1) does
    # not fork and $! is the program's own pid.
    # Fds beyond 0-2 inherited from whoever ran this script are closed first, so the
    # program (and hence its image) holds only its own.
    run_as "$dir" bash -c '
        log=$1; shift
        for f in /proc/$$/fd/*; do
            n=${f##*/}
            if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
        done 2>/dev/null
        setsid "$@" >"$log" 2>&1 </dev/null &
        echo $!' _ "$log" "$@" >"$pidfile"
}

# alive PID: exists and is not a zombie.
alive() {
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$1/status" 2>/dev/null
}

# now: a wall-clock timestamp in seconds; elapsed T0 T1: T1-T0 with 3 decimals.
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
