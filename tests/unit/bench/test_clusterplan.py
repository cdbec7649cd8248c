"""Differential test: the cluster-wide planner gives every node exactly what its own run computes.

For each node of a random cluster: peers.build_peer_set (specs, warnings in order, or the error class and
message), peerspec.routed_set of the specs, dataplane.desired_nft of the routed set and the device peers, each
computed for that node alone, against clusterplan.iter_cluster_plans for the whole cluster. Clusters have
pod-network and node-address overlaps, excluded networks, duplicate keys, names and KubeSpan addresses,
invalid entries, nodes claiming another node's address, members without fresh data and last-known entries.
"""

import base64
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.bench import clusterplan
from ansible_collections.kubespan.mesh.plugins.module_utils.core import dataplane, peers, peerspec, plan
from ansible_collections.kubespan.mesh.tests.unit.plugins.module_utils import test_peerset_differential as base

SUBNET = base.SUBNET
KEYS = base.KEYS
NAMES = base.NAMES
CFG = dataplane.DataPlaneConfig().validate()
PSK = base64.b64encode(b"\x05" * 32).decode()


def device_peer(spec):
    return plan.DesiredPeer(public_key=spec["public_key"], allowed_ips=spec["allowed_ips"], endpoints=spec["endpoints"],
                            persistent_keepalive=25, preshared_key=PSK, label=spec["name"])


def expected(affiliates, members, node):
    """What the node's own run computes."""
    try:
        specs, warnings = peers.build_peer_set(node.public_key, node.address, SUBNET, affiliates, members, node.last_known,
                                               node.name, node.addresses, node.networks)
    except Exception as exc:  # noqa: BLE001 - compared by class and message
        return ("error", type(exc).__name__, str(exc))
    routed = peerspec.routed_set(specs, SUBNET)
    return specs, warnings, routed.prefixes(), dataplane.desired_nft(routed, CFG), [device_peer(s) for s in specs]


def actual(result):
    if result.error is not None:
        return ("error", type(result.error).__name__, str(result.error))
    return result.specs, result.warnings, result.routed.prefixes(), result.nft, result.device_peers


def check(affiliates, members, nodes):
    plans = list(clusterplan.iter_cluster_plans(SUBNET, affiliates, nodes, members, CFG, device_peer))
    assert len(plans) == len(nodes)
    for node, result in zip(nodes, plans):
        assert result.node is node
        want = expected(affiliates, members, node)
        assert actual(result) == want
        if want[0] != "error":  # the same key order in every spec (what a JSON result or a state file shows)
            assert [list(spec) for spec in result.specs] == [list(spec) for spec in want[0]]
    return plans


# --- valid clusters with many overlaps (the fast path) --------------------------------------------------------

V4 = ["10.0.0.%d" % i for i in range(0, 16, 3)] + ["10.0.1.1", "192.168.0.1"]
V6 = ["2001:db8::%x" % i for i in range(1, 6)]
PREFIXES = ["10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/29", "10.0.0.8/31", "10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/23",
            "10.0.0.6/32", "2001:db8::/126", "2001:db8::4/127", "2001:db8::/64", "fd00:10:244::/64", "10.0.0.0/28",
            "fd7f:175a:b97c:5602::/120", "10.0.0.12/30", "0.0.0.0/0"]
KADDR = ["fd7f:175a:b97c:5602::%x" % i for i in range(1, 10)]


@st.composite
def valid_affiliate(draw, name):
    aff = {"name": name, "public_key": draw(st.sampled_from(KEYS)), "address": draw(st.sampled_from(KADDR)),
           "endpoints": draw(st.lists(st.sampled_from(["10.0.0.1:51820", "[2001:db8::1]:51820"]), max_size=2))}
    if draw(st.booleans()):
        aff["addresses"] = draw(st.lists(st.sampled_from(V4 + V6), max_size=3))
    if draw(st.booleans()):
        aff["additional_addresses"] = draw(st.lists(st.sampled_from(PREFIXES), max_size=3))
    if draw(st.integers(0, 3)) == 0:
        aff["exclude_advertised_networks"] = draw(st.lists(st.sampled_from(PREFIXES), max_size=2))
    return aff


