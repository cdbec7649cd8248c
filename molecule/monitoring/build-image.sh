#!/usr/bin/env bash
# Builds localhost/kubespan-node:monitoring (molecule/monitoring/Containerfile): the test bed's node image
# plus Debian's prometheus and prometheus-node-exporter, installed at build time from this machine's
# mirror (the scenario's containers are offline). A separate tag, so the shared :bookworm image every
# other scenario uses is not changed. Skips the build when the Containerfile and the base image are the
# ones of the last build (image label). Run after tests/testbed/build-image.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="localhost/kubespan-node:monitoring"
base="$(podman image inspect --format '{{.Id}}' localhost/kubespan-node:bookworm)"
want="$(cat "$here/Containerfile" <(echo "$base") | sha256sum | cut -c1-16)"
have="$(podman image inspect --format '{{ index .Labels "org.kubespan.testbed.monitoring-hash" }}' "$image" 2>/dev/null || true)"
if [[ "$have" == "$want" ]]; then
    echo "[monitoring image] $image is up to date ($want)"
    exit 0
fi
podman build --label "org.kubespan.testbed.monitoring-hash=$want" -t "$image" -f "$here/Containerfile" "$here"
