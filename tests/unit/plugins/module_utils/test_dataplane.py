"""Data plane as data: routes, rules, the nftables table, and the diffs that make a second run change nothing."""

import copy
import ipaddress
import json
import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import (
    DataPlaneConfig,
    desired_nft,
    desired_routes,
    desired_rules,
    diff_nft,
    diff_routes,
    diff_rules,
    nft_batch,
    nft_delete_batch,
    render_nft,
    render_route,
    render_rule,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet

CFG = DataPlaneConfig().validate()
ROUTED = IPSet(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "192.168.3.4", "2001:db8::/32"])
# `nft -j list table inet kubespan` (nftables 1.0.6) after applying nft_batch(desired_nft(ROUTED, CFG)),
# recorded in a private network namespace.
FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "nft-list-table-inet-kubespan.json")
NFT = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)


def listing():
    with open(FIXTURE) as f:
        return json.load(f)


def rules(doc, chain=None):
    return [i["rule"]["expr"] for i in doc["nftables"] if "rule" in i and chain in (None, i["rule"]["chain"])]


# --- routes and rules ------------------------------------------------------------------------------


def test_talos_routes_and_rules():
    assert desired_routes(CFG) == [
        {"family": 4, "dst": "0.0.0.0/0", "table": 180, "oif": "kubespan", "metric": 1, "mtu": 1420},
        {"family": 6, "dst": "::/0", "table": 180, "oif": "kubespan", "metric": 1, "mtu": 1420},
    ]
    assert desired_rules(CFG) == [
        {"family": 4, "priority": 32500, "fwmark": 0x40, "fwmask": 0x60, "table": 180},
        {"family": 6, "priority": 32500, "fwmark": 0x40, "fwmask": 0x60, "table": 180},
    ]
    assert [render_route(r) for r in desired_routes(CFG)] == ["default dev kubespan table 180 metric 1 mtu 1420",
                                                              "-6 default dev kubespan table 180 metric 1 mtu 1420"]
    assert render_rule(desired_rules(CFG)[1]) == "-6 priority 32500 fwmark 0x40/0x60 lookup 180"


def test_route_and_rule_diffs_are_idempotent_and_tolerate_host_spellings():
    routes, rules_ = desired_routes(CFG), desired_rules(CFG)
    assert diff_routes(routes, []) == (routes, [])
    host_routes = [{"family": 4, "dst": "default", "table": "180", "oif": "kubespan", "priority": 1, "mtu": 1420, "proto": "static"},
                   {"family": 6, "dst": None, "table": 180, "oif": "kubespan", "metric": 1, "mtu": 1420}]
    assert diff_routes(routes, host_routes) == ([], [])
    host_rules = [{"family": 4, "priority": 32500, "fwmark": "0x40", "fwmask": "0x60", "table": 180, "action": "unicast"},
                  {"family": 6, "priority": 32500, "fwmark": 64, "fwmask": 96, "table": 180}]
    assert diff_rules(rules_, host_rules) == ([], [])


def test_changed_mtu_table_or_priority_replaces_only_what_differs():
    new = DataPlaneConfig(mtu=1380, rule_priority=32400).validate()
    add, remove = diff_routes(desired_routes(new), desired_routes(CFG)[:1] + desired_routes(new)[1:])
    assert add == desired_routes(new)[:1] and remove == desired_routes(CFG)[:1]
    stale = dict(desired_rules(CFG)[0], fwmask=None)  # fwmark without mask: iproute2's full mask
    add, remove = diff_rules(desired_rules(new), desired_rules(CFG) + [stale])
    assert add == desired_rules(new) and remove == desired_rules(CFG) + [stale]


@given(st.lists(st.sampled_from(desired_routes(CFG) + desired_routes(DataPlaneConfig(mtu=1300, route_table=181))), max_size=4))
def test_applying_a_route_diff_converges(current):
    add, remove = diff_routes(desired_routes(CFG), current)
    after = [r for r in current if r not in remove] + add
    assert diff_routes(desired_routes(CFG), after) == ([], [])


# --- nftables --------------------------------------------------------------------------------------


