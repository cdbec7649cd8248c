#!/usr/bin/env bash
# tests/vm/build-image.sh: the disk image, kernel and initrd of the QEMU guests of tests/vm/run.sh.
#
# mmdebstrap builds a Debian 12 root file system from this machine's own apt sources with Debian's own
# kernel (linux-image-amd64; its initramfs-tools initrd, with only the virtio disk and ext4 modules: a
# 35 MB initrd of all modules took 35 s more to unpack and probe under TCG), systemd, sshd and everything the role needs, so
# the guests need no network of their own (their user-mode netdev is restricted: ssh in, nothing out).
# The root file system goes into an ext4 file (mkfs.ext4 -d) converted to qcow2; vmlinuz and the initrd are
# copied out of it for QEMU's direct kernel boot. Root logs in over ssh with a key made here.
#
# Output, cached under build/vm/<hash>/ (hash of this script and the Debian kernel package name): base.qcow2,
# vmlinuz, initrd.img, id_ed25519{,.pub}, .done. A second run with the same inputs takes well under a second.
# Prints the cache directory on stdout.
#
# Usage: tests/vm/build-image.sh [--force]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE_ROOT=${VMTEST_CACHE:-$REPO/build/vm}
log() { printf '[vm-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

force=0
[[ "${1:-}" == "--force" ]] && force=1
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, mkfs.ext4 -d keeps owners)"

# Packages in the guest image, and why:
#   linux-image-amd64, initramfs-tools   Debian's own kernel (its wireguard module) and initrd
#   systemd, systemd-sysv, dbus, udev     a real init with units and timers; networkd for the NICs
#   openssh-server                        Ansible's ordinary SSH connection
#   python3, python3-apt                  Ansible modules (python3-apt: apt tasks work offline)
#   python3-nacl, python3-pyroute2, python3-yaml   the kubespan module_utils and node agent
#   netbase, iproute2, nftables, kmod, wireguard-tools   links, routes, rules, firewall, modprobe, wg
#   wireguard-go                          `auto` installs it too (the fallback; vars/main.yml requirements):
#                                         the guests are offline, so it is in the image; the test checks that
#                                         no wireguard-go process runs
#   iputils-ping, procps, tcpdump         verification: pings through the mesh, pgrep, packet captures
#   sudo                                  playbooks/site.yml uses become: true
PACKAGES=(
    linux-image-amd64 initramfs-tools
    systemd systemd-sysv dbus udev
    openssh-server
    python3 python3-apt python3-nacl python3-pyroute2 python3-yaml
    netbase iproute2 nftables kmod wireguard-tools wireguard-go
    iputils-ping procps tcpdump sudo
)
# Units that only cost time on an emulated CPU or wait for hardware there is none of.
MASK_UNITS=(
    apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer
    man-db.timer logrotate.timer systemd-timesyncd.service
    getty@.service serial-getty@.service console-getty.service
)

if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    mirror=/etc/apt/sources.list.d/debian.sources
elif [[ -s /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
    mirror=/etc/apt/sources.list
else
    mirror=http://deb.debian.org/debian
fi

# The cache key: this script plus the kernel package linux-image-amd64 points at (a new Debian point
# release rebuilds the image).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
key=$( { sha256sum "${BASH_SOURCE[0]}" | cut -c1-64; echo "$kpkg"; } | sha256sum | cut -c1-16)
out=$CACHE_ROOT/$key
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
flock 9 # concurrent runs: one builds, the others wait and reuse
if ((force == 0)) && [[ -f "$out/.done" ]]; then
    log "image up to date ($out, kernel package ${kpkg:-unknown})"
    echo "$out"
    exit 0
fi

start=$SECONDS
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d "$CACHE_ROOT/tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
ssh-keygen -q -t ed25519 -N '' -C kubespan-vm-test -f "$out/id_ed25519"

# systemd-networkd: eth0 (user-mode netdev, MAC 52:54:00:12:34:0N) takes DHCP from QEMU; the mesh underlay
# NIC of guest N has MAC 52:54:00:77:00:1N and the addresses 10.77.0.1N/24, fd77::1N/64.
net=$work/network
mkdir -p "$net"
printf '[Match]\nMACAddress=52:54:00:12:34:01 52:54:00:12:34:02\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=no\nLinkLocalAddressing=no\n' >"$net/10-user.network"
for n in 1 2; do
    printf '[Match]\nMACAddress=52:54:00:77:00:1%s\n\n[Network]\nAddress=10.77.0.1%s/24\nAddress=fd77::1%s/64\nIPv6AcceptRA=no\n' \
        "$n" "$n" "$n" >"$net/20-mesh$n.network"
done

log "mmdebstrap bookworm (${#PACKAGES[@]} packages, mirror $mirror, kernel package ${kpkg:-?})"
# In the hooks, "$1" is the root directory, expanded by mmdebstrap's hook shell, not here.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook='printf "MODULES=list\nCOMPRESS=gzip\n" >"$1/etc/initramfs-tools/conf.d/ktest"' \
    --customize-hook='printf "virtio_pci\nvirtio_blk\next4\n" >>"$1/etc/initramfs-tools/modules"' \
    --customize-hook='chroot "$1" update-initramfs -u -k all >/dev/null' \
    --customize-hook="chroot \"\$1\" systemctl mask ${MASK_UNITS[*]} >/dev/null 2>&1" \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service >/dev/null 2>&1' \
    --customize-hook='rm -f "$1/var/lib/dbus/machine-id"; : >"$1/etc/machine-id"' \
    --customize-hook='echo "LABEL=kroot / ext4 defaults,errors=remount-ro 0 1" >"$1/etc/fstab"; echo ktest >"$1/etc/hostname"' \
    --customize-hook="copy-in $net/10-user.network $net/20-mesh1.network $net/20-mesh2.network /etc/systemd/network/" \
    --customize-hook='mkdir -p -m 0700 "$1/root/.ssh"' \
    --customize-hook="copy-in $out/id_ed25519.pub /root/.ssh/" \
    --customize-hook='mv "$1/root/.ssh/id_ed25519.pub" "$1/root/.ssh/authorized_keys"; chmod 0600 "$1/root/.ssh/authorized_keys"' \
    --customize-hook='printf "PasswordAuthentication no\nUseDNS no\n" >"$1/etc/ssh/sshd_config.d/ktest.conf"' \
    --customize-hook="sync-out /boot $work/boot" \
    bookworm "$work/rootfs.tar" "$mirror"
log "rootfs: $(du -h "$work/rootfs.tar" | cut -f1) in $((SECONDS - start)) s"

vmlinuz=$(find "$work/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
initrd=$(find "$work/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
[[ -n "$vmlinuz" && -n "$initrd" ]] || die "no vmlinuz/initrd.img in the image's /boot"
cp "$vmlinuz" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

mkdir "$work/root"
tar -C "$work/root" --numeric-owner -xpf "$work/rootfs.tar"
rm -f "$work/rootfs.tar"
truncate -s 3G "$work/root.raw"
mkfs.ext4 -q -L kroot -d "$work/root" "$work/root.raw"
qemu-img convert -O qcow2 "$work/root.raw" "$out/base.qcow2"
touch "$out/.done"
# Older builds (other hashes) are dropped.
find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name 'tmp.*' ! -name 'run*' -exec rm -rf {} +
log "built $out (qcow2 $(du -h "$out/base.qcow2" | cut -f1), initrd $(du -h "$out/initrd.img" | cut -f1)) in $((SECONDS - start)) s"
echo "$out"
