#!/usr/bin/env bash
# bench/doublenat.sh: measure the time to a direct path between two nodes behind two different NATs (issue 16).
# Runs the molecule "doublenat" scenario (two nftables routers, port-preserving, endpoint-dependent filtering; a
# public node; the discovery service) and prints its measured times: for every pair, from the later of the two
# agents' first start to the first handshake ("up"). The issue's limit is 60 s, its moonshot 30 s; Talos never
# connects the two NAT'd nodes (docs/dataplane.md#nat-traversal).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck source=/dev/null
. tests/testbed/env.sh
flock /tmp/kubespan-image.lock bash tests/testbed/build-image.sh
export KUBESPAN_TEST_MEASUREMENTS="$PWD/build/bench-doublenat.txt"
: >"$KUBESPAN_TEST_MEASUREMENTS"
flock /tmp/kubespan-molecule-doublenat.lock molecule test --scenario-name doublenat >build/bench-doublenat.log 2>&1 || { tail -40 build/bench-doublenat.log; exit 1; }
cat "$KUBESPAN_TEST_MEASUREMENTS"
