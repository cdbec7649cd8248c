# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Open the KubeSpan port in the host's own nftables input chains. Pure planning over ``nft -j list ruleset``.

A packet accepted in our own table still traverses every other base chain on the same hook, so a host
input chain with ``policy drop`` (Debian's nftables.conf made strict, or any hand-made firewall) would drop
WireGuard's UDP whatever our table says. The only way to open the port without weakening anything else
is to add narrow rules to those chains: ``udp dport <port> accept`` and ``iifname "<if>" accept`` (traffic
that arrived through the tunnel was already authenticated by WireGuard). Each rule carries a comment
starting with ``kubespan.mesh``; only rules with that comment are ever changed or removed.
"""

from __future__ import annotations

from typing import List, Tuple

COMMENT = "kubespan.mesh"


def _items(ruleset: dict, kind: str):
    for item in (ruleset or {}).get("nftables", []):
        if kind in item:
            yield item[kind]


def input_drop_chains(ruleset: dict, own_table: str) -> List[Tuple[str, str, str]]:
    """(family, table, chain) of every base chain on the input hook whose policy is drop (our table excluded)."""
    found = []
    for chain in _items(ruleset, "chain"):
        if chain.get("hook") != "input" or chain.get("policy") != "drop":
            continue
        if chain.get("family") in ("ip", "ip6", "inet") and not (chain.get("family") == "inet" and chain.get("table") == own_table):
            found.append((chain["family"], chain["table"], chain["name"]))
    return sorted(found)


def wanted_rules(port: int, ifname: str) -> List[Tuple[str, list]]:
    """(comment, expressions) of the rules to have at the top of each input chain with policy drop."""
    return [
        ("%s: wireguard udp %d" % (COMMENT, port),
         [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}, {"accept": None}]),
        ("%s: trust %s" % (COMMENT, ifname),
         [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": ifname}}, {"accept": None}]),
    ]


def ours(ruleset: dict) -> List[dict]:
    return [r for r in _items(ruleset, "rule") if str(r.get("comment", "")).startswith(COMMENT)]


def plan_openings(ruleset: dict, port: int, ifname: str, own_table: str, enabled: bool = True) -> Tuple[List[dict], List[str]]:
    """Return (nft JSON commands, human-readable changes) that make the openings exactly what is wanted.

    Rules of ours whose comment is not wanted (a changed port, a chain that no longer drops, disabled)
    are deleted by handle; wanted rules missing from a chain are inserted at its top.
    """
    commands, changes = [], []
    want = {}
    if enabled:
        for family, table, chain in input_drop_chains(ruleset, own_table):
            for comment, expr in wanted_rules(port, ifname):
                want[(family, table, chain, comment)] = expr
    have = set()
    for rule in ours(ruleset):
        key = (rule.get("family"), rule.get("table"), rule.get("chain"), rule.get("comment"))
        if key in want and key not in have:
            have.add(key)
            continue
        commands.append({"delete": {"rule": {"family": key[0], "table": key[1], "chain": key[2], "handle": rule["handle"]}}})
        changes.append("remove firewall rule '%s' from %s %s %s" % (key[3], key[0], key[1], key[2]))
    for key in sorted(want):
        if key in have:
            continue
        family, table, chain, comment = key
        commands.append({"insert": {"rule": {"family": family, "table": table, "chain": chain, "expr": want[key], "comment": comment}}})
        changes.append("open %s %s %s: %s" % (family, table, chain, comment[len(COMMENT) + 2:]))
    return commands, changes
