# -*- coding: utf-8 -*-
"""Unit tests of the pure parts of the kernel WireGuard transport (no kernel, no netlink socket)."""

from __future__ import annotations

import base64
import socket
import struct

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import (
    DeviceUpdate,
    PeerUpdate,
    WireGuardError,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.host.wg_kernel import (
    MAX_MESSAGE_BYTES,
    NLM_F_DUMP_INTR,
    WG_CMD_GET_DEVICE,
    WG_CMD_SET_DEVICE,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    KernelWireGuard,
    allowed_ip_attr,
    make_message,
    parse_device_dump,
    peer_attr_chunks,
    set_device_batches,
)

pyroute2 = pytest.importorskip("pyroute2")
from pyroute2.netlink.generic.wireguard import wgmsg  # noqa: E402


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 32).decode()


K1, K2, K3, PSK = key(1), key(2), key(3), key(9)
ZERO = base64.b64encode(bytes(32)).decode()


def attrs_dict(attrs):
    return dict(attrs)


def only_chunk(peer):
    chunks = peer_attr_chunks(peer)
    assert len(chunks) == 1
    return attrs_dict(chunks[0][0])


def roundtrip(cmd, attrs):
    """Encode with pyroute2 exactly as apply()/read() do, decode the bytes again."""
    msg = make_message(cmd, attrs)
    msg.encode()
    data = bytes(msg.data)
    back = wgmsg(data)
    back.decode()
    return data, back


# --- real kernel flag values (pyroute2 0.7.2's constants are bit indices) ----------------------------


def test_flag_values_are_the_kernels():
    assert (WGPEER_F_REMOVE_ME, WGPEER_F_REPLACE_ALLOWEDIPS, WGPEER_F_UPDATE_ONLY) == (1, 2, 4)


# --- peer messages -----------------------------------------------------------------------------------


def test_peer_full_add():
    a = only_chunk(PeerUpdate(public_key=K1, endpoint="192.0.2.1:51820", allowed_ips=["fd00::1/128", "10.0.0.5/32"],
                              persistent_keepalive=25, preshared_key=PSK))
    assert a["WGPEER_A_PUBLIC_KEY"] == K1
    assert a["WGPEER_A_FLAGS"] == WGPEER_F_REPLACE_ALLOWEDIPS
    assert a["WGPEER_A_PRESHARED_KEY"] == PSK
    assert a["WGPEER_A_ENDPOINT"] == {"addr": "192.0.2.1", "port": 51820}
    assert a["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] == 25
    ips = a["WGPEER_A_ALLOWEDIPS"]
    assert [attrs_dict(e["attrs"]) for e in ips] == [
        {"WGALLOWEDIP_A_FAMILY": socket.AF_INET6, "WGALLOWEDIP_A_IPADDR": socket.inet_pton(socket.AF_INET6, "fd00::1"), "WGALLOWEDIP_A_CIDR_MASK": 128},
        {"WGALLOWEDIP_A_FAMILY": socket.AF_INET, "WGALLOWEDIP_A_IPADDR": socket.inet_pton(socket.AF_INET, "10.0.0.5"), "WGALLOWEDIP_A_CIDR_MASK": 32},
    ]


def test_peer_remove_sends_only_key_and_remove_flag():
    chunks = peer_attr_chunks(PeerUpdate(public_key=K1, remove=True, endpoint="192.0.2.1:1", allowed_ips=["10.0.0.0/8"]))
    assert chunks[0][0] == [["WGPEER_A_PUBLIC_KEY", K1], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]]


def test_peer_update_only_endpoint():
    a = only_chunk(PeerUpdate(public_key=K1, endpoint="[2001:db8::1]:51820", update_only=True))
    assert a == {"WGPEER_A_PUBLIC_KEY": K1, "WGPEER_A_FLAGS": WGPEER_F_UPDATE_ONLY,
                 "WGPEER_A_ENDPOINT": {"addr": "2001:db8::1", "port": 51820}}


def test_peer_update_only_with_allowed_ips_sets_both_flags():
    a = only_chunk(PeerUpdate(public_key=K1, allowed_ips=["10.1.0.0/16"], update_only=True))
    assert a["WGPEER_A_FLAGS"] == WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS


def test_peer_none_fields_are_not_sent():
    assert only_chunk(PeerUpdate(public_key=K1)) == {"WGPEER_A_PUBLIC_KEY": K1}


