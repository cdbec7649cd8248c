#!/usr/bin/env bash
# netns_mesh.sh N [N...]: a full KubeSpan mesh of N nodes on this host, one network namespace per node, for
# the agent's cost (docs/reliability.md, issue 8 item 6). Each node: netns ksn-<i>, a veth to the bridge
# ksn-br0, underlay 10.210.x.y/16, wireguard-go on interface ksn<i> (userspace: no kernel module needed),
# identity and the real reconcile of plugins/module_utils (bundled, run by /usr/bin/python3, which has pyroute2).
# Per N: time to bring all nodes up, wait (at most 120 s) until every node has a handshake with every other,
# ping a sample of ULA pairs, run one agent tick on every node (a fresh process each; CPU ms and max RSS),
# and print one table line (load1 is the 1-minute load average after the ticks). Stops at the first N that fails a criterion: links not all up within 120 s, or
# one round of agent ticks over all nodes taking longer than the agent's 30 s interval. Needs root.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
PYN=/usr/bin/python3
NODE_PY="$HERE/netns/node.py"
STATS_PY="$HERE/netns/stats.py"
WORK="$(mktemp -d /tmp/ksn-mesh.XXXXXX)"
CLUSTER_ID="ksn-netns-mesh"
SECRET="$($PYN -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
WG_PIDS=()
NODES=0

(($# > 0)) || { echo "usage: $0 N [N...]" >&2; exit 2; }
[[ "$(id -u)" == 0 ]] || { echo "needs root" >&2; exit 2; }

cleanup() {
    local i pid
    for pid in "${WG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${WG_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ((i = 1; i <= NODES; i++)); do
        ip link del "ksn-h$i" 2>/dev/null || true
        ip netns del "ksn-$i" 2>/dev/null || true
        rm -f "/run/wireguard/ksn$i.sock"
    done
    ip link del ksn-br0 2>/dev/null || true
    WG_PIDS=()
    NODES=0
}
trap 'cleanup; rm -rf "$WORK"' EXIT
trap 'exit 143' TERM INT  # so that the EXIT trap runs

BUNDLE="$($PYN "$REPO_ROOT/roles/kubespan/files/build_agent_bundle.py" "$REPO_ROOT/plugins/module_utils" "$WORK/cache")"

underlay() { echo "10.210.$(($1 / 250)).$(($1 % 250 + 1))"; }

# build N: namespaces, veths, wireguard-go, identities, affiliates.json, the reconcile on every node
build() {
    local n=$1 i
    ip link add ksn-br0 type bridge
    ip link set ksn-br0 type bridge nf_call_iptables 0 nf_call_ip6tables 0 2>/dev/null || true
    ip link set ksn-br0 up
    for ((i = 1; i <= n; i++)); do
        ip netns add "ksn-$i"
        NODES=$i
        ip link add "ksn-h$i" type veth peer name "ksn-n$i" netns "ksn-$i"
        ip link set "ksn-h$i" master ksn-br0 up
        ip -n "ksn-$i" link set lo up
        ip -n "ksn-$i" link set "ksn-n$i" up
        ip -n "ksn-$i" addr add "$(underlay "$i")/16" dev "ksn-n$i"
        ip netns exec "ksn-$i" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "ksn$i" >"$WORK/wg$i.log" 2>&1 &
        WG_PIDS+=($!)
        mkdir -p "$WORK/n$i"
    done
    for ((i = 1; i <= n; i++)); do  # wireguard-go creates its UAPI socket
        local t=0
        until [[ -S /run/wireguard/ksn$i.sock ]]; do
            sleep 0.1; t=$((t + 1)); ((t < 150)) || { echo "wireguard-go ksn$i did not start"; return 1; }
        done
    done
    for ((i = 1; i <= n; i++)); do
        ip netns exec "ksn-$i" $PYN "$NODE_PY" "$BUNDLE" ident "$WORK/n$i" "$CLUSTER_ID" "ksn$i" "ksn-node$i" >"$WORK/aff$i.json"
    done
    $PYN -c 'import json, sys; json.dump([json.load(open("%s/aff%d.json" % (sys.argv[1], i))) for i in range(1, int(sys.argv[2]) + 1)], sys.stdout)' \
        "$WORK" "$n" >"$WORK/affiliates.json"
    for ((i = 1; i <= n; i++)); do
        ip netns exec "ksn-$i" $PYN "$NODE_PY" "$BUNDLE" up "$WORK/n$i" "$CLUSTER_ID" "$SECRET" "ksn$i" "ksn-node$i" \
            "$WORK/affiliates.json" >"$WORK/up$i.json"
    done
}

# handshakes N: number of directed links (node, peer) with a handshake
handshakes() {
    local n=$1 i total=0 c
    for ((i = 1; i <= n; i++)); do
        c="$(ip netns exec "ksn-$i" wg show "ksn$i" latest-handshakes | awk '$2 > 0' | wc -l)"
        total=$((total + c))
    done
    echo "$total"
}

run_n() {
    local n=$1 start links=$(($1 * ($1 - 1))) up t_build t_links i j pid addr ping_ok=0 ping_n=0 tick_start t_ticks
    start=$SECONDS
    build "$n"
    t_build=$((SECONDS - start))
    start=$SECONDS
    up=0
    while ((SECONDS - start <= 120)); do
        up="$(handshakes "$n")"
        ((up == links)) && break
        sleep 2
    done
    t_links=$((SECONDS - start))
    # a sample of ULA pairs: node 1 to every node, and each node i to node i+1 (at most 2n pings)
    for ((i = 1; i <= n; i++)); do
        for j in 1 $((i % n + 1)); do
            ((i == j)) && continue
            ping_n=$((ping_n + 1))
            addr="$($PYN -c 'import json, sys; print(json.load(open(sys.argv[1]))["address"].split("/")[0])' "$WORK/aff$j.json")"
            if ip netns exec "ksn-$i" ping -6 -c 1 -W 1 "$addr" >/dev/null 2>&1; then ping_ok=$((ping_ok + 1)); fi
        done
    done
    # one round of agent ticks: every node at the same time (as every node's timer fires in one 30 s interval),
    # each a fresh process; a tick watches its peers for some seconds (peerstatus WATCH_SECONDS), mostly asleep
    local tick_pids=()
    tick_start=$(date +%s.%N)
    for ((i = 1; i <= n; i++)); do
        ip netns exec "ksn-$i" $PYN "$NODE_PY" "$BUNDLE" tick "$WORK/n$i" >"$WORK/tick$i.json" 2>&1 &
        tick_pids+=($!)
    done
    for pid in "${tick_pids[@]}"; do wait "$pid" || true; done
    t_ticks="$($PYN -c 'import sys, time; print("%.1f" % (time.time() - float(sys.argv[1])))' "$tick_start")"
    cat "$WORK"/tick*.json >"$WORK/ticks.jsonl"
    local wg_rss_kb=0
    for pid in "${WG_PIDS[@]}"; do
        wg_rss_kb=$((wg_rss_kb + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    $PYN "$STATS_PY" "$n" "$t_build" "$up" "$links" "$t_links" "$ping_ok" "$ping_n" "$t_ticks" "$wg_rss_kb" "$WORK/ticks.jsonl"
    local rc=$?
    cleanup
    return $rc
}

$PYN "$STATS_PY" --header
for n in "$@"; do
    if ! run_n "$n"; then
        echo "N=$n failed a criterion: stop (the number is the last N that passed)"
        exit 1
    fi
done
