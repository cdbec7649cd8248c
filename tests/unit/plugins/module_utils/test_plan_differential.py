"""plan.plan_device, expected_device and render_device against the frozen code before the scale work
(frozen_plan_v1.py): the same update, the same change lines in the same order, the same expected device and
the same text, on random desired and current devices (peers added, removed, unchanged, with changed
AllowedIPs in any order, keepalive, preshared key, endpoints with and without a recent handshake)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import plan
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState
from ansible_collections.kubespan.mesh.tests.unit.plugins.module_utils import frozen_plan_v1 as old

KEYS = ["%s=" % (chr(65 + i) * 43) for i in range(6)]
PREFIXES = ["10.0.0.0/24", "10.0.1.0/24", "10.0.0.5/32", "fd00::/64", "fd7f::1/128"]
ENDPOINTS = ["10.0.0.1:51820", "[fd00::1]:51820", "10.0.0.2:51820"]
NOW = 1_000_000.0

_allowed = st.lists(st.sampled_from(PREFIXES), max_size=4, unique=True)
_psk = st.sampled_from([None, "", "B" * 43 + "=", "C" * 43 + "="])


@st.composite
def desired_peer(draw, key):
    return plan.DesiredPeer(public_key=key, allowed_ips=draw(_allowed), endpoints=draw(st.lists(st.sampled_from(ENDPOINTS), max_size=2)),
                            persistent_keepalive=draw(st.sampled_from([0, 25])), preshared_key=draw(_psk),
                            label=draw(st.sampled_from(["", "n1"])))


@st.composite
def current_peer(draw, key):
    return PeerState(public_key=key, endpoint=draw(st.one_of(st.none(), st.sampled_from(ENDPOINTS + ["192.0.2.9:4000"]))),
                     allowed_ips=draw(_allowed), persistent_keepalive=draw(st.sampled_from([0, 25])), preshared_key=draw(_psk),
                     last_handshake=draw(st.sampled_from([0.0, NOW - 10, NOW - 1000])))


@st.composite
def case(draw):
    desired_keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    current_keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    peers = [draw(desired_peer(k)) for k in desired_keys]
    desired = (plan.DesiredDevice(private_key=draw(st.sampled_from(["k1", "k2"])), listen_port=51820, fwmark=0x20, peers=peers),
               old.DesiredDevice(private_key="", listen_port=51820, fwmark=0x20,
                                 peers=[old.DesiredPeer(**vars(p)) for p in peers]))
    desired[1].private_key = desired[0].private_key
    current = None
    if draw(st.booleans()):
        current = DeviceState(private_key=draw(st.sampled_from([None, "k1"])), public_key="P", listen_port=draw(st.sampled_from([0, 51820])),
                              fwmark=draw(st.sampled_from([0, 0x20])))
        for key in current_keys:
            current.peers[key] = draw(current_peer(key))
    labels = {k: "name-" + k[:2] for k in draw(st.lists(st.sampled_from(KEYS), unique=True))}
    link = draw(st.sampled_from([{}, {"addresses": ["fd7f::1/128"], "mtu": 1420, "up": True}]))
    return desired, current, labels, link


def outcome(mod, desired, current, labels, link):
    update, changes = mod.plan_device(desired, current, NOW)
    after = mod.expected_device(desired, current, "PUB", NOW)
    return (update, changes, after, mod.render_device("kubespan", link, current, labels), mod.render_device("kubespan", link, after, labels))


@settings(max_examples=600, deadline=None)
@given(case())
def test_device_plan_matches_frozen_implementation(data):
    (new_desired, old_desired), current, labels, link = data
    assert outcome(plan, new_desired, current, labels, link) == outcome(old, old_desired, current, labels, link)


def test_unchanged_peer_listed_in_another_order_needs_no_update():
    """The same AllowedIPs in another order is no change (both codes sort them)."""
    desired = plan.DesiredDevice(private_key="k", listen_port=1, fwmark=0, peers=[
        plan.DesiredPeer(public_key=KEYS[0], allowed_ips=["fd00::/64", "10.0.0.0/24"], endpoints=[ENDPOINTS[0]])])
    current = DeviceState(private_key="k", listen_port=1, fwmark=0, peers={
        KEYS[0]: PeerState(public_key=KEYS[0], endpoint=ENDPOINTS[0], allowed_ips=["fd00::/64", "10.0.0.0/24"], persistent_keepalive=25)})
    update, changes = plan.plan_device(desired, current, NOW)
    assert update.is_empty() and changes == []