def test_peer_empty_allowed_ips_replaces_with_nothing():
    a = only_chunk(PeerUpdate(public_key=K1, allowed_ips=[]))
    assert a == {"WGPEER_A_PUBLIC_KEY": K1, "WGPEER_A_FLAGS": WGPEER_F_REPLACE_ALLOWEDIPS}


def test_peer_keepalive_zero_is_sent():
    assert only_chunk(PeerUpdate(public_key=K1, persistent_keepalive=0))["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] == 0


def test_peer_empty_preshared_key_clears():
    assert only_chunk(PeerUpdate(public_key=K1, preshared_key=""))["WGPEER_A_PRESHARED_KEY"] == ZERO


def test_allowed_ip_host_bits_cleared():
    a = attrs_dict(allowed_ip_attr("10.1.2.3/16")["attrs"])
    assert a["WGALLOWEDIP_A_IPADDR"] == socket.inet_pton(socket.AF_INET, "10.1.0.0")
    assert a["WGALLOWEDIP_A_CIDR_MASK"] == 16
    assert attrs_dict(allowed_ip_attr("fd00::1")["attrs"])["WGALLOWEDIP_A_CIDR_MASK"] == 128


@pytest.mark.parametrize("peer", [
    PeerUpdate(public_key="not-a-key"),
    PeerUpdate(public_key=K1, preshared_key="short"),
    PeerUpdate(public_key=K1, endpoint="example.com:51820"),
    PeerUpdate(public_key=K1, endpoint="[fe80::1%2]:51820"),
    PeerUpdate(public_key=K1, endpoint="10.0.0.1"),
    PeerUpdate(public_key=K1, allowed_ips=["10.0.0.300/32"]),
    PeerUpdate(public_key=K1, allowed_ips="10.0.0.0/8"),
    PeerUpdate(public_key=K1, persistent_keepalive=70000),
    PeerUpdate(public_key=K1, persistent_keepalive=True),
])
def test_peer_invalid_values_raise_value_error(peer):
    with pytest.raises(ValueError):
        peer_attr_chunks(peer)


# --- device messages and splitting -------------------------------------------------------------------


def test_empty_update_sends_nothing():
    assert set_device_batches("kubespan", DeviceUpdate()) == []


def test_device_attrs_first_message():
    batches = set_device_batches("kubespan", DeviceUpdate(private_key=K3, listen_port=51820, fwmark=0x20))
    assert batches == [[["WGDEVICE_A_IFNAME", "kubespan"], ["WGDEVICE_A_PRIVATE_KEY", K3],
                        ["WGDEVICE_A_LISTEN_PORT", 51820], ["WGDEVICE_A_FWMARK", 0x20]]]


@pytest.mark.parametrize("update", [DeviceUpdate(listen_port=70000), DeviceUpdate(fwmark=-1), DeviceUpdate(private_key="x")])
def test_device_invalid_values(update):
    with pytest.raises(ValueError):
        set_device_batches("kubespan", update)


def test_many_peers_split_over_messages_in_order():
    keys = [base64.b64encode(struct.pack(">I", i) + bytes(28)).decode() for i in range(2000)]
    peers = [PeerUpdate(public_key=k, endpoint="[2001:db8::1]:51820", allowed_ips=["fd00::%x/128" % i], persistent_keepalive=25, preshared_key=PSK)
             for i, k in enumerate(keys)]
    update = DeviceUpdate(private_key=K3, peers=peers)
    batches = set_device_batches("kubespan", update)
    assert len(batches) > 1
    assert attrs_dict(batches[0])["WGDEVICE_A_PRIVATE_KEY"] == K3
    sent = []
    for i, attrs in enumerate(batches):
        a = attrs_dict(attrs)
        assert a["WGDEVICE_A_IFNAME"] == "kubespan"
        if i:
            assert set(a) == {"WGDEVICE_A_IFNAME", "WGDEVICE_A_PEERS"}
        data, back = roundtrip(WG_CMD_SET_DEVICE, attrs)
        assert len(data) <= MAX_MESSAGE_BYTES
        sent += [p.get_attr("WGPEER_A_PUBLIC_KEY").decode() for p in back.get_attr("WGDEVICE_A_PEERS")]
    assert sent == keys


def test_size_estimate_matches_encoding():
    update = DeviceUpdate(private_key=K3, listen_port=1, fwmark=2, peers=[
        PeerUpdate(public_key=K1, endpoint="192.0.2.1:5", allowed_ips=["10.0.0.0/8", "fd00::/64"], persistent_keepalive=25, preshared_key=PSK),
        PeerUpdate(public_key=K2, endpoint="[2001:db8::1]:5", update_only=True),
        PeerUpdate(public_key=K3, remove=True),
    ])
    # a budget exactly the encoded size keeps one message; one byte less splits it
    (attrs,) = set_device_batches("kubespan", update)
    data = roundtrip(WG_CMD_SET_DEVICE, attrs)[0]
    assert len(set_device_batches("kubespan", update, len(data))) == 1
    assert len(set_device_batches("kubespan", update, len(data) - 1)) == 2


def test_one_peer_with_many_allowed_ips_is_continued():
    cidrs = ["fd00::%x:1/128" % i for i in range(1, 3001)]
    for update_only in (False, True):
        batches = set_device_batches("kubespan", DeviceUpdate(peers=[PeerUpdate(public_key=K1, allowed_ips=cidrs, endpoint="192.0.2.1:5",
                                                                                update_only=update_only)]))
        assert len(batches) > 1
        got = []
        for i, attrs in enumerate(batches):
            data, back = roundtrip(WG_CMD_SET_DEVICE, attrs)
            assert len(data) <= MAX_MESSAGE_BYTES
            (peer,) = back.get_attr("WGDEVICE_A_PEERS")
            flags = peer.get_attr("WGPEER_A_FLAGS") or 0
            if i == 0:
                assert flags == WGPEER_F_REPLACE_ALLOWEDIPS | (WGPEER_F_UPDATE_ONLY if update_only else 0)
                assert peer.get_attr("WGPEER_A_ENDPOINT")["addr"] == "192.0.2.1"
            else:
                # continuation: never REPLACE_ALLOWEDIPS again, keep UPDATE_ONLY so nothing gets created
                assert flags == (WGPEER_F_UPDATE_ONLY if update_only else 0)
                assert peer.get_attr("WGPEER_A_ENDPOINT") is None
            got += [a["addr"] for a in peer.get_attr("WGPEER_A_ALLOWEDIPS")]
        assert got == cidrs


def test_encoded_flags_and_endpoints_on_the_wire():
    update = DeviceUpdate(peers=[
        PeerUpdate(public_key=K1, remove=True),
        PeerUpdate(public_key=K2, endpoint="[2001:db8::2]:51821", update_only=True),
        PeerUpdate(public_key=K3, endpoint="198.51.100.7:51820", allowed_ips=["10.9.0.0/16"]),
    ])
    (attrs,) = set_device_batches("wg0", update)
    data, back = roundtrip(WG_CMD_SET_DEVICE, attrs)
    assert struct.unpack_from("B", data, 16)[0] == WG_CMD_SET_DEVICE
    assert struct.unpack_from("B", data, 17)[0] == 1  # genl version
    p1, p2, p3 = back.get_attr("WGDEVICE_A_PEERS")
    assert p1.get_attr("WGPEER_A_FLAGS") == 1
    assert p2.get_attr("WGPEER_A_FLAGS") == 4
    ep = p2.get_attr("WGPEER_A_ENDPOINT")
    assert (ep["family"], ep["addr"], ep["port"]) == (socket.AF_INET6, "2001:db8::2", 51821)
    assert p3.get_attr("WGPEER_A_FLAGS") == 2
    ep = p3.get_attr("WGPEER_A_ENDPOINT")
    assert (ep["family"], ep["addr"], ep["port"]) == (socket.AF_INET, "198.51.100.7", 51820)
    # sockaddr_in on the wire: family (host order), port (network order), address
    raw = socket.inet_pton(socket.AF_INET, "198.51.100.7")
    assert struct.pack("=H", socket.AF_INET) + struct.pack(">H", 51820) + raw in data


def test_get_message():
    data, back = roundtrip(WG_CMD_GET_DEVICE, [["WGDEVICE_A_IFNAME", "kubespan"]])
    assert back.get_attr("WGDEVICE_A_IFNAME") == "kubespan"
    assert struct.unpack_from("B", data, 16)[0] == WG_CMD_GET_DEVICE


# --- dump parsing ------------------------------------------------------------------------------------


def dump_msg(attrs, flags=0):
    """A dump message as the kernel sends it, decoded by pyroute2 as read() receives it."""
    back = roundtrip(WG_CMD_GET_DEVICE, attrs)[1]
    back["header"]["flags"] = flags
    return back


def allowed(*cidrs):
    return [allowed_ip_attr(c) for c in cidrs]


def kernel_peer(pub, **kw):
    attrs = [["WGPEER_A_PUBLIC_KEY", pub]]
    if "psk" in kw:
        attrs.append(["WGPEER_A_PRESHARED_KEY", kw["psk"]])
    if "endpoint" in kw:
        attrs.append(["WGPEER_A_ENDPOINT", kw["endpoint"]])
    if "keepalive" in kw:
        attrs.append(["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", kw["keepalive"]])
    if "handshake" in kw:
        attrs.append(["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": kw["handshake"][0], "tv_nsec": kw["handshake"][1]}])
    if "rx" in kw:
        attrs += [["WGPEER_A_RX_BYTES", kw["rx"]], ["WGPEER_A_TX_BYTES", kw["tx"]], ["WGPEER_A_PROTOCOL_VERSION", 1]]
    if "ips" in kw:
        attrs.append(["WGPEER_A_ALLOWEDIPS", allowed(*kw["ips"])])
    return {"attrs": attrs}


