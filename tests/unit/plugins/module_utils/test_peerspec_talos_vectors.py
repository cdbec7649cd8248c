# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Peer specs against vectors derived by hand from Talos's PeerSpecController (peer_spec.go), issue 17 items 1 and 6.

The rules, as read in siderolabs/talos internal/app/machined/pkg/controllers/kubespan/peer_spec.go (HEAD of
2026-08-21), restated here in words (no code taken from there):

  R1  affiliates are listed by resource ID, which is the node ID, and processed in that order (COSI lists are
      sorted by ID: byte order of the base62 text); the local node and affiliates without a KubeSpan public key
      are skipped;
  R2  per affiliate an IP set is built: + each KubeSpan additional address (pod CIDR) as a prefix (host bits
      dropped: netip.Prefix masked by the IP set builder), + each node address as a single address,
      - each excluded network, + the KubeSpan address (added after the exclusions, so never excluded);
  R3  for every peer processed before it whose set overlaps, a warning ("peer address overlap", naming both
      peers' keys and both sets) and set := set AND NOT that peer's set; the peer keeps what is left and is
      emitted even when nothing is left ("conflict resolution removed all ranges"), never dropped;
  R4  the stored set of each peer is the trimmed one (later peers are compared with it);
  R5  AllowedIPs = the set's minimal prefixes, IPv4 before IPv6, ascending.

Here, and not in Talos: (H1) this node's own addresses and networks are taken out of every peer first (a
warning names them); (H2) peers without a node ID (hand-written inventory entries, older state) come after
those with one, by public key; (H3) the results are listed in public-key order. Each vector below says how its
expected value follows from these rules. The same vectors run through the three paths of this collection:
peerspec.assign_allowed_ips, peers.build_peer_set (inventory peers) and discovery_affiliates.merge_affiliates
then build_peer_set (discovered peers): inventory and discovered peers follow one rule.
"""

import base64
import ipaddress

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_affiliates as da
from ansible_collections.kubespan.mesh.plugins.module_utils.core import peerspec
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peers import build_peer_set

# Talos's own test data (peer_spec_test.go): node IDs, keys and ULAs of its affiliates
ID_1, ID_2 = "7x1SuC8Ege5BGXdAfTEff5iQnlWZLfv9h1LGMxA2pYkC", "9dwHNUViZlPlIervqX9Qo256RUhrfhgO0xBBnKcKl4F"
KEY_1, KEY_2 = "PLPNBddmTgHJhtw0vxltq1ZBdPP9RNOEUd5JjJZzBRY=", "Zr5ewpUm2Ywo1c+/59WFKIBjZ3c/nVbIWsT5elbjwCU="
ULA_1, ULA_2 = "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e1"
SUBNET = ipaddress.IPv6Network("fd50:8d60:4238:6302::/64")
LOCAL_KEY = base64.b64encode(b"\x01" * 32).decode()
LOCAL_ULA = "fd50:8d60:4238:6302::1"


def key(n):
    return base64.b64encode(bytes([0x40 + n]) * 32).decode()


def ula(n):
    return "fd50:8d60:4238:6302::%x" % (0x100 + n)


def peer(name, node_id, public_key, address, additional=(), addresses=(), exclude=()):
    return {"name": name, "node_id": node_id, "public_key": public_key, "address": address, "endpoints": [],
            "additional_addresses": list(additional), "addresses": list(addresses), "exclude_advertised_networks": list(exclude)}


# (id, peers, local networks, expected {name: AllowedIPs}, substrings each expected warning must hold)
VECTORS = [
    # Talos TestReconcile, affiliate "bar", plus the facts file's exclusion:
    #   R2: 10.244.3.1/24 -> 10.244.3.0/24; 10.244.3.0/32 inside it; + 192.168.3.4; - 10.244.3.128/25 leaves
    #   10.244.3.0/25; + the ULA. R5: v4 ascending, then v6.
    ("facts-exclusion", [peer("bar", ID_1, KEY_1, ULA_1, ["10.244.3.1/24", "10.244.3.0/32"], ["192.168.3.4"], ["10.244.3.128/25"])], [],
     {"bar": ["10.244.3.0/25", "192.168.3.4/32", ULA_1 + "/128"]}, []),
    # the same without the exclusion: Talos's expected [10.244.3.0/24 192.168.3.4/32 ULA/128]
    ("talos-reconcile", [peer("bar", ID_1, KEY_1, ULA_1, ["10.244.3.1/24", "10.244.3.0/32"], ["192.168.3.4"])], [],
     {"bar": ["10.244.3.0/24", "192.168.3.4/32", ULA_1 + "/128"]}, []),
    # Talos TestIPOverlap: R1 "7x1S..." < "9dwH...": bar first, {10.244.3.0/24, ULA_1}. worker-1's set
    # {10.244.2.0/23, 192.168.3.0/24, ULA_2}; R3: minus bar's set, 10.244.2.0/23 - 10.244.3.0/24 = 10.244.2.0/24;
    # Talos's expected ["10.244.2.0/24" "192.168.3.0/24" ULA_2/128]; one warning naming both.
    ("talos-ip-overlap", [peer("bar", ID_1, KEY_1, ULA_1, ["10.244.3.1/24", "10.244.3.0/32"]),
                          peer("worker-1", ID_2, KEY_2, ULA_2, ["10.244.2.0/23", "192.168.3.0/24"])], [],
     {"bar": ["10.244.3.0/24", ULA_1 + "/128"], "worker-1": ["10.244.2.0/24", "192.168.3.0/24", ULA_2 + "/128"]},
     ["worker-1 (%s) claims 10.244.3.0/24, already held by peer bar (%s)" % (KEY_2, KEY_1)]),
    # The same two with their node IDs swapped (public-key order unchanged: "PLPN" < "Zr5e"): R1 worker-1 first,
    # it keeps all of {10.244.2.0/23, 192.168.3.0/24, ULA_2}; bar: {10.244.3.0/24, ULA_1} minus that = {ULA_1}.
    # Public-key order would have given the previous vector's result: only node-ID order matches Talos here.
    ("node-id-order-not-key-order", [peer("bar", ID_2, KEY_1, ULA_1, ["10.244.3.1/24"]),
                                     peer("worker-1", ID_1, KEY_2, ULA_2, ["10.244.2.0/23", "192.168.3.0/24"])], [],
     {"bar": [ULA_1 + "/128"], "worker-1": ["10.244.2.0/23", "192.168.3.0/24", ULA_2 + "/128"]},
     ["bar (%s) claims 10.244.3.0/24, already held by peer worker-1 (%s)" % (KEY_1, KEY_2)]),
    # Two nodes behind two NATs with the same address 10.0.0.2 (issue 17): R1 "a1" < "b2"; R3 nat-b loses
    # 10.0.0.2/32 and keeps its ULA: both are peers.
    ("same-node-address", [peer("nat-b", "b2", key(2), ula(2), addresses=["10.0.0.2"]),
                           peer("nat-a", "a1", key(1), ula(1), addresses=["10.0.0.2"])], [],
     {"nat-a": ["10.0.0.2/32", ula(1) + "/128"], "nat-b": [ula(2) + "/128"]},
     ["nat-b (%s) claims 10.0.0.2/32, already held by peer nat-a (%s)" % (key(2), key(1))]),
    # A VIP bound on every control-plane node (Talos #12358): cp1 < cp2 < cp3 by node ID, cp1 keeps the VIP;
    # cp2 and cp3 each lose it (one warning each, naming cp1) and keep their own addresses.
    ("vip-on-three", [peer("cp%d" % n, "cp%d" % n, key(n), ula(n), addresses=["10.5.0.%d" % n, "10.5.0.100"]) for n in (3, 1, 2)], [],
     {"cp1": ["10.5.0.1/32", "10.5.0.100/32", ula(1) + "/128"], "cp2": ["10.5.0.2/32", ula(2) + "/128"],
      "cp3": ["10.5.0.3/32", ula(3) + "/128"]},
     ["cp2 (%s) claims 10.5.0.100/32, already held by peer cp1" % key(2), "cp3 (%s) claims 10.5.0.100/32, already held by peer cp1" % key(3)]),
    # Cloned MACs, one ULA on two nodes: R2 adds it to both; R3 the second ("m2") loses it and keeps its pod
    # network. (The inventory path warns about the shared address too, see test_peers.)
    ("cloned-mac", [peer("m1", "m1", key(1), ula(7), ["10.244.1.0/24"]), peer("m2", "m2", key(2), ula(7), ["10.244.2.0/24"])], [],
     {"m1": ["10.244.1.0/24", ula(7) + "/128"], "m2": ["10.244.2.0/24"]},
     ["m2 (%s) claims %s/128, already held by peer m1" % (key(2), ula(7))]),
    # A chain (R4: later peers are compared with the trimmed sets): a {10.0.0.0/24}; b {10.0.0.128/25, 10.0.1.0/24}
    # minus a = {10.0.1.0/24}; c {10.0.1.0/25, 10.0.0.0/16} minus a and b = 10.0.0.0/16 - 10.0.0.0/23 =
    # 10.0.2.0/23 + 10.0.4.0/22 + 10.0.8.0/21 + 10.0.16.0/20 + 10.0.32.0/19 + 10.0.64.0/18 + 10.0.128.0/17.
    ("chain", [peer("c", "c", key(3), ula(3), ["10.0.1.0/25", "10.0.0.0/16"]), peer("a", "a", key(1), ula(1), ["10.0.0.0/24"]),
               peer("b", "b", key(2), ula(2), ["10.0.0.128/25", "10.0.1.0/24"])], [],
     {"a": ["10.0.0.0/24", ula(1) + "/128"], "b": ["10.0.1.0/24", ula(2) + "/128"],
      "c": ["10.0.2.0/23", "10.0.4.0/22", "10.0.8.0/21", "10.0.16.0/20", "10.0.32.0/19", "10.0.64.0/18", "10.0.128.0/17", ula(3) + "/128"]},
     ["b (%s) claims 10.0.0.128/25, already held by peer a" % key(2), "c (%s) claims 10.0.0.0/24, already held by peer a" % key(3),
      "c (%s) claims 10.0.1.0/24, already held by peer b" % key(3)]),
    # Nothing left (R3, "conflict resolution removed all ranges"): w2's only claim is w1's ULA as a node address
    # and its own ULA equal to w1's: empty AllowedIPs, the peer is still emitted.
    ("nothing-left", [peer("w1", "w1", key(1), ula(1)), peer("w2", "w2", key(2), ula(1), addresses=[ula(1)])], [],
     {"w1": [ula(1) + "/128"], "w2": []}, ["w2 (%s) claims %s/128, already held by peer w1" % (key(2), ula(1)), "w2 (%s) has no address left" % key(2)]),
    # R2: the ULA is added after the exclusions, so excluding fc00::/7 removes another v6 node address but not it.
    ("exclusion-spares-the-ula", [peer("x", "x", key(1), ula(1), addresses=["fd99::5", "10.1.1.1"], exclude=["fc00::/7"])], [],
     {"x": ["10.1.1.1/32", ula(1) + "/128"]}, []),
    # H2: a peer without a node ID comes after those with one: "zz" (with an ID) keeps 10.7.0.0/24 against
    # "aa" (none), although aa's key sorts first.
    ("no-node-id-last", [peer("aa", "", key(1), ula(1), ["10.7.0.0/24"]), peer("zz", "zz", key(9), ula(9), ["10.7.0.0/23"])], [],
     {"aa": [ula(1) + "/128"], "zz": ["10.7.0.0/23", ula(9) + "/128"]}, ["aa (%s) claims 10.7.0.0/24, already held by peer zz" % key(1)]),
    # H1: this node's pod network 10.244.9.0/24 is taken out of p's 10.244.8.0/23 first: 10.244.8.0/24 is left.
    ("local-network", [peer("p", "p", key(1), ula(1), ["10.244.8.0/23"])], ["10.244.9.0/24"],
     {"p": ["10.244.8.0/24", ula(1) + "/128"]}, ["p (%s) claims this node's own addresses 10.244.9.0/24" % key(1)]),
]


def _check(specs, warnings, expected, warned):
    assert [s["public_key"] for s in specs] == sorted(s["public_key"] for s in specs)  # H3
    assert {s["name"]: s["allowed_ips"] for s in specs} == expected
    for text in warned:
        assert any(text in w for w in warnings), (text, warnings)
    assert len(warnings) == len(warned), warnings


@pytest.mark.parametrize("name, peers, local_networks, expected, warned", VECTORS, ids=[v[0] for v in VECTORS])
def test_assign_allowed_ips_follows_talos(name, peers, local_networks, expected, warned):
    specs, warnings = peerspec.assign_allowed_ips(peers, [LOCAL_ULA], local_networks)
    _check(specs, warnings, expected, warned)


@pytest.mark.parametrize("name, peers, local_networks, expected, warned", VECTORS, ids=[v[0] for v in VECTORS])
def test_inventory_peers_follow_the_same_rule(name, peers, local_networks, expected, warned):
    specs, warnings = build_peer_set(LOCAL_KEY, LOCAL_ULA + "/128", SUBNET, peers, None, None, "local", [], local_networks)
    shared = [w for w in warnings if "have the same KubeSpan address" in w]  # the inventory path also says this
    _check(specs, [w for w in warnings if w not in shared], expected, warned)


@pytest.mark.parametrize("name, peers, local_networks, expected, warned", VECTORS, ids=[v[0] for v in VECTORS])
def test_discovered_peers_follow_the_same_rule(name, peers, local_networks, expected, warned):
    local = dict(subnet=SUBNET, local_node_id="local", local_public_key=LOCAL_KEY, local_address=LOCAL_ULA + "/128",
                 local_networks=local_networks)
    discovered = [dict(p, source="discovery") for p in peers]
    merged, reasons = da.merge_affiliates([], discovered, **local)
    assert reasons == [] and sorted(a["name"] for a in merged) == sorted(expected)
    specs, warnings = build_peer_set(LOCAL_KEY, LOCAL_ULA + "/128", SUBNET, merged, None, None, "local", [], local_networks)
    shared = [w for w in warnings if "have the same KubeSpan address" in w]
    _check(specs, [w for w in warnings if w not in shared], expected, warned)


def test_the_order_key_is_talos_affiliate_order():
    # byte order of the node IDs (digits < upper case < lower case in base62 text), peers without one last
    ids = ["b", "", "B", "9", "a0", None]
    ordered = sorted(({"node_id": i, "public_key": key(n)} for n, i in enumerate(ids)), key=peerspec.order_key)
    assert [p["node_id"] for p in ordered] == ["9", "B", "a0", "b", "", None]
