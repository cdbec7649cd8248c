# shellcheck shell=bash
# tests/testbed/lib.sh: shell helpers for the podman test bed, sourced by scripts/demo.sh and
# scripts/test.sh (molecule/default does the same in Ansible: create.yml, destroy.yml).
# Requires tests/testbed/env.sh to be sourced first (CONTAINERS_CONF).
#
# Facts behind these helpers (tests/testbed/README.md in the shared notes):
# - nodes are systemd containers: --systemd=always, NET_ADMIN and /dev/net/tun for wireguard-go;
# - networks are --internal (no route out of the machine) and --disable-dns (nodes use addresses);
# - podman containers outlive the script that started them: callers remove them in an EXIT trap
#   and clear stale ones of the same names before they start.

TESTBED_IMAGE="${KUBESPAN_NODE_IMAGE:-localhost/kubespan-node:bookworm}"

# testbed_remove_containers NAME...: remove containers (running or not); absent ones are fine.
testbed_remove_containers() {
    (($#)) || return 0
    podman rm --force --ignore --time 0 "$@" >/dev/null
}

# testbed_remove_networks NAME...: remove networks (and any container still attached to them).
testbed_remove_networks() {
    local net
    for net in "$@"; do
        if podman network exists "$net"; then
            podman network rm --force "$net" >/dev/null
        fi
    done
}

# testbed_create_network NAME V4_SUBNET V6_SUBNET: internal dual-stack network, replaced if present.
testbed_create_network() {
    local name="$1" v4="$2" v6="$3"
    testbed_remove_networks "$name"
    podman network create --internal --disable-dns --ipv6 \
        --subnet "$v4" --subnet "$v6" "$name" >/dev/null
}

# testbed_run_node NAME NETWORK IPV4 IPV6: start a systemd node container with fixed addresses.
testbed_run_node() {
    local name="$1" net="$2" ip4="$3" ip6="$4"
    podman run --detach --name "$name" --hostname "$name" \
        --systemd=always --cap-add NET_ADMIN --device /dev/net/tun \
        --network "$net:ip=$ip4,ip=$ip6" \
        --label owner=kubespan-testbed \
        "$TESTBED_IMAGE" /sbin/init >/dev/null
}

# testbed_wait_systemd NAME...: wait (up to 180 s each: a loaded 2-core machine can take over 60 s) until systemd reports "running".
testbed_wait_systemd() {
    local name state
    for name in "$@"; do
        state="$(timeout 180 podman exec "$name" systemctl is-system-running --wait 2>/dev/null || true)"
        if [[ "$state" != running ]]; then
            echo "systemd in $name is '${state:-unreachable}', not 'running':" >&2
            podman exec "$name" systemctl --failed --no-pager >&2 || true
            return 1
        fi
    done
}
