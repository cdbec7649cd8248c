"""Discovered affiliates: sealing and opening, conversion, and the merge rules (own ID, empty data, overlaps)."""

import base64
import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_affiliates as da
from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_crypto as c
from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as w
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peers import build_peer_set

SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
KEY = c.key_from_secret(SECRET)
OTHER_KEY = bytes(range(32))
SUBNET = ipaddress.IPv6Network("fd7f:175a:b97c:5602::/64")


def pub(n):
    return base64.b64encode(bytes([n]) * 32).decode()


def node_id(n):
    return "Node%dId" % n


def aff(n, **extra):
    base = {"name": "n%d" % n, "node_id": node_id(n), "public_key": pub(n), "address": "fd7f:175a:b97c:5602::%d" % n,
            "endpoints": ["10.0.0.%d:51820" % n], "addresses": ["10.0.0.%d" % n]}
    base.update(extra)
    return base


def published(a, key=KEY, affiliate_id=None):
    data, endpoints = da.seal_affiliate(key, a)
    return w.ServerAffiliate(id=affiliate_id or a["node_id"], data=data, endpoints=endpoints)


LOCAL = dict(subnet=SUBNET, local_node_id=node_id(1), local_public_key=pub(1), local_address="fd7f:175a:b97c:5602::1/128",
             local_addresses=["10.0.0.1"], local_networks=["10.244.1.0/24"])


def test_round_trip_through_seal_and_open():
    a = aff(2, additional_addresses=["10.244.2.0/24"], exclude_advertised_networks=["10.244.2.128/25"],
            endpoints=["10.0.0.2:51820", "[2001:db8::2]:51820"], addresses=["10.0.0.2", "2001:db8::2"])
    got, reasons = da.open_affiliate(KEY, published(a))
    assert reasons == []
    assert got == dict(a, source="discovery")


def test_wire_form_matches_talos_fields():
    msg, endpoints = da.affiliate_message(aff(2, additional_addresses=["10.244.3.1/24"]), hostname="n2.example")
    assert msg.node_id == node_id(2) and msg.nodename == "n2" and msg.hostname == "n2.example"
    assert msg.kubespan.address == ipaddress.IPv6Address("fd7f:175a:b97c:5602::2").packed
    assert msg.kubespan.additional_addresses == [w.IPPrefix(ip=bytes([10, 244, 3, 1]), bits=24)]
    assert msg.addresses == [bytes([10, 0, 0, 2])]
    assert [e.encode().hex() for e in endpoints] == ["0a040a00000210ec9403"]


def test_empty_data_is_skipped_without_reason_and_own_id_is_skipped():
    assert da.open_affiliate(KEY, w.ServerAffiliate(id="x", endpoints=[b"\0" * 16])) == (None, [])
    got, reasons = da.open_affiliates(KEY, [published(aff(1)), published(aff(2))], local_node_id=node_id(1))
    assert [a["name"] for a in got] == ["n2"] and reasons == []


@pytest.mark.parametrize("mangle, why", [
    (lambda sa: w.ServerAffiliate(id=sa.id, data=published(aff(2), key=OTHER_KEY).data), "does not authenticate"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=sa.data[:-1] + bytes([sa.data[-1] ^ 1])), "does not authenticate"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=b"\0" * 3000), "more than the 2048"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=b"short"), "shorter than nonce"),
    (lambda sa: w.ServerAffiliate(id="Node9Id", data=sa.data), "belongs to node 'Node2Id'"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=c.seal_data(KEY, b"\x0a\x05ab")), "runs past the end"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=c.seal_data(KEY, w.ClientAffiliate(node_id=sa.id).encode())), "no KubeSpan data"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=c.seal_data(KEY, w.ClientAffiliate(
        node_id=sa.id, kubespan=w.KubeSpan(public_key=pub(2), address=b"\1\2\3\4")).encode())), "not IPv6"),
    (lambda sa: w.ServerAffiliate(id=sa.id, data=c.seal_data(KEY, w.ClientAffiliate(
        node_id=sa.id, kubespan=w.KubeSpan(public_key="bad", address=b"\0" * 16)).encode())), "public key"),
])
def test_forged_or_corrupt_affiliates_are_dropped_with_a_reason(mangle, why):
    got, reasons = da.open_affiliate(KEY, mangle(published(aff(2))))
    assert got is None
    assert len(reasons) == 1 and why in reasons[0] and "dropped" in reasons[0]


