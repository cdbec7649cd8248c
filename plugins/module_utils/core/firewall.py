# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Open the KubeSpan port in the host's own nftables input chains. Pure planning over ``nft -j list ruleset``.

A packet accepted in our own table still traverses every other base chain on the same hook, so a host
input chain with ``policy drop`` (Debian's nftables.conf made strict, or any hand-made firewall) would drop
WireGuard's UDP whatever our table says. The only way to open the port without weakening anything else
is to add narrow rules to those chains: ``udp dport <port> accept`` and ``iifname "<if>" accept`` (traffic
that arrived through the tunnel was already authenticated by WireGuard, whose cryptokey routing also drops any
packet whose source is outside the sending peer's AllowedIPs: a peer can use only sources inside its own claims,
which discovery_affiliates bounds by kubespan_allowed_peer_networks, docs/security.md). Each rule carries a comment
starting with ``kubespan.mesh``; only rules with that comment are ever changed or removed.
"""

from __future__ import annotations

from typing import List, Tuple

from .settings import FIREWALL_BACKENDS

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


# ----------------------------------------------------------------------------------------------- ufw

BACKENDS = FIREWALL_BACKENDS  # the settings model's choices


def ufw_wanted(port: int, ifname: str) -> List[str]:
    """The ufw rules (as ``ufw show added`` prints them, without the comment) that open KubeSpan."""
    return ["allow %d/udp" % port, "allow in on %s" % ifname]


def parse_ufw_added(text: str) -> List[Tuple[str, str]]:
    """(rule, comment) of every rule in ``ufw show added`` output, e.g. ("allow 51820/udp", "kubespan.mesh")."""
    rules = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line.startswith("ufw "):
            continue
        rule, comment = line[4:], ""
        idx = rule.find(" comment ")
        if idx >= 0:
            comment = rule[idx + len(" comment "):].strip().strip("'\"")
            rule = rule[:idx]
        rules.append((" ".join(rule.split()), comment))
    return rules


def plan_ufw(added: List[Tuple[str, str]], port: int, ifname: str, enabled: bool = True) -> Tuple[List[List[str]], List[str]]:
    """ufw argument lists and human-readable changes that make our openings exactly what is wanted.

    A wanted rule the host already has (with any comment, e.g. the admin's own) is left alone and is
    never removed; only rules carrying our comment are deleted when no longer wanted.
    """
    commands, changes = [], []
    want = ufw_wanted(port, ifname) if enabled else []
    present = {rule for rule, _c in added}
    for rule, comment in added:
        if comment == COMMENT and rule not in want:
            commands.append(["delete"] + rule.split())
            changes.append("remove ufw rule '%s'" % rule)
    for rule in want:
        if rule not in present:
            commands.append(rule.split() + ["comment", COMMENT])
            changes.append("add ufw rule '%s'" % rule)
    return commands, changes


# ----------------------------------------------------------------------------------------------- firewalld

def plan_firewalld(zone: str, port: int, ifname: str, have: dict, owned: dict,
                   enabled: bool = True) -> Tuple[List[List[str]], List[str], List[str], dict]:
    """firewall-cmd argument lists, changes, warnings and the new ownership record for firewalld.

    ``have``: what firewalld has now, runtime and permanent: {"port": (bool, bool) for
    ``<port>/udp`` in ``zone``, "interface_zone": (zone, zone) of ``ifname``, "" for none}.
    ``owned``: what earlier runs added ({"port": "<zone> <port>/udp", "interface": "trusted <ifname>"}).
    Only what we own is ever removed: a port the admin opened stays open, an interface the admin put
    in a zone stays there (with a warning: traffic from the mesh then follows that zone).
    """
    commands, changes, warnings, new_owned = [], [], [], {}
    both = ((False, []), (True, ["--permanent"]))
    spec = "%d/udp" % port
    want_port = "%s %s" % (zone, spec) if enabled else ""
    old_port = owned.get("port", "")
    if old_port and old_port != want_port:
        z, s = old_port.split(" ", 1)
        commands.extend(perm + ["--zone=%s" % z, "--remove-port=%s" % s] for _p, perm in both)
        changes.append("close %s in firewalld zone %s" % (s, z))
    if want_port:
        present = tuple(have.get("port") or (False, False))
        if not all(present):
            commands.extend(perm + ["--zone=%s" % zone, "--add-port=%s" % spec] for p, perm in both if not present[p])
            changes.append("open %s in firewalld zone %s" % (spec, zone))
        if old_port == want_port or not any(present):
            new_owned["port"] = want_port

    want_iface = "trusted %s" % ifname if enabled else ""
    old_iface = owned.get("interface", "")
    if old_iface and old_iface != want_iface:
        z, i = old_iface.split(" ", 1)
        commands.extend(perm + ["--zone=%s" % z, "--remove-interface=%s" % i] for _p, perm in both)
        changes.append("remove %s from firewalld zone %s" % (i, z))
    if want_iface:
        zones = tuple(have.get("interface_zone") or ("", ""))
        foreign = [z for z in zones if z not in ("", "trusted")]
        if foreign:
            warnings.append("%s is in firewalld zone %s, not trusted: traffic arriving through the mesh follows that zone's rules "
                            "(move it with firewall-cmd --permanent --zone=trusted --change-interface=%s, or leave it on purpose)"
                            % (ifname, foreign[0], ifname))
        else:
            missing = [p for p, _perm in both if zones[p] != "trusted"]
            if missing:
                commands.extend(perm + ["--zone=trusted", "--add-interface=%s" % ifname] for p, perm in both if p in missing)
                changes.append("trust %s (firewalld zone trusted)" % ifname)
            if old_iface == want_iface or len(missing) == 2:
                new_owned["interface"] = want_iface
    return commands, changes, warnings, new_owned
