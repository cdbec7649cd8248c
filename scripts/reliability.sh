#!/usr/bin/env bash
# scripts/reliability.sh: the reliability and security suite (docs/reliability.md reports its figures).
#
#   scripts/reliability.sh --quick   host only, for CI (about 3.5 minutes on the 2-core test machine):
#                                    crash safety (SIGKILL at every system call of the identity and state
#                                    writers under strace, plus 120 random-time kills), full disk on a tmpfs,
#                                    hypothesis fuzzing (300 examples per property)
#   scripts/reliability.sh --full    the longer run (about an hour): the same with 600 random kills and
#                                    3000 examples per property, then on containers of its own:
#                                    a 3-node cluster (rel-node1..3): the first playbook run killed at every
#                                    task boundary and inside tasks, then converged (same identities);
#                                    secret scan; agent sandbox (hardening) check; agent ticks racing the
#                                    mesh module; runtime faults with recovery times (partition:
#                                    REL_PARTITION_SECONDS, default 120);
#                                    a 10-node mesh (rel-node1..10, 90 directed links): converge time and
#                                    pings across all pairs;
#                                    a netns mesh on the host (netns, tests/reliability/netns_mesh.sh, sizes
#                                    REL_NETNS_SIZES, default "10 20 40"): one network namespace and one
#                                    wireguard-go per node, handshakes on every link, agent tick CPU and RSS
#   --only PART[,PART...]            run only these parts: crash, disk, fuzz, killpoints, secrets, hardening,
#                                    concurrency, faults, mesh10, netns
#   --keep                           leave the last cluster running (default: removed on exit)
# Tests of the strict checks themselves (each part must then FAIL; docs/reliability.md "Checks shown to fail"):
#   REL_CONCURRENCY_AGENT_ARGS=--no-such-option  every racing agent tick ends non-zero
#   REL_FAULT_BROKEN_INJECT=1                     faults.sh injects nothing (the commands are only printed)
#   REL_MESH10_BREAK_PAIR=1                       rel-node1 drops rel-node10's packets before the converge
#
# Containers rel-node1..10 on networks kubespan-rel (10.89.90.0/24, 2001:db8:90::/64); they are removed by
# an EXIT trap, and stale ones of these names are cleared before a cluster is created. Logs and the
# cluster's secrets and inventory go to build/reliability/. Needs root. Exit status 1 if a part failed.
set -Euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 2

mode="" only="" keep=0
while (($#)); do
    case "$1" in
        --quick | --full) mode="${1#--}" ;;
        --only) only="$2"; shift ;;
        --keep) keep=1 ;;
        *) echo "usage: $0 --quick|--full [--only PART,...] [--keep]" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$mode" ]] || { echo "usage: $0 --quick|--full [--only PART,...] [--keep]" >&2; exit 2; }
((EUID == 0)) || { echo "$0 must run as root (strace, tmpfs mounts, rootful podman)" >&2; exit 2; }

if [[ "$mode" == quick ]]; then
    parts=(crash disk fuzz)
    random_kills=120
    fuzz_examples=300
else
    parts=(crash disk fuzz killpoints secrets hardening concurrency faults mesh10 netns)
    random_kills=600
    fuzz_examples=3000
fi
if [[ -n "$only" ]]; then
    IFS=, read -r -a parts <<<"$only"
fi
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }

LOGDIR="$REPO_ROOT/build/reliability"
mkdir -p "$LOGDIR"
chmod 0700 "$LOGDIR"
SUMMARY=()
failed=0
suite_start=$SECONDS

# run_part NAME COMMAND...: run, log to build/reliability/NAME.log (and the terminal), record result and time
run_part() {
    local name="$1" start=$SECONDS rc
    shift
    printf '\n=== %s\n' "$name"
    "$@" 2>&1 | tee "$LOGDIR/$name.log"
    rc=${PIPESTATUS[0]}
    if ((rc == 0)); then
        SUMMARY+=("PASS  $name ($((SECONDS - start)) s)")
    else
        SUMMARY+=("FAIL  $name ($((SECONDS - start)) s, rc $rc): $LOGDIR/$name.log")
        failed=1
    fi
    return 0
}

# --- host prerequisites (Debian packages through apt, the venv through scripts/setup.sh)
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import hypothesis' 2>/dev/null; then
    bash scripts/setup.sh
fi
if want crash && ! command -v strace >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
fi
# shellcheck source=/dev/null
. tests/testbed/env.sh
PY="$REPO_ROOT/.venv/bin/python"

want crash && run_part crash "$PY" tests/reliability/crash_safety.py --random "$random_kills" --json "$LOGDIR/crash.json"
want disk && run_part disk "$PY" tests/reliability/full_disk.py
want fuzz && run_part fuzz env RELIABILITY_FUZZ_EXAMPLES="$fuzz_examples" "$PY" -m pytest tests/reliability -q -p no:cacheprovider \
    -o console_output_style=classic -rxX
