#!/usr/bin/env bash
# scripts/test.sh: every test of kubespan.mesh, in order, from a bare Debian 12 machine (CI: .ci/run).
#
# Sections (each with a banner, its duration and a log under build/test-logs/):
#   unit        pytest tests/unit tests/integration (pure logic with Talos's vectors; controller-side runs)
#   gates       tests/gates.sh: ruff, ansible-lint, ansible-test sanity + units, build/install/ansible-doc
#   kernel      tests/kernel/run.sh: kernel WireGuard in a QEMU guest (transport and engine)
#   image       tests/testbed/build-image.sh: the node image    (reused when unchanged)
#   molecule    molecule test -s default: 3 systemd containers, converge, idempotence, verify (a-f)
#   molecule-failover
#               molecule test -s failover: 2 nodes on two underlay networks; cuts the path in use and
#               measures how long the node agent takes to move the peer to its other endpoint
# The two molecule scenarios run at the same time (distinct container and network names; both
# mostly wait for agent ticks): the default one in the foreground, its output live as before; the
# failover one in the background, its log printed when both are done. Each has its own log.
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
TESTBED_CONTAINERS=(node1 node2 node3 fo-node1 fo-node2)
TESTBED_NETWORKS=(kubespan-test kubespan-fo-a kubespan-fo-b)

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

# Process group of a section running in the background (section_start), stopped by the EXIT trap.
bg_pgid=""
cleanup_testbed() {
    if [[ -n "$bg_pgid" ]]; then
        kill -TERM -- "-$bg_pgid" 2>/dev/null || true
        wait "$bg_pgid" 2>/dev/null || true
        bg_pgid=""
    fi
    testbed_remove_containers "${TESTBED_CONTAINERS[@]}" || true
    testbed_remove_networks "${TESTBED_NETWORKS[@]}" || true
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
# build/test-logs/NAME.log, in its own process group (the EXIT trap stops it); one at a time.
# section_finish: wait for it, print its log with a banner, record the result like section.
bg_name="" bg_start=0
section_start() {
    bg_name="$1"
    shift
    printf '\n==================== %s: %s (in the background, log: %s)\n' "$bg_name" "$*" "$LOG_DIR/$bg_name.log"
    bg_start=$SECONDS
    set -m   # job control: the background job gets its own process group
    rm -f "$LOG_DIR/$bg_name.end"
    (
        set +e   # like section: the command's own status is the result
        "$@"
        rc=$?
        echo "$SECONDS" >"$LOG_DIR/$bg_name.end"   # its own duration, not the wait for it
        exit "$rc"
    ) >"$LOG_DIR/$bg_name.log" 2>&1 </dev/null &
    bg_pgid=$!
    set +m
}
section_finish() {
    local rc took
    set +e
    wait "$bg_pgid"
    rc=$?
    set -e
    bg_pgid=""
    took=$(($(cat "$LOG_DIR/$bg_name.end" 2>/dev/null || echo "$SECONDS") - bg_start))
    rm -f "$LOG_DIR/$bg_name.end"
    printf '\n==================== %s (ran in the background): output\n' "$bg_name"
    cat "$LOG_DIR/$bg_name.log"
    record "$bg_name" "$rc" "$took"
}

# --- unit and controller integration tests ------------------------------------------------------
section unit .venv/bin/python -m pytest tests/unit tests/integration -q -p no:cacheprovider

# --- quality gates -------------------------------------------------------------------------------
section gates bash tests/gates.sh

# --- kernel WireGuard in a QEMU guest ------------------------------------------------------------
section kernel bash tests/kernel/run.sh

# --- node image ----------------------------------------------------------------------------------
section image bash tests/testbed/build-image.sh

# --- molecule ------------------------------------------------------------------------------------
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
if [[ " ${failed[*]} " == *" image ("* ]]; then
    failed+=("molecule (not run: no node image)" "molecule-failover (not run: no node image)")
    printf '\n==================== molecule, molecule-failover: FAILED (not run: the image build failed)\n'
else
    section_start molecule-failover molecule_test failover
    section molecule molecule_test default
    section_finish
fi

# --- summary -------------------------------------------------------------------------------------
if [[ -s "$KUBESPAN_TEST_MEASUREMENTS" ]]; then
    printf '\n==================== measured (%s)\n' "$KUBESPAN_TEST_MEASUREMENTS"
    sed 's/^/  /' "$KUBESPAN_TEST_MEASUREMENTS"
fi
printf '\n==================== summary (%d s)\n' "$((SECONDS - run_start))"
for s in "${passed[@]}"; do printf '  passed   %s\n' "$s"; done
for s in "${failed[@]}"; do printf '  FAILED   %s\n' "$s"; done
printf '%d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
((${#failed[@]} == 0))
