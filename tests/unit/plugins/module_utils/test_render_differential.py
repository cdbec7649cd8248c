"""plan.render_device and keys.valid_node_id against frozen copies of their previous code (same text, same answers)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import keys, plan
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState


def old_render_device(ifname, link, device, labels):
    if device is None and not link:
        return ""
    lines = ["[Interface] %s" % ifname]
    if link:
        for key in ("addresses", "mtu", "up"):
            if key in link:
                value = link[key]
                lines.append("%s = %s" % (key, ", ".join(value) if isinstance(value, list) else value))
    if device is not None:
        lines.append("public_key = %s" % (device.public_key or "unset"))
        lines.append("listen_port = %s" % device.listen_port)
        lines.append("fwmark = %#x" % device.fwmark)
        for key in sorted(device.peers):
            peer = device.peers[key]
            lines.append("")
            lines.append("[Peer] %s" % (labels.get(key) or ""))
            lines.append("public_key = %s" % key)
            lines.append("preshared_key = %s" % ("(set)" if peer.preshared_key else "(none)"))
            lines.append("allowed_ips = %s" % ", ".join(sorted(peer.allowed_ips)))
            lines.append("endpoint = %s" % (peer.endpoint or "none"))
            lines.append("persistent_keepalive = %s" % peer.persistent_keepalive)
    return "\n".join(lines) + "\n"


def old_valid_node_id(node_id):
    return isinstance(node_id, str) and bool(node_id) and len(node_id) <= 256 and all(c in keys.BASE62_ALPHABET for c in node_id)


_text = st.text(min_size=0, max_size=12)
_peer = st.builds(PeerState, public_key=_text, endpoint=st.one_of(st.none(), _text), allowed_ips=st.lists(_text, max_size=4),
                  persistent_keepalive=st.integers(0, 100), preshared_key=st.one_of(st.none(), _text))
_device = st.builds(DeviceState, public_key=_text, listen_port=st.integers(0, 65535), fwmark=st.integers(0, 2 ** 32 - 1),
                    peers=st.dictionaries(_text, _peer, max_size=5))
_link = st.dictionaries(st.sampled_from(["addresses", "mtu", "up", "other"]),
                        st.one_of(st.lists(_text, max_size=3), st.integers(), st.booleans()), max_size=4)


@settings(max_examples=300, deadline=None)
@given(_text, _link, st.one_of(st.none(), _device), st.dictionaries(_text, st.one_of(st.none(), _text), max_size=5))
def test_render_device_same_text(ifname, link, device, labels):
    assert plan.render_device(ifname, link, device, labels) == old_render_device(ifname, link, device, labels)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet=keys.BASE62_ALPHABET + " -_/.\n\u00e9", max_size=260), st.text(max_size=20),
                 st.integers(), st.none(), st.binary(max_size=5)))
def test_valid_node_id_same_answer(node_id):
    assert keys.valid_node_id(node_id) == old_valid_node_id(node_id)


def test_valid_node_id_examples():
    assert keys.valid_node_id("abcXYZ019")
    assert not keys.valid_node_id("abc XYZ")
    assert not keys.valid_node_id(" abc")
    assert not keys.valid_node_id("")
    assert not keys.valid_node_id("a" * 257)
    assert keys.valid_node_id("a" * 256)