def test_bad_endpoint_blobs_are_skipped_one_by_one():
    sa = published(aff(2, endpoints=["10.0.0.2:51820", "10.0.1.2:51820"]))
    sa.endpoints = [sa.endpoints[0], b"\0" * 16, b"\0" * 5, c.seal_endpoint(OTHER_KEY, b"\x0a\x04\1\2\3\4\x10\x01")]
    got, reasons = da.open_affiliate(KEY, sa)
    assert got["endpoints"] == ["10.0.0.2:51820"]
    assert len(reasons) == 3 and all("endpoint was skipped" in r for r in reasons)


def discovered(*affs):
    return [dict(a, source="discovery") for a in affs]


def test_merge_adds_new_nodes_and_unions_lists_of_known_ones():
    inventory = [aff(1), aff(2)]
    found = discovered(aff(2, endpoints=["203.0.113.2:4000"], addresses=["10.0.0.2", "192.168.5.2"]), aff(3))
    merged, reasons = da.merge_affiliates(inventory, found, **LOCAL)
    assert reasons == []
    by_name = {a["name"]: a for a in merged}
    assert sorted(by_name) == ["n1", "n2", "n3"]
    assert by_name["n2"]["endpoints"] == ["10.0.0.2:51820", "203.0.113.2:4000"]  # inventory's first
    assert by_name["n2"]["addresses"] == ["10.0.0.2", "192.168.5.2"]
    assert "source" not in by_name["n2"] and by_name["n3"]["source"] == "discovery"
    peers, unused = build_peer_set(pub(1), "fd7f:175a:b97c:5602::1/128", SUBNET, merged, members=["n1", "n2"], local_name="n1")
    assert sorted(p["name"] for p in peers) == ["n2", "n3"]


def test_merge_skips_own_node_id_and_drops_own_public_key():
    merged, reasons = da.merge_affiliates([], discovered(aff(1), aff(5, public_key=pub(1))), **LOCAL)
    assert merged == []
    assert len(reasons) == 1 and "this node's public key" in reasons[0]


@pytest.mark.parametrize("intruder, why", [
    (aff(4, public_key=pub(2)), "public key belongs to another peer"),
    (aff(4, name="n2"), "the name n2 belongs to another peer"),
    (aff(4, address="fd00::4"), "outside this cluster's subnet"),
    (aff(4, endpoints=["nonsense"]), "endpoint"),
])
def test_discovered_affiliate_with_a_bad_identity_is_dropped(intruder, why):
    merged, reasons = da.merge_affiliates([aff(1), aff(2)], discovered(intruder), **LOCAL)
    assert [a["name"] for a in merged] == ["n1", "n2"]
    assert len(reasons) == 1 and why in reasons[0] and "dropped" in reasons[0], reasons


def _specs(merged):
    specs, warnings = build_peer_set(pub(1), "fd7f:175a:b97c:5602::1/128", SUBNET, merged, None, None, "n1",
                                     LOCAL["local_addresses"], LOCAL["local_networks"])
    return {s["name"]: s["allowed_ips"] for s in specs}, warnings


