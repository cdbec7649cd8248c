"""AllowedIPs per peer and the routed set: Talos's vectors, overlap and local-address refusal, properties."""

import base64
import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerspec import assign_allowed_ips, local_ipset, peer_ipset, routed_set

KEY_A = "PLPNBddmTgHJhtw0vxltq1ZBdPP9RNOEUd5JjJZzBRY="
KEY_B = "Zr5ewpUm2Ywo1c+/59WFKIBjZ3c/nVbIWsT5elbjwCU="
KEY_W2 = "mB6WlFOR66Jx5rtPMIpxJ3s4XHyer9NCzqWPP7idGRo"  # as in Talos's test (43 characters)
ULA_A = "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0"
ULA_B = "fd50:8d60:4238:6302:f857:23ff:fe21:d1e1"
KUBESPAN_PREFIX = "fd50:8d60:4238:6302::/64"


def peer(key, address, additional=(), addresses=(), exclude=(), name=""):
    return {"name": name, "public_key": key, "address": address, "endpoints": [], "additional_addresses": list(additional),
            "addresses": list(addresses), "exclude_advertised_networks": list(exclude)}


def by_name(specs):
    return {s["name"]: s["allowed_ips"] for s in specs}


def test_talos_vector_with_excluded_networks():
    p = peer(KEY_A, ULA_A, additional=["10.244.3.1/24", "10.244.3.0/32"], addresses=["192.168.3.4"], exclude=["10.244.3.128/25"], name="bar")
    specs, warnings = assign_allowed_ips([p])
    assert specs[0]["allowed_ips"] == ["10.244.3.0/25", "192.168.3.4/32", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0/128"]
    assert warnings == []


def test_talos_peer_spec_reconcile_vector():
    first = peer(KEY_A, ULA_A, additional=["10.244.3.1/24", "10.244.3.0/32"], addresses=["192.168.3.4"], name="bar")
    worker2 = peer(KEY_W2, "fdc8:8aee:4e2d:1202:f073:9cff:fe6c:4d67", additional=["10.244.4.1/24"], addresses=["192.168.3.6"], name="worker-2")
    specs, warnings = assign_allowed_ips([worker2, first])
    assert by_name(specs) == {
        "bar": ["10.244.3.0/24", "192.168.3.4/32", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0/128"],
        "worker-2": ["10.244.4.0/24", "192.168.3.6/32", "fdc8:8aee:4e2d:1202:f073:9cff:fe6c:4d67/128"],
    }
    assert [s["public_key"] for s in specs] == [KEY_A, KEY_W2] and warnings == []


def test_talos_overlap_vector_first_in_key_order_wins_and_warning_names_both():
    a = peer(KEY_A, ULA_A, additional=["10.244.3.1/24", "10.244.3.0/32"], name="bar")
    b = peer(KEY_B, ULA_B, additional=["10.244.2.0/23", "192.168.3.0/24"], name="worker-1")
    specs, warnings = assign_allowed_ips([b, a])
    assert by_name(specs) == {
        "bar": ["10.244.3.0/24", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0/128"],
        "worker-1": ["10.244.2.0/24", "192.168.3.0/24", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e1/128"],
    }
    assert len(warnings) == 1
    assert "worker-1 (%s)" % KEY_B in warnings[0] and "bar (%s)" % KEY_A in warnings[0] and "10.244.3.0/24" in warnings[0]


def test_kubespan_address_survives_exclusion_and_node_address_is_a_host():
    p = peer(KEY_A, ULA_A + "/128", addresses=["192.168.3.4/24", "10.0.0.1"], exclude=["10.0.0.0/8", "fd50::/16"])
    assert peer_ipset(p).prefixes() == ["192.168.3.4/32", ULA_A + "/128"]


def test_local_addresses_and_networks_are_refused_with_a_warning_naming_the_peer():
    a = peer(KEY_A, ULA_A, additional=["10.244.0.0/16"], addresses=["192.168.3.4", "192.168.3.9"], name="bar")
    specs, warnings = assign_allowed_ips([a], local_addresses=["192.168.3.9/24", ULA_B], local_networks=["10.244.1.0/24"])
    assert specs[0]["allowed_ips"] == ["10.244.0.0/24", "10.244.2.0/23", "10.244.4.0/22", "10.244.8.0/21", "10.244.16.0/20",
                                       "10.244.32.0/19", "10.244.64.0/18", "10.244.128.0/17", "192.168.3.4/32", ULA_A + "/128"]
    assert warnings == ["peer bar (%s) claims this node's own addresses 10.244.1.0/24, 192.168.3.9/32: they are not routed to it" % KEY_A]


def test_peer_left_without_addresses_is_kept_with_a_warning():
    a = peer(KEY_A, ULA_A, name="a")
    b = peer(KEY_B, ULA_A, name="b")  # the same KubeSpan address (peers.build_peer_set refuses this earlier)
    specs, warnings = assign_allowed_ips([a, b])
    assert by_name(specs) == {"a": [ULA_A + "/128"], "b": []}
    assert "no address left" in warnings[-1] and "b (%s)" % KEY_B in warnings[-1]


def test_peers_without_optional_fields_get_their_kubespan_address():
    specs, warnings = assign_allowed_ips([{"name": "n2", "public_key": KEY_A, "address": ULA_A}])
    assert specs[0]["allowed_ips"] == [ULA_A + "/128"] and warnings == []


@pytest.mark.parametrize("field,value,match", [
    ("additional_addresses", ["10.244.0.0/33"], "peer bar .*: additional address '10.244.0.0/33' is not an IP prefix"),
    ("addresses", ["host"], "peer bar .*: node address 'host' is not an IP address"),
    ("exclude_advertised_networks", ["x/8"], "peer bar .*: excluded network 'x/8' is not an IP prefix"),
    ("address", "", "peer bar .*: KubeSpan address '' is not an IP address"),
    ("addresses", "10.0.0.1", "peer bar .*: addresses must be a list"),
])
def test_bad_values_name_the_peer_and_the_value(field, value, match):
    p = peer(KEY_A, ULA_A, name="bar")
    p[field] = value
    with pytest.raises(ValueError, match=match):
        assign_allowed_ips([p])


def test_bad_local_values_are_named():
    with pytest.raises(ValueError, match="local address 'x'"):
        local_ipset(["x"])
    with pytest.raises(ValueError, match="local network '10.0.0.0/40'"):
        local_ipset(networks=["10.0.0.0/40"])


def test_routed_set_excludes_the_kubespan_prefix_and_follows_bypass():
    a = peer(KEY_A, ULA_A, additional=["10.244.3.0/24"], addresses=["192.168.3.4"], name="a")
    b = peer(KEY_B, ULA_B, additional=["10.244.2.0/24"], addresses=["2001:db8::2"], name="b")
    specs = assign_allowed_ips([a, b])[0]
    forced = routed_set(specs, KUBESPAN_PREFIX)
    assert forced.prefixes() == ["10.244.2.0/23", "192.168.3.4/32", "2001:db8::2/128"]
    assert routed_set(specs, KUBESPAN_PREFIX, allow_down_peer_bypass=False, up_peers=[]) == forced
    assert routed_set(specs, KUBESPAN_PREFIX, allow_down_peer_bypass=True, up_peers=[KEY_B]).prefixes() == ["10.244.2.0/24", "2001:db8::2/128"]
    assert routed_set(specs, KUBESPAN_PREFIX, allow_down_peer_bypass=True).is_empty()
    assert routed_set([], KUBESPAN_PREFIX).is_empty()


# --- properties ------------------------------------------------------------------------------------


def key(n):
    return base64.b64encode(n.to_bytes(32, "big")).decode()


prefix = st.integers(min_value=22, max_value=32).flatmap(
    lambda length: st.integers(min_value=0, max_value=1023).map(lambda n: "10.0.%d.%d/%d" % (n // 256, n % 256, length)))
host = st.integers(min_value=0, max_value=1023).map(lambda n: "10.0.%d.%d" % (n // 256, n % 256))
peer_data = st.tuples(st.lists(prefix, max_size=4), st.lists(host, max_size=3), st.lists(prefix, max_size=2))


@given(st.lists(peer_data, max_size=8), st.lists(host, max_size=3), st.lists(prefix, max_size=2))
def test_no_two_peers_share_an_address_and_none_claims_a_local_one(data, local_hosts, local_nets):
    peers = [peer(key(n + 1), "fd50::%x" % (n + 1), additional=a, addresses=h, exclude=x, name="n%d" % n) for n, (a, h, x) in enumerate(data)]
    specs, _warnings = assign_allowed_ips(peers, local_addresses=local_hosts, local_networks=local_nets)
    sets = [IPSet(s["allowed_ips"]) for s in specs]
    local = IPSet(local_hosts + local_nets)
    claimed = IPSet()
    for spec, allowed in zip(specs, sets):
        assert not allowed.overlaps(claimed), spec["name"]
        assert not allowed.overlaps(local), spec["name"]
        assert allowed - peer_ipset(spec) == IPSet()  # never more than the peer itself claims
        assert IPSet(spec["allowed_ips"]).prefixes() == spec["allowed_ips"]  # minimal and sorted
        claimed.update(allowed)
    everything = IPSet()
    for p in peers:
        everything.update(peer_ipset(p))
    assert claimed == everything - local  # nothing is lost but the local addresses


@given(st.lists(peer_data, min_size=1, max_size=6), st.sets(st.integers(min_value=0, max_value=5)))
def test_bypass_routes_only_up_peers_and_never_the_kubespan_prefix(data, up_index):
    peers = [peer(key(n + 1), "fd50:8d60:4238:6302::%x" % (n + 1), additional=a, addresses=h, exclude=x) for n, (a, h, x) in enumerate(data)]
    specs = assign_allowed_ips(peers)[0]
    up = [key(n + 1) for n in up_index]
    forced, bypass = routed_set(specs, KUBESPAN_PREFIX), routed_set(specs, KUBESPAN_PREFIX, allow_down_peer_bypass=True, up_peers=up)
    assert not forced.overlaps(IPSet([KUBESPAN_PREFIX])) and bypass - forced == IPSet()
    for spec in specs:
        own = IPSet(spec["allowed_ips"]) - IPSet([KUBESPAN_PREFIX])
        assert forced.contains(own.prefixes()[0]) if own else True
        if spec["public_key"] not in up and own:
            assert not bypass.overlaps(own)


@settings(deadline=None, max_examples=1)
@given(st.just(5000))
def test_five_thousand_peers_are_fast(count):
    peers = [peer(key(n + 1), "fd50:8d60:4238:6302::%x" % (n + 1), additional=["10.%d.%d.0/24" % (n // 256, n % 256)],
                  addresses=["192.168.%d.%d" % (n // 256, n % 256), "2001:db8::%x" % n], name="n%d" % n) for n in range(count)]
    peers.append(peer(key(count + 1), "fd50:8d60:4238:6302::ffff", additional=["10.0.0.0/8"], name="greedy"))
    start = time.perf_counter()
    specs, warnings = assign_allowed_ips(peers, local_addresses=["192.168.0.1"])
    routed = routed_set(specs, KUBESPAN_PREFIX)
    elapsed = time.perf_counter() - start
    assert len(specs) == count + 1 and len(routed.prefixes()) >= 3
    assert sum("overlap" in w for w in warnings) + sum("own addresses" in w for w in warnings) >= 2
    assert elapsed < 10.0, elapsed


def test_ula_prefix_constant_matches_vector_addresses():
    assert ipaddress.ip_address(ULA_A) in ipaddress.ip_network(KUBESPAN_PREFIX)


def test_many_overlaps_are_summarized():
    small = [peer(key(n + 1), "fd50::%x" % (n + 1), additional=["10.0.%d.0/24" % n], name="n%d" % n) for n in range(20)]
    greedy = peer("z" + key(99)[1:], "fd50::ffff", additional=["10.0.0.0/8"], name="greedy")
    specs, warnings = assign_allowed_ips(small + [greedy])
    assert len(warnings) == 9 and all("greedy" in w for w in warnings)
    assert warnings[-1].endswith("also claims addresses of 12 more peers, which keep them")
    assert by_name(specs)["greedy"][:2] == ["10.0.20.0/22", "10.0.24.0/21"]
