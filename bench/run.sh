#!/usr/bin/env bash
# bench/run.sh: the kubespan.mesh benchmark suite (issue 6). Every figure is printed with a ratio against a
# baseline measured in the same run, because this machine type is shared (2 cores, other engineers' containers
# and tests): absolute seconds move with the load, a same-run ratio much less.
#
#   bash bench/run.sh                         scale, controller, agent, converge (N=3, N=6), dataplane
#   bash bench/run.sh --only scale,agent      a subset (sections: scale controller agent converge dataplane failover doublenat)
#   bash bench/run.sh --with-failover         also the failover scenario (bench/failover.sh, about 5 minutes)
#   bash bench/run.sh --with-relay            also the relay scenario (bench/relay.sh, about 10 minutes)
#   bash bench/run.sh --only doublenat        time to a direct path under double NAT (bench/doublenat.sh, about 6 minutes)
#   bash bench/sidebyside.sh BASE NEW         scale and agent for two commits in one run, interleaved, one table (its --help)
#   options: --sizes 100,1000,5000 (scale)  --hosts 25,50,100,300 (controller; 1000 takes ~70 min, 11 GB)  --nodes 3,6 (converge)
#            --peers 0,10,100,1000 (agent)
#
# Results: every section run writes ONE new file bench/results/<section>/<UTC date>-<short commit>.json (committed
# with the code): its commit (and whether the code was dirty), date, machine load at start and end, nproc, the raw
# samples and the derived figures. A section that fails writes nothing. Then docs/benchmarks.md and its plots are
# regenerated from ALL result files (bench/report.py write): every run listed with commit and date.
# Containers bench-node1..6 on network kubespan-bench (10.89.80.0/24, 2001:db8:80::/64) are created here and
# removed on exit.
set -Eeuo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

SECTIONS="scale,controller,agent,converge,dataplane"
SIZES="100,1000,5000"
HOSTS="25,50,100,300"
NODE_COUNTS="3,6"
PEER_COUNTS="0,10,100,1000"
while (($#)); do
    case "$1" in
        --only) SECTIONS="$2"; shift 2 ;;
        --with-failover) SECTIONS="$SECTIONS,failover"; shift ;;
        --with-relay) SECTIONS="$SECTIONS,relay"; shift ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --hosts) HOSTS="$2"; shift 2 ;;
        --nodes) NODE_COUNTS="$2"; shift 2 ;;
        --peers) PEER_COUNTS="$2"; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }

bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
# shellcheck source=/dev/null
. tests/testbed/lib.sh

# Benchmark-only Python packages (matplotlib for the plot) into the project venv, once per requirements hash.
stamp=.venv/.bench-requirements.stamp
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$(sha256sum bench/requirements.txt | cut -d' ' -f1)" ]]; then
    .venv/bin/python -m pip install -q -r bench/requirements.txt
    sha256sum bench/requirements.txt | cut -d' ' -f1 >"$stamp"
fi

WORK="$REPO_ROOT/build/bench"
RESULTS="$REPO_ROOT/bench/results"
RAW="$WORK/raw"
mkdir -p "$RESULTS" "$RAW"
# BENCH_NODE_PREFIX, BENCH_NETWORK: other names for the containers and the network (same subnet), so that a section
# with containers can run while another run's controller section (no containers, but the same EXIT cleanup) goes on
NETWORK="${BENCH_NETWORK:-kubespan-bench}"
_prefix="${BENCH_NODE_PREFIX:-bench-node}"
ALL_NODES=("${_prefix}1" "${_prefix}2" "${_prefix}3" "${_prefix}4" "${_prefix}5" "${_prefix}6")
PY=.venv/bin/python
NODES=()

