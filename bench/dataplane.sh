#!/usr/bin/env bash
# bench/dataplane.sh A B OUT.json: iperf3 TCP throughput from node A to node B (containers of a converged
# kubespan.mesh cluster), through three paths, interleaved round by round so that the machine's load hits
# them alike:
#   kubespan   to B's KubeSpan address (the mesh the role configured: wireguard-go, routes, nft marks)
#   wg-quick   to fd99::2 over a second wireguard-go tunnel "wgbench" set up by hand with wg-quick on the same
#              nodes (same MTU 1420, same fwmark 0x20 so its UDP is not forced into KubeSpan, UDP 51821)
#   underlay   to B's IPv6 link-local address on eth0 (no tunnel; link-local is never in KubeSpan's routed set)
# Called by bench/run.sh; the tunnel is removed at the end.
set -Eeuo pipefail
A="$1" B="$2" OUT="$3"
ROUNDS="${KUBESPAN_BENCH_IPERF_ROUNDS:-5}"
SECONDS_PER_RUN="${KUBESPAN_BENCH_IPERF_SECONDS:-5}"
PY="${PY:-.venv/bin/python}"

on() { podman exec "$@"; }

ula() {
    on "$1" ip -j -6 addr show dev kubespan scope global |
        python3 -c 'import json,sys; print(next(a["local"] for i in json.load(sys.stdin) for a in i["addr_info"] if a.get("local", "")[:2] in ("fc","fd")))'
}
linklocal() {
    on "$1" ip -j -6 addr show dev eth0 scope link |
        python3 -c 'import json,sys; print(next(a["local"] for i in json.load(sys.stdin) for a in i["addr_info"] if "local" in a))'
}

# wg-quick falls back to wireguard-go without a kernel module; run it in the foreground under systemd
# (self-daemonizing wireguard-go is unreliable here) and wait for its UAPI socket.
# shellcheck disable=SC2016  # expanded by the node's shell
WRAPPER='#!/bin/sh
systemd-run --quiet --unit "bench-wireguard-go-$1" --collect -E LOG_LEVEL=error /usr/bin/wireguard-go -f "$1"
for _ in $(seq 50); do [ -S "/var/run/wireguard/$1.sock" ] && exit 0; sleep 0.1; done
exit 1'

teardown_wg() {
    local node
    for node in "$A" "$B"; do
        on "$node" sh -c 'wg-quick down wgbench >/dev/null 2>&1; systemctl stop bench-wireguard-go-wgbench >/dev/null 2>&1; rm -f /etc/wireguard/wgbench.conf; pkill -x iperf3; true'
    done
}
trap teardown_wg EXIT

endpoint_host() {  # the underlay address A's kubespan uses for B: the hand tunnel uses the same one
    local key
    key=$(on "$B" wg show kubespan public-key)
    on "$A" wg show kubespan endpoints | awk -v k="$key" '$1 == k {print $2}' | sed -E 's/:[0-9]+$//; s/^\[//; s/\]$//'
}

setup_wg() {
    local priv_a priv_b pub_a pub_b host_b host_a
    priv_a=$(on "$A" wg genkey)
    priv_b=$(on "$B" wg genkey)
    pub_a=$(echo "$priv_a" | on -i "$A" wg pubkey)
    pub_b=$(echo "$priv_b" | on -i "$B" wg pubkey)
    host_b=$(endpoint_host)
    host_a=$(on "$A" ip -j -4 addr show dev eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')
    [[ "$host_b" == *:* ]] && host_b="[$host_b]" && host_a="[$(on "$A" ip -j -6 addr show dev eth0 scope global |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["addr_info"][0]["local"])')]"
    conf() {  # private key, own address, peer key, peer endpoint, peer address
        printf '[Interface]\nPrivateKey = %s\nAddress = %s/64\nListenPort = 51821\nFwMark = 0x20\nMTU = 1420\n\n' "$1" "$2"
        printf '[Peer]\nPublicKey = %s\nEndpoint = %s:51821\nAllowedIPs = %s/128\nPersistentKeepalive = 25\n' "$3" "$4" "$5"
    }
    for node in "$A" "$B"; do
        printf '%s\n' "$WRAPPER" | on -i "$node" sh -c 'cat >/usr/local/sbin/bench-wireguard-go && chmod 0755 /usr/local/sbin/bench-wireguard-go && mkdir -p /etc/wireguard'
    done
    conf "$priv_a" fd99::1 "$pub_b" "$host_b" fd99::2 | on -i "$A" sh -c 'umask 077 && cat >/etc/wireguard/wgbench.conf'
    conf "$priv_b" fd99::2 "$pub_a" "$host_a" fd99::1 | on -i "$B" sh -c 'umask 077 && cat >/etc/wireguard/wgbench.conf'
    for node in "$A" "$B"; do
        on "$node" env WG_QUICK_USERSPACE_IMPLEMENTATION=/usr/local/sbin/bench-wireguard-go wg-quick up wgbench >/dev/null 2>&1
    done
    on "$A" ping -6 -c 3 -W 2 fd99::2 >/dev/null
}

teardown_wg
setup_wg
ULA_B=$(ula "$B")
LL_B="$(linklocal "$B")%eth0"
on "$B" iperf3 -s -D
sleep 0.5
on "$A" ping -6 -c 2 -W 2 "$ULA_B" >/dev/null

declare -A TARGET=([kubespan]="$ULA_B" [wg-quick]="fd99::2" [underlay]="$LL_B")
RAW=$(mktemp)
for round in $(seq "$ROUNDS"); do
    for path in underlay kubespan wg-quick; do
        bps=$(on "$A" iperf3 -c "${TARGET[$path]}" -t "$SECONDS_PER_RUN" -J |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
        printf '  round %d %-9s %8.0f Mbit/s\n' "$round" "$path" "$(echo "$bps" | awk '{print $1/1e6}')"
        echo "$path $bps" >>"$RAW"
    done
done
$PY - "$RAW" "$OUT" <<'EOF'
import json, statistics, sys, time
runs = {}
for line in open(sys.argv[1]):
    path, bps = line.split()
    runs.setdefault(path, []).append(float(bps))
med = {p: statistics.median(v) for p, v in runs.items()}
res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs_bps": runs, "median_bps": med,
       "kubespan_vs_wgquick": med["kubespan"] / med["wg-quick"], "kubespan_vs_underlay": med["kubespan"] / med["underlay"],
       "wgquick_vs_underlay": med["wg-quick"] / med["underlay"]}
json.dump(res, open(sys.argv[2], "w"), indent=1)
print("median: kubespan %.0f Mbit/s, wg-quick %.0f Mbit/s, underlay %.0f Mbit/s" % tuple(med[p] / 1e6 for p in ("kubespan", "wg-quick", "underlay")))
print("ratio kubespan / wg-quick = %.3f (goal >= 0.95); kubespan / underlay = %.3f; wg-quick / underlay = %.3f"
      % (res["kubespan_vs_wgquick"], res["kubespan_vs_underlay"], res["wgquick_vs_underlay"]))
EOF
rm -f "$RAW"
