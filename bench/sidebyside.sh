#!/usr/bin/env bash
# bench/sidebyside.sh: the scale and agent sections of bench/run.sh for TWO commits in ONE run, interleaved, and one
# table with both (issue 14's acceptance: "no worse than before, both runs shown side by side").
#
#   bash bench/sidebyside.sh BASE NEW                 e.g. bash bench/sidebyside.sh 7ce860f main
#   options: --rounds 3 (whole-process agent runs per commit and peer count)  --peers 100,1000 (agent)
#            --sizes 100,1000 (scale)  --scale-rounds 3 (scale.py runs per commit)  --no-record (print the table only)
#            --scale-full-max 100 (scale.py --full-cluster-max: clusters above it have their shipped whole-cluster
#            figure estimated from 20 evenly spaced nodes, marked ESTIMATED; 1000 times every node of the 1,000-node
#            cluster: about 100 s CPU more per scale run)
#
# Each commit's tree is taken from git (git archive, never the work tree: uncommitted changes are not measured) into
# build/bench/sidebyside/<commit>; each runs ITS OWN bench/scale.py, bench/agent_tick.py and agent bundle builder, with
# this checkout's virtualenv (same interpreter for both). Agent: BASE in bench-node1, NEW in bench-node2 (same image,
# same network, both wireguard-go devices up the whole time, so any background cost is the same for both); per peer
# count the whole-process runs alternate BASE/NEW (the order flips every round), then the in-process ticks, then the
# import profile. Scale: the scale.py runs alternate too. The 1-minute load is printed before each measurement.
# Results: one file per section run and commit in bench/results/<section>/ as run.sh writes them (meta "commit" is the
# commit measured, meta "sidebyside" names the pair), BASE's recorded before NEW's; then docs/benchmarks.md is
# regenerated (its "Side by side" section holds the table printed at the end).
# Takes about 10 minutes with the defaults on an idle 2-core machine (each whole-process run is ~21 s: the agent's
# real sampling sleeps). Containers bench-node1..2 and network kubespan-bench (10.89.80.0/24, 2001:db8:80::/64), as
# bench/run.sh: do not run both at once. BENCH_NODE_PREFIX and BENCH_NETWORK rename them, as in bench/run.sh.
set -Eeuo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

ROUNDS=3
PEER_COUNTS="100,1000"
SIZES="100,1000"
SCALE_ROUNDS=3
SCALE_FULL_MAX=100
RECORD=1
ARGS=()
while (($#)); do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --peers) PEER_COUNTS="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --scale-rounds) SCALE_ROUNDS="$2"; shift 2 ;;
        --scale-full-max) SCALE_FULL_MAX="$2"; shift 2 ;;
        --no-record) RECORD=0; shift ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
