"""Differential test of the sweep in assign_claims and the union routed_set reuses, on larger clusters.

The peer-set differential test draws at most 7 peers; here up to 40 peers claim from a small pool of
addresses and prefixes, so a peer often overlaps more than MAX_LISTED (8) earlier peers, clusters of
overlapping intervals chain, and many peers are left untouched (the sweep's fast path). The AllowedIPs,
the warnings and their order, and the routed set must equal the frozen pre-sweep code; the routed set also
after the specs were copied, reordered, filtered, or had an AllowedIPs list changed in place (the reuse of
assign_claims's union must then not happen, or must give the same set).
"""

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import peerspec as new
from ansible_collections.kubespan.mesh.tests.unit.plugins.module_utils import frozen_peerset_v1 as old

SUBNET = "fd7f:175a:b97c:5602::/64"
HOSTS = ["10.0.0.%d" % i for i in range(0, 24)] + ["2001:db8::%x" % i for i in range(1, 12)]
PREFIXES = ["10.0.0.0/29", "10.0.0.8/29", "10.0.0.0/28", "10.0.0.16/30", "10.0.0.4/30", "10.0.0.0/24", "10.0.1.0/24",
            "10.0.0.0/23", "10.0.2.0/24", "10.0.0.20/31", "2001:db8::/125", "2001:db8::8/126", "2001:db8::/64",
            "2001:db8:1::/64", "fd7f:175a:b97c:5602::/120", "0.0.0.0/0"]


@st.composite
def peer(draw, index):
    return {
        "name": "p%02d" % index,
        "public_key": base64.b64encode(draw(st.binary(min_size=32, max_size=32))).decode(),
        "address": "fd7f:175a:b97c:5602::%x" % draw(st.integers(1, 600)),
        "addresses": draw(st.lists(st.sampled_from(HOSTS), max_size=3)),
        "additional_addresses": draw(st.lists(st.sampled_from(PREFIXES), max_size=3)),
        "exclude_advertised_networks": draw(st.lists(st.sampled_from(PREFIXES + HOSTS), max_size=2)),
    }


@st.composite
def cluster(draw):
    count = draw(st.integers(0, 40))
    peers = [draw(peer(i)) for i in range(count)]
    for p in peers:
        if draw(st.integers(0, 2)) == 0:  # mostly disjoint peers, as real clusters are
            p["addresses"] = ["10.%d.%d.1" % (len(p["name"]), int(p["name"][1:]))]
            p["additional_addresses"] = ["10.%d.%d.0/24" % (100 + int(p["name"][1:]), len(p["name"]))]
            p["exclude_advertised_networks"] = []
    local_addresses = draw(st.lists(st.sampled_from(HOSTS), max_size=2))
    local_networks = draw(st.lists(st.sampled_from(PREFIXES), max_size=2))
    return peers, local_addresses, local_networks


def outcome(mod, peers, local_addresses, local_networks, edit):
    specs, warnings = mod.assign_allowed_ips(peers, local_addresses, local_networks)
    routed = mod.routed_set(specs, SUBNET).prefixes()
    changed = edit(specs)
    again = mod.routed_set(changed, SUBNET).prefixes()
    bypass = mod.routed_set(specs, SUBNET, True, [p["public_key"] for p in specs[1::2]]).prefixes()
    return specs, warnings, routed, again, bypass


EDITS = {
    "same": lambda specs: specs,
    "copies": lambda specs: [dict(s) for s in specs],  # new dicts, the same lists
    "reversed": lambda specs: specs[::-1],
    "first dropped": lambda specs: specs[1:],
    "generator": lambda specs: (s for s in specs),
    "list changed": lambda specs: [s["allowed_ips"].append("10.9.9.0/24") or s for s in specs[:1]] + specs[1:],
    "list emptied": lambda specs: [s["allowed_ips"].clear() or s for s in specs[-1:]] + specs[:-1],
    "list replaced": lambda specs: [dict(s, allowed_ips=list(s["allowed_ips"])) for s in specs],
}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cluster(), st.sampled_from(sorted(EDITS)))
def test_assign_and_routed_match_frozen_implementation(case, edit_name):
    peers, local_addresses, local_networks = case
    edit = EDITS[edit_name]
    assert outcome(new, peers, local_addresses, local_networks, edit) == outcome(old, peers, local_addresses, local_networks, edit)


def test_more_than_max_listed_holders_are_summarized():
    """A peer overlapping ten earlier peers: eight named warnings, then one that counts the rest (same as before)."""
    def key(i):
        return base64.b64encode(bytes([i]) * 32).decode()
    peers = [{"name": "n%d" % i, "public_key": key(i), "address": "fd7f:175a:b97c:5602::%x" % (i + 1),
              "addresses": ["10.0.0.%d" % i]} for i in range(1, 11)]
    peers.append({"name": "big", "public_key": key(200), "address": "fd7f:175a:b97c:5602::ff", "additional_addresses": ["10.0.0.0/24"]})
    got = new.assign_allowed_ips(peers)
    assert got == old.assign_allowed_ips(peers)
    assert sum("already held by" in w for w in got[1]) == new.MAX_LISTED
    assert "also claims addresses of 2 more peers" in got[1][-1]
