"""dataplane._set_value writes each interval as before (frozen copy of the ipaddress/range_to_prefixes version),
and desired_nft writes each family's set once: every rule gets an equal value of its own (outer list)."""

import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import dataplane
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet, range_to_prefixes


def frozen_set_value(ipset, family):
    """The previous _set_value, verbatim in behaviour."""
    address = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    elements = []
    for _family, first, last in ipset.intervals(family):
        cover = range_to_prefixes(family, first, last)
        if first == last:
            elements.append(address(first).compressed)
        elif len(cover) == 1:
            addr, length = cover[0].split("/")
            elements.append({"prefix": {"addr": addr, "len": int(length)}})
        else:
            elements.append({"range": [address(first).compressed, address(last).compressed]})
    return elements[0] if len(elements) == 1 else {"set": elements}


def _interval(family):
    top = 2 ** (32 if family == 4 else 128) - 1
    # near zero, near the top, around 2^48 (inet_ntop's zero-run forms) and anywhere; short and aligned spans too
    base = st.one_of(st.integers(0, 300), st.integers(top - 300, top), st.integers(2 ** 48 - 300, 2 ** 48 + 300), st.integers(0, top))
    span = st.one_of(st.integers(0, 3), st.sampled_from([255, 256, 511, 1023]), st.integers(0, 2 ** 20))
    return st.builds(lambda b, n: (family, min(b, top), min(top, min(b, top) + n)), base, span)


def _aligned(family):
    bits = 32 if family == 4 else 128
    return st.integers(0, bits).flatmap(
        lambda length: st.integers(0, 2 ** length - 1).map(lambda n: (family, n << (bits - length), ((n + 1) << (bits - length)) - 1)))


_intervals = st.lists(st.one_of(_interval(4), _interval(6), _aligned(4), _aligned(6)), max_size=12)


def _ipset(intervals):
    result = IPSet()
    for family, first, last in intervals:
        result.add_range(family, first, last)
    return result


@settings(max_examples=500, deadline=None)
@given(_intervals)
def test_set_value_same_as_before(intervals):
    ipset = _ipset(intervals)
    for family in (4, 6):
        if ipset.interval_count(family):
            assert dataplane._set_value(ipset, family) == frozen_set_value(ipset, family)


@settings(max_examples=100, deadline=None)
@given(_intervals)
def test_desired_nft_rules_get_equal_values_of_their_own(intervals):
    ipset = _ipset(intervals)
    cfg = dataplane.DataPlaneConfig().validate()
    doc = dataplane.desired_nft(ipset, cfg)
    rights = {4: [], 6: []}
    for item in doc["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            left = expr.get("match", {}).get("left", {})
            if "payload" in left:
                rights[4 if left["payload"]["protocol"] == "ip" else 6].append(expr["match"]["right"])
    for family in (4, 6):
        want = frozen_set_value(ipset, family) if ipset.interval_count(family) else None
        assert len(rights[family]) == (3 if want is not None else 0)
        for value in rights[family]:
            assert json.dumps(value, sort_keys=True) == json.dumps(want, sort_keys=True)
        sets = [v["set"] for v in rights[family] if isinstance(v, dict) and "set" in v]
        assert len({id(s) for s in sets}) == len(sets)  # no two rules share one list
