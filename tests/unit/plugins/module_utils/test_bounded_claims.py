"""Bounded claims and endpoint sanity (issue 15 items 2 and 6): hostile discovered affiliates are trimmed to
kubespan_allowed_peer_networks, never get this node's addresses, gateways or discovery service, and no peer
endpoint or Hello-reported address of an unusable class is used."""

import base64
import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_affiliates as da
from ansible_collections.kubespan.mesh.plugins.module_utils.core.endpoints import announced_endpoints, endpoint_problem
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peers import DEFAULT_ALLOWED_PEER_NETWORKS, build_peer_set
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerspec import peer_ipset, routed_set
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_agent as dag
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine

SUBNET = ipaddress.IPv6Network("fd7f:175a:b97c:5602::/64")
LOCAL_ADDRESS = "fd7f:175a:b97c:5602::1/128"
GATEWAY = "10.0.0.254"
DISCOVERY_SERVICE = "10.0.0.250"
CONTROLLER = "10.0.0.100"
ALLOWED = list(DEFAULT_ALLOWED_PEER_NETWORKS)
PUBLIC = IPSet(["0.0.0.0/0", "::/0"]).difference(IPSet(ALLOWED))


def pub(n):
    return base64.b64encode(bytes([n]) * 32).decode()


def aff(n, **extra):
    base = {"name": "n%d" % n, "node_id": "Node%dId" % n, "public_key": pub(n), "address": "fd7f:175a:b97c:5602::%d" % n,
            "endpoints": ["10.0.0.%d:51820" % n], "addresses": ["10.0.0.%d" % n]}
    base.update(extra)
    return base


INVENTORY = [aff(1), aff(2), aff(3)]
LOCAL = dict(subnet=SUBNET, local_node_id="Node1Id", local_public_key=pub(1), local_address=LOCAL_ADDRESS,
             local_addresses=["10.0.0.1"], local_networks=[])
NEVER = ["10.0.0.1", GATEWAY, DISCOVERY_SERVICE]


