#!/usr/bin/env bash
# bench/failover.sh: measure how fast the node agent moves a peer to its other endpoint when the path in
# use dies (issue: faster than Talos's 275 s down interval plus a 30 s tick).
# Runs the molecule "failover" scenario (two nodes, two underlay networks, the path in use cut in both
# directions, twice) and prints the measured failover times. Talos's reference figure is printed beside.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
flock /tmp/kubespan-image.lock bash tests/testbed/build-image.sh
export KUBESPAN_TEST_MEASUREMENTS="$PWD/build/bench-failover.txt"
: >"$KUBESPAN_TEST_MEASUREMENTS"
flock /tmp/kubespan-molecule-failover.lock molecule test --scenario-name failover >build/bench-failover.log 2>&1 || { tail -40 build/bench-failover.log; exit 1; }
cat "$KUBESPAN_TEST_MEASUREMENTS"
