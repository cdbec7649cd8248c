"""Discovered affiliates: sealing and opening, conversion, and the merge rules (own ID, empty data, overlaps)."""

import base64
import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils import discovery_affiliates as da
from ansible_collections.kubespan.mesh.plugins.module_utils import discovery_crypto as c
from ansible_collections.kubespan.mesh.plugins.module_utils import discovery_wire as w
from ansible_collections.kubespan.mesh.plugins.module_utils.peers import build_peer_set

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
    (aff(4, addresses=["10.0.0.1"]), "this node's own addresses (10.0.0.1/32)"),
    (aff(4, additional_addresses=["10.244.0.0/16"]), "this node's own addresses (10.244.1.0/24)"),
    (aff(4, addresses=["10.0.0.2"]), "peer n2's (10.0.0.2/32)"),
    (aff(4, additional_addresses=["10.0.0.2/31"]), "peer n2's (10.0.0.2/32)"),
    (aff(4, address="fd7f:175a:b97c:5602::2"), "peer n2's (fd7f:175a:b97c:5602::2/128)"),
    (aff(4, public_key=pub(2)), "public key belongs to another peer"),
    (aff(4, name="n2"), "the name n2 belongs to another peer"),
    (aff(4, address="fd00::4"), "outside this cluster's subnet"),
    (aff(4, endpoints=["nonsense"]), "endpoint"),
])
def test_discovered_affiliate_that_would_hijack_traffic_is_dropped(intruder, why):
    merged, reasons = da.merge_affiliates([aff(1), aff(2)], discovered(intruder), **LOCAL)
    assert [a["name"] for a in merged] == ["n1", "n2"]
    assert len(reasons) == 1 and why in reasons[0] and "dropped" in reasons[0], reasons


def test_exclusions_make_a_claim_acceptable():
    ok = aff(4, additional_addresses=["10.0.0.0/24"], exclude_advertised_networks=["10.0.0.0/29"])  # .1 and .2 excluded
    merged, reasons = da.merge_affiliates([aff(1), aff(2)], discovered(ok), **LOCAL)
    assert reasons == [] and [a["name"] for a in merged] == ["n1", "n2", "n4"]


def test_first_discovered_wins_between_two_discovered_claims():
    merged, reasons = da.merge_affiliates([], discovered(aff(3, addresses=["10.9.9.9"]), aff(4, addresses=["10.9.9.9"])), **LOCAL)
    assert [a["name"] for a in merged] == ["n3"]
    assert "peer n3's (10.9.9.9/32)" in reasons[0]


def test_an_incumbent_keeps_its_claims_against_a_newcomer_that_sorts_first():
    # molecule/discovery's ForgedThief: a node known only from discovery (n4) keeps its address when a newcomer
    # whose node ID sorts before it claims the same address (node IDs are the publisher's choice)
    first, unused = da.merge_affiliates([], discovered(aff(4)), **LOCAL)
    thief = aff(3, name="thief", addresses=["10.0.0.4"])
    merged, reasons = da.merge_affiliates([], discovered(thief, aff(4)), last_discovered=da.discovered_only(first), **LOCAL)
    assert [a["name"] for a in merged] == ["n4"]
    assert "discovered node %s (thief) dropped" % node_id(3) in reasons[0] and "peer n4's (10.0.0.4/32)" in reasons[0]
    # without the memory, node ID order decides (the newcomer first)
    merged, unused = da.merge_affiliates([], discovered(thief, aff(4)), **LOCAL)
    assert [a["name"] for a in merged] == ["thief"]


def test_known_node_with_a_different_identity_is_dropped():
    merged, reasons = da.merge_affiliates([aff(2)], discovered(aff(2, public_key=pub(7))), **LOCAL)
    assert merged == [aff(2)]
    assert "differs from the inventory's" in reasons[0]


def test_known_node_adding_overlapping_addresses_keeps_only_its_endpoints():
    found = discovered(aff(2, addresses=["10.0.0.3"], endpoints=["198.51.100.2:51820"]))
    merged, reasons = da.merge_affiliates([aff(2), aff(3)], found, **LOCAL)
    n2 = merged[0]
    assert n2["addresses"] == ["10.0.0.2"] and n2["endpoints"] == ["10.0.0.2:51820", "198.51.100.2:51820"]
    assert "only its endpoints are used" in reasons[0]


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