@st.composite
def odd_node(draw):
    """A node whose own inputs are not (only) its affiliate: another key, no name, someone else's address."""
    return clusterplan.NodeInput(
        draw(st.sampled_from(KEYS)), draw(st.sampled_from([a + "/128" for a in KADDR] + ["fd7f:175a:b97c:5602::1", "zz"])),
        draw(st.one_of(st.none(), st.sampled_from(NAMES + ["other"]))), draw(st.lists(st.sampled_from(V4 + V6), max_size=2)),
        draw(st.lists(st.sampled_from(PREFIXES), max_size=2)))


def own_node(aff, last_known=None):
    return clusterplan.NodeInput(aff["public_key"], aff["address"] + "/128", aff["name"], aff.get("addresses") or [],
                                 aff.get("additional_addresses") or [], last_known)


@st.composite
def valid_cluster(draw):
    count = draw(st.integers(0, len(NAMES)))
    names = draw(st.permutations(NAMES))[:count]
    unique = draw(st.integers(0, 3)) > 0  # mostly distinct keys and addresses, as in a healthy cluster
    affiliates = []
    keys = draw(st.permutations(KEYS))
    addrs = draw(st.permutations(KADDR))
    for i, name in enumerate(names):
        aff = draw(valid_affiliate(name))
        if unique:
            aff["public_key"], aff["address"] = keys[i], addrs[i]
        affiliates.append(aff)
    members = draw(st.one_of(st.none(), st.just([a["name"] for a in affiliates]),
                             st.lists(st.sampled_from(NAMES + ["gone"]), max_size=9)))
    nodes = []
    for aff in affiliates:
        last_known = None
        mode = draw(st.integers(0, 4))
        if mode == 1:
            last_known = [dict(peers.validate_affiliate(a, SUBNET), allowed_ips=["10.0.0.0/30"]) for a in affiliates]
        elif mode == 2:
            last_known = [dict(a) for a in affiliates] + [{"name": "gone", "public_key": "bad"}, "not a mapping"]
        elif mode == 3:
            last_known = [draw(valid_affiliate(draw(st.sampled_from(NAMES + ["gone"]))))]
        node = own_node(aff, last_known)
        trim = draw(st.integers(0, 5))
        if trim == 1:  # its own networks not given: removing it frees them for the next peer in key order
            node.networks = []
        elif trim == 2:
            node.addresses = []
        nodes.append(node)
    nodes += draw(st.lists(odd_node(), max_size=2))
    return affiliates, members, nodes


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cluster())
def test_valid_clusters_match_per_node_runs(case):
    check(*case)


# --- anything build_peer_set accepts or rejects (the differential test's generators) -------------------------

@st.composite
def any_cluster(draw):
    fresh = draw(st.lists(base.affiliate(), max_size=7, unique_by=lambda a: a["name"]))
    if draw(st.integers(0, 10)) == 0 and fresh:
        fresh.append(dict(fresh[0]))  # listed twice
    members = draw(st.one_of(st.none(), st.lists(st.sampled_from(NAMES + ["gone"]), max_size=9)))
    nodes = []
    for aff in fresh:
        if draw(st.booleans()):
            continue
        last_known = draw(st.one_of(st.none(), st.lists(base.affiliate(), max_size=3)))
        nodes.append(clusterplan.NodeInput(aff["public_key"], str(aff["address"]), aff["name"],
                                           draw(st.lists(st.one_of(base.v4, base.v6), max_size=2)),
                                           draw(st.lists(base.prefix, max_size=2)), last_known))
    nodes += draw(st.lists(odd_node(), max_size=2))
    return fresh, members, nodes


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_cluster())
def test_any_clusters_match_per_node_runs(case):
    check(*case)


