#!/usr/bin/env bash
# Build cryo and run the whole test suite: ./test.sh [extra cargo test args]
#
# The end-to-end tests (tests/, crate cryo-tests) drive target/debug/cryo as a
# subprocess. When run as root they create the unprivileged users cryo-test and
# cryo-other and run every workload and every cryo command as cryo-test.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in gcc strace gdb perl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ "$(id -u)" = 0 ]; then
    command -v useradd >/dev/null 2>&1 || missing+=(passwd)
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

cargo build -p cryo-cli
cargo test --workspace "$@"