@pytest.mark.parametrize("intruder, kept, lost, warned", [
    # issue 17: an overlap is trimmed, the peer is kept (Talos's peer_spec.go); node IDs Node2Id < Node4Id
    (aff(4, addresses=["10.0.0.1"]), [], ["10.0.0.1/32"], "this node's own addresses 10.0.0.1/32"),
    (aff(4, additional_addresses=["10.244.0.0/16"]), ["10.244.0.0/24", "10.244.128.0/17"], ["10.244.1.0/24"],
     "this node's own addresses 10.244.1.0/24"),
    (aff(4, addresses=["10.0.0.2"]), [], ["10.0.0.2/32"], "claims 10.0.0.2/32, already held by peer n2"),
    (aff(4, additional_addresses=["10.0.0.2/31"]), ["10.0.0.3/32"], ["10.0.0.2/32"], "claims 10.0.0.2/32, already held by peer n2"),
    (aff(4, address="fd7f:175a:b97c:5602::2"), [], ["fd7f:175a:b97c:5602::2/128"], "have the same KubeSpan address"),
])
def test_overlapping_discovered_affiliate_is_trimmed_and_kept(intruder, kept, lost, warned):
    merged, reasons = da.merge_affiliates([aff(1), aff(2)], discovered(intruder), **LOCAL)
    assert [a["name"] for a in merged] == ["n1", "n2", "n4"] and reasons == []
    specs, warnings = _specs(merged)
    assert sorted(specs) == ["n2", "n4"]
    assert all(p in specs["n4"] for p in kept) and not any(p in specs["n4"] for p in lost), specs
    assert "10.0.0.2/32" in specs["n2"] and "fd7f:175a:b97c:5602::2/128" in specs["n2"]
    assert any(warned in w and "n4" in w for w in warnings), warnings


def test_exclusions_make_a_claim_acceptable():
    ok = aff(4, additional_addresses=["10.0.0.0/24"], exclude_advertised_networks=["10.0.0.0/29"])  # .1 and .2 excluded
    merged, reasons = da.merge_affiliates([aff(1), aff(2)], discovered(ok), **LOCAL)
    assert reasons == [] and [a["name"] for a in merged] == ["n1", "n2", "n4"]
    specs, warnings = _specs(merged)
    assert warnings == [] and specs["n4"][0] == "10.0.0.8/29"


def test_two_discovered_peers_with_one_node_address_are_both_meshed():
    # two nodes behind two NATs that both have 10.9.9.9: both meshed, the first in node-ID order keeps the address
    merged, reasons = da.merge_affiliates([], discovered(aff(4, addresses=["10.9.9.9"]), aff(3, addresses=["10.9.9.9"])), **LOCAL)
    assert sorted(a["name"] for a in merged) == ["n3", "n4"] and reasons == []
    specs, warnings = _specs(merged)
    assert specs == {"n3": ["10.9.9.9/32", "fd7f:175a:b97c:5602::3/128"], "n4": ["fd7f:175a:b97c:5602::4/128"]}
    assert len(warnings) == 1 and "n4" in warnings[0] and "10.9.9.9/32" in warnings[0] and "held by peer n3" in warnings[0]


def test_a_newcomer_that_sorts_first_takes_an_overlap_as_on_talos_within_the_bounds():
    # The decision of issue 17 (docs/discovery.md, "Overlaps"): no incumbent rule for addresses. A newcomer whose
    # node ID sorts first takes the overlapping part, as every Talos node of the cluster routes it; the known peer
    # stays meshed with the rest. The bounds still apply: nothing outside kubespan_allowed_peer_networks, nothing
    # of this node's, and no other node's KubeSpan address.
    first, unused = da.merge_affiliates([], discovered(aff(4)), **LOCAL)
    thief = aff(3, name="thief", addresses=["10.0.0.4", "203.0.113.9"], additional_addresses=["fd7f:175a:b97c:5602::/64"])
    merged, reasons = da.merge_affiliates([], discovered(thief, aff(4)), last_discovered=da.discovered_only(first),
                                          allowed_networks=["10.0.0.0/8", "fc00::/7"], **LOCAL)
    assert sorted(a["name"] for a in merged) == ["n4", "thief"]
    assert any("thief" in r and "203.0.113.9/32" in r and "fd7f:175a:b97c:5602::8/125" in r for r in reasons), reasons
    specs, warnings = _specs(merged)
    assert specs["thief"] == ["10.0.0.4/32", "fd7f:175a:b97c:5602::3/128"]
    assert specs["n4"] == ["fd7f:175a:b97c:5602::4/128"]
    assert any("n4" in w and "10.0.0.4/32" in w and "held by peer thief" in w for w in warnings), warnings


