#!/usr/bin/env bash
# tests/vm/run.sh ARCH [--no-build]
#
# Build cryo and the VM test rig (tests/vm, crate cryo-vmtest) statically for ARCH, boot
# them in a throw-away qemu-system VM (TCG, Debian's kernel, initramfs only: /init is
# cryo-vmtest, /cryo is cryo; no shell, no compiler) and exit with the number of failed
# scenarios (125 when the VM itself did not work).
#
# ARCH: aarch64 (-cpu max: SVE, pointer authentication) | aarch64-a57 (the same on a plain
# ARMv8.0 Cortex-A57) | arm (ARMv7, armmp-lpae kernel) | arm-on-aarch64 (the ARMv7 build on
# the arm64 kernel, compat mode).
#
# Needs qemu-system-arm, python3 (to write the initramfs), apt (the kernel comes from
# Debian's arm64/armhf packages), and the Rust targets below; as root, missing pieces are
# installed. Env: CRYO_VM_CACHE (default ~/.cache/cryo-vm), CRYO_VM_TIMEOUT (s, 900),
# CRYO_VM_FILTER (run only scenarios whose name contains it), CRYO_VM_VERBOSE=1 (kernel log),
# CRYO_VM_CPU (aarch64 default: max with pointer authentication; else cortex-a57/a15), CRYO_VM_KERNEL (use this kernel image), CRYO_LOG (passed to cryo).
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "tests/vm/run.sh: $*" >&2; exit 125; }
[ $# -ge 1 ] || die "usage: tests/vm/run.sh aarch64|aarch64-a57|arm|arm-on-aarch64 [--no-build]"
arch=$1
build=1
[ "${2:-}" = --no-build ] && build=0

case $arch in
  aarch64)        target=aarch64-unknown-linux-musl    qemu=qemu-system-aarch64 cpu=max,pauth-impdef=on debarch=arm64 flavour=arm64 ;;
  aarch64-a57)    target=aarch64-unknown-linux-musl    qemu=qemu-system-aarch64 cpu=cortex-a57 debarch=arm64 flavour=arm64 ;;
  arm)            target=armv7-unknown-linux-gnueabihf qemu=qemu-system-arm     cpu=cortex-a15 debarch=armhf flavour=armmp-lpae ;;
  arm-on-aarch64) target=armv7-unknown-linux-gnueabihf qemu=qemu-system-aarch64 cpu=cortex-a57 debarch=arm64 flavour=arm64 ;;
  *) die "unknown ARCH '$arch' (aarch64|aarch64-a57|arm|arm-on-aarch64)" ;;
esac
cpu=${CRYO_VM_CPU:-$cpu}
case $target in
  aarch64*) blob_target=aarch64-unknown-none-softfloat apt_pkgs=(qemu-system-arm gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
  armv7*)   blob_target=armv7a-none-eabi apt_pkgs=(qemu-system-arm gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
esac

# The aarch64 VM also gets the ARMv7 build of cryo-vmtest (/workload32): the 64-bit cryo
# must refuse a 32-bit process clearly.
extra_target=
case $arch in aarch64*) extra_target=armv7-unknown-linux-gnueabihf ;; esac

# ---- tools ----------------------------------------------------------------------------
need=()
command -v "$qemu" >/dev/null || need+=(qemu-system-arm)
[ "$target" != armv7-unknown-linux-gnueabihf ] && [ -z "$extra_target" ] || command -v arm-linux-gnueabihf-gcc >/dev/null ||
  need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/vm/run.sh: installing ${need[*]}" >&2
    apt-get update -qq >&2 || echo "tests/vm/run.sh: apt-get update had errors; trying with what it got" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  else
    die "missing: ${need[*]} (apt-get install ${apt_pkgs[*]} python3)"
  fi
fi
if [ $build = 1 ] && command -v rustup >/dev/null; then
  for t in "$target" "$blob_target" ${extra_target:+"$extra_target"}; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
  done
fi

# ---- build ----------------------------------------------------------------------------
# Release without debug info: the binaries travel in the initramfs, and TCG is slow.
bindir=target/$target/release
# zstd (--compress zstd) is C code, and there is no C cross compiler for
# aarch64 musl here: that build leaves it out (lz4 is pure Rust).
features=()
case $target in aarch64-*) features=(--no-default-features) ;; esac
if [ $build = 1 ]; then
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --target "$target" -p cryo-cli -p cryo-vmtest "${features[@]}" >&2
  if [ -n "$extra_target" ]; then
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
      cargo build --release --target "$extra_target" -p cryo-vmtest >&2
  fi