if ((${#ARGS[@]} != 2)); then
    echo "usage: bash bench/sidebyside.sh BASE NEW [options] (see --help)" >&2
    exit 2
fi
for n in "$ROUNDS" "$SCALE_ROUNDS"; do
    [[ "$n" =~ ^[1-9][0-9]?$ ]] || { echo "--rounds/--scale-rounds: $n is not a count from 1 to 99" >&2; exit 2; }
done
[[ "$PEER_COUNTS" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--peers: $PEER_COUNTS is not a list like 100,1000" >&2; exit 2; }
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--sizes: $SIZES is not a list like 100,1000" >&2; exit 2; }
[[ "$SCALE_FULL_MAX" =~ ^[0-9]+$ ]] || { echo "--scale-full-max: $SCALE_FULL_MAX is not a node count" >&2; exit 2; }
COMMITS=()
for ref in "${ARGS[@]}"; do
    sha=$(git rev-parse --verify --quiet "$ref^{commit}") || { echo "$ref: not a commit of this repository" >&2; exit 2; }
    COMMITS+=("$sha")
done
[[ "${COMMITS[0]}" != "${COMMITS[1]}" ]] || { echo "BASE and NEW are the same commit ${COMMITS[0]:0:7}" >&2; exit 2; }
LABELS=(base new)

bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
# shellcheck source=/dev/null
. tests/testbed/lib.sh

PY="$REPO_ROOT/.venv/bin/python"
WORK="$REPO_ROOT/build/bench/sidebyside"
RESULTS="$REPO_ROOT/bench/results"
RAW="$WORK/raw"
NETWORK="${BENCH_NETWORK:-kubespan-bench}"
_prefix="${BENCH_NODE_PREFIX:-bench-node}"
NODES=("${_prefix}1" "${_prefix}2")
SIDE_ID="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
T0=$SECONDS
rm -rf "$RAW"
mkdir -p "$RAW"

cleanup() {
    testbed_remove_containers "${NODES[@]}" || true
    testbed_remove_networks "$NETWORK" || true
}
trap cleanup EXIT
banner() { printf '\n=== %s (%d s)\n' "$*" $((SECONDS - T0)); }
load1() { cut -d' ' -f1 /proc/loadavg; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "base ${COMMITS[0]:0:7}: $(git log -1 --format=%s "${COMMITS[0]}" | cut -c1-100)"
echo "new  ${COMMITS[1]:0:7}: $(git log -1 --format=%s "${COMMITS[1]}" | cut -c1-100)"

# tree I: the commit's files (git archive) with its own build/collections (scale.py imports the collection from there)
TREES=()
for i in 0 1; do
    tree="$WORK/${COMMITS[$i]:0:12}"
    rm -rf "$tree"
    mkdir -p "$tree/build/collections/ansible_collections/kubespan"
    git archive "${COMMITS[$i]}" | tar -x -C "$tree"
    ln -sfn ../../../.. "$tree/build/collections/ansible_collections/kubespan/mesh"
    TREES+=("$tree")
done

# --- scale ---------------------------------------------------------------------------------------------
declare -A STARTED LOADSTART LOADEND
banner "Scale: bench/scale.py --sizes $SIZES --full-cluster-max $SCALE_FULL_MAX, $SCALE_ROUNDS run(s) per commit, alternating"
for ((r = 1; r <= SCALE_ROUNDS; r++)); do
    order=(0 1)
    ((r % 2)) || order=(1 0)
    for i in "${order[@]}"; do
        key="scale-${LABELS[$i]}-$r"
        LOADSTART[$key]="$(cut -d' ' -f1-3 /proc/loadavg)"
        STARTED[$key]="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "  ${LABELS[$i]} ${COMMITS[$i]:0:7} round $r (load $(load1))"
        (cd "${TREES[$i]}" && "$PY" bench/scale.py --sizes "$SIZES" --full-cluster-max "$SCALE_FULL_MAX" --out "$RAW/$key.json" | sed 's/^/    /')
        LOADEND[$key]="$(cut -d' ' -f1-3 /proc/loadavg)"
    done
done

# --- agent ---------------------------------------------------------------------------------------------
banner "Agent: base in ${NODES[0]}, new in ${NODES[1]}; peers $PEER_COUNTS; $ROUNDS whole-process runs each, alternating"
for i in 0 1; do
    LOADSTART[agent-${LABELS[$i]}]="$(cut -d' ' -f1-3 /proc/loadavg)"
    STARTED[agent-${LABELS[$i]}]="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
cleanup
testbed_create_network "$NETWORK" 10.89.80.0/24 2001:db8:80::/64
for i in 0 1; do
    testbed_run_node "${NODES[$i]}" "$NETWORK" "10.89.80.$((i + 11))" "2001:db8:80::$((i + 11))"
done
testbed_wait_systemd "${NODES[@]}" 2>/dev/null || testbed_wait_systemd "${NODES[@]}"
for i in 0 1; do
    node="${NODES[$i]}"
    bundle=$(cd "${TREES[$i]}" && "$PY" roles/kubespan/files/build_agent_bundle.py plugins/module_utils "$WORK/cache-${LABELS[$i]}")
    [[ "$bundle" = /* ]] || bundle="${TREES[$i]}/$bundle"
    podman exec "$node" mkdir -p /usr/lib/kubespan
    podman cp "$bundle" "$node":/usr/lib/kubespan/kubespan-agent.pyz
    podman cp "${TREES[$i]}/bench/agent_tick.py" "$node":/root/agent_tick.py
    printf '[Service]\nEnvironment=LOG_LEVEL=error\nExecStart=/usr/bin/wireguard-go -f kubespan\n' |
        podman exec -i "$node" sh -c 'cat >/etc/systemd/system/kubespan-wireguard-go.service && systemctl daemon-reload'
    # negative control (as bench/run.sh): a tick with no desired state must fail the check
    if podman exec "$node" python3 /root/agent_tick.py process 0 --state-dir /nonexistent >/dev/null 2>"$RAW/agent-negative-${LABELS[$i]}.txt"; then
        echo "agent_tick of ${LABELS[$i]} accepted a tick without a desired state: the tick check is broken" >&2
        exit 1
    fi
    echo "  ${LABELS[$i]} negative control: $(tail -1 "$RAW/agent-negative-${LABELS[$i]}.txt")"
    : >"$RAW/agent-${LABELS[$i]}.jsonl"
done
show='import json,sys
label = sys.argv[1]
for line in sys.stdin:
    r = json.loads(line)
    extra = " (tick CPU %.0f ms, of which nft %.0f ms)" % (r["tick_cpu_s"] * 1e3, r["tick_children_cpu_s"] * 1e3) if "tick_cpu_s" in r else ""
    print("  %-4s %5d peers %-9s process CPU %.0f ms, max RSS %.1f MB%s" % (label, r["peers"], r["mode"], r["process_cpu_s"] * 1e3, r["max_rss_bytes"] / 2**20, extra))'
measure() { # I ARGS...: one agent_tick run on commit I's node, appended to its jsonl and shown
    local i="$1"
    shift
    podman exec "${NODES[$i]}" python3 /root/agent_tick.py "$@" | tee -a "$RAW/agent-${LABELS[$i]}.jsonl" | "$PY" -c "$show" "${LABELS[$i]}"
}
IFS=, read -r -a peer_counts <<<"$PEER_COUNTS"
for peers in "${peer_counts[@]}"; do
    echo "  -- $peers peers (load $(load1))"
    for i in 0 1; do podman exec "${NODES[$i]}" python3 /root/agent_tick.py prepare "$peers" >/dev/null; done
    # the first tick after a new desired state settles the statuses (not recorded), both nodes at once
    pids=()
    for i in 0 1; do
        podman exec "${NODES[$i]}" python3 /root/agent_tick.py process "$peers" >/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    for ((r = 1; r <= ROUNDS; r++)); do
        order=(0 1)
        ((r % 2)) || order=(1 0)
        for i in "${order[@]}"; do measure "$i" process "$peers"; done
    done
    for mode in real synthetic; do
        for i in 0 1; do
            podman exec "${NODES[$i]}" python3 /root/agent_tick.py tick "$peers" "$mode" >/dev/null
            measure "$i" tick "$peers" "$mode"
        done
    done
done
# where the process start goes, at 100 peers (as bench/run.sh) or the first count given
imp_peers="${peer_counts[0]}"
[[ ",$PEER_COUNTS," == *",100,"* ]] && imp_peers=100
for i in 0 1; do
    podman exec "${NODES[$i]}" python3 /root/agent_tick.py prepare "$imp_peers" >/dev/null
    podman exec "${NODES[$i]}" python3 /root/agent_tick.py importtime "$imp_peers" >"$RAW/agent-importtime-${LABELS[$i]}.json"
done
for i in 0 1; do
    LOADEND[agent-${LABELS[$i]}]="$(cut -d' ' -f1-3 /proc/loadavg)"
    "$PY" bench/report.py agent-entry --jsonl "$RAW/agent-${LABELS[$i]}.jsonl" --importtime "$RAW/agent-importtime-${LABELS[$i]}.json" \
        --out "$RAW/agent-${LABELS[$i]}.json"
done
trap - EXIT
cleanup

# --- record and report ---------------------------------------------------------------------------------
banner "Side by side"
record() { # SECTION KEY I
    "$PY" bench/report.py record --section "$1" --raw "$RAW/$2.json" --results "$RESULTS" --load-start "${LOADSTART[$2]}" \
        --load-end "${LOADEND[$2]}" --started "${STARTED[$2]}" --commit "${COMMITS[$3]}" --sidebyside "$SIDE_ID" --role "${LABELS[$3]}" \
        --pair "${COMMITS[0]}" "${COMMITS[1]}"
    sleep 1 # one file per second and commit; BASE's files are the older ones (the report's "newest code" is NEW)
}
if ((RECORD)); then
    for i in 0 1; do
        for ((r = 1; r <= SCALE_ROUNDS; r++)); do record scale "scale-${LABELS[$i]}-$r" "$i"; done
        record agent "agent-${LABELS[$i]}" "$i"
    done
    "$PY" bench/report.py sidebyside --results "$RESULTS" --id "$SIDE_ID"
    "$PY" bench/report.py write --results "$RESULTS" --doc docs/benchmarks.md --plot docs/benchmarks/scale.png
else
    "$PY" bench/report.py sidebyside --raw "$RAW" --pair "${COMMITS[0]}" "${COMMITS[1]}"
fi
echo "sidebyside: done in $((SECONDS - T0)) s"