def test_known_node_with_a_different_identity_is_dropped():
    merged, reasons = da.merge_affiliates([aff(2)], discovered(aff(2, public_key=pub(7))), **LOCAL)
    assert merged == [aff(2)]
    assert "differs from the inventory's" in reasons[0]


def test_known_node_adding_overlapping_addresses_is_trimmed_like_any_peer():
    found = discovered(aff(2, addresses=["10.0.0.3"], endpoints=["198.51.100.2:51820"]))
    merged, reasons = da.merge_affiliates([aff(2), aff(3)], found, **LOCAL)
    n2 = merged[0]
    assert n2["addresses"] == ["10.0.0.2", "10.0.0.3"] and n2["endpoints"] == ["10.0.0.2:51820", "198.51.100.2:51820"]
    assert reasons == []
    specs, warnings = _specs(merged)
    assert specs == {"n2": ["10.0.0.2/31", "fd7f:175a:b97c:5602::2/128"], "n3": ["fd7f:175a:b97c:5602::3/128"]}  # Node2Id first
    assert any("n3" in w and "10.0.0.3/32" in w and "held by peer n2" in w for w in warnings)


def test_unavailable_service_keeps_last_discovered():
    merged, unused = da.merge_affiliates([aff(2)], discovered(aff(3)), **LOCAL)
    last = da.discovered_only(merged)
    assert [a["name"] for a in last] == ["n3"]
    again, reasons = da.merge_affiliates([aff(2)], None, last_discovered=last, **LOCAL)
    assert [a["name"] for a in again] == ["n2", "n3"]
    assert "unavailable" in reasons[0]
    assert da.merge_affiliates([aff(2)], None, **LOCAL) == ([aff(2)], [])


def test_names_from_discovery_are_sanitized():
    msg, unused = da.affiliate_message(aff(2))
    msg.nodename = "bad name; rm -rf"
    msg.hostname = ""
    assert da.affiliate_from_message(msg)["name"] == "discovered-Node2Id"
    msg.hostname = "host7.example.com"
    assert da.affiliate_from_message(msg)["name"] == "host7"


def test_apply_watch_event_keeps_the_cluster_map():
    a, b = w.ServerAffiliate(id="a", data=b"1"), w.ServerAffiliate(id="b", data=b"2")
    cluster = da.apply_watch_event({"stale": a}, True, False, [a, b])
    assert sorted(cluster) == ["a", "b"]
    cluster = da.apply_watch_event(cluster, False, False, [w.ServerAffiliate(id="a", data=b"new")])
    assert cluster["a"].data == b"new"
    cluster = da.apply_watch_event(cluster, False, True, [w.ServerAffiliate(id="b")])
    assert sorted(cluster) == ["a"]
    assert da.apply_watch_event(cluster, True, False, []) == {}


def test_field4_in_another_form_opens_with_a_reason_and_no_exclusions():
    # issue 17 item 5: the number of exclude_advertised_addresses is unconfirmed; another type under 4 (here a
    # varint) must neither drop the affiliate nor exclude anything
    ks = w.KubeSpan(public_key=pub(3), address=ipaddress.ip_address("fd7f:175a:b97c:5602::3").packed,
                    additional_addresses=[w.IPPrefix(ip=bytes([10, 244, 3, 0]), bits=24)]).encode() + b"\x20\x05"
    data = w.ClientAffiliate(node_id=node_id(3), nodename="n3").encode() + b"\x3a" + w.encode_varint(len(ks)) + ks
    found, reasons = da.open_affiliates(KEY, [w.ServerAffiliate(id=node_id(3), data=c.seal_data(KEY, data))])
    assert [a["name"] for a in found] == ["n3"] and found[0]["exclude_advertised_networks"] == []
    assert found[0]["additional_addresses"] == ["10.244.3.0/24"]
    assert len(reasons) == 1 and node_id(3) in reasons[0] and "field 4" in reasons[0] and "ignored" in reasons[0]