def hostile(n=9, **extra):
    """The issue's affiliate: every IPv4 address but the known nodes' in few prefixes, the pod and service
    networks, 2000::/3, 8.8.8.8, 1.1.1.1, the controller's address and the gateway."""
    everything = IPSet(["0.0.0.0/0"]).difference(IPSet(["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    claims = everything.prefixes() + ["10.244.0.0/16", "10.96.0.0/12", "2000::/3", "8.8.8.8/32", "1.1.1.1/32",
                                      CONTROLLER + "/32", GATEWAY + "/32"]
    return dict(aff(n, endpoints=["203.0.113.9:51820"], addresses=["10.0.0.%d" % n], additional_addresses=claims),
                source="discovery", **extra)


def union(affiliates):
    result = IPSet()
    for a in affiliates:
        result.update(peer_ipset(a))
    return result


def test_the_hostile_affiliate_claims_what_the_issue_says():
    claims = hostile()["additional_addresses"]
    assert 30 <= len(claims) <= 45
    assert IPSet(claims).contains("8.8.8.8") and IPSet(claims).contains("2001:4860::8888")


def test_without_a_bound_the_hostile_claims_are_accepted_as_before():
    """The old behaviour (no allowlist, nothing never-routed): the whole IPv4 space but the peers is claimed."""
    unbounded = dict(LOCAL)
    unbounded["local_addresses"] = []
    merged, reasons = da.merge_affiliates(INVENTORY, [hostile()], **unbounded)
    assert reasons == []
    assert union(merged).contains("8.8.8.8") and union(merged).contains(GATEWAY)


def test_hostile_claims_are_trimmed_to_the_allowlist_with_a_warning():
    merged, reasons = da.merge_affiliates(INVENTORY, [hostile()], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    by_name = {a["name"]: a for a in merged}
    assert sorted(by_name) == ["n1", "n2", "n3", "n9"]  # trimmed, not dropped: its private claims stay
    claim = peer_ipset(by_name["n9"])
    assert not claim.overlaps(PUBLIC)
    for address in ("8.8.8.8", "1.1.1.1", "2001:4860::8888", GATEWAY, DISCOVERY_SERVICE, "10.0.0.1"):
        assert not claim.contains(address), address
    assert claim.contains("10.96.0.1") and claim.contains(CONTROLLER)  # private: allowed by the default list
    assert len(reasons) == 1, reasons
    assert "n9" in reasons[0] and "Node9Id" in reasons[0] and "trimmed" in reasons[0]
    assert "0.0.0.0/5" in reasons[0] and "more" in reasons[0]  # names prefixes, bounded
    # the inventory peers are untouched
    assert [by_name[n] for n in ("n1", "n2", "n3")] == INVENTORY


def test_a_narrow_allowlist_trims_the_service_network_and_the_controller():
    allowed = ["10.0.0.0/26", "fc00::/7"]  # the nodes' LAN half and the ULA; the inventory's pod networks join it
    inventory = [aff(1), aff(2, additional_addresses=["10.244.2.0/24"]), aff(3)]
    bad = hostile()
    bad["additional_addresses"] = ["10.244.3.0/24", "10.96.0.0/12", CONTROLLER + "/32", "10.0.0.9/32"]
    merged, reasons = da.merge_affiliates(inventory, [bad], allowed_networks=allowed, never_routed=NEVER, **LOCAL)
    claim = peer_ipset([a for a in merged if a["name"] == "n9"][0])
    assert claim.contains("10.0.0.9") and not claim.contains("10.96.0.1") and not claim.contains(CONTROLLER)
    assert not claim.contains("10.244.3.1")  # another pod network than the inventory's
    assert "10.96.0.0/12" in reasons[0] and "10.244.3.0/24" in reasons[0]


def test_routed_set_and_allowed_ips_never_hold_public_space_gateway_or_service():
    merged, _reasons = da.merge_affiliates(INVENTORY, [hostile()], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    peers, warnings = build_peer_set(pub(1), LOCAL_ADDRESS, SUBNET, merged, None, None, "n1", ["10.0.0.1"] + NEVER, [])
    routed = routed_set(peers, SUBNET)
    assert not routed.overlaps(PUBLIC)
    for address in (GATEWAY, DISCOVERY_SERVICE, "10.0.0.1", "8.8.8.8"):
        assert not routed.contains(address)
        assert not any(IPSet(p["allowed_ips"]).contains(address) for p in peers)
    assert routed.contains("10.0.0.2") and routed.contains("10.0.0.3")  # the legitimate peers still mesh


def test_inventory_peers_are_trusted_and_never_routed_still_applies_to_them():
    """A peer's own node addresses from the inventory are kept even when public; the gateway is never routed."""
    inventory = [aff(1), aff(2, addresses=["203.0.113.2", GATEWAY])]
    merged, reasons = da.merge_affiliates(inventory, [], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    assert reasons == [] and merged == inventory
    peers, warnings = build_peer_set(pub(1), LOCAL_ADDRESS, SUBNET, merged, None, None, "n1", ["10.0.0.1"] + NEVER, [])
    assert IPSet(peers[0]["allowed_ips"]).contains("203.0.113.2")
    assert not IPSet(peers[0]["allowed_ips"]).contains(GATEWAY)
    assert any("n2" in w and GATEWAY in w for w in warnings)


def test_a_public_talos_node_address_needs_the_allowlist():
    talos = dict(aff(7, addresses=["198.51.100.7"], endpoints=["198.51.100.7:51820"]), source="discovery")
    merged, reasons = da.merge_affiliates(INVENTORY, [talos], allowed_networks=ALLOWED, **LOCAL)
    node = [a for a in merged if a["name"] == "n7"][0]
    assert node["addresses"] == [] and node["endpoints"] == ["198.51.100.7:51820"]  # still reachable, not routed
    assert "198.51.100.7/32" in reasons[0] and "n7" in reasons[0]
    merged, reasons = da.merge_affiliates(INVENTORY, [talos], allowed_networks=ALLOWED + ["198.51.100.7/32"], **LOCAL)
    assert reasons == [] and [a for a in merged if a["name"] == "n7"][0]["addresses"] == ["198.51.100.7"]


def test_discovered_additions_to_an_inventory_node_are_trimmed():
    grown = dict(aff(2, addresses=["10.0.0.2", "8.8.4.4"], additional_addresses=["10.244.2.0/24", "9.0.0.0/8"]),
                 source="discovery")
    merged, reasons = da.merge_affiliates(INVENTORY, [grown], allowed_networks=ALLOWED, **LOCAL)
    n2 = [a for a in merged if a["name"] == "n2"][0]
    assert n2["addresses"] == ["10.0.0.2"] and n2["additional_addresses"] == ["10.244.2.0/24"]
    assert "8.8.4.4/32" in reasons[0] and "9.0.0.0/8" in reasons[0]


def test_warnings_are_bounded():
    many = dict(hostile(), additional_addresses=["%d.%d.1.0/24" % (11 + i // 200, i % 200) for i in range(1024)])
    merged, reasons = da.merge_affiliates(INVENTORY, [many], allowed_networks=ALLOWED, **LOCAL)
    assert len(reasons) == 1 and "and 1016 more" in reasons[0] and len(reasons[0]) < 1000
    crowd = [dict(aff(10 + i, addresses=["10.1.0.%d" % i], endpoints=["10.1.0.%d:51820" % i],
                      additional_addresses=["8.8.%d.0/24" % i]), source="discovery") for i in range(200)]
    merged, reasons = da.merge_affiliates(INVENTORY, crowd, allowed_networks=ALLOWED, **LOCAL)
    assert len(merged) == 203
    assert len(reasons) == da.MAX_TRIM_WARNINGS + 1 and "184 more discovered nodes" in reasons[-1]


@pytest.mark.parametrize("bad, why", [(["nonsense"], "entry 'nonsense'"), ({"10.0.0.0/8": 1}, "got dict"), (7, "got int"),
                                      ("10.0.0.0/8", "got str")])
def test_a_bad_allowlist_fails_closed(bad, why):
    merged, reasons = da.merge_affiliates(INVENTORY, [hostile()], allowed_networks=bad, **LOCAL)
    assert "kubespan_allowed_peer_networks" in reasons[0] and why in reasons[0]
    n9 = [a for a in merged if a["name"] == "n9"][0]
    assert n9["additional_addresses"] == [] and n9["addresses"] == []


@pytest.mark.parametrize("host, why", [
    ("255.255.255.255", "broadcast"), ("127.0.0.1", "loopback"), ("::1", "loopback"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("169.254.3.4", "link-local"),
    ("fe80::1", "link-local"), ("::ffff:127.0.0.1", "loopback"), ("fd7f:175a:b97c:5602::7", "KubeSpan prefix"),
    ("10.0.0.1", "own address"), ("nonsense", "not an IP"),
])
def test_endpoint_problem_refuses_the_listed_classes(host, why):
    assert why in endpoint_problem(host, IPSet(["10.0.0.1"]), SUBNET)


def test_endpoint_problem_accepts_ordinary_endpoints():
    for host in ("10.0.0.2", "203.0.113.7", "2001:db8::7", "fd00::7", "100.64.1.1"):
        assert endpoint_problem(host, IPSet(["10.0.0.1"]), SUBNET) is None


def test_discovered_endpoints_of_refused_classes_are_dropped():
    odd = dict(aff(5, endpoints=["255.255.255.255:51820", "127.0.0.1:51820", "[ff02::1]:51820", "0.0.0.0:51820",
                                 "169.254.1.1:51820", "10.0.0.1:51820", "[fd7f:175a:b97c:5602::1]:51820",
                                 "10.0.0.5:51820"]), source="discovery")
    merged, reasons = da.merge_affiliates(INVENTORY, [odd], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    assert [a for a in merged if a["name"] == "n5"][0]["endpoints"] == ["10.0.0.5:51820"]
    assert len(reasons) == 1 and "endpoints refused" in reasons[0] and "255.255.255.255:51820 (broadcast)" in reasons[0]
    assert "and 3 more" in reasons[0]


def test_hello_reporting_broadcast_never_becomes_this_nodes_endpoint():
    assert dag.public_endpoint("255.255.255.255", 51820, str(SUBNET)) is None
    assert dag.public_endpoint("::ffff:255.255.255.255", 51820, str(SUBNET)) is None
    assert dag.public_endpoint("fd7f:175a:b97c:5602::1", 51820, str(SUBNET)) is None  # our own ULA
    assert dag.public_endpoint("203.0.113.7", 51820, str(SUBNET)) == "203.0.113.7:51820"
    # the announced endpoints drop it too, whoever passes it in
    assert announced_endpoints(["10.0.0.1/24"], ["fd7f:175a:b97c:5602::/64"],
                               ["255.255.255.255", "fd7f:175a:b97c:5602::1", "203.0.113.7"]) == [
        "10.0.0.1:51820", "203.0.113.7:51820"]


def test_device_endpoints_skip_refused_classes_with_bounded_warnings():
    endpoints = ["255.255.255.255:51820", "10.0.0.2:51820", "[fd7f:175a:b97c:5602::1]:51820"]
    peers = [{"name": "n2", "public_key": pub(2), "endpoints": endpoints}]
    warnings = []
    got = engine.usable_endpoints(peers, LOCAL_ADDRESS, str(SUBNET), warnings)
    assert got == {pub(2): ["10.0.0.2:51820"]}
    assert warnings == ["peer n2: endpoint 255.255.255.255:51820 refused (broadcast)",
                        "peer n2: endpoint [fd7f:175a:b97c:5602::1]:51820 refused (inside the cluster's KubeSpan prefix)"]
    crowd = [{"name": "p%d" % i, "public_key": pub(i), "endpoints": ["127.0.0.1:1"]} for i in range(40)]
    warnings = []
    engine.usable_endpoints(crowd, LOCAL_ADDRESS, str(SUBNET), warnings)
    assert len(warnings) == 17 and warnings[-1] == "24 more peer endpoints refused (not listed)"


def test_plan_peers_bounds_what_the_agent_routes():
    inventory = [aff(2), aff(3)]
    peers, last, reasons = dag.plan_peers(inventory, [hostile()], None, pub(1), LOCAL_ADDRESS, str(SUBNET), aff(1), "n1",
                                          ALLOWED, [GATEWAY, DISCOVERY_SERVICE])
    routed = routed_set(peers, SUBNET)
    assert not routed.overlaps(PUBLIC) and not routed.contains(GATEWAY) and not routed.contains(DISCOVERY_SERVICE)
    assert routed.contains("10.0.0.2") and [p["name"] for p in peers] == ["n2", "n3", "n9"]
    assert any("n9" in r and "trimmed" in r for r in reasons)


def test_settings_check_names_the_variable_the_value_and_the_fix():
    assert settings_errors({"kubespan_allowed_peer_networks": ALLOWED + ["203.0.113.7/32"]}) == []
    errors = settings_errors({"kubespan_allowed_peer_networks": ["10.0.0.0/8", "10.0.0.0/33"]})
    assert len(errors) == 1 and "kubespan_allowed_peer_networks" in errors[0] and "'10.0.0.0/33'" in errors[0]
    assert "CIDR" in errors[0]
    assert "must be a list" in settings_errors({"kubespan_allowed_peer_networks": "10.0.0.0/8"})[0]
    with pytest.raises(engine.ReconcileError, match="kubespan_allowed_peer_networks"):
        engine.Settings(allowed_peer_networks=["bogus"]).validate()
    assert engine.Settings().allowed_peer_networks == ALLOWED
    assert engine.settings_from_state({"settings": {}}).allowed_peer_networks == ALLOWED  # an older state file


def test_host_never_routed_reads_gateways_and_a_literal_discovery_address():
    got = engine.host_never_routed("kubespan", "http://192.0.2.10:3000/")
    assert "192.0.2.10" in got
    assert "198.51.100.1" not in engine.host_never_routed("kubespan", "https://discovery.example.com:443/")
    assert all(not ipaddress.ip_address(a).is_loopback for a in got)
    with open("/proc/net/route") as handle:  # the kernel's own view of the IPv4 default gateways
        rows = [line.split() for line in handle.read().splitlines()[1:]]
    gateways = [str(ipaddress.IPv4Address(bytes.fromhex(r[2])[::-1])) for r in rows if r[1] == "00000000" and r[7] == "00000000"]
    print("default gateways:", gateways, "never routed:", got)
    assert all(g in got for g in gateways if g != "0.0.0.0")


def test_a_claim_on_this_nodes_own_address_is_trimmed_never_routed():
    """Issue 17: overlaps are trimmed, never dropped (Talos's rule), and this node's own address is never routed to a
    peer: a discovered claim on it is cut with a reason naming it, and the peer is kept with the rest."""
    thief = dict(aff(8, addresses=["10.0.0.1"], endpoints=["10.0.0.99:51820"]), source="discovery")
    merged, reasons = da.merge_affiliates(INVENTORY, [thief], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    assert [a["name"] for a in merged] == ["n1", "n2", "n3", "n8"] and merged[3]["addresses"] == []
    assert len(reasons) == 1 and "Node8Id (n8)" in reasons[0] and "trimmed: 10.0.0.1/32" in reasons[0]
    peers, unused = build_peer_set(pub(1), LOCAL_ADDRESS, SUBNET, merged, None, None, "n1", NEVER)
    assert not any("10.0.0.1/32" in p["allowed_ips"] for p in peers)
    grown = dict(aff(2, addresses=["10.0.0.2", "10.0.0.1"]), source="discovery")
    merged, reasons = da.merge_affiliates(INVENTORY, [grown], allowed_networks=ALLOWED, never_routed=NEVER, **LOCAL)
    assert merged[1] == dict(INVENTORY[1], additional_addresses=[], exclude_advertised_networks=[])
    assert "Node2Id (n2)" in reasons[0] and "trimmed: 10.0.0.1/32" in reasons[0]


def test_a_claim_outside_the_allowlist_covering_this_nodes_address_is_trimmed_not_fatal():
    """2000::/3 covers this node's global IPv6 address: cut by the allowlist first, so the peer is trimmed, not dropped."""
    local = dict(LOCAL)
    local["local_addresses"] = ["10.0.0.1", "2001:db8:130::1"]
    merged, reasons = da.merge_affiliates(INVENTORY, [hostile()], allowed_networks=ALLOWED,
                                          never_routed=NEVER + ["2001:db8:130::1"], **local)
    assert [a["name"] for a in merged] == ["n1", "n2", "n3", "n9"]
    assert len(reasons) == 1 and "trimmed" in reasons[0] and "n9" in reasons[0]
    assert not peer_ipset(merged[3]).overlaps(PUBLIC)
