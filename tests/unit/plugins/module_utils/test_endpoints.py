"""Announced endpoints and FilterIPs: Talos's vectors, edge cases, error messages, properties."""

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core.addressing import eui64_address, ula_prefix
from ansible_collections.kubespan.mesh.plugins.module_utils.core.endpoints import (
    announce_inputs,
    announced_endpoints,
    endpoints_from_inputs,
    filter_ips,
    parse_filter,
)

CLUSTER_ID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
OWN_KUBESPAN = str(eui64_address(ula_prefix(CLUSTER_ID), "ea:71:1b:b2:cc:ee"))
SIDEROLINK = "fdae:41e4:649b:9303:60be:7e36:c270:3238"


def test_own_kubespan_address_of_the_vector():
    assert OWN_KUBESPAN == "fd7f:175a:b97c:5602:e871:1bff:feb2:ccee"


def test_talos_local_affiliate_vector():
    # Talos LocalAffiliateController test: current addresses (with the /64 and /128 forms of one address,
    # the SideroLink ULA and the own KubeSpan address), discovered public IPs, filters, extra endpoints.
    addresses = ["172.20.0.2/24", "10.5.0.1/32", "192.168.192.168/24", "2001:123:4567::1/64", "2001:123:4567::1/128",
                 SIDEROLINK + "/128", OWN_KUBESPAN + "/128"]
    result = announced_endpoints(
        addresses,
        exclude=[OWN_KUBESPAN, SIDEROLINK],
        discovered_public_ips=["1.1.1.1", "2001:123:4567::1"],
        filters=["0.0.0.0/0", "!192.168.0.0/16", "2001::/16"],
        extra_endpoints=["10.5.0.1:51820", "1.2.3.4:5678"],
    )
    assert result == ["172.20.0.2:51820", "10.5.0.1:51820", "1.1.1.1:51820", "[2001:123:4567::1]:51820", "1.2.3.4:5678"]


def test_talos_vector_through_the_announce_inputs_the_agent_keeps():
    # the identity step keeps the inputs (JSON on the node); the agent adds the address Hello reports, later
    addresses = ["172.20.0.2/24", "10.5.0.1/32", "192.168.192.168/24", "2001:123:4567::1/64", "2001:123:4567::1/128",
                 SIDEROLINK + "/128", OWN_KUBESPAN + "/128"]
    inputs = json.loads(json.dumps(announce_inputs(addresses, [OWN_KUBESPAN, SIDEROLINK], ["0.0.0.0/0", "!192.168.0.0/16", "2001::/16"],
                                                   51820, ["10.5.0.1:51820", "1.2.3.4:5678"])))
    assert endpoints_from_inputs(inputs, ["1.1.1.1", "2001:123:4567::1"]) == [
        "172.20.0.2:51820", "10.5.0.1:51820", "1.1.1.1:51820", "[2001:123:4567::1]:51820", "1.2.3.4:5678"]
    # without an observed address: what the identity step announces
    assert endpoints_from_inputs(inputs) == ["172.20.0.2:51820", "10.5.0.1:51820", "[2001:123:4567::1]:51820", "1.2.3.4:5678"]
    # a filter that excludes the observed address drops it, as in Talos
    inputs["filters"] = ["0.0.0.0/0", "!1.0.0.0/8"]
    assert "1.1.1.1:51820" not in endpoints_from_inputs(inputs, ["1.1.1.1"])
    with pytest.raises(ValueError, match="version"):
        endpoints_from_inputs(dict(inputs, version=99))


def test_without_filters_every_usable_address_in_host_order():
    addresses = ["127.0.0.1/8", "fe80::1/64", "10.0.0.5/24", "::1/128", "2001:db8::5/64", "10.0.0.5/32", "0.0.0.0", "ff02::1"]
    assert announced_endpoints(addresses) == ["10.0.0.5:51820", "[2001:db8::5]:51820"]
    assert announced_endpoints(addresses, filters=None) == ["10.0.0.5:51820", "[2001:db8::5]:51820"]


def test_explicitly_empty_filters_announce_no_address_but_keep_the_extra_endpoints():
    """Talos: an explicitly empty filters.endpoints announces no endpoints (FilterIPs with no filter keeps nothing);
    unset (None) means no filtering. The extra announced endpoints are appended after the filters either way."""
    addresses = ["10.0.0.5/24", "2001:db8::5/64"]
    assert announced_endpoints(addresses, filters=[]) == []
    assert announced_endpoints(addresses, discovered_public_ips=["203.0.113.9"], filters=[]) == []
    assert announced_endpoints(addresses, filters=[], extra_endpoints=["198.51.100.1:4000"]) == ["198.51.100.1:4000"]
    # through the inputs the agent keeps: [] survives the JSON round trip as [], unset as None
    empty = json.loads(json.dumps(announce_inputs(addresses, [], [], 51820, [])))
    unset = json.loads(json.dumps(announce_inputs(addresses, [], None, 51820, [])))
    assert endpoints_from_inputs(empty, ["203.0.113.9"]) == []
    assert endpoints_from_inputs(unset) == ["10.0.0.5:51820", "[2001:db8::5]:51820"]
    # inputs kept by the previous version (1) wrote [] for "no filters": read as unset
    assert endpoints_from_inputs(dict(empty, version=1)) == ["10.0.0.5:51820", "[2001:db8::5]:51820"]


def test_exclude_whole_kubespan_prefix_and_custom_port():
    addresses = ["fd7f:175a:b97c:5602::9/64", "192.0.2.1"]
    assert announced_endpoints(addresses, exclude=[str(ula_prefix(CLUSTER_ID))], port=51821) == ["192.0.2.1:51821"]


