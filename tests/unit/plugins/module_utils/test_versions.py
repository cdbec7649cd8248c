"""Resource versions in the listings, as Talos's VERSION column: +1 when what is shown changes."""

from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import tick
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import _version_peers

KEY = "k" * 43 + "="
SPEC = {"public_key": KEY, "name": "n2", "endpoints": ["10.0.0.2:51820"]}
NOW = 1_000_000.0


def dev(rx, tx, handshake=NOW - 5):
    return DeviceState(peers={KEY: PeerState(public_key=KEY, endpoint="10.0.0.2:51820", last_handshake=handshake, rx_bytes=rx, tx_bytes=tx)})


def test_status_version_counts_visible_changes_only():
    s = tick({}, dev(100, 100), [SPEC], NOW)[0]
    assert s[KEY].version == 1
    s = tick(s, dev(100, 100), [SPEC], NOW + 5)[0]
    assert s[KEY].version == 1  # nothing shown changed
    s = tick(s, dev(200, 100), [SPEC], NOW + 10)[0]
    assert s[KEY].version == 2
    s = tick(s, dev(10, 10), [SPEC], NOW + 15)[0]  # re-created on the device: the count goes on
    assert s[KEY].version == 3


def test_peer_spec_version_kept_while_unchanged():
    peers = [{"public_key": KEY, "name": "n2", "endpoints": ["10.0.0.2:51820"]}]
    _version_peers(peers, [])
    assert peers[0]["version"] == 1
    again = [{"public_key": KEY, "name": "n2", "endpoints": ["10.0.0.2:51820"]}]
    _version_peers(again, peers)
    assert again[0]["version"] == 1
    moved = [{"public_key": KEY, "name": "n2", "endpoints": ["10.0.0.3:51820"]}]
    _version_peers(moved, again)
    assert moved[0]["version"] == 2
