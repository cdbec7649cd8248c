#!/usr/bin/env bash
# tests/testbed/build-image.sh: build the node image localhost/kubespan-node:bookworm.
#
# No registry is reachable, so the image is made from Debian packages: mmdebstrap builds a minimal
# bookworm root file system from this machine's own apt sources, `podman import` turns the tarball
# into an image whose command is systemd (/sbin/init) and whose stop signal is the one systemd wants.
#
# The image carries a label with the hash of this script; when an image with the same hash exists the
# build is skipped (a second run takes well under a second). Change this script to rebuild, or pass
# --force.
#
# Usage: tests/testbed/build-image.sh [--force]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${KUBESPAN_NODE_IMAGE:-localhost/kubespan-node:bookworm}"
HASH_LABEL="org.kubespan.testbed.build-hash"

log() { printf '[build-image] %s\n' "$*" >&2; }

force=0
[[ "${1:-}" == "--force" ]] && force=1

# CONTAINERS_CONF and friends (setup.sh writes env.sh).
[[ -f "$REPO_ROOT/tests/testbed/env.sh" ]] || bash "$REPO_ROOT/scripts/setup.sh"
# shellcheck source=/dev/null
. "$REPO_ROOT/tests/testbed/env.sh"

# Packages in the image, and why:
#   python3, python3-apt          Ansible modules (python3-apt: apt tasks work offline)
#   python3-nacl, python3-pyroute2, python3-yaml   the kubespan module_utils and node agent
#   netbase                       /etc/protocols: without it nft cannot resolve protocol names
#   iproute2, nftables, kmod      links, routes, rules, firewall
#   wireguard-tools, wireguard-go userspace WireGuard (the kernel here has no wireguard module)
#   systemd, systemd-sysv, dbus   a real init with units and timers (/sbin/init)
#   iputils-ping, procps          verification (ping -I kubespan), ps/pgrep
#   openssh-server                lets a test use the SSH connection instead of podman exec
#   sudo                          playbooks/site.yml uses become: true, as on real machines
#   ca-certificates               TLS for discovery-service style tests
#   ufw, firewalld                the role's other firewall backends (molecule scenario dataplane); both
#                                 installed disabled: a scenario turns one on where it tests it
#   tcpdump, iperf3               packet captures (no cleartext to a down peer) and throughput (bench/)
#   python3-grpcio, python3-cryptography   discovery client in the node agent and the discovery service
#                                 (molecule scenarios discovery and nat; the containers are offline)
PACKAGES=(
    python3 python3-apt python3-nacl python3-pyroute2 python3-yaml
    netbase iproute2 nftables kmod
    wireguard-tools wireguard-go
    systemd systemd-sysv dbus
    iputils-ping procps openssh-server sudo ca-certificates
    ufw firewalld tcpdump iperf3
    python3-grpcio python3-cryptography
)

# Units that only cost time or fail in a container: apt's daily jobs, e2scrub, fstrim, gettys.
MASK_UNITS=(
    apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service
    fstrim.timer
    getty.target getty@.service serial-getty@.service console-getty.service
)

# The hash covers this script (package list, hooks) and is stored as an image label.
want_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
have_hash="$(podman image inspect --format "{{ index .Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
if ((force == 0)) && [[ "$have_hash" == "$want_hash" ]]; then
    log "$IMAGE is up to date (build hash $want_hash): skipping the build"
    exit 0
fi

# Use this machine's apt sources as the mirror (deb822 file, else the one-line format, else Debian's
# default mirror): CI machines reach Debian only through what is configured there.
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    mirror=/etc/apt/sources.list.d/debian.sources
elif [[ -s /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
    mirror=/etc/apt/sources.list
else
    mirror=http://deb.debian.org/debian
fi

workdir="$(mktemp -d "${TMPDIR:-/var/tmp}/kubespan-image.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
tarball="$workdir/rootfs.tar"

start=$SECONDS
log "mmdebstrap bookworm (minbase, ${#PACKAGES[@]} packages, mirror $mirror)"
# --skip=cleanup/apt/lists keeps the package lists, so apt tasks that look at candidates still work
# inside the offline (internal-network) containers.
# In the hooks, "$1" is the root directory, expanded by mmdebstrap's hook shell, not here.
# shellcheck disable=SC2016
mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook="chroot \"\$1\" systemctl mask ${MASK_UNITS[*]} >/dev/null 2>&1" \
    --customize-hook='rm -f "$1/var/lib/dbus/machine-id"; : >"$1/etc/machine-id"' \
    --customize-hook='chroot "$1" systemctl disable firewalld.service ufw.service iperf3.service >/dev/null 2>&1 || true' \
    bookworm "$tarball" "$mirror"
log "rootfs: $(du -h "$tarball" | cut -f1) in $((SECONDS - start)) s"

old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
podman import --quiet \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL $HASH_LABEL=$want_hash" \
    --message "kubespan.mesh test node (tests/testbed/build-image.sh)" \
    "$tarball" "$IMAGE" >/dev/null
# Drop the previous build (now untagged) unless a container still uses it.
if [[ -n "$old_id" && "$old_id" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi
log "built $IMAGE (build hash $want_hash) in $((SECONDS - start)) s"