@pytest.mark.parametrize("ips,filters,expected", [
    (["10.3.4.6", "2001:db8::1"], ["0.0.0.0/0", "::/0"], ["10.3.4.6", "2001:db8::1"]),
    (["10.3.4.6", "10.3.4.1", "172.20.0.1"], ["10.0.0.0/8", "!10.3.4.1/32"], ["10.3.4.6"]),
    (["10.3.4.6", "10.3.4.1", "172.20.0.1"], ["10.0.0.0/8", "!10.3.4.1"], ["10.3.4.6"]),
    (["10.3.4.6", "172.20.0.1"], ["10.0.0.0/8", "0.0.0.0/0"], ["10.3.4.6", "172.20.0.1"]),
])
def test_talos_filter_ips_vectors(ips, filters, expected):
    assert filter_ips(ips, filters) == expected


def test_filter_order_then_input_order_and_re_adding_after_negation():
    ips = ["192.168.1.1", "10.0.0.1", "2001:db8::1", "10.1.0.1"]
    assert filter_ips(ips, ["::/0", "10.0.0.0/8"]) == ["2001:db8::1", "10.0.0.1", "10.1.0.1"]
    assert filter_ips(ips, ["0.0.0.0/0", "!10.0.0.0/8", "10.1.0.0/16"]) == ["192.168.1.1", "10.1.0.1"]
    assert filter_ips(ips, ["!10.0.0.0/8"]) == []
    assert filter_ips(ips, ["10.0.0.1/8"]) == ["10.0.0.1", "10.1.0.1"]  # host bits ignored, as Go's Prefix.Contains


def test_filter_families_do_not_match_each_other():
    assert filter_ips(["::ffff:10.0.0.1", "10.0.0.1"], ["0.0.0.0/0"]) == ["10.0.0.1"]


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "!", "!!10.0.0.0/8", "eth0", "", 8])
def test_bad_filter_is_named(bad):
    with pytest.raises(ValueError, match="endpoint filter") as err:
        filter_ips(["10.0.0.1"], ["0.0.0.0/0", bad])
    assert repr(bad) in str(err.value)


def test_parse_filter():
    assert parse_filter("!10.3.4.1") == (False, ipaddress.ip_network("10.3.4.1/32"))
    assert parse_filter(" 2001::/16 ") == (True, ipaddress.ip_network("2001::/16"))


@pytest.mark.parametrize("bad,match", [
    ("1.2.3.4", "extra announced endpoint: endpoint '1.2.3.4'"),
    ("1.2.3.4:0", "port must be 1-65535"),
    ("[2001:db8::1:51820", "IPv6 endpoint is written"),
    ("host.example:51820", "not an IP address"),
])
def test_bad_extra_endpoint_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        announced_endpoints(["10.0.0.1"], extra_endpoints=[bad])


def test_extra_endpoints_are_normalized_and_deduplicated():
    result = announced_endpoints(["2001:db8::1"], extra_endpoints=["[2001:0db8::1]:51820", "[2001:db8::2]:1", "[2001:db8::2]:1"])
    assert result == ["[2001:db8::1]:51820", "[2001:db8::2]:1"]


@pytest.mark.parametrize("kwargs,match", [
    ({"addresses": ["10.0.0.300"]}, "node address '10.0.0.300' is not an IP address"),
    ({"addresses": [], "discovered_public_ips": ["x"]}, "discovered public IP 'x'"),
    ({"addresses": [], "exclude": ["fd00::/129"]}, "excluded network 'fd00::/129'"),
    ({"addresses": [], "port": 0}, "KubeSpan port 0"),
    ({"addresses": [], "port": True}, "KubeSpan port True"),
])
def test_bad_inputs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        announced_endpoints(**kwargs)


# --- properties ------------------------------------------------------------------------------------

v4 = st.integers(min_value=0, max_value=2 ** 32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(min_value=0, max_value=2 ** 128 - 1).map(lambda n: ipaddress.IPv6Address(n).compressed)
addrs = st.lists(st.one_of(v4, v6), max_size=12)
filters = st.lists(st.tuples(st.booleans(), st.one_of(v4, v6), st.integers(min_value=0, max_value=128)).map(
    lambda t: "%s%s/%d" % ("" if t[0] else "!", t[1], min(t[2], ipaddress.ip_address(t[1]).max_prefixlen))), max_size=6)


@given(addrs, filters)
def test_filter_result_is_a_duplicate_free_subset_matching_a_positive_filter(ips, flts):
    result = filter_ips(ips, flts)
    assert len(result) == len(set(result)) and set(result) <= set(ips)
    positives = [ipaddress.ip_network(f, strict=False) for f in flts if not f.startswith("!")]
    for ip in result:
        assert any(ipaddress.ip_address(ip) in net for net in positives if net.version == ipaddress.ip_address(ip).version)
    if flts and not flts[-1].startswith("!"):
        last = ipaddress.ip_network(flts[-1], strict=False)
        assert all(ip in result for ip in ips if ipaddress.ip_address(ip).version == last.version and ipaddress.ip_address(ip) in last)


@given(addrs)
def test_match_all_filters_keep_input_order_by_family(ips):
    dedup = list(dict.fromkeys(ips))
    by_family = {4: [], 6: []}
    for ip in dedup:
        by_family[ipaddress.ip_address(ip).version].append(ip)
    assert filter_ips(ips, ["0.0.0.0/0", "::/0"]) == by_family[4] + by_family[6]