def test_table_chains_and_rule_order_as_talos():
    doc = desired_nft(ROUTED, CFG)
    assert doc["nftables"][0] == {"table": {"family": "inet", "name": "kubespan"}}
    assert [i["chain"] for i in doc["nftables"] if "chain" in i] == [
        {"family": "inet", "table": "kubespan", "name": "kubespan_prerouting", "type": "filter", "hook": "prerouting", "prio": 0, "policy": "accept"},
        {"family": "inet", "table": "kubespan", "name": "kubespan_outgoing", "type": "route", "hook": "output", "prio": 0, "policy": "accept"},
    ]
    mark_accept = [{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0x60]}, "right": 0x20}}, {"accept": None}]
    set_mark = {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"^": [{"&": [{"meta": {"key": "mark"}}, 0xFFFFFF9F]}, 0x40]}}}
    v4 = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": {"set": [{"range": ["10.0.0.0", "10.0.2.255"]}, "192.168.3.4"]}}}
    v6 = {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "2001:db8::", "len": 32}}}}

    def clamp(mss):
        return [{"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]}, "right": "syn"}},
                {"match": {"op": ">", "left": {"tcp option": {"name": "maxseg", "field": "size"}}, "right": mss}},
                {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": mss}}]

    assert rules(doc, "kubespan_prerouting") == [mark_accept, [v4, set_mark, {"accept": None}], [v6, set_mark, {"accept": None}]]
    assert rules(doc, "kubespan_outgoing") == [
        mark_accept,
        [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, {"accept": None}],
        [v4] + clamp(1368),
        [v6] + clamp(1348),
        [v4, set_mark, {"accept": None}],
        [v6, set_mark, {"accept": None}],
    ]


def test_empty_set_has_no_set_rules_and_one_family_only_its_own():
    assert len(rules(desired_nft(IPSet(), CFG))) == 3
    v4_only = desired_nft(IPSet(["10.1.0.0/16"]), CFG)
    assert len(rules(v4_only)) == 6 and "ip6" not in json.dumps(v4_only)


def test_all_numbers_are_parameters():
    cfg = DataPlaneConfig(mtu=1380, wireguard_mark=0x200, force_mark=0x400, mark_mask=0x600, nft_table="mesh").validate()
    text = json.dumps(desired_nft(IPSet(["10.1.0.0/16", "fd00:1::/64"]), cfg))
    assert '"right": 1328' in text and '"right": 1308' in text and '"name": "mesh"' in text
    assert "[{\"meta\": {\"key\": \"mark\"}}, 1536]}, \"right\": 512" in text and "4294965759]}, 1024]" in text


def test_batch_replaces_the_table_atomically_and_delete_is_idempotent():
    doc = desired_nft(ROUTED, CFG)
    batch = nft_batch(doc)["nftables"]
    ref = {"table": {"family": "inet", "name": "kubespan"}}
    assert batch[:3] == [{"add": ref}, {"delete": ref}, {"add": ref}] and batch[3:] == [{"add": i} for i in doc["nftables"][1:]]
    assert nft_delete_batch() == {"nftables": [{"add": ref}, {"delete": ref}]}


def test_recorded_nft_listing_equals_desired():
    current = listing()
    assert diff_nft(desired_nft(ROUTED, CFG), current).changed is False
    assert render_nft(current) == render_nft(desired_nft(ROUTED, CFG))


def test_missing_table_is_all_additions():
    diff = diff_nft(desired_nft(ROUTED, CFG), None)
    assert diff.changed and diff.lines[0] == "+ table inet kubespan" and all(line.startswith("+") for line in diff.lines)
    assert diff_nft(desired_nft(ROUTED, CFG), {"nftables": [{"metainfo": {}}]}).changed


@pytest.mark.parametrize("change,expected", [
    (lambda cfg, s: (DataPlaneConfig(mtu=1400).validate(), s), ["- kubespan_outgoing: ip daddr == { 10.0.0.0/23, 10.0.2.0/24, 192.168.3.4/32 } "
                                                                "(tcp flags & rst,syn) == syn tcp option maxseg size > 1368 tcp option maxseg size set 1368"]),
    (lambda cfg, s: (cfg, s.copy().add("10.9.9.9")), ["- kubespan_prerouting: ip daddr == { 10.0.0.0/23, 10.0.2.0/24, 192.168.3.4/32 } "
                                                      "meta mark set (meta mark & 0xffffffdf) | 0x40 accept"]),
    (lambda cfg, s: (cfg, IPSet(["10.0.0.0/24"])), ["- kubespan_prerouting: ip6 daddr == { 2001:db8::/32 } "
                                                    "meta mark set (meta mark & 0xffffffdf) | 0x40 accept"]),
])
def test_changes_are_detected_and_described(change, expected):
    cfg, routed = change(CFG, ROUTED)
    diff = diff_nft(desired_nft(routed, cfg), listing())
    assert diff.changed and expected[0] in diff.lines
    assert any(line.startswith("+ ") for line in diff.lines) or routed.prefixes() == ["10.0.0.0/24"]


def test_foreign_rule_chain_set_and_reorder_are_detected():
    current = listing()
    current["nftables"].append({"rule": {"family": "inet", "table": "kubespan", "chain": "kubespan_outgoing", "handle": 99,
                                         "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth9"}}, {"drop": None}]}})
    current["nftables"].append({"chain": {"family": "inet", "table": "kubespan", "name": "extra", "handle": 50}})
    current["nftables"].append({"set": {"family": "inet", "table": "kubespan", "name": "leftover", "type": "ipv4_addr", "handle": 51}})
    diff = diff_nft(desired_nft(ROUTED, CFG), current)
    assert "- kubespan_outgoing: meta oifname == eth9 drop" in diff.lines
    assert "- chain extra" in diff.lines and "- chain set leftover" in diff.lines

    swapped = listing()
    items = swapped["nftables"]
    items[4], items[5] = items[5], items[4]
    assert diff_nft(desired_nft(ROUTED, CFG), swapped).lines == ["~ kubespan_prerouting: rule order"]

    hooked = listing()
    hooked["nftables"][3]["chain"]["hook"] = "postrouting"
    assert diff_nft(desired_nft(ROUTED, CFG), hooked).lines[0].startswith("- chain kubespan_outgoing { type route hook postrouting")


