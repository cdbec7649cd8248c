#!/usr/bin/env bash
# scripts/test.sh: every test of kubespan.mesh, in order, from a bare Debian 12 machine (CI: .ci/run).
#
# Sections (each with a banner, its duration and a log under build/test-logs/):
#   unit        pytest tests/unit tests/integration (pure logic with Talos's vectors; controller-side runs)
#   gates       tests/gates.sh: ruff, ansible-lint, ansible-test sanity + units, build/install/ansible-doc
#   kernel      tests/kernel/run.sh: kernel WireGuard in a QEMU guest (transport and engine)
#   image       tests/testbed/build-image.sh: the node image    (reused when unchanged)
#   image-monitoring
#               molecule/monitoring/build-image.sh: the node image + Debian's prometheus packages
#   molecule    molecule test -s default: 3 systemd containers, converge, idempotence, verify (a-f)
#   molecule-failover
#               molecule test -s failover: 2 nodes on two underlay networks; cuts the path in use and
#               measures how long the node agent takes to move the peer to its other endpoint
#   molecule-dataplane
#               molecule test -s dataplane: 3 nodes, two sites, ufw / firewalld / drop-policy nftables,
#               pod networks, MSS clamp, bypass off/on by packet capture, disable and re-enable
#   molecule-discovery, molecule-nat
#               molecule test -s discovery / nat: the discovery service (role discovery_service), a node
#               joining from its own inventory, hostile affiliates, service outage; a NAT'd node
#   molecule-doublenat
#               molecule test -s doublenat: two nodes behind two NAT routers, a public node, discovery:
#               hole punching to a direct path (time to it measured), 5 ticks up, no traffic via the public node
#   molecule-monitoring
#               molecule test -s monitoring: node_exporter's textfile collector on 2 nodes, Debian's
#               Prometheus scraping them; PromQL: peers up, counters growing, a down peer in one scrape
#   molecule-relay
#               molecule test -s relay: symmetric NAT on two routers, a public relay member; A and B ping
#               through the relay within 90 s, VIA column and metrics, a capture on the relay, direct
#               entries keep probing, back to direct when the LANs get a route, iperf3 relayed vs direct
#   vm-image    tests/vm/build-image.sh: the QEMU guests' disk (mmdebstrap; reused when unchanged), built in
#               the background from the start, beside unit .. reliability
#   vm          tests/vm/run.sh: two QEMU guests booting Debian 12's kernel and systemd from that disk;
#               site.yml on kernel WireGuard (auto), the agent restoring a deleted link, a reboot, disable;
#               fail closed by packet captures with positive controls (wave 3, beside relay and doublenat,
#               which mostly wait)
#   installed   tests/installed/run.sh --debian trixie: the release tarball installed into an empty
#               collections path, the demo run from the installed FQCNs only, on Debian 13 nodes
# Before them: docs (tests/installed/docs-lint.sh: antsibull-docs, changelog, links, role variables),
# sanity-2.17 (ansible-test sanity with the oldest supported ansible-core, through nox) and
# reliability (scripts/reliability.sh --quick: crash safety, full disk, fuzzing).
# The container sections run in two waves of three at the same time (distinct container and network
# names; they mostly wait for agent ticks and pings): one in the foreground, its output live; the
# others in the background, their logs printed when the wave is done. Each has its own log.
# A failing section does not stop the others; the exit status is non-zero if any section failed.
# The measured recovery and failover times are printed before the summary. The last line is the
# summary: "N passed, M failed". No section is ever skipped.
#
# Containers and networks of the test bed's names are removed before the run (an interrupted
# earlier run) and by an EXIT trap (podman containers would otherwise outlive this script).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
LOG_DIR="$REPO_ROOT/build/test-logs"

# Names used by the molecule scenarios (molecule/default/molecule.yml, molecule/failover/molecule.yml).
TESTBED_CONTAINERS=(node1 node2 node3 fo-node1 fo-node2 dp-node1 dp-node2 dp-node3
    disc-svc disc-node1 disc-node2 disc-node3 disc-node4 nat-svc nat-router nat-node1 nat-node2 nat-node3
    inst-node1 inst-node2 mon-node1 mon-node2 mon-prom rl-relay rl-ra rl-rb rl-a rl-b
    dn-svc dn-rtr-a dn-rtr-b dn-pub dn-a dn-b)