# netns: a mesh of network namespaces on the host (no containers), agent cost per node
# shellcheck disable=SC2086  # REL_NETNS_SIZES is a list of sizes
want netns && run_part netns bash tests/reliability/netns_mesh.sh ${REL_NETNS_SIZES:-10 20 40}

# mesh10: the 10-node mesh (90 directed links): converge time, every pair answers, every peer up
# shellcheck disable=SC2317  # called through run_part
mesh10() {
    local start
    rel_create 10
    if [[ -n "${REL_MESH10_BREAK_PAIR:-}" ]]; then  # test of this part only: rel-node1 drops rel-node10's packets
        echo "mesh10: REL_MESH10_BREAK_PAIR set: rel-node1 drops every packet from and to rel-node10 (this part must fail)"
        podman exec -i rel-node1 nft -f - <<'NFT'
table inet relbreak {
    chain in { type filter hook input priority -300; policy accept; ip saddr 10.89.90.20 drop; ip6 saddr 2001:db8:90::20 drop; }
    chain out { type filter hook output priority -300; policy accept; ip daddr 10.89.90.20 drop; ip6 daddr 2001:db8:90::20 drop; }
}
NFT
    fi
    start=$SECONDS
    if ! rel_playbook playbooks/site.yml >"$LOGDIR/converge10.log" 2>&1; then
        echo "converge of 10 nodes failed: $LOGDIR/converge10.log"; tail -30 "$LOGDIR/converge10.log"; return 1
    fi
    echo "mesh10: site.yml converged 10 nodes in $((SECONDS - start)) s (forks 10, podman connection)"
    grep -E '^rel-node[0-9]+ +:' "$LOGDIR/converge10.log"
    # every check runs and reports, a failed one does not hide the next (the part fails if any failed)
    local waited bad=0
    if waited="$(rel_wait_all_pairs 120)"; then
        echo "mesh10: all 90 directed pairs answered $waited s after the converge ended"
    else
        bad=1
    fi
    rel_all_pairs || bad=1
    local n peers up
    for n in "${REL_NODES[@]}"; do
        peers="$(podman exec "$n" wg show kubespan peers | wc -l)"
        up="$(podman exec "$n" kubespan get peerstatuses -o records | python3 -c 'import json, sys
print(sum(1 for r in json.load(sys.stdin) if r.get("state") == "up"))')"
        echo "  $n: $peers WireGuard peers, $up up in kubespan get peerstatuses"
        [[ "$peers" == 9 ]] || { echo "FAIL $n has $peers peers, not 9"; bad=1; }
        [[ "$up" == 9 ]] || { echo "FAIL $n has $up of 9 peers up"; bad=1; }
    done
    return "$bad"
}

# --- containers
cluster_parts=(killpoints secrets hardening concurrency faults)
need_cluster=0
for p in "${cluster_parts[@]}" mesh10; do want "$p" && need_cluster=1; done
if ((need_cluster)); then
    bash tests/testbed/build-image.sh
    # shellcheck source=/dev/null
    . tests/testbed/lib.sh
    # shellcheck source=/dev/null
    . tests/reliability/cluster.sh
    ((keep)) || trap 'rel_destroy' EXIT
    trap 'exit 143' TERM INT  # so that the EXIT trap runs
    SECRETS="$REL_DIR/group_vars/kubespan/secrets.yml"
    rm -f "$SECRETS"  # new cluster secrets for every run

    need3=0
    for p in "${cluster_parts[@]}"; do want "$p" && need3=1; done
    if ((need3)); then
        printf '\n=== cluster: rel-node1..3 on %s\n' "$REL_NET"
        rel_create 3
        if want killpoints; then
            run_part killpoints bash tests/reliability/killpoints.sh
            if [[ "${SUMMARY[-1]}" != PASS* ]]; then  # the parts below need a converged cluster
                rel_playbook playbooks/site.yml >"$LOGDIR/converge3.log" 2>&1 || { echo "converge failed: $LOGDIR/converge3.log"; exit 1; }
            fi
        else
            rel_playbook playbooks/site.yml >"$LOGDIR/converge3.log" 2>&1 || { echo "converge failed: $LOGDIR/converge3.log"; exit 1; }
        fi
        want secrets && run_part secrets python3 tests/reliability/secret_scan.py --inventory "$REL_DIR/inventory.yml" \
            --secrets-file "$SECRETS" "${REL_NODES[@]}"
        want hardening && run_part hardening bash tests/reliability/hardening.sh rel-node3 rel-node1 rel-node2
        want concurrency && run_part concurrency python3 tests/reliability/concurrency.py --inventory "$REL_DIR/inventory.yml" \
            --secrets-file "$SECRETS" --rounds "${REL_CONCURRENCY_ROUNDS:-20}" --agent-args="${REL_CONCURRENCY_AGENT_ARGS:-}" rel-node1 rel-node3
        want faults && run_part faults bash tests/reliability/faults.sh rel-node2
    fi

    want mesh10 && run_part mesh10 mesh10
fi

printf '\n=== reliability suite (--%s) in %d s\n' "$mode" "$((SECONDS - suite_start))"
printf '  %s\n' "${SUMMARY[@]}"
exit "$failed"