addresses = st.one_of(
    st.integers(min_value=0, max_value=2 ** 32 - 1).map(lambda n: "%d.%d.%d.%d/%d" % (n >> 24, n >> 16 & 255, n >> 8 & 255, n & 255, 8 + n % 25)),
    st.integers(min_value=0, max_value=2 ** 32 - 1).map(lambda n: "2001:db8:%x:%x::/%d" % (n >> 16, n & 0xFFFF, 32 + n % 97)),
)


@given(st.lists(addresses, max_size=20), st.integers(min_value=1280, max_value=9000))
def test_desired_table_compares_equal_to_itself_as_listed(prefixes, mtu):
    cfg = DataPlaneConfig(mtu=mtu).validate()
    routed = IPSet(prefixes)
    doc = desired_nft(routed, cfg)
    listed = copy.deepcopy(doc)
    for n, item in enumerate(listed["nftables"]):
        next(iter(item.values()))["handle"] = n  # nft adds handles
    listed["nftables"].insert(0, {"metainfo": {"version": "1.0.6"}})
    assert diff_nft(doc, listed).changed is False
    elements = IPSet()
    for expr in rules(doc):
        if "payload" in json.dumps(expr[0]) and "daddr" in json.dumps(expr[0]):
            right = expr[0]["match"]["right"]
            for element in right["set"] if "set" in right else [right]:
                if isinstance(element, str):
                    elements.add(element)
                elif "prefix" in element:
                    elements.add("%s/%d" % (element["prefix"]["addr"], element["prefix"]["len"]))
                else:
                    first, last = (ipaddress.ip_address(a) for a in element["range"])
                    elements.add_range(first.version, int(first), int(last))
    assert elements == routed


@pytest.mark.parametrize("kwargs,match", [
    ({"mtu": 1279}, "KubeSpan MTU 1279 must be an integer from 1280 to 65535"),
    ({"mtu": "1420"}, "KubeSpan MTU '1420'"),
    ({"mtu": True}, "KubeSpan MTU True"),
    ({"route_table": 254}, "KubeSpan routing table 254 is reserved"),
    ({"route_table": 0}, "KubeSpan routing table 0 must be"),
    ({"rule_priority": 32766}, "KubeSpan rule priority 32766"),
    ({"force_mark": 0x80}, "KubeSpan force firewall mark 0x80 has bits outside the mark mask 0x60"),
    ({"wireguard_mark": 0x40}, "must differ, both are 0x40"),
    ({"link": "a-very-long-interface-name"}, "KubeSpan link name 'a-very-long-interface-name'"),
    ({"link": "kube span"}, "KubeSpan link name 'kube span'"),
    ({"nft_table": "1table"}, "nftables table name '1table'"),
])
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataPlaneConfig(**kwargs).validate()


# --- what `nft -j -f` accepts (check mode only: nothing is applied) -----------------------------------


def nft_check(doc, tmp_path):
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(doc))
    # nftables and root (CAP_NET_ADMIN, which even `nft -c` needs) are part of the test set-up
    # (scripts/setup.sh installs nftables; CI runs as root): their absence is a failure, not a skip.
    assert NFT is not None, "nft is not installed: run scripts/setup.sh (it installs nftables)"
    proc = subprocess.run([NFT, "-c", "-j", "-f", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("routed", [IPSet(), ROUTED, IPSet(["2001:db8::1"]),
                                    IPSet(["10.%d.%d.0/24" % (n // 200, n % 200) for n in range(0, 4000, 2)] + ["fd00:%x::/48" % n for n in range(500)])])
def test_nft_accepts_the_batch(routed, tmp_path):
    nft_check(nft_batch(desired_nft(routed, DataPlaneConfig(mtu=1380).validate())), tmp_path)


def test_nft_accepts_the_delete_batch(tmp_path):
    nft_check(nft_delete_batch(), tmp_path)


@settings(deadline=None, max_examples=10)
@given(st.lists(addresses, max_size=30))
def test_nft_accepts_any_set(tmp_path_factory, prefixes):
    nft_check(nft_batch(desired_nft(IPSet(prefixes), CFG)), tmp_path_factory.mktemp("nft"))
