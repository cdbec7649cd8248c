"""Print the agent's metrics text for realistic statuses (tests/gates.sh promtool: `promtool check metrics`).

The real renderer (plugins/module_utils/agent/agent.py render_metrics), fed with statuses as a tick leaves them:
an up peer with traffic and endpoint changes, a down peer that once shook hands, a peer never seen, and a
label that needs escaping; discovery enabled (so every family the agent can write is present).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "build", "unit-path")
LINK = os.path.join(BASE, "ansible_collections", "kubespan", "mesh")
if not os.path.islink(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)
sys.path.insert(0, BASE)

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agent import render_metrics  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus  # noqa: E402

NOW = 1764900000.0
statuses = {
    "mB9NyJAeuaPUM4eiJwOh2BK+X5eL1GfE2PjrAsj+ikg=": PeerStatus(
        label="node-2", endpoint="192.0.2.2:51820", state="up", rx_bytes=62220, tx_bytes=58104,
        last_handshake=NOW - 12.5, last_used_endpoint="192.0.2.2:51820", last_endpoint_change=NOW - 3600, endpoint_changes=2, version=7),
    "Zc1qoiYNF2Y0hJz2YfHxBkyE3C0F1mqZ6q3v1wFyZ0M=": PeerStatus(
        label='rack "b" node-3', endpoint="[2001:db8::3]:51820", state="down", rx_bytes=1024, tx_bytes=9000,
        last_handshake=NOW - 900, endpoint_changes=5, version=3),
    "q0c3s7Xb3P3i8yRzWn6k5nq7Tq2m3w4d5e6f7g8h9iA=": PeerStatus(label="node-4", state="unknown"),
}
sys.stdout.write(render_metrics(statuses, NOW, repairs=1, discovery_up=1))