# --- specific cases ---------------------------------------------------------------------------------------------

def aff(i, **extra):
    entry = {"name": "n%d" % i, "public_key": KEYS[i], "address": KADDR[i], "endpoints": ["10.0.0.%d:51820" % (i + 1)]}
    entry.update(extra)
    return entry


def own_nodes(affiliates):
    return [own_node(a) for a in affiliates]


def test_pod_network_overlap_is_shared_and_exact():
    # n0 (lowest key) holds 10.0.0.0/23, n1's /24 inside it loses everything: a warning every node but n0/n1 shares
    affs = [aff(0, additional_addresses=["10.0.0.0/23"]), aff(1, additional_addresses=["10.0.1.0/24"]),
            aff(2, additional_addresses=["10.0.2.0/24"]), aff(3, additional_addresses=["10.0.3.0/24"])]
    plans = check(affs, None, own_nodes(affs))
    assert all(p.path == "shared" for p in plans)
    # n2 and n3 see n1 lose 10.0.1.0/24 to n0; the spec dicts of untouched peers are the same objects
    assert any("already held by peer n0" in w for w in plans[2].warnings)
    assert plans[2].specs[0] is plans[3].specs[0]
    # n0 itself: its /23 is its own, so n1's /24 is refused as this node's own and n1 keeps only its KubeSpan address
    assert plans[0].warnings == ["peer n1 (%s) claims this node's own addresses 10.0.1.0/24: they are not routed to it" % KEYS[1]]
    assert plans[0].specs[0]["allowed_ips"] == [KADDR[1] + "/128"]


def test_removing_the_local_node_frees_addresses_for_later_peers():
    # n0 and n1 both claim 10.0.9.0/24 and n0 (lower key) holds it; a node that excludes n0 without having the
    # network among its own (n0's key, no local networks) gives it to n1, which every other node does not
    affs = [aff(0, additional_addresses=["10.0.9.0/24"]), aff(1, additional_addresses=["10.0.9.0/24"]), aff(2)]
    node = clusterplan.NodeInput(KEYS[0], KADDR[0] + "/128", "n0")  # n0 without its own networks
    plans = check(affs, None, own_nodes(affs) + [node])
    assert plans[3].specs[0]["allowed_ips"] == ["10.0.9.0/24", KADDR[1] + "/128"]
    assert plans[2].specs[1]["allowed_ips"] == [KADDR[1] + "/128"]
    assert "10.0.9.0/24" in plans[3].routed.prefixes() and "10.0.9.0/24" in plans[2].routed.prefixes()


def test_node_address_overlap_and_excluded_network():
    affs = [aff(0, addresses=["10.1.0.5"], additional_addresses=["10.2.0.0/24"], exclude_advertised_networks=["10.2.0.0/26"]),
            aff(1, addresses=["10.1.0.5"], additional_addresses=["10.2.0.0/25"]), aff(2, addresses=["10.1.0.7"])]
    plans = check(affs, None, own_nodes(affs))
    assert "10.2.0.0/26" in plans[2].specs[1]["allowed_ips"]


def test_errors_are_per_node():
    # n2 repeats n1's KubeSpan address (cloned MACs): no node raises (issue 17: trimmed like any overlap, as Talos
    # does); the others warn and mesh both, n1 and n2 keep the address themselves and mesh the other one
    affs = [aff(0), aff(1), aff(2, address=KADDR[1]), aff(3)]
    plans = check(affs, None, own_nodes(affs))
    assert all(p.error is None for p in plans)
    assert any("have the same KubeSpan address" in w for w in plans[0].warnings)
    assert [s["name"] for s in plans[0].specs if KADDR[1] + "/128" in s["allowed_ips"]] in (["n1"], ["n2"])
    assert len([s for s in plans[0].specs if s["name"] in ("n1", "n2")]) == 2
    assert any("has this node's own KubeSpan address" in w for w in plans[1].warnings)
    assert all(KADDR[1] + "/128" not in s["allowed_ips"] for s in plans[1].specs)
    # a shared key: both holders raise "own public key", the others the duplicate-key error
    affs = [aff(0), aff(1), dict(aff(2), public_key=KEYS[1]), aff(3)]
    plans = check(affs, None, own_nodes(affs))
    assert "has this node's own public key" in str(plans[1].error)
    assert "have the same public key" in str(plans[3].error)