DEVICE_ATTRS = [["WGDEVICE_A_LISTEN_PORT", 51820], ["WGDEVICE_A_FWMARK", 0x20], ["WGDEVICE_A_IFINDEX", 7], ["WGDEVICE_A_IFNAME", "kubespan"],
                ["WGDEVICE_A_PRIVATE_KEY", K3], ["WGDEVICE_A_PUBLIC_KEY", K2]]


def test_parse_single_message():
    msg = dump_msg(DEVICE_ATTRS + [["WGDEVICE_A_PEERS", [
        kernel_peer(K1, psk=ZERO, endpoint={"addr": "2001:db8::1", "port": 51820}, keepalive=25, handshake=(1700000000, 250000000),
                    rx=1000, tx=2000, ips=["fd00::2/128", "10.0.0.0/8", "fd00::1/128"]),
        kernel_peer(PSK, psk=K1, endpoint={"addr": "192.0.2.9", "port": 4000}, keepalive=0, handshake=(0, 0), rx=0, tx=0, ips=[]),
    ]]])
    state = parse_device_dump([msg])
    assert (state.listen_port, state.fwmark, state.private_key, state.public_key) == (51820, 0x20, K3, K2)
    p = state.peers[K1]
    assert p.public_key == K1
    assert p.preshared_key is None
    assert p.endpoint == "[2001:db8::1]:51820"
    assert p.persistent_keepalive == 25
    assert p.last_handshake == pytest.approx(1700000000.25)
    assert (p.rx_bytes, p.tx_bytes) == (1000, 2000)
    assert p.allowed_ips == sorted(["fd00::2/128", "10.0.0.0/8", "fd00::1/128"])
    q = state.peers[PSK]
    assert (q.preshared_key, q.endpoint, q.last_handshake, q.allowed_ips) == (K1, "192.0.2.9:4000", 0.0, [])


