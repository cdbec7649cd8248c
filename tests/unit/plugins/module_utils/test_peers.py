"""Peer set: validation, --limit memory, removal, collisions."""

import base64
import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.peers import PeerError, build_peer_set

SUBNET = ipaddress.IPv6Network("fd7f:175a:b97c:5602::/64")


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


def aff(name, n, endpoints=("10.0.0.%d:51820",)):
    return {"name": name, "node_id": "id%d" % n, "public_key": key(n), "address": "fd7f:175a:b97c:5602::%d" % n,
            "endpoints": [e % n if "%d" in e else e for e in endpoints]}


LOCAL = dict(local_public_key=key(1), local_address="fd7f:175a:b97c:5602::1/128", subnet=SUBNET)


def names(peers):
    return sorted(p["name"] for p in peers)


def test_full_mesh_skips_self_and_sets_allowed_ips():
    peers, warnings = build_peer_set(affiliates=[aff("n1", 1), aff("n2", 2), aff("n3", 3)], members=["n1", "n2", "n3"], local_name="n1", **LOCAL)
    assert names(peers) == ["n2", "n3"] and warnings == []
    assert [p["allowed_ips"] for p in peers] == [["fd7f:175a:b97c:5602::2/128"], ["fd7f:175a:b97c:5602::3/128"]]
    assert [p["public_key"] for p in peers] == sorted(p["public_key"] for p in peers)


def test_limit_keeps_last_known_members():
    last = [aff("n2", 2), aff("n3", 3)]
    peers, warnings = build_peer_set(affiliates=[aff("n1", 1)], members=["n1", "n2", "n3"], last_known=last, local_name="n1", **LOCAL)
    assert names(peers) == ["n2", "n3"]
    assert any("n2 is not in this play" in w for w in warnings)


def test_host_removed_from_group_is_dropped():
    last = [aff("n2", 2), aff("n3", 3)]
    peers, _warnings = build_peer_set(affiliates=[aff("n1", 1), aff("n2", 2)], members=["n1", "n2"], last_known=last, local_name="n1", **LOCAL)
    assert names(peers) == ["n2"]


def test_unknown_member_warns():
    peers, warnings = build_peer_set(affiliates=[aff("n1", 1)], members=["n1", "n9"], local_name="n1", **LOCAL)
    assert peers == [] and "n9" in warnings[0]


def test_fresh_data_wins_over_last_known():
    new = aff("n2", 2, endpoints=("192.0.2.2:51820",))
    peers, _warnings = build_peer_set(affiliates=[new], members=["n2"], last_known=[aff("n2", 2)], **LOCAL)
    assert peers[0]["endpoints"] == ["192.0.2.2:51820"]


def test_endpoints_normalized_and_deduplicated():
    a = aff("n2", 2, endpoints=("10.0.0.2:51820", "[2001:DB8::0002]:51820", "10.0.0.2:51820"))
    peers, _warnings = build_peer_set(affiliates=[a], **LOCAL)
    assert peers[0]["endpoints"] == ["10.0.0.2:51820", "[2001:db8::2]:51820"]


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.update(public_key="short"), "n2: public_key"),
    (lambda a: a.update(address="10.0.0.1"), "n2: address"),
    (lambda a: a.update(address="fd00::2"), "disagree on kubespan_cluster_id"),
    (lambda a: a.update(endpoints=["10.0.0.2"]), "n2: endpoint"),
    (lambda a: a.update(endpoints=["host:51820"]), "not an IP address"),
    (lambda a: a.update(endpoints=["10.0.0.2:0"]), "port must be"),
    (lambda a: a.update(node_id="bad id!"), "node_id"),
])
def test_bad_affiliate_is_named(mutate, match):
    a = aff("n2", 2)
    mutate(a)
    with pytest.raises(PeerError, match=match):
        build_peer_set(affiliates=[a], **LOCAL)


def test_duplicate_public_key_names_both_hosts():
    b = aff("n3", 3)
    b["public_key"] = key(2)
    with pytest.raises(PeerError, match="n2 and n3 have the same public key"):
        build_peer_set(affiliates=[aff("n2", 2), b], **LOCAL)


def test_cloned_local_identity_detected():
    clone = aff("n5", 5)
    clone["public_key"] = key(1)
    with pytest.raises(PeerError, match="this node's own public key"):
        build_peer_set(affiliates=[clone], local_name="n1", **LOCAL)


def test_address_collisions():
    b = aff("n3", 3)
    b["address"] = "fd7f:175a:b97c:5602::2"
    # issue 17: a shared KubeSpan address (cloned MACs) is trimmed like any overlap, never an error: both peers
    # stay, the first in node-ID order keeps the address (Talos's rule), and the warnings name both
    a = dict(aff("n2", 2), node_id="B" * 43)
    b["node_id"] = "A" * 43
    specs, warnings = build_peer_set(affiliates=[a, b], **LOCAL)
    by_name = {s["name"]: s["allowed_ips"] for s in specs}
    assert sorted(by_name) == ["n2", "n3"]
    assert "fd7f:175a:b97c:5602::2/128" in by_name["n3"] and "fd7f:175a:b97c:5602::2/128" not in by_name["n2"]
    assert any("n2" in w and "n3" in w and "same KubeSpan address" in w for w in warnings)
    assert any("overlap" in w and "n2" in w and "n3" in w and "fd7f:175a:b97c:5602::2/128" in w for w in warnings)
    c = aff("n4", 4)
    c["address"] = "fd7f:175a:b97c:5602::1"
    specs, warnings = build_peer_set(affiliates=[c], **LOCAL)
    assert [s["name"] for s in specs] == ["n4"] and "fd7f:175a:b97c:5602::1/128" not in specs[0]["allowed_ips"]
    assert any("own KubeSpan address" in w and "n4" in w for w in warnings)


def test_corrupt_last_known_is_ignored_with_warning():
    bad = aff("n2", 2)
    bad["public_key"] = "x"
    peers, warnings = build_peer_set(affiliates=[], members=["n2"], last_known=[bad], **LOCAL)
    assert peers == [] and any("ignoring last-known" in w for w in warnings)
