"""Differential test: the optimized peer set, AllowedIPs and routed set equal the frozen pre-optimization code.

Random clusters with pod-network and node-address overlaps, excluded networks, duplicate keys, names and
KubeSpan addresses, addresses outside the subnet, non-canonical and invalid text, --limit members and
last-known entries (copies of fresh data, stale, and broken). Both implementations must return the same
(specs, warnings) or raise the same error class name with the same message.
"""

import base64
import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import peers as new_peers
from ansible_collections.kubespan.mesh.plugins.module_utils.core import peerspec as new_peerspec
from ansible_collections.kubespan.mesh.tests.unit.plugins.module_utils import frozen_peerset_v1 as old

SUBNET = ipaddress.IPv6Network("fd7f:175a:b97c:5602::/64")
KEYS = [base64.b64encode(bytes([i + 1]) * 32).decode() for i in range(8)]
NAMES = ["n%d" % i for i in range(8)]

V4_ODD = ["10.0.0.5/24", " 10.0.0.9 ", "010.0.0.1", "300.1.1.1", "10.0.1.0", "192.168.0.1"]
V6_ODD = ["2001:DB8::1", "2001:db8:0::2", "::ffff:10.0.0.3", "::1", "2001:db8::1/64", "fe80::1%eth0", "x", "2001:db8::g"]
v4 = st.sampled_from(["10.0.0.%d" % i for i in range(0, 16, 3)] + V4_ODD)
v6 = st.sampled_from(["2001:db8::%x" % i for i in range(1, 6)] + V6_ODD)
prefix = st.sampled_from(["10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/29", "10.0.0.8/31", "10.0.0.0/24", "10.0.0.3/28", "10.0.1.0/24",
                          "10.0.0.0/23", "10.0.0.0", "10.0.0.6/32", "2001:db8::/126", "2001:db8::4/127", "2001:db8::/64",
                          "2001:DB8::/120", "fd00:10:244::/64", "fd7f:175a:b97c:5602::/64", "10.0.0.0/33", "10.0.0.0/8x",
                          " 10.0.0.0/30 ", "bad", "::/0", "0.0.0.0/0", "10.0.0.0/030"])
kaddr = st.sampled_from(["fd7f:175a:b97c:5602::%x" % i for i in range(1, 8)] + ["fd7f:175a:b97c:5602::1/128", "fd00::1",
                                                                                "FD7F:175A:B97C:5602::3", "zz"])
endpoint = st.sampled_from(["10.0.0.1:51820", "[2001:db8::1]:51820", "[10.0.0.2]:5", "2001:db8::1:51820", "10.0.0.1:0",
                            " 10.0.0.3:051820 ", "[2001:DB8::1]:1", "10.0.0.1:51820", "host:1", "[::ffff:10.0.0.1]:7",
                            "10.0.0.4:65536", "10.0.0.5:٣"])
node_id = st.sampled_from(["", "abcDEF0123", "Zz9", "0aa", "abcDEF0124", "bad id!", None])  # several valid IDs: node-ID order (issue 17)


@st.composite
def affiliate(draw):
    aff = {"name": draw(st.sampled_from(NAMES)), "public_key": draw(st.sampled_from(KEYS + ["short"])),
           "address": draw(kaddr)}
    if draw(st.booleans()):
        aff["node_id"] = draw(node_id)
    if draw(st.booleans()):
        aff["endpoints"] = draw(st.lists(endpoint, max_size=3))
    if draw(st.booleans()):
        aff["addresses"] = draw(st.lists(st.one_of(v4, v6), max_size=3))
    if draw(st.booleans()):
        aff["additional_addresses"] = draw(st.lists(prefix, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        aff["exclude_advertised_networks"] = draw(st.lists(prefix, max_size=2))
    if draw(st.integers(0, 20)) == 0:
        aff["addresses"] = "10.0.0.1"  # not a list
    return aff


@st.composite
def cluster(draw):
    fresh = draw(st.lists(affiliate(), max_size=7, unique_by=lambda a: a["name"]))
    if draw(st.integers(0, 10)) == 0 and fresh:
        fresh.append(dict(fresh[0]))  # listed twice
    last_known = []
    for aff in draw(st.lists(affiliate(), max_size=4)):
        last_known.append(aff)
    for aff in fresh:  # last-known copies of fresh data, as the state file holds them (normalized) or raw
        mode = draw(st.integers(0, 3))
        if mode == 1:
            try:
                last_known.append(dict(old.validate_affiliate(aff, SUBNET), allowed_ips=["10.0.0.0/30"]))
            except ValueError:
                pass
        elif mode == 2:
            last_known.append(dict(aff))
    if draw(st.integers(0, 10)) == 0:
        last_known.append("not a mapping")
    members = draw(st.one_of(st.none(), st.lists(st.sampled_from(NAMES + ["gone"]), max_size=9)))
    local_key = draw(st.sampled_from(KEYS))
    local_name = draw(st.one_of(st.none(), st.sampled_from(NAMES)))
    local_address = draw(st.sampled_from(["fd7f:175a:b97c:5602::1/128", "fd7f:175a:b97c:5602::7"]))
    local_addresses = draw(st.lists(st.one_of(v4, v6), max_size=2))
    local_networks = draw(st.lists(prefix, max_size=2))
    return fresh, members, last_known, local_key, local_name, local_address, local_addresses, local_networks


def outcome(mod, peerspec_mod, case):
    fresh, members, last_known, local_key, local_name, local_address, local_addresses, local_networks = case
    try:
        specs, warnings = mod.build_peer_set(local_key, local_address, SUBNET, fresh, members, last_known, local_name,
                                             local_addresses, local_networks)
    except ValueError as exc:
        return ("error", type(exc).__name__, str(exc))
    routed = peerspec_mod.routed_set(specs, SUBNET).prefixes()
    up = [p["public_key"] for p in specs[::2]]
    bypass = peerspec_mod.routed_set(specs, SUBNET, True, up).prefixes()
    return specs, warnings, routed, bypass


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster())
def test_build_peer_set_matches_frozen_implementation(case):
    assert outcome(new_peers, new_peerspec, case) == outcome(old, old, case)


@settings(max_examples=500, deadline=None)
@given(st.lists(affiliate(), max_size=6, unique_by=lambda a: a["name"]), st.lists(st.one_of(v4, v6), max_size=2),
       st.lists(prefix, max_size=2))
def test_assign_allowed_ips_matches_frozen_implementation(affs, local_addresses, local_networks):
    def run(mod):
        try:
            return mod.assign_allowed_ips(affs, local_addresses, local_networks)
        except ValueError as exc:
            return ("error", str(exc))
    assert run(new_peerspec) == run(old)


@settings(max_examples=500, deadline=None)
@given(affiliate())
def test_validate_affiliate_matches_frozen_implementation(aff):
    def run(mod):
        try:
            return mod.validate_affiliate(aff, SUBNET)
        except ValueError as exc:
            return ("error", str(exc))
    assert run(new_peers) == run(old)
