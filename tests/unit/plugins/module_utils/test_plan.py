"""Device planning: minimal changes, endpoint rules, diff rendering without secrets."""

import base64

from ansible_collections.kubespan.mesh.plugins.module_utils.core.plan import (
    DesiredDevice,
    DesiredPeer,
    expected_device,
    pick_configured_endpoint,
    plan_device,
    render_device,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


PSK = key(200)
NOW = 1_000_000.0


def desired(*peers):
    return DesiredDevice(private_key=key(1), listen_port=51820, fwmark=0x20, peers=list(peers))


def dpeer(n, endpoints=("10.0.0.%d:51820",)):
    return DesiredPeer(public_key=key(n), allowed_ips=["fd00::%d/128" % n], endpoints=[e % n for e in endpoints],
                       persistent_keepalive=25, preshared_key=PSK, label="n%d" % n)


def applied(d, handshake=0.0):
    """The device state after `d` was applied (what a second run sees)."""
    dev = DeviceState(private_key=d.private_key, public_key="pub", listen_port=d.listen_port, fwmark=d.fwmark)
    for p in d.peers:
        dev.peers[p.public_key] = PeerState(public_key=p.public_key, endpoint=p.endpoints[0] if p.endpoints else None,
                                            allowed_ips=list(p.allowed_ips), persistent_keepalive=25, preshared_key=PSK,
                                            last_handshake=handshake)
    return dev


def test_fresh_device_gets_everything():
    update, changes = plan_device(desired(dpeer(2), dpeer(3)), None, NOW)
    assert update.private_key == key(1) and update.listen_port == 51820 and update.fwmark == 0x20
    assert [(p.public_key, p.endpoint, p.allowed_ips, p.update_only) for p in update.peers] == [
        (key(2), "10.0.0.2:51820", ["fd00::2/128"], False), (key(3), "10.0.0.3:51820", ["fd00::3/128"], False)]
    assert "set private key" in changes


def test_second_run_is_a_no_op():
    d = desired(dpeer(2), dpeer(3))
    update, changes = plan_device(d, applied(d), NOW)
    assert update.is_empty() and changes == []


def test_adding_a_peer_touches_only_that_peer():
    d = desired(dpeer(2))
    update, changes = plan_device(desired(dpeer(2), dpeer(3)), applied(d, handshake=NOW - 5), NOW)
    assert [p.public_key for p in update.peers] == [key(3)] and update.private_key is None
    assert changes == ["add peer n3 %s" % key(3)]


def test_removed_peer_and_drift_repaired():
    d = desired(dpeer(2), dpeer(3))
    dev = applied(desired(dpeer(2), dpeer(4)))
    dev.peers[key(2)].allowed_ips = []
    dev.peers[key(2)].persistent_keepalive = 0
    dev.listen_port = 1234
    update, changes = plan_device(d, dev, NOW)
    ops = {(p.public_key, p.remove) for p in update.peers}
    assert (key(4), True) in ops and (key(3), False) in ops
    fix = [p for p in update.peers if p.public_key == key(2)][0]
    assert fix.update_only and fix.allowed_ips == ["fd00::2/128"] and fix.persistent_keepalive == 25 and fix.endpoint is None
    assert update.listen_port == 51820 and "listen port 1234 -> 51820" in changes


def test_endpoint_rules():
    cands = ["10.0.0.2:51820", "[2001:db8::2]:51820"]
    assert pick_configured_endpoint(None, 0, cands, NOW) == cands[0]
    assert pick_configured_endpoint(cands[1], 0, cands, NOW) is None        # a candidate: keep (agent cycles)
    assert pick_configured_endpoint("192.0.2.9:40000", NOW - 10, cands, NOW) is None  # roamed and up: keep
    assert pick_configured_endpoint("192.0.2.9:40000", NOW - 1000, cands, NOW) == cands[0]  # roamed and down
    assert pick_configured_endpoint("192.0.2.9:40000", 0, cands, NOW) == cands[0]
    assert pick_configured_endpoint("192.0.2.9:40000", 0, [], NOW) is None


def test_render_has_no_secret_material():
    d = desired(dpeer(2))
    text = render_device("kubespan", {"addresses": ["fd00::1/64"], "mtu": 1420, "up": True},
                         expected_device(d, None, "PUB", NOW), {key(2): "n2"})
    assert key(1) not in text and PSK not in text
    assert "[Peer] n2" in text and "allowed_ips = fd00::2/128" in text and "preshared_key = (set)" in text
    assert render_device("kubespan", {}, None, {}) == ""
