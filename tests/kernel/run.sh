#!/usr/bin/env bash
# Real-kernel test of the kernel WireGuard transport (plugins/module_utils/host/wg_kernel.py).
#
# The machine this runs on may have no WireGuard module, so the test boots Debian's own kernel in
# QEMU (TCG, no KVM needed) with the host's / shared read-only over 9p under a tmpfs overlay, and runs
# tests/kernel/guest.sh there: two network namespaces joined by a veth pair, each configuring a
# kernel WireGuard link with the host's /usr/bin/python3 (Debian's python3-pyroute2 and python3-nacl)
# and the collection's module_utils imported as the package `kubespan_mesh`.
#
# Everything it needs is installed or downloaded on first use; the kernel and busybox are unpacked into
# build/kernel-test/ (gitignored) and reused. Exit status 0 only when the guest reports PASS.
#
# Environment: KTEST_TIMEOUT (seconds for the whole VM, default 240), KTEST_CACHE (cache directory),
# KTEST_SMP / KTEST_MEM (guest CPUs / MiB), KTEST_KEEP_LOG=1 keeps the serial log path printed,
# KTEST_PYTHON (interpreter for the nodes, default /usr/bin/python3; e.g. a virtualenv made from
# /usr/bin/python3 with another pyroute2 version).
set -euo pipefail

START=$(date +%s.%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${KTEST_CACHE:-$REPO/build/kernel-test}
TIMEOUT=${KTEST_TIMEOUT:-240}
SMP=${KTEST_SMP:-2}
MEM=${KTEST_MEM:-1024}
MODULES="virtio_pci 9pnet 9pnet_virtio 9p overlay"
PYTHON=${KTEST_PYTHON:-/usr/bin/python3}

elapsed() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
log() { echo "[kernel-test $(elapsed)s] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get install and download)"
case "$REPO$HERE$PYTHON" in *[[:space:]]*) die "paths with spaces cannot go on the kernel command line" ;; esac

# --- host packages -------------------------------------------------------------------------------
# The guest runs the host's own binaries: python3 with pyroute2 and nacl, ip, ping, modprobe, bash.
need=()
for pkg in qemu-system-x86 kmod cpio iproute2 iputils-ping python3 python3-pyroute2 python3-nacl; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; } \
        || die "apt-get install ${need[*]} failed"
fi

# --- Debian kernel and busybox, unpacked once -------------------------------------------------------
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # concurrent runs: one downloads and unpacks, the others wait for it
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1; }
KPKG=$(kernel_pkg)
if [ -z "$KPKG" ]; then
    apt-get update >/dev/null 2>&1 || true
    KPKG=$(kernel_pkg)
fi
if [ -z "$KPKG" ]; then
    # offline and no package lists: fall back to whatever was unpacked before
    KPKG=$(find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' -printf '%f\n' 2>/dev/null | sort -V | tail -n1)
    [ -n "$KPKG" ] || die "cannot find the kernel package that linux-image-amd64 depends on (apt-get update?)"
fi
KVER=${KPKG#linux-image-}
KROOT=$CACHE/$KPKG
BBROOT=$CACHE/busybox-static

fetch_unpack() { # package target-dir
    local pkg=$1 dir=$2 tmp
    [ -f "$dir/.unpacked" ] && return 0
    tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
    log "downloading $pkg"
    (cd "$tmp" && apt-get download -o APT::Sandbox::User=root "$pkg" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg -x "$tmp"/*.deb "$dir"
    rm -rf "$tmp"
    touch "$dir/.unpacked"
}
fetch_unpack "$KPKG" "$KROOT"
fetch_unpack busybox-static "$BBROOT"

VMLINUZ=$KROOT/boot/vmlinuz-$KVER
MODDIR=$KROOT/lib/modules/$KVER
if [ ! -f "$VMLINUZ" ] || [ ! -d "$MODDIR" ]; then
    die "unexpected layout of $KPKG in $KROOT"
fi
if [ ! -f "$MODDIR/modules.dep" ]; then
    log "depmod $KVER"
    depmod -b "$KROOT" "$KVER"
fi
flock -u 9

# --- initramfs: busybox, the modules to reach the host's / over 9p, /init --------------------------
TMPD=$(mktemp -d "$CACHE/run.XXXXXX") # per run: concurrent runs do not share files
WORK=$TMPD/initramfs
INITRD=$TMPD/initramfs.cpio.gz
SERIAL_LOG=$TMPD/serial.log
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ "${KTEST_KEEP_LOG:-0}" = 1 ]; then rm -rf "$WORK"; else rm -rf "$TMPD"; fi; }
trap cleanup EXIT

mkdir -p "$WORK"/{bin,dev,proc,sys,newroot,lower,upper,modules}
cp "$BBROOT/bin/busybox" "$WORK/bin/busybox"
: >"$WORK/modules/order"
for mod in $MODULES; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$mod" | while read -r kind path _; do
        [ "$kind" = insmod ] || continue # "builtin <name>" needs nothing
        name=$(basename "$path")
        case "$name" in
            *.ko.xz) name=${name%.xz}; [ -f "$WORK/modules/$name" ] || xz -dc "$path" >"$WORK/modules/$name" ;;
            *.ko.zst) name=${name%.zst}; [ -f "$WORK/modules/$name" ] || zstd -qdc "$path" >"$WORK/modules/$name" ;;
            *.ko.gz) name=${name%.gz}; [ -f "$WORK/modules/$name" ] || gzip -dc "$path" >"$WORK/modules/$name" ;;
            *) [ -f "$WORK/modules/$name" ] || cp "$path" "$WORK/modules/$name" ;;
        esac
        grep -qx "$name" "$WORK/modules/order" || echo "$name" >>"$WORK/modules/order"
    done
done
install -m 0755 "$HERE/init.sh" "$WORK/init"
(cd "$WORK" && find . -mindepth 1 ! -name init -print; echo ./init) | sed 's|^\./||' \
    | (cd "$WORK" && cpio -o -H newc --quiet) | gzip -1 >"$INITRD"
log "kernel $KVER, initramfs $(du -h "$INITRD" | cut -f1) with $(tr '\n' ' ' <"$WORK/modules/order")"

# --- boot ------------------------------------------------------------------------------------------
log "booting (TCG, timeout ${TIMEOUT}s)"
set +e
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg -machine q35 -cpu max -smp "$SMP" -m "$MEM" \
    -nodefaults -display none -serial stdio -monitor none -no-reboot \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet ktest_script=$HERE/guest.sh ktest_repo=$REPO ktest_moddir=$MODDIR ktest_python=$PYTHON" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    </dev/null 2>&1 | tr -d '\r' | tee "$SERIAL_LOG"
qemu_rc=${PIPESTATUS[0]}
set -e

[ "$qemu_rc" = 124 ] && log "the VM hit the ${TIMEOUT}s timeout"
npass=$(grep -c '^PASS ' "$SERIAL_LOG" || true)
nfail=$(grep -c '^FAIL ' "$SERIAL_LOG" || true)
[ "${KTEST_KEEP_LOG:-0}" = 1 ] && log "serial log kept in $SERIAL_LOG"
if grep -qx 'KTEST-RESULT: PASS' "$SERIAL_LOG" && [ "$nfail" = 0 ]; then
    log "PASS ($npass checks) in $(elapsed)s"
    exit 0
fi
log "FAIL ($npass passed, $nfail failed, qemu exit $qemu_rc) in $(elapsed)s"
exit 1
