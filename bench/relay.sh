#!/usr/bin/env bash
# bench/relay.sh: relaying under symmetric NAT (issue 16): time to the relayed path, time back to direct, and iperf3
# through the relay vs direct between the same nodes. Runs the molecule "relay" scenario (two routers with
# masquerade random,fully-random, a public relay member, two NAT'd nodes) and prints its measurement lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
flock /tmp/kubespan-image.lock bash tests/testbed/build-image.sh
export KUBESPAN_TEST_MEASUREMENTS="$PWD/build/bench-relay.txt"
: >"$KUBESPAN_TEST_MEASUREMENTS"
flock /tmp/kubespan-molecule-relay.lock molecule test --scenario-name relay >build/bench-relay.log 2>&1 || { tail -40 build/bench-relay.log; exit 1; }
cat "$KUBESPAN_TEST_MEASUREMENTS"