def test_parse_device_without_peers_or_keys():
    state = parse_device_dump([dump_msg([["WGDEVICE_A_LISTEN_PORT", 0], ["WGDEVICE_A_FWMARK", 0], ["WGDEVICE_A_IFNAME", "kubespan"]])])
    assert (state.private_key, state.public_key, state.listen_port, state.peers) == (None, None, 0, {})


def test_parse_peer_without_endpoint():
    state = parse_device_dump([dump_msg(DEVICE_ATTRS + [["WGDEVICE_A_PEERS", [kernel_peer(K1, psk=ZERO, keepalive=0, ips=["fd00::1/128"])]]])])
    assert state.peers[K1].endpoint is None


def test_parse_merges_multi_message_dump():
    """The kernel's split: device attrs once, peers over several messages, one peer's allowed IPs continued."""
    first = dump_msg(DEVICE_ATTRS + [["WGDEVICE_A_PEERS", [
        kernel_peer(K1, psk=PSK, endpoint={"addr": "192.0.2.1", "port": 51820}, keepalive=25, handshake=(100, 0), rx=1, tx=2,
                    ips=["fd00::1/128"]),
        kernel_peer(K2, psk=ZERO, endpoint={"addr": "192.0.2.2", "port": 51820}, keepalive=0, handshake=(200, 0), rx=3, tx=4,
                    ips=["10.0.0.0/24", "10.0.1.0/24"]),
    ]]], flags=0x2)  # NLM_F_MULTI
    second = dump_msg([["WGDEVICE_A_PEERS", [
        kernel_peer(K2, ips=["10.0.2.0/24", "10.0.3.0/24"]),  # continuation: key + more allowed IPs only
        kernel_peer(K3, psk=ZERO, keepalive=5, handshake=(0, 0), rx=0, tx=0, ips=["fd00::3/128"]),
    ]]], flags=0x2)
    state = parse_device_dump([first, second])
    assert (state.listen_port, state.fwmark, state.private_key) == (51820, 0x20, K3)
    assert sorted(state.peers) == sorted([K1, K2, K3])
    p2 = state.peers[K2]
    assert p2.allowed_ips == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
    assert (p2.endpoint, p2.last_handshake, p2.rx_bytes, p2.tx_bytes) == ("192.0.2.2:51820", 200.0, 3, 4)
    assert state.peers[K1].preshared_key == PSK
    assert state.peers[K3].persistent_keepalive == 5


