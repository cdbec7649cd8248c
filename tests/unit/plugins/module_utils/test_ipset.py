"""IP set: netipx IPSetBuilder semantics, minimal prefixes, set algebra against a brute-force model, speed."""

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet, parse_range, range_to_prefixes


def test_prefix_with_host_bits_is_masked_and_host_added():
    s = IPSet(["10.244.3.1/24", "10.244.3.0/32"])
    assert s.prefixes() == ["10.244.3.0/24"]


def test_add_remove_emit_minimal_sorted_v4_before_v6():
    s = IPSet(["2001:db8::/32", "10.244.3.0/24", "192.168.3.4"]).remove("10.244.3.128/25")
    s.add(ipaddress.ip_address("fd50:8d60:4238:6302:f857:23ff:fe21:d1e0"))
    assert s.prefixes() == ["10.244.3.0/25", "192.168.3.4/32", "2001:db8::/32", "fd50:8d60:4238:6302:f857:23ff:fe21:d1e0/128"]


def test_adjacent_prefixes_merge_and_split_minimally():
    s = IPSet(["10.0.0.0/24", "10.0.1.0/24"])
    assert s.prefixes() == ["10.0.0.0/23"]
    s.add("10.0.2.0/24")
    assert s.prefixes() == ["10.0.0.0/23", "10.0.2.0/24"]
    assert s.ranges() == [("10.0.0.0", "10.0.2.255")]
    s.remove("10.0.1.5")
    assert s.prefixes() == ["10.0.0.0/24", "10.0.1.0/30", "10.0.1.4/32", "10.0.1.6/31", "10.0.1.8/29", "10.0.1.16/28",
                            "10.0.1.32/27", "10.0.1.64/26", "10.0.1.128/25", "10.0.2.0/24"]


def test_whole_spaces_and_edges():
    s = IPSet(["0.0.0.0/0", "::/0"])
    assert s.prefixes() == ["0.0.0.0/0", "::/0"]
    s.remove("0.0.0.0").remove("255.255.255.255")
    assert s.prefixes()[0] == "0.0.0.1/32" and s.prefixes()[31] == "128.0.0.0/2" and len(s.prefixes(4)) == 62
    assert range_to_prefixes(6, 0, 2 ** 128 - 1) == ["::/0"]


def test_families_do_not_mix():
    s = IPSet(["::ffff:10.0.0.1"])
    assert not s.contains("10.0.0.1") and s.contains("::ffff:a00:1")
    assert not IPSet(["10.0.0.0/8"]).overlaps(IPSet(["::/0"]))


def test_contains_and_overlaps():
    s = IPSet(["10.0.0.0/23", "192.168.3.4"])
    assert "10.0.1.7" in s and s.contains("10.0.0.0/23") and not s.contains("10.0.0.0/22")
    assert s.overlaps("10.0.0.0/8") and s.overlaps(IPSet(["192.168.3.0/24"])) and not s.overlaps("192.168.3.5")
    assert not IPSet().overlaps(s) and IPSet().is_empty() and not IPSet()


def test_set_algebra_and_equality():
    a = IPSet(["10.0.0.0/16", "2001:db8::/64"])
    b = IPSet(["10.0.128.0/17", "10.1.0.0/16"])
    assert (a | b).prefixes() == ["10.0.0.0/15", "2001:db8::/64"]
    assert (a & b).prefixes() == ["10.0.128.0/17"]
    assert (a - b).prefixes() == ["10.0.0.0/17", "2001:db8::/64"]
    assert a - b == IPSet(["10.0.0.0/17", "2001:db8::/64"]) and a != b
    c = a.copy()
    c.difference_update(b)
    assert c == a - b and a.prefixes() == ["10.0.0.0/16", "2001:db8::/64"]


@pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.0.0/33", "", "eth0", None, 42, "10.0.0.0/8/9"])
def test_bad_values_are_named(bad):
    with pytest.raises(ValueError, match="is not an IP address or prefix") as err:
        IPSet([bad])
    assert repr(bad) in str(err.value)