TESTBED_NETWORKS=(kubespan-test kubespan-fo-a kubespan-fo-b kubespan-dp-a kubespan-dp-b kubespan-disc
    kubespan-nat-pub kubespan-nat-priv kubespan-inst kubespan-mon kubespan-rl-pub kubespan-rl-a kubespan-rl-b
    kubespan-dn-pub kubespan-dn-lana kubespan-dn-lanb kubespan-dn-iso)

run_start=$SECONDS
bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh   # CONTAINERS_CONF, ANSIBLE_COLLECTIONS_PATH, the venv on PATH
# shellcheck source=tests/testbed/lib.sh
. tests/testbed/lib.sh

# Plain output in CI logs (molecule and ansible colour by default).
if [[ ! -t 1 ]]; then
    export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
fi

# Process groups of the sections running in the background (section_start), stopped by the EXIT trap.
declare -A bg_pgids=() bg_starts=()
cleanup_testbed() {
    local name
    for name in "${!bg_pgids[@]}"; do
        kill -TERM -- "-${bg_pgids[$name]}" 2>/dev/null || true
        wait "${bg_pgids[$name]}" 2>/dev/null || true
        unset "bg_pgids[$name]"
    done
    vm_stop_guests
    testbed_remove_containers "${TESTBED_CONTAINERS[@]}" || true
    testbed_remove_networks "${TESTBED_NETWORKS[@]}" || true
}
# vm: the QEMU guests of tests/vm/run.sh daemonize (out of the section's process group): stop them by pid file.
vm_stop_guests() {
    local f pid
    for f in build/vm/run/vm1.pid build/vm/run/vm2.pid; do
        pid=$(cat "$f" 2>/dev/null) || continue
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == qemu-system* ]] && kill "$pid" 2>/dev/null
        rm -f "$f"
    done
    return 0
}
on_exit() {
    local rc=$?
    cleanup_testbed
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cleanup_testbed

mkdir -p "$LOG_DIR"
passed=() failed=()
# The verify playbooks append measured times here (one line each; see molecule/*/verify.yml).
export KUBESPAN_TEST_MEASUREMENTS="$LOG_DIR/measurements.txt"
: >"$KUBESPAN_TEST_MEASUREMENTS"

# record NAME RC SECONDS: count a finished section as passed or failed and print its result line.
record() {
    local name="$1" rc="$2" took="$3"
    if ((rc == 0)); then
        passed+=("$name (${took}s)")
        printf -- '-------------------- %s: PASSED in %d s\n' "$name" "$took"
    else
        failed+=("$name (${took}s, rc $rc)")
        printf -- '-------------------- %s: FAILED (rc %d) in %d s, log: %s\n' "$name" "$rc" "$took" "$LOG_DIR/$name.log"
    fi
}

# section NAME COMMAND...: run one section with a banner, tee its output into build/test-logs/NAME.log,
# record the result and its duration. Never exits: later sections still run.
section() {
    local name="$1" start rc
    shift
    printf '\n==================== %s: %s\n' "$name" "$*"
    start=$SECONDS
    set +e
    "$@" 2>&1 | tee "$LOG_DIR/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    record "$name" "$rc" $((SECONDS - start))
}

# section_start NAME COMMAND...: start one section in the background, its output only in
# build/test-logs/NAME.log, in its own process group (the EXIT trap stops it); several may run.
# section_finish NAME: wait for it, print its log with a banner, record the result like section.
section_start() {
    local name="$1"
    shift
    printf '\n==================== %s: %s (in the background, log: %s)\n' "$name" "$*" "$LOG_DIR/$name.log"
    bg_starts[$name]=$SECONDS
    set -m   # job control: the background job gets its own process group
    rm -f "$LOG_DIR/$name.end"
    (
        set +e   # like section: the command's own status is the result
        "$@"
        rc=$?
        echo "$SECONDS" >"$LOG_DIR/$name.end"   # its own duration, not the wait for it
        exit "$rc"
    ) >"$LOG_DIR/$name.log" 2>&1 </dev/null &
    bg_pgids[$name]=$!
    set +m
}
section_finish() {
    local name="$1" rc took
    set +e
    wait "${bg_pgids[$name]}"
    rc=$?
    set -e
    unset "bg_pgids[$name]"
    took=$(($(cat "$LOG_DIR/$name.end" 2>/dev/null || echo "$SECONDS") - bg_starts[$name]))
    rm -f "$LOG_DIR/$name.end"
    printf '\n==================== %s (ran in the background): output\n' "$name"
    cat "$LOG_DIR/$name.log"
    record "$name" "$rc" "$took"
}

# --- vm (1 of 2): the guests' disk image, in the background (CI clones fresh: mmdebstrap, 6-9 min) ----
section_start vm-image bash tests/vm/build-image.sh

# --- unit and controller integration tests ------------------------------------------------------
section unit .venv/bin/python -m pytest tests/unit tests/integration -q -p no:cacheprovider

# --- quality gates -------------------------------------------------------------------------------
section gates bash tests/gates.sh

# --- documentation and the oldest supported ansible-core ----------------------------------------
section docs bash tests/installed/docs-lint.sh
section sanity-2.17 .venv/bin/nox -s "sanity(ansible_core='2.17')"

# --- kernel WireGuard in a QEMU guest ------------------------------------------------------------
section kernel bash tests/kernel/run.sh

# --- reliability (host only: crash safety, fuzzing, full disk; scripts/reliability.sh --full is longer)
section reliability bash scripts/reliability.sh --quick

# --- node image ----------------------------------------------------------------------------------
section image bash tests/testbed/build-image.sh
section image-monitoring bash molecule/monitoring/build-image.sh

# --- molecule and the installed collection -------------------------------------------------------
# molecule 26 can print "Executed: Successful" and return 0 although the idempotence step failed
# (seen here); so the section also fails when molecule logged a failed action.
molecule_test() {
    local scenario="$1" out rc
    out="$(mktemp)"
    molecule test --scenario-name "$scenario" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    if grep -qE 'Executed: Failed|Idempotence test failed' "$out"; then
        echo "molecule reported a failed action (see above)" >&2
        ((rc != 0)) || rc=1
    fi
    rm -f "$out"
    return "$rc"
}
CONTAINER_SECTIONS=(molecule molecule-dataplane molecule-discovery molecule-failover molecule-nat molecule-monitoring installed
    molecule-relay molecule-doublenat)
if [[ " ${failed[*]} " == *" image ("* ]]; then
    for s in "${CONTAINER_SECTIONS[@]}"; do failed+=("$s (not run: no node image)"); done
    printf '\n==================== %s: FAILED (not run: the image build failed)\n' "${CONTAINER_SECTIONS[*]}"
    section_finish vm-image   # the QEMU guests need no node image
    section vm bash tests/vm/run.sh
else
    # Two waves of three (the containers mostly wait for agent ticks and pings; six at once would
    # starve a 2-core machine): one section in the foreground, its output live, two in the background.
    section_start molecule-dataplane molecule_test dataplane
    section_start molecule-discovery molecule_test discovery
    section molecule molecule_test default
    section_finish molecule-dataplane
    section_finish molecule-discovery
    section_start molecule-failover molecule_test failover
    section_start molecule-nat molecule_test nat
    section_start molecule-monitoring molecule_test monitoring
    # Debian 13 (trixie) nodes here: every molecule scenario already runs Debian 12 nodes.
    section installed bash tests/installed/run.sh --debian trixie
    section_finish molecule-failover
    section_finish molecule-nat
    section_finish molecule-monitoring
    # wave 3, with the QEMU guests of vm (kernel WireGuard end to end, tests/vm/README.md) beside it
    section_finish vm-image
    section_start vm bash tests/vm/run.sh
    section_start molecule-relay molecule_test relay
    section_start molecule-doublenat molecule_test doublenat
    section_finish molecule-relay
    section_finish molecule-doublenat
    section_finish vm
fi

# --- summary -------------------------------------------------------------------------------------
# the suite's own figure (bench/report.py import-measurements turns it into the "CI suite" row of docs/benchmarks.md)
echo "ci suite: $((SECONDS - run_start)) s on $(nproc) cores, ${#passed[@]} passed, ${#failed[@]} failed" >>"$KUBESPAN_TEST_MEASUREMENTS"
if [[ -s "$KUBESPAN_TEST_MEASUREMENTS" ]]; then
    printf '\n==================== measured (%s)\n' "$KUBESPAN_TEST_MEASUREMENTS"
    sed 's/^/  /' "$KUBESPAN_TEST_MEASUREMENTS"
fi
printf '\n==================== summary (%d s)\n' "$((SECONDS - run_start))"
for s in "${passed[@]}"; do printf '  passed   %s\n' "$s"; done
for s in "${failed[@]}"; do printf '  FAILED   %s\n' "$s"; done
printf '%d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
((${#failed[@]} == 0))
