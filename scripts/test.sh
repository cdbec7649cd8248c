#!/usr/bin/env bash
# scripts/test.sh: every test of kubespan.mesh, in order, from a bare Debian 12 machine (CI: .ci/run).
#
# Sections (each with a banner, its duration and a log under build/test-logs/):
#   unit        pytest tests/unit tests/integration (pure logic with Talos's vectors; controller-side runs)
#   gates       tests/gates.sh: ruff, ansible-lint, ansible-test sanity + units, build/install/ansible-doc
#   kernel      tests/kernel/run.sh: kernel WireGuard in a QEMU guest (transport and engine)
#   image       tests/testbed/build-image.sh: the node image    (reused when unchanged)
#   molecule    molecule test: 3 systemd containers, converge, idempotence, verify
# A failing section does not stop the others; the exit status is non-zero if any section failed.
# The last line is the summary: "N passed, M failed". No section is ever skipped.
#
# Containers and networks of the test bed's names are removed before the run (an interrupted
# earlier run) and by an EXIT trap (podman containers would otherwise outlive this script).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
LOG_DIR="$REPO_ROOT/build/test-logs"

# Names used by the molecule scenario (molecule/default/molecule.yml).
TESTBED_CONTAINERS=(node1 node2 node3)
TESTBED_NETWORKS=(kubespan-test)

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

cleanup_testbed() {
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
    local took=$((SECONDS - start))
    if ((rc == 0)); then
        passed+=("$name (${took}s)")
        printf -- '-------------------- %s: PASSED in %d s\n' "$name" "$took"
    else
        failed+=("$name (${took}s, rc $rc)")
        printf -- '-------------------- %s: FAILED (rc %d) in %d s, log: %s\n' "$name" "$rc" "$took" "$LOG_DIR/$name.log"
    fi
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
    local out rc
    out="$(mktemp)"
    molecule test --scenario-name default 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    if grep -qE 'Executed: Failed|Idempotence test failed' "$out"; then
        echo "molecule reported a failed action (see above)" >&2
        ((rc != 0)) || rc=1
    fi
    rm -f "$out"
    return "$rc"
}
if [[ " ${failed[*]} " == *" image ("* ]]; then
    failed+=("molecule (not run: no node image)")
    printf '\n==================== molecule: FAILED (not run: the image build failed)\n'
else
    section molecule molecule_test
fi

# --- summary -------------------------------------------------------------------------------------
printf '\n==================== summary (%d s)\n' "$((SECONDS - run_start))"
for s in "${passed[@]}"; do printf '  passed   %s\n' "$s"; done
for s in "${failed[@]}"; do printf '  FAILED   %s\n' "$s"; done
printf '%d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
((${#failed[@]} == 0))