def test_parse_plain_dicts():
    """The parser also takes plain {'attrs': [...]} structures with raw bytes (independent of pyroute2's decoding)."""
    raw_ip = socket.inet_pton(socket.AF_INET6, "fd00::5")
    msg = {"attrs": [["WGDEVICE_A_LISTEN_PORT", 1], ["WGDEVICE_A_PEERS", [{"attrs": [
        ["WGPEER_A_PUBLIC_KEY", bytes([1]) * 32],
        ["WGPEER_A_ALLOWEDIPS", [{"attrs": [["WGALLOWEDIP_A_FAMILY", socket.AF_INET6], ["WGALLOWEDIP_A_IPADDR", raw_ip],
                                            ["WGALLOWEDIP_A_CIDR_MASK", 128]]}]],
    ]}]]]}
    state = parse_device_dump([msg])
    assert state.peers[K1].allowed_ips == ["fd00::5/128"]


# --- KernelWireGuard with a fake socket ----------------------------------------------------------------


class FakeSock:
    prid = 42

    def __init__(self, answers):
        self.answers = list(answers)
        self.sent = []
        self.closed = False

    def nlm_request(self, msg, msg_type, msg_flags):
        msg.encode()
        self.sent.append((bytes(msg.data), msg_type, msg_flags))
        return iter(self.answers.pop(0))

    def close(self):
        self.closed = True


def fake_device(answers):
    dev = KernelWireGuard.__new__(KernelWireGuard)
    dev.ifname = "kubespan"
    dev.max_message_bytes = MAX_MESSAGE_BYTES
    dev._sock = FakeSock(answers)
    return dev


def test_read_retries_interrupted_dump():
    peer = [["WGDEVICE_A_PEERS", [kernel_peer(K1, psk=ZERO, keepalive=0, ips=[])]]]
    dev = fake_device([[dump_msg(DEVICE_ATTRS + peer, flags=NLM_F_DUMP_INTR)], [dump_msg(DEVICE_ATTRS), dump_msg(peer)]])
    sock = dev._sock
    with dev:
        state = dev.read()
    assert list(state.peers) == [K1]
    assert len(sock.sent) == 2
    assert sock.closed


def test_apply_sends_each_batch_with_ack():
    dev = fake_device([[], []])
    sock = dev._sock
    dev.max_message_bytes = 150
    dev.apply(DeviceUpdate(listen_port=1, peers=[PeerUpdate(public_key=K1, allowed_ips=["10.0.0.0/8"]), PeerUpdate(public_key=K2, remove=True)]))
    assert len(sock.sent) == 2
    assert all(t == 42 and f == 0x5 for _msg, t, f in sock.sent)
    dev.close()
    assert sock.closed and dev._sock is None


def test_apply_validates_before_sending():
    dev = fake_device([])
    with pytest.raises(WireGuardError):
        dev.apply(DeviceUpdate(listen_port=1, peers=[PeerUpdate(public_key=K1), PeerUpdate(public_key="bad")]))
    assert dev._sock.sent == []