banner() { printf '\n=== %s\n' "$*"; }
cleanup() {
    testbed_remove_containers "${ALL_NODES[@]}" || true
    testbed_remove_networks "$NETWORK" || true
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"

# begin SECTION: note the load and time at a section's start; record SECTION RAW: wrap the section's raw JSON with
# commit, dirty flag, dates, load at start and end, nproc, into bench/results/SECTION/<date>-<commit>.json
LOAD_START=""
STARTED=""
begin() {
    LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
    STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
record() {
    $PY bench/report.py record --section "$1" --raw "$2" --results "$RESULTS" --load-start "$LOAD_START" --started "$STARTED"
}

# --- cluster helpers ---------------------------------------------------------------------------------
# cluster_create N: fresh containers bench-node1..N on a fresh network, secrets and an inventory (podman
# connection, as scripts/demo.sh); sets INVENTORY and NODES.
cluster_create() {
    local n="$1" i
    cleanup
    rm -rf "$WORK/cluster/controller-cache"
    testbed_create_network "$NETWORK" 10.89.80.0/24 2001:db8:80::/64
    NODES=("${ALL_NODES[@]:0:n}")
    for i in "${!NODES[@]}"; do
        testbed_run_node "${NODES[$i]}" "$NETWORK" "10.89.80.$((i + 11))" "2001:db8:80::$((i + 11))"
    done
    # under heavy load (other engineers' runs) systemd may need more than the helper's 60 s: one more wait
    testbed_wait_systemd "${NODES[@]}" 2>/dev/null || testbed_wait_systemd "${NODES[@]}"
    mkdir -p "$WORK/cluster/group_vars/kubespan"
    if [[ ! -f "$WORK/cluster/group_vars/kubespan/secrets.yml" ]]; then
        ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false ansible-playbook kubespan.mesh.gen_secrets \
            -e kubespan_secrets_file="$WORK/cluster/group_vars/kubespan/secrets.yml" >/dev/null
    fi
    INVENTORY="$WORK/cluster/inventory.yml"
    {
        echo "kubespan:"
        echo "  hosts:"
        for i in "${NODES[@]}"; do echo "    $i:"; done
        echo "  vars:"
        echo "    ansible_connection: containers.podman.podman"
        echo "    ansible_python_interpreter: /usr/bin/python3"
        # the role's affiliates cache: per bench cluster (a fresh cluster has none), never the user's ~/.cache
        echo "    kubespan_controller_cache_dir: $WORK/cluster/controller-cache"
    } >"$INVENTORY"
    printf -- '- name: Plain fact gathering (baseline)\n  hosts: kubespan\n  become: true\n  gather_facts: true\n  tasks: []\n' \
        >"$WORK/cluster/facts.yml"
}

# timed_play LABEL PLAYBOOK: run a playbook on the cluster with the per-task profile; prints wall seconds.
timed_play() {
    local label="$1" playbook="$2" start end
    start=$(date +%s.%N)
    if ! ANSIBLE_CALLBACK_PLUGINS="$REPO_ROOT/bench/plugins/callback" ANSIBLE_CALLBACKS_ENABLED=bench_profile \
        KUBESPAN_BENCH_PROFILE="$WORK/cluster/profile-$label.json" \
        ansible-playbook -i "$INVENTORY" "$playbook" >"$WORK/cluster/$label.log" 2>&1; then
        tail -40 "$WORK/cluster/$label.log" >&2
        echo "$label failed (log: $WORK/cluster/$label.log)" >&2
        return 1
    fi
    end=$(date +%s.%N)
    awk -v a="$end" -v b="$start" 'BEGIN { printf "%.2f\n", a - b }'
}

# wait_all_up TIMEOUT: until every node has a handshake with every other node; prints the epoch time.
wait_all_up() {
    local deadline=$((SECONDS + $1)) node want=$((${#NODES[@]} - 1)) ok
    while ((SECONDS < deadline)); do
        ok=1
        for node in "${NODES[@]}"; do
            if [[ "$(podman exec "$node" wg show kubespan latest-handshakes 2>/dev/null | awk '$2 > 0' | wc -l)" -lt "$want" ]]; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            date +%s.%N
            return 0
        fi
        sleep 0.5
    done
    echo "not every peer came up within $1 s" >&2
    return 1
}

converge_one() {
    local n="$1" facts1 facts2 start up play rerun
    banner "Converge: N=$n"
    begin
    cluster_create "$n"
    facts1=$(timed_play "facts1-$n" "$WORK/cluster/facts.yml")
    start=$(date +%s.%N)
    play=$(timed_play "converge-$n" playbooks/site.yml)
    up=$(wait_all_up 120)
    local cold
    cold=$(awk -v a="$up" -v b="$start" 'BEGIN { printf "%.2f\n", a - b }')
    rerun=$(timed_play "rerun-$n" playbooks/site.yml)
    facts2=$(timed_play "facts2-$n" "$WORK/cluster/facts.yml")
    $PY bench/report.py converge-entry --n "$n" --facts "$facts1" "$facts2" --cold "$cold" --play "$play" --rerun "$rerun" \
        --profiles "$WORK/cluster/profile-converge-$n.json" "$WORK/cluster/profile-rerun-$n.json" \
        --out "$RAW/converge-$n.json"
    record "converge-$n" "$RAW/converge-$n.json"
}

# --- sections ----------------------------------------------------------------------------------------
if want scale; then
    banner "Scale: peer set and data-plane planning, synthetic clusters of $SIZES nodes (CPU time)"
    begin
    $PY bench/scale.py --sizes "$SIZES" --out "$RAW/scale.json"
    record scale "$RAW/scale.json"
fi

if want controller; then
    banner "Controller: playbooks/site.yml on inventories of $HOSTS fake hosts (bench/plugins/connection/benchfake.py)"
    begin
    nice $PY bench/controller.py --hosts "$HOSTS" --workdir "$WORK/controller" --out "$RAW/controller.json"
    record controller "$RAW/controller.json"
fi

if want agent; then
    banner "Agent: the real \`kubespan agent\` process as the timer starts it, 0, 10, 100, 1000 peers, in bench-node1"
    begin
    cluster_create 1
    node1="${ALL_NODES[0]}"
    bundle=$($PY roles/kubespan/files/build_agent_bundle.py plugins/module_utils "$WORK/cache")
    podman exec "$node1" mkdir -p /usr/lib/kubespan
    podman cp "$bundle" "$node1":/usr/lib/kubespan/kubespan-agent.pyz
    podman cp bench/agent_tick.py "$node1":/root/agent_tick.py
    # the unit the engine starts for the userspace data path (the role installs the same)
    printf '[Service]\nEnvironment=LOG_LEVEL=error\nExecStart=/usr/bin/wireguard-go -f kubespan\n' |
        podman exec -i "$node1" sh -c 'cat >/etc/systemd/system/kubespan-wireguard-go.service && systemctl daemon-reload'
    : >"$RAW/agent.jsonl"
    # negative control: a tick that cannot work (a state directory with no desired state) must fail the check
    if podman exec "$node1" python3 /root/agent_tick.py process 0 --state-dir /nonexistent >/dev/null 2>"$RAW/agent-negative.txt"; then
        echo "agent_tick accepted a tick without a desired state: the tick check is broken" >&2
        exit 1
    fi
    echo "  negative control: $(tail -1 "$RAW/agent-negative.txt")"
    show='import json,sys
for line in sys.stdin:
    r = json.loads(line)
    extra = " (tick CPU %.0f ms, of which nft %.0f ms)" % (r["tick_cpu_s"] * 1e3, r["tick_children_cpu_s"] * 1e3) if "tick_cpu_s" in r else ""
    print("  %5d peers %-9s process CPU %.0f ms, max RSS %.1f MB%s" % (r["peers"], r["mode"], r["process_cpu_s"] * 1e3, r["max_rss_bytes"] / 2**20, extra))'
    IFS=, read -r -a peer_counts <<<"$PEER_COUNTS"
    for peers in "${peer_counts[@]}"; do
        podman exec "$node1" python3 /root/agent_tick.py prepare "$peers" >/dev/null
        # the first tick after a new desired state settles the statuses (not recorded); then the timer's whole
        # process, three times (the primary figure), then the in-process tick (secondary), each after a settling tick
        podman exec "$node1" python3 /root/agent_tick.py process "$peers" >/dev/null
        for _ in 1 2 3; do
            podman exec "$node1" python3 /root/agent_tick.py process "$peers" | tee -a "$RAW/agent.jsonl" | $PY -c "$show"
        done
        for mode in real synthetic; do
            podman exec "$node1" python3 /root/agent_tick.py tick "$peers" "$mode" >/dev/null
            podman exec "$node1" python3 /root/agent_tick.py tick "$peers" "$mode" | tee -a "$RAW/agent.jsonl" | $PY -c "$show"
        done
        if [[ "$peers" == 100 ]]; then
            podman exec "$node1" python3 /root/agent_tick.py importtime "$peers" >"$RAW/agent-importtime.json"
        fi
    done
    $PY bench/report.py agent-entry --jsonl "$RAW/agent.jsonl" --importtime "$RAW/agent-importtime.json" --out "$RAW/agent.json"
    record agent "$RAW/agent.json"
fi

if want converge; then
    IFS=, read -r -a counts <<<"$NODE_COUNTS"
    for n in "${counts[@]}"; do converge_one "$n"; done
fi

if want dataplane; then
    banner "Data plane: iperf3 between bench-node1 and bench-node2 (kubespan, hand-made wireguard-go tunnel, underlay)"
    begin
    if [[ "${#NODES[@]}" -lt 2 ]] || ! podman exec bench-node2 ip link show kubespan >/dev/null 2>&1; then
        cluster_create 2
        timed_play "dataplane-converge" playbooks/site.yml >/dev/null
        wait_all_up 120 >/dev/null
    fi
    bash bench/dataplane.sh bench-node1 bench-node2 "$RAW/dataplane.json"
    record dataplane "$RAW/dataplane.json"
fi

if want failover; then
    banner "Failover: bench/failover.sh (molecule scenario failover, about 5 minutes)"
    begin
    bash bench/failover.sh | tee "$WORK/failover.txt"
    $PY bench/report.py failover-entry --text "$WORK/failover.txt" --out "$RAW/failover.json"
    record failover "$RAW/failover.json"
fi

if want relay; then
    banner "Relay: bench/relay.sh (molecule scenario relay, about 10 minutes)"
    begin
    bash bench/relay.sh | tee "$WORK/relay.txt"
    $PY bench/report.py relay-entry --text "$WORK/relay.txt" --out "$RAW/relay.json"
    record relay "$RAW/relay.json"
fi

if want doublenat; then
    banner "Double NAT: bench/doublenat.sh (molecule scenario doublenat, about 6 minutes)"
    begin
    bash bench/doublenat.sh | tee "$WORK/doublenat.txt"
    $PY bench/report.py doublenat-entry --text "$WORK/doublenat.txt" --out "$RAW/doublenat.json"
    record doublenat "$RAW/doublenat.json"
fi

banner "Report: docs/benchmarks.md, docs/benchmarks/scale.png (from every file in bench/results)"
$PY bench/report.py write --results "$RESULTS" --doc docs/benchmarks.md --plot docs/benchmarks/scale.png