fi
workload32=
[ -n "$extra_target" ] && [ -x "target/$extra_target/release/cryo-vmtest" ] && workload32=target/$extra_target/release/cryo-vmtest
for b in cryo cryo-vmtest; do [ -x "$bindir/$b" ] || die "$bindir/$b is missing (run without --no-build)"; done

# ---- kernel ---------------------------------------------------------------------------
cache=${CRYO_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cryo-vm}
mkdir -p "$cache"
kernel=${CRYO_VM_KERNEL:-}
if [ -z "$kernel" ]; then
  exec 9>"$cache/.lock"
  flock 9
  kernel=$(ls "$cache"/vmlinuz-*-"$flavour" 2>/dev/null | tail -n 1 || true)
  if [ -z "$kernel" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
      [ "$(id -u)" = 0 ] || die "apt must know Debian's $debarch packages: as root, dpkg --add-architecture $debarch && apt-get update"
      dpkg --add-architecture "$debarch"
      apt-get update -qq >&2 || echo "tests/vm/run.sh: apt-get update had errors; trying with what it got" >&2
    fi
    pkg=$(apt-cache depends "linux-image-$flavour:$debarch" 2>/dev/null |
          awk '/Depends: linux-image-[0-9]/ { sub(/:.*/, "", $2); print $2; exit }')
    [ -n "$pkg" ] || die "apt knows no linux-image-$flavour:$debarch (apt-get update?)"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    (cd "$tmp" && apt-get download -q "$pkg:$debarch" >&2) || { rm -rf "$tmp"; die "apt-get download $pkg:$debarch failed"; }
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
    kernel=$cache/vmlinuz-${pkg#linux-image-}
    mv "$tmp"/boot/vmlinuz-* "$kernel"
    rm -rf "$tmp"
  fi
  exec 9>&-
fi

# ---- initramfs ------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/cryo-vm-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 - "$work/initrd.cpio" "$bindir/cryo-vmtest" "$bindir/cryo" $workload32 <<'PY' || die "cannot write the initramfs"
import sys
out, rig, cryo = sys.argv[1:4]
extra = sys.argv[4:5]
buf, ino = bytearray(), [100]
def ent(name, mode, data=b"", rdev=(0, 0)):  # cpio "newc"; no root needed for the device node
    ino[0] += 1
    nb = name.encode() + b"\0"
    f = (ino[0], mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0)
    buf.extend(("070701" + "".join("%08x" % v for v in f)).encode() + nb)
    buf.extend(b"\0" * (-len(buf) % 4)); buf.extend(data); buf.extend(b"\0" * (-len(buf) % 4))
for d in ("dev", "proc", "sys", "tmp"):
    ent(d, 0o040755)
ent("dev/console", 0o020600, rdev=(5, 1))
ent("init", 0o100755, open(rig, "rb").read())
ent("cryo", 0o100755, open(cryo, "rb").read())
for w in extra:
    ent("workload32", 0o100755, open(w, "rb").read())
ent("TRAILER!!!", 0)
open(out, "wb").write(buf)
PY

# ---- boot -----------------------------------------------------------------------------
append="console=ttyAMA0 panic=-1"
[ -n "${CRYO_VM_VERBOSE:-}" ] && append+=" ignore_loglevel" || append+=" quiet"
[ -n "${CRYO_VM_FILTER:-}" ] && append+=" CRYO_VM_FILTER=$CRYO_VM_FILTER"
[ -n "${CRYO_LOG:-}" ] && append+=" CRYO_LOG=$CRYO_LOG"
echo "tests/vm/run.sh: booting $(basename "$kernel") on $qemu -cpu $cpu ($target)" >&2
start=$(date +%s)
set +e
timeout -k 5 "${CRYO_VM_TIMEOUT:-900}" "$qemu" -M virt -accel tcg -cpu "$cpu" -smp 2 -m 1024 \
    -display none -monitor none -serial stdio -nic none -no-reboot \
    -kernel "$kernel" -initrd "$work/initrd.cpio" -append "$append" </dev/null 2>&1 |
  sed -u 's/\r$//' | tee "$work/console.log" |
  if [ -n "${CRYO_VM_VERBOSE:-}" ]; then cat; else sed -u -e '/^@@CRYO-VM-EXIT/d' -e '/^\[ *[0-9]*\.[0-9]*\] /d'; fi
qrc=${PIPESTATUS[0]}
set -e
code=$(sed -n 's/^@@CRYO-VM-EXIT \([0-9]*\)@@$/\1/p' "$work/console.log" | tail -n 1)
echo "tests/vm/run.sh: $arch VM ran $(( $(date +%s) - start )) s" >&2
if [ -z "$code" ]; then
  echo "tests/vm/run.sh: no result from the VM (qemu/timeout status $qrc); console tail:" >&2
  tail -n 40 "$work/console.log" >&2
  exit 125
fi
exit "$code"
