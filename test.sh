#!/usr/bin/env bash
# Build cryo and run the whole test suite: ./test.sh [extra cargo test args]
#
# The end-to-end tests (tests/, crate cryo-tests) drive target/debug/cryo as a
# subprocess. When run as root they create the unprivileged users cryo-test and
# cryo-other and run every workload and every cryo command as cryo-test.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in gcc strace gdb perl tmux; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# The real programs of the fd tests (tests/tests/fds.rs).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# Runtimes with JIT compilers and threads of their own (tests/tests/restore.rs).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ "$(id -u)" = 0 ]; then
    command -v useradd >/dev/null 2>&1 || missing+=(passwd)
    # The migration test (tests/tests/migrate.rs) makes a second host: a
    # network namespace with an sshd of its own.
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "test.sh: missing tools: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

# The parasite blob is built for a bare-metal target by a nested cargo build.
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx x86_64-unknown-none; then
        rustup target add x86_64-unknown-none
    fi
fi

# What the runners print is kept in $results too, and added up at the end into one
# closing line: cargo's own last line is a doc-test binary's "0 passed", which says
# nothing of the whole run.
results=$(mktemp)
keeper=
trap 'rm -f "$results"; [ -z "$keeper" ] || kill "$keeper" 2>/dev/null' EXIT

# Runs a command with its standard output shown and added to $results. Not through a
# pipe: a process that a test leaves behind holds a pipe open, and the script would wait
# for it. The command stays in the foreground, so ^C reaches it.
shown_and_kept() {
    local out status=0 tailer
    out=$(mktemp)
    sleep 1000000 & keeper=$!
    tail -n +1 -f --pid="$keeper" "$out" & tailer=$!
    "$@" > "$out" || status=$?
    # tail reads to the end of the file once more when the process it watches is gone.
    kill "$keeper"; wait "$tailer" || true; keeper=
    cat "$out" >> "$results"
    rm -f "$out"
    return "$status"
}

cargo build -p cryo-cli
shown_and_kept cargo test --workspace "$@"

# Fuzz the image decoder and restart's checks and page-read planner for a bounded time
# (CRYO_FUZZ_SECS, default 60; 0 skips), from a copy of the seed corpus in fuzz/corpus.
# cargo fuzz passes -Z flags to rustc: RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. No sanitizer: the decoding path is safe Rust; what the fuzzer looks for is a
# panic, a hang or an allocation beyond -rss_limit_mb.
fuzz_secs=${CRYO_FUZZ_SECS-60}
if [ "$fuzz_secs" != 0 ]; then
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    work_corpus=$(mktemp -d)
    cp fuzz/corpus/image/* "$work_corpus"/
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none image "$work_corpus" -- \
        -max_total_time="$fuzz_secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1)
    rm -rf "$work_corpus"
fi

# The end-to-end scenarios of tests/vm (single process, threads, tree, pipes, files):
# natively here, then inside aarch64 (two CPUs) and ARMv7 VMs under qemu-system (tests/vm/run.sh
# builds static cross binaries, fetches Debian's kernels with apt and installs
# qemu-system-arm and the Rust targets when run as root). CRYO_VM_ARCHES picks the VMs
# (default: all four; empty: none).
cargo build -p cryo-vmtest
CRYO_BIN=target/debug/cryo shown_and_kept target/debug/cryo-vmtest
vm_arches=${CRYO_VM_ARCHES-aarch64 aarch64-a57 arm arm-on-aarch64}
if [ -n "$vm_arches" ] && [ "$(id -u)" != 0 ] && ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
    echo "test.sh: skipping the ARM VM suites: qemu-system-arm is not installed (apt-get install qemu-system-arm, or run as root)" >&2
    vm_arches=
fi
for arch in $vm_arches; do
    echo "test.sh: VM suite $arch"
    shown_and_kept tests/vm/run.sh "$arch"
done

# cargo: "test result: ok. 12 passed; 0 failed; 3 ignored; ..."; cryo-vmtest: one
# "cryo-vmtest: PASS|FAIL|SKIP name" line a scenario.
awk '
  /^test result:/ { for (i = 1; i < NF; i++) {
      if ($(i+1) ~ /^passed;/) passed += $i
      if ($(i+1) ~ /^failed;/) failed += $i
      if ($(i+1) ~ /^ignored;/) skipped += $i } }
  /^cryo-vmtest: PASS / { passed++ }
  /^cryo-vmtest: FAIL / { failed++ }
  /^cryo-vmtest: SKIP / { skipped++ }
  END { printf "test.sh: %d passed, %d failed, %d skipped\n", passed, failed, skipped }
' "$results"