def test_parse_range_accepts_ipaddress_objects():
    assert parse_range(ipaddress.ip_interface("10.1.2.3/24")) == (4, int(ipaddress.ip_address("10.1.2.0")), int(ipaddress.ip_address("10.1.2.255")))
    assert parse_range(ipaddress.ip_network("::/127"))[1:] == (0, 1)


# --- properties against a brute-force model: prefixes inside 10.0.0.0/24 --------------------------

BASE = int(ipaddress.ip_address("10.0.0.0"))
small_prefix = st.integers(min_value=24, max_value=32).flatmap(
    lambda length: st.integers(min_value=0, max_value=255).map(lambda n: "10.0.0.%d/%d" % (n, length)))


def model(prefix):
    net = ipaddress.ip_network(prefix, strict=False)
    return set(range(int(net.network_address) - BASE, int(net.broadcast_address) - BASE + 1))


def expand(ipset):
    result = set()
    for p in ipset.prefixes():
        result |= model(p)
    return result


def assert_minimal(ipset):
    """Prefixes are sorted, disjoint and maximal (no prefix's parent is inside the set): the unique minimal cover."""
    nets = [ipaddress.ip_network(p) for p in ipset.prefixes()]
    for left, right in zip(nets, nets[1:]):
        assert left.broadcast_address < right.network_address or left.version < right.version
    for net in nets:
        if net.prefixlen:
            assert not ipset.contains(net.supernet())


ops = st.lists(st.tuples(st.booleans(), small_prefix), max_size=30)


@given(ops)
def test_add_remove_matches_model_and_is_minimal(steps):
    s, m = IPSet(), set()
    for add, prefix in steps:
        if add:
            s.add(prefix)
            m |= model(prefix)
        else:
            s.remove(prefix)
            m -= model(prefix)
    assert expand(s) == m
    assert_minimal(s)
    assert IPSet(s.prefixes()) == s


@given(st.lists(small_prefix, max_size=12), st.lists(small_prefix, max_size=12), small_prefix)
def test_algebra_matches_model(xs, ys, probe):
    a, b = IPSet(xs), IPSet(ys)
    ma, mb = expand(a), expand(b)
    assert expand(a | b) == ma | mb
    assert expand(a & b) == ma & mb
    assert expand(a - b) == ma - mb
    assert a.overlaps(b) == bool(ma & mb)
    assert a.contains(probe) == (model(probe) <= ma)
    for result in (a | b, a & b, a - b):
        assert_minimal(result)


@settings(deadline=None, max_examples=5)
@given(st.integers(min_value=0, max_value=2 ** 32 - 1))
def test_thousands_of_prefixes_are_fast(seed):
    start = time.perf_counter()
    claimed = IPSet()
    for n in range(5000):
        peer = IPSet(["10.%d.%d.0/24" % (n // 256, n % 256), "172.16.%d.%d" % (n // 256, n % 256),
                      "fd00:%x::/48" % ((n * 7919 + seed) % 65536)])
        peer.difference_update(claimed)
        claimed.update(peer)
    assert len(claimed.prefixes()) > 1000
    assert time.perf_counter() - start < 5.0


def test_interval_count_per_family():
    s = IPSet(["10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24", "2001:db8::/32"])
    assert (s.interval_count(), s.interval_count(4), s.interval_count(6)) == (3, 2, 1)


@given(st.lists(st.tuples(st.sampled_from([4, 6]), st.integers(0, 300), st.integers(0, 40)), max_size=12))
def test_from_sorted_ranges_is_the_union(raw):
    ranges = sorted((family, first, first + span) for family, first, span in raw)
    expected = IPSet()
    for family, first, last in ranges:
        expected.add_range(family, first, last)
    got = IPSet.from_sorted_ranges(ranges)
    assert list(got.intervals()) == list(expected.intervals())