def test_invalid_or_repeated_entry_is_every_nodes_error():
    affs = [aff(0), aff(1, address="fd00::1"), aff(2)]
    plans = check(affs, None, own_nodes(affs))
    assert all(isinstance(p.error, peers.PeerError) and "outside this cluster's subnet" in str(p.error) for p in plans)
    affs = [aff(0), aff(1), aff(1)]
    plans = check(affs, None, own_nodes(affs))
    assert all(str(p.error) == "peer n1 is listed twice" for p in plans)


def test_members_and_last_known():
    affs = [aff(0), aff(1), aff(2)]
    kept = aff(3)
    nodes = [own_node(affs[0], [kept]), own_node(affs[1], [{"name": "n3"}]), own_node(affs[2])]
    plans = check(affs, ["n0", "n1", "n2", "n3"], nodes)
    assert plans[0].path == "fallback" and [s["name"] for s in plans[0].specs] == ["n1", "n2", "n3"]
    assert plans[1].path == "shared" and plans[1].warnings[0].startswith("ignoring last-known peer data: peer n3")
    assert "was never seen by this node" in plans[2].warnings[0]
    # last-known data that is not a list: the node's own run raises, and so does its plan
    plans = check(affs, ["n0", "n1", "n2"], [own_node(affs[0], 5), own_node(affs[1])])
    assert isinstance(plans[0].error, TypeError) and plans[1].error is None


@pytest.mark.parametrize("count", [0, 1])
def test_tiny_clusters(count):
    affs = [aff(i) for i in range(count)]
    check(affs, None, own_nodes(affs) + [clusterplan.NodeInput(KEYS[5], KADDR[5] + "/128", "n5")])


def test_nodes_from_affiliates_matches_the_module_inputs():
    affs = [aff(0, addresses=["10.1.0.1"], additional_addresses=["10.2.0.0/24"]), aff(1)]
    nodes = clusterplan.nodes_from_affiliates(affs, {"n1": [aff(0)]})
    assert (nodes[0].public_key, nodes[0].address, nodes[0].name, nodes[0].addresses, nodes[0].networks, nodes[0].last_known) == (
        KEYS[0], KADDR[0] + "/128", "n0", ["10.1.0.1"], ["10.2.0.0/24"], None)
    assert nodes[1].last_known == [aff(0)]
    check(affs, ["n0", "n1"], nodes)


def test_subnet_is_not_routed():
    affs = [aff(0, additional_addresses=[str(ipaddress.IPv6Network(SUBNET))]), aff(1)]
    plans = check(affs, None, own_nodes(affs))
    assert all(not p.routed.overlaps(IPSetOf(SUBNET)) for p in plans)


def IPSetOf(net):  # noqa: N802 - reads as a constructor
    from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet
    return IPSet([net])


def test_peers_overlapping_everywhere_fall_back_and_stay_exact():
    # every peer claims 0.0.0.0/0: each node's own networks overlap every claim, so every peer differs from the
    # global assignment and the node is planned by build_peer_set itself
    keys = [base64.b64encode(bytes([7, i]) * 16).decode() for i in range(90)]
    affs = [{"name": "p%02d" % i, "public_key": keys[i], "address": "fd7f:175a:b97c:5602::%x" % (i + 1),
             "additional_addresses": ["0.0.0.0/0"], "addresses": ["10.9.0.%d" % i]} for i in range(90)]
    plans = check(affs, None, own_nodes(affs[:3]))
    assert [p.path for p in plans] == ["fallback"] * 3
