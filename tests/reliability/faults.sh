#!/usr/bin/env bash
# tests/reliability/faults.sh VICTIM: runtime faults on a converged cluster, recovered without Ansible.
#
# Each fault is injected on VICTIM, then the clock runs until the mesh is whole again by itself (the node
# agent's timer; no playbook run): every peer answers a ping through kubespan from VICTIM, and the part
# that was broken is back as it was (nft table, table 180 routes, same public key). Printed as
# "fault: <name>: recovered in <s> s". Faults: wireguard-go SIGKILLed; interface deleted; nft table
# inet kubespan flushed; routes of table 180 deleted; the container restarted; the underlay partitioned
# (VICTIM drops every packet on its underlay interfaces) for REL_PARTITION_SECONDS (default 120) then healed.
# Runs on the cluster rel_create made (build/reliability/inventory.yml). Exit status 1 if a fault is not repaired
# within REL_FAULT_TIMEOUT (default 180 s).
set -Euo pipefail
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. "$_here/../testbed/env.sh"
# shellcheck source=/dev/null
. "$_here/../testbed/lib.sh"
# shellcheck source=/dev/null
. "$_here/cluster.sh"
rel_attach
victim="$1"
timeout="${REL_FAULT_TIMEOUT:-180}"
fail=0
RESULTS=()
x() { podman exec "$victim" "$@"; }
now() { date +%s.%N; }

declare -A ULA
for n in "${REL_NODES[@]}"; do ULA[$n]="$(rel_ula "$n")"; done
pub="$(x wg show kubespan public-key)"
nft_before="$(x nft list table inet kubespan)"
routes_before="$(x sh -c 'ip route show table 180; ip -6 route show table 180')"

mesh_whole() {  # every peer answers from the victim, and the victim's data plane is as before
    local n
    for n in "${REL_NODES[@]}"; do
        [[ "$n" == "$victim" ]] && continue
        x ping -6 -q -c 1 -W 1 -I kubespan "${ULA[$n]}" >/dev/null 2>&1 || return 1
    done
    [[ "$(x wg show kubespan public-key 2>/dev/null)" == "$pub" ]] || return 1
    [[ "$(x nft list table inet kubespan 2>/dev/null)" == "$nft_before" ]] || return 1
    [[ "$(x sh -c 'ip route show table 180; ip -6 route show table 180' 2>/dev/null)" == "$routes_before" ]] || return 1
}

measure() {  # measure NAME START: wait until mesh_whole, record the time since START
    local name="$1" t0="$2" t
    while ! mesh_whole; do
        if python3 -c "import sys, time; sys.exit(time.time() - $t0 < $timeout)"; then
            echo "FAIL fault: $name: not recovered within $timeout s"; fail=1; RESULTS+=("$name: NOT recovered in $timeout s"); return
        fi
        sleep 0.5
    done
    t="$(python3 -c "import time; print('%.1f' % (time.time() - $t0))")"
    echo "fault: $name: recovered in $t s"
    RESULTS+=("$name: $t s")
}

mesh_whole || { echo "FAIL the mesh is not whole before the faults"; exit 1; }
agent_interval="$(x systemctl show -p TimersMonotonic --value kubespan-agent.timer | grep -o 'OnUnitActiveUSec=[^ ;]*' | cut -d= -f2)"
echo "agent timer interval on $victim: ${agent_interval:-?}"

# Each fault is checked to have happened (right after the injection, before any repair could run: the
# agent ticks every 30 s) before its recovery is timed; a fault that did not happen fails the run.
injected() {  # injected NAME COMMAND...: COMMAND must succeed, showing the fault is in place
    local name="$1"; shift
    if "$@"; then echo "fault: $name: injected (checked)"; else echo "FAIL fault: $name: the fault did not happen"; fail=1; fi
}
# inject COMMAND...: the fault's command on the victim. REL_FAULT_BROKEN_INJECT=1 (a test of this test) only
# prints it: every "injected" check and the partition check must then fail.
inject() {
    if [[ -n "${REL_FAULT_BROKEN_INJECT:-}" ]]; then echo "REL_FAULT_BROKEN_INJECT: not injected: $*"; else x "$@"; fi
}
wg_pid="$(x pgrep -x wireguard-go || true)"
t0=$(now); inject pkill -KILL -x wireguard-go
injected "wireguard-go killed (SIGKILL)" test -n "$wg_pid" -a "$(x pgrep -x wireguard-go || true)" != "$wg_pid"
measure "wireguard-go killed (SIGKILL)" "$t0"
ifindex="$(x cat /sys/class/net/kubespan/ifindex)"
t0=$(now); inject ip link del kubespan
injected "interface kubespan deleted" test "$(x cat /sys/class/net/kubespan/ifindex 2>/dev/null || echo gone)" != "$ifindex"
measure "interface kubespan deleted" "$t0"
t0=$(now); inject nft flush table inet kubespan
injected "nft table inet kubespan flushed" test "$(x nft list table inet kubespan 2>/dev/null)" != "$nft_before"
measure "nft table inet kubespan flushed" "$t0"
t0=$(now); inject sh -c 'ip route flush table 180; ip -6 route flush table 180'
injected "routes of table 180 deleted" test "$(x sh -c 'ip route show table 180; ip -6 route show table 180' 2>/dev/null)" != "$routes_before"
measure "routes of table 180 deleted" "$t0"
started="$(podman inspect --format '{{.State.StartedAt}}' "$victim")"
t0=$(now)
if [[ -n "${REL_FAULT_BROKEN_INJECT:-}" ]]; then echo "REL_FAULT_BROKEN_INJECT: not injected: podman restart"; else podman restart --time 5 "$victim" >/dev/null; fi
injected "container restarted (podman restart)" test "$(podman inspect --format '{{.State.StartedAt}}' "$victim")" != "$started"
measure "container restarted (podman restart)" "$t0"

part="${REL_PARTITION_SECONDS:-120}"
if [[ -n "${REL_FAULT_BROKEN_INJECT:-}" ]]; then
    echo "REL_FAULT_BROKEN_INJECT: not injected: the partition"
else
    podman exec -i "$victim" nft -f - <<'NFT'
table inet reltest {
    chain in { type filter hook input priority -300; policy accept; iifname != { "lo", "kubespan" } drop; }
    chain out { type filter hook output priority -300; policy accept; oifname != { "lo", "kubespan" } drop; }
}
NFT
fi
echo "underlay of $victim partitioned (every packet on its underlay interfaces dropped) for $part s"
sleep "$part"
if mesh_whole; then echo "FAIL the partition did not cut the mesh"; fail=1; fi
t0=$(now); inject nft delete table inet reltest; measure "underlay partitioned ${part} s, then healed" "$t0"

echo "faults on $victim (no Ansible run during any of them):"
printf '  %s\n' "${RESULTS[@]}"
exit "$fail"
