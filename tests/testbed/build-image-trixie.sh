#!/usr/bin/env bash
# tests/testbed/build-image-trixie.sh: build the Debian 13 (trixie) node image localhost/kubespan-node:trixie.
#
# Same recipe as build-image.sh (bookworm), kept separate so that a change here does not change
# build-image.sh's hash (which would rebuild everyone's bookworm image). mmdebstrap builds a minimal
# trixie root file system from deb.debian.org (this machine's own sources file names bookworm suites,
# so it cannot be passed as the mirror), `podman import` makes it an image that boots systemd.
# An image whose label carries this script's hash is reused; pass --force to rebuild.
#
# Usage: tests/testbed/build-image-trixie.sh [--force]
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${KUBESPAN_TRIXIE_IMAGE:-localhost/kubespan-node:trixie}"
MIRROR="${KUBESPAN_TRIXIE_MIRROR:-http://deb.debian.org/debian}"
HASH_LABEL="org.kubespan.testbed.build-hash"

log() { printf '[build-image-trixie] %s\n' "$*" >&2; }

force=0
[[ "${1:-}" == "--force" ]] && force=1

[[ -f "$REPO_ROOT/tests/testbed/env.sh" ]] || bash "$REPO_ROOT/scripts/setup.sh"
# shellcheck source=/dev/null
. "$REPO_ROOT/tests/testbed/env.sh"

# What the role and the tests need on a node (see build-image.sh for the reason of each package).
PACKAGES=(
    python3 python3-apt python3-nacl python3-pyroute2 python3-yaml
    netbase iproute2 nftables kmod
    wireguard-tools wireguard-go
    systemd systemd-sysv dbus
    iputils-ping procps sudo ca-certificates
)
MASK_UNITS=(
    apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service
    e2scrub_all.timer e2scrub_all.service e2scrub_reap.service
    fstrim.timer
    getty.target getty@.service serial-getty@.service console-getty.service
)

want_hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
have_hash="$(podman image inspect --format "{{ index .Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)"
if ((force == 0)) && [[ "$have_hash" == "$want_hash" ]]; then
    log "$IMAGE is up to date (build hash $want_hash): skipping the build"
    exit 0
fi

workdir="$(mktemp -d "${TMPDIR:-/var/tmp}/kubespan-image-trixie.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
tarball="$workdir/rootfs.tar"

start=$SECONDS
log "mmdebstrap trixie (minbase, ${#PACKAGES[@]} packages, mirror $MIRROR)"
# shellcheck disable=SC2016  # "$1" is the root directory, expanded by mmdebstrap's hook shell
mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook="chroot \"\$1\" systemctl mask ${MASK_UNITS[*]} >/dev/null 2>&1" \
    --customize-hook='rm -f "$1/var/lib/dbus/machine-id"; : >"$1/etc/machine-id"' \
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" python3 python3-nacl python3-pyroute2 wireguard-go wireguard-tools nftables systemd >"$1/etc/kubespan-image-versions"' \
    trixie "$tarball" "$MIRROR"
log "rootfs: $(du -h "$tarball" | cut -f1) in $((SECONDS - start)) s"

old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
podman import --quiet \
    --change 'CMD ["/sbin/init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL $HASH_LABEL=$want_hash" \
    --message "kubespan.mesh test node, Debian 13 (tests/testbed/build-image-trixie.sh)" \
    "$tarball" "$IMAGE" >/dev/null
if [[ -n "$old_id" && "$old_id" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi
log "built $IMAGE (build hash $want_hash) in $((SECONDS - start)) s"
