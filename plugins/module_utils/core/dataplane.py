# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The KubeSpan data plane as data: policy routing and the nftables table, and diffs against the host. Pure logic.

Talos's design: WireGuard marks its own packets 0x20; packets to the routed set (the peers' AllowedIPs
except the KubeSpan ULA) get mark 0x40 (within mask 0x60) in prerouting and output, a rule
``fwmark 0x40/0x60 lookup 180`` at priority 32500 sends them to table 180, whose only routes are the
defaults through the ``kubespan`` link (metric 1, route MTU = link MTU). Packets already carrying the
WireGuard mark are accepted untouched, so the tunnel's own UDP never loops. TCP SYNs to the set get their
MSS clamped to MTU-52 (IPv4) or MTU-72 (IPv6). Here the nftables table is ``inet kubespan``.

Routes and rules are plain dicts, the same shape the netlink adapter reads back:
  route {"family": 4|6, "dst": "0.0.0.0/0", "table": 180, "oif": "kubespan", "metric": 1, "mtu": 1420}
  rule  {"family": 4|6, "priority": 32500, "fwmark": 0x40, "fwmask": 0x60, "table": 180}
The nftables table is the ``{"nftables": [...]}`` document of ``nft -j list table inet kubespan`` (handles
and metainfo are ignored); ``nft_batch`` turns it into the input of ``nft -j -f -``.

Fail closed (docs/dataplane.md): table 180 also holds device-less ``unreachable`` defaults for both
families at a worse metric (``fail_closed_routes``), and the main table an ``unreachable`` route for the
cluster's ULA /64 at that metric. While the link and its routes exist they lose to them; when the link is
gone (wireguard-go killed or restarted, ``ip link del``, a reboot before the first agent tick) marked
packets and packets to a peer's ULA hit them and are refused, instead of falling through to the main
table and leaving on the underlay in cleartext. Such a route dict has ``"type": "unreachable"`` and no
link: ``{"family": 4, "dst": "0.0.0.0/0", "table": 180, "type": "unreachable", "metric": 4278198272}``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..base.errors import KubeSpanError
from .ipset import BITS, IPSet, format_address

# The defaults live in the settings model (settings.py); these names are kept for the data plane's callers.
from .settings import FORCE_MARK, LINK_NAME, MARK_MASK, MAX_MTU, MAX_RULE_PRIORITY, MIN_MTU, NFT_TABLE, ROUTE_TABLE, RULE_PRIORITY, WIREGUARD_MARK
from .settings import MTU as DEFAULT_MTU

NFT_FAMILY = "inet"
PREROUTING_CHAIN = "kubespan_prerouting"
OUTPUT_CHAIN = "kubespan_outgoing"
FORWARD_CHAIN = "kubespan_forward"  # only on a relay (relay.py)
ROUTE_METRIC = 1
# The metric of the fail-closed unreachable routes: the one the kernel's VRF documentation gives the
# "unreachable default" of a VRF table (0xff000000), far worse than any route the role or an admin adds.
FAIL_CLOSED_METRIC = 4278198272
MAIN_TABLE = 254
# IP header + TCP header + 12 bytes of TCP options (Talos: 1368 and 1348 at MTU 1420).
MSS_OVERHEAD = {4: 20 + 20 + 12, 6: 40 + 20 + 12}
U32 = 0xFFFFFFFF
_RESERVED_TABLES = (0, 253, 254, 255)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# The one rule for the KubeSpan interface name: the kernel's (1-15 bytes, no space, '/' or ':') narrowed to what
# may stand unquoted in a systemd unit and a log line. The role's early check, the data plane and the agent's unit
# files all use it (settingscheck.py, agentfiles.py).
IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
IFNAME_RULE = "1-15 letters, digits, '_', '.' or '-'"


class DataPlaneValueError(KubeSpanError, ValueError):
    """A bad DataPlaneConfig value; ``fields`` names the DataPlaneConfig fields involved (the role's early check
    turns them into role variable names)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


def _int(value, what: str, low: int, high: int, name: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DataPlaneValueError("%s %r must be an integer from %d to %d" % (what, value, low, high), name)
    return value


@dataclass
class DataPlaneConfig:
    """Every number of the data plane, with Talos's defaults. ``validate`` raises ValueError naming the value."""

    mtu: int = DEFAULT_MTU
    link: str = LINK_NAME
    route_table: int = ROUTE_TABLE
    route_metric: int = ROUTE_METRIC
    rule_priority: int = RULE_PRIORITY
    wireguard_mark: int = WIREGUARD_MARK
    force_mark: int = FORCE_MARK
    mark_mask: int = MARK_MASK
    nft_table: str = NFT_TABLE
    fail_closed_metric: int = FAIL_CLOSED_METRIC

    def validate(self) -> DataPlaneConfig:
        _int(self.mtu, "KubeSpan MTU", MIN_MTU, MAX_MTU, "mtu")
        _int(self.route_table, "KubeSpan routing table", 1, U32, "route_table")
        if self.route_table in _RESERVED_TABLES:
            raise DataPlaneValueError("KubeSpan routing table %d is reserved (253 default, 254 main, 255 local)"
                                      % self.route_table, "route_table")
        _int(self.route_metric, "KubeSpan route metric", 0, U32, "route_metric")
        _int(self.fail_closed_metric, "KubeSpan fail-closed route metric", 1, U32, "fail_closed_metric")
        if self.fail_closed_metric <= self.route_metric:
            raise DataPlaneValueError("the fail-closed route metric %d must be worse (higher) than the KubeSpan route metric %d"
                                      % (self.fail_closed_metric, self.route_metric), "fail_closed_metric", "route_metric")
        # Below 32766 (main) so that marked packets are routed through KubeSpan before the main table.
        _int(self.rule_priority, "KubeSpan rule priority", 1, MAX_RULE_PRIORITY, "rule_priority")
        _int(self.mark_mask, "KubeSpan firewall mark mask", 1, U32, "mark_mask")
        for what, mark, name in (("WireGuard firewall mark", self.wireguard_mark, "wireguard_mark"),
                                 ("KubeSpan force firewall mark", self.force_mark, "force_mark")):
            _int(mark, what, 1, U32, name)
            if mark & ~self.mark_mask & U32:
                raise DataPlaneValueError("%s %#x has bits outside the mark mask %#x" % (what, mark, self.mark_mask),
                                          name, "mark_mask")
        if self.wireguard_mark == self.force_mark:
            raise DataPlaneValueError("the WireGuard firewall mark and the force mark must differ, both are %#x"
                                      % self.force_mark, "wireguard_mark", "force_mark")
        if not isinstance(self.link, str) or not IFNAME.match(self.link):
            raise DataPlaneValueError("KubeSpan link name %r is not a valid interface name (%s)" % (self.link, IFNAME_RULE),
                                      "link")
        if not isinstance(self.nft_table, str) or not _NAME.match(self.nft_table):
            raise DataPlaneValueError("nftables table name %r is not a valid name (a letter, then letters, digits, '_', '.', '-')"
                                      % (self.nft_table,), "nft_table")
        return self

    def mss(self, family: int) -> int:
        return self.mtu - MSS_OVERHEAD[family]


# --- routes and rules ------------------------------------------------------------------------------


def desired_routes(cfg: DataPlaneConfig) -> List[dict]:
    """Table ``route_table``: a default route through the link for IPv4 and IPv6, metric and MTU as configured."""
    return [{"family": fam, "dst": dst, "table": cfg.route_table, "oif": cfg.link, "metric": cfg.route_metric, "mtu": cfg.mtu}
            for fam, dst in ((4, "0.0.0.0/0"), (6, "::/0"))]


def fail_closed_routes(cfg: DataPlaneConfig, ula_subnet: Optional[str] = None) -> List[dict]:
    """The routes that keep mesh traffic off the underlay when the link is gone (they need no link).

    ``unreachable default table <route_table> metric <fail_closed_metric>`` for IPv4 and IPv6: a marked
    packet finds them once the link's defaults are gone. ``ula_subnet`` (the cluster's /64): the same in the
    main table for it, since traffic to a peer's ULA is routed by the link's connected /64, not marked."""
    routes = [{"family": fam, "dst": dst, "table": cfg.route_table, "type": "unreachable", "metric": cfg.fail_closed_metric}
              for fam, dst in ((4, "0.0.0.0/0"), (6, "::/0"))]
    if ula_subnet:
        net = ipaddress.ip_network(str(ula_subnet), strict=False)
        routes.append({"family": net.version, "dst": str(net), "table": MAIN_TABLE, "type": "unreachable",
                       "metric": cfg.fail_closed_metric})
    return routes


def owned_main_routes(routes: List[dict], cfg: DataPlaneConfig) -> List[dict]:
    """The routes of the main table that are KubeSpan's: unreachable at the fail-closed metric (a former
    cluster subnet's among them, which a diff then removes)."""
    return [r for r in routes if (r.get("type") or "unicast") == "unreachable"
            and _num(r.get("metric", r.get("priority"))) == cfg.fail_closed_metric]


def desired_rules(cfg: DataPlaneConfig) -> List[dict]:
    """``fwmark force/mask lookup route_table priority rule_priority`` for IPv4 and IPv6."""
    return [{"family": fam, "priority": cfg.rule_priority, "fwmark": cfg.force_mark, "fwmask": cfg.mark_mask, "table": cfg.route_table}
            for fam in (4, 6)]


def _num(value, default: int = 0) -> int:
    if value is None or value == "":
        return default
    return int(value, 0) if isinstance(value, str) else int(value)


def _route_key(route: dict) -> tuple:
    dst = route.get("dst")
    family = _num(route.get("family"))
    if dst in (None, "", "default"):
        dst = "::/0" if family == 6 else "0.0.0.0/0"
    net = ipaddress.ip_network(str(dst), strict=False)
    metric = route.get("metric", route.get("priority"))
    rtype = route.get("type") or "unicast"
    if rtype != "unicast":  # no link (IPv6 reports "lo") and no MTU that matters: only what it refuses
        return (net.version, str(net), _num(route.get("table"), 254), "", _num(metric), 0, str(rtype))
    return (net.version, str(net), _num(route.get("table"), 254), route.get("oif") or "", _num(metric), _num(route.get("mtu")), rtype)


def _rule_key(rule: dict) -> tuple:
    fwmark = _num(rule.get("fwmark"))
    fwmask = _num(rule.get("fwmask"), U32 if fwmark else 0)
    return (_num(rule.get("family")), _num(rule.get("priority")), fwmark, fwmask, _num(rule.get("table"), 254))


def _diff(desired: List[dict], current: List[dict], key) -> Tuple[List[dict], List[dict]]:
    have = {key(item) for item in current}
    want = {key(item) for item in desired}
    return [d for d in desired if key(d) not in have], [c for c in current if key(c) not in want]


def diff_routes(desired: List[dict], current: List[dict]) -> Tuple[List[dict], List[dict]]:
    """(routes to add, routes to remove). ``current``: the routes read from the KubeSpan table (and a former
    one when the table number changed); any of them that is not desired is to be removed."""
    return _diff(desired, current, _route_key)


def diff_rules(desired: List[dict], current: List[dict]) -> Tuple[List[dict], List[dict]]:
    """(rules to add, rules to remove). ``current``: the rules read from the host that belong to KubeSpan
    (those that look up its table, or a former one)."""
    return _diff(desired, current, _rule_key)


def render_route(route: dict) -> str:
    family, dst, table, oif, metric, mtu, rtype = _route_key(route)
    if rtype != "unicast":
        return "%s%s %s table %d metric %d" % ("-6 " if family == 6 else "", rtype, "default" if dst.endswith("/0") else dst, table, metric)
    return "%s%s dev %s table %d metric %d%s" % ("-6 " if family == 6 else "", "default" if dst.endswith("/0") else dst,
                                                 oif, table, metric, " mtu %d" % mtu if mtu else "")


def render_rule(rule: dict) -> str:
    family, priority, fwmark, fwmask, table = _rule_key(rule)
    return "%spriority %d fwmark %#x/%#x lookup %d" % ("-6 " if family == 6 else "", priority, fwmark, fwmask, table)


# --- nftables --------------------------------------------------------------------------------------

_MARK = {"meta": {"key": "mark"}}
_PROTOCOL = {4: "ip", 6: "ip6"}


def _mark() -> dict:
    return {"meta": {"key": "mark"}}


def _accept() -> dict:
    return {"accept": None}


def _maxseg() -> dict:
    return {"tcp option": {"name": "maxseg", "field": "size"}}


def _set_value(ipset: IPSet, family: int):
    """The right-hand side of ``daddr`` for one family, written as nft lists it: an address, a prefix, a
    range, or an anonymous interval set of those (one element per maximal interval)."""
    bits = BITS[family]
    elements = []
    for _family, first, last in ipset.intervals(family):
        if first == last:
            elements.append(format_address(family, first))
            continue
        size = last - first + 1
        if not size & (size - 1) and not first & (size - 1):  # exactly one aligned prefix
            elements.append({"prefix": {"addr": format_address(family, first), "len": bits - size.bit_length() + 1}})
        else:
            elements.append({"range": [format_address(family, first), format_address(family, last)]})
    return elements[0] if len(elements) == 1 else {"set": elements}


def _copy_value(value):
    """A rule's own copy of a set value (its outer list; the elements are not changed by anyone)."""
    return {"set": list(value["set"])} if isinstance(value, dict) and "set" in value else value


def _daddr_in(family: int, value) -> dict:
    """``daddr`` in ``value`` (a _set_value result, which this rule gets its own copy of)."""
    return {"match": {"op": "==", "left": {"payload": {"protocol": _PROTOCOL[family], "field": "daddr"}}, "right": _copy_value(value)}}


def _mark_is(cfg: DataPlaneConfig) -> dict:
    return {"match": {"op": "==", "left": {"&": [_mark(), cfg.mark_mask]}, "right": cfg.wireguard_mark}}


def _set_force_mark(cfg: DataPlaneConfig) -> dict:
    # mark = (mark & ~mask) ^ force, as Talos writes it; nft lists the same function as
    # (mark & (~mask | force)) | force, which the comparison below treats as equal.
    return {"mangle": {"key": _mark(), "value": {"^": [{"&": [_mark(), ~cfg.mark_mask & U32]}, cfg.force_mark]}}}


def _clamp_mss(mss: int) -> List[dict]:
    return [
        {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]}, "right": "syn"}},
        {"match": {"op": ">", "left": _maxseg(), "right": mss}},
        {"mangle": {"key": _maxseg(), "value": mss}},
    ]


def _meta_is(key: str, value: str) -> dict:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": value}}


def desired_nft(routed: IPSet, cfg: DataPlaneConfig, relay_forward: Optional[List[int]] = None) -> dict:
    """The KubeSpan table in the shape of ``nft -j list table`` output (without handles); a new document each call.

    kubespan_prerouting (filter, prerouting, priority 0, policy accept):
        meta mark & mask == wireguard_mark accept
        ip daddr <set> meta mark set (mark & ~mask) ^ force accept             (then ip6)
    kubespan_outgoing (route, output, priority 0, policy accept):
        meta mark & mask == wireguard_mark accept
        oifname "lo" accept
        ip daddr <set> tcp flags syn / syn,rst maxseg > MTU-52 set MTU-52       (ip6: MTU-72)
        ip daddr <set> meta mark set (mark & ~mask) ^ force accept             (then ip6)
    A family whose part of the set is empty gets no set rules.
    On a relay (``relay_forward`` a list, maybe empty, of the families the host forwards nothing of otherwise):
    kubespan_forward (filter, forward, priority 0, policy accept):
        iifname "kubespan" oifname "kubespan" accept
        meta nfproto ipv4 iifname "kubespan" drop                              (ipv6; each family listed)
    """
    _OPERAND_CACHE.clear()  # one plan's operands: a module run parses its sets as if the cache were new
    base = {"family": NFT_FAMILY, "table": cfg.nft_table}
    families = [fam for fam in (4, 6) if routed.interval_count(fam)]
    items = [{"table": {"family": NFT_FAMILY, "name": cfg.nft_table}}]
    chains = [(PREROUTING_CHAIN, "filter", "prerouting"), (OUTPUT_CHAIN, "route", "output")]
    if relay_forward is not None:
        chains.append((FORWARD_CHAIN, "filter", "forward"))
    for name, ctype, hook in chains:
        items.append({"chain": dict(base, name=name, type=ctype, hook=hook, prio=0, policy="accept")})

    def rule(chain, expr):
        items.append({"rule": dict(base, chain=chain, expr=expr)})

    values = {fam: _set_value(routed, fam) for fam in families}  # each family's set is written once, used thrice
    rule(PREROUTING_CHAIN, [_mark_is(cfg), _accept()])
    for fam in families:
        rule(PREROUTING_CHAIN, [_daddr_in(fam, values[fam]), _set_force_mark(cfg), _accept()])
    rule(OUTPUT_CHAIN, [_mark_is(cfg), _accept()])
    rule(OUTPUT_CHAIN, [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, _accept()])
    for fam in families:
        rule(OUTPUT_CHAIN, [_daddr_in(fam, values[fam])] + _clamp_mss(cfg.mss(fam)))
    for fam in families:
        rule(OUTPUT_CHAIN, [_daddr_in(fam, values[fam]), _set_force_mark(cfg), _accept()])
    if relay_forward is not None:
        rule(FORWARD_CHAIN, [_meta_is("iifname", cfg.link), _meta_is("oifname", cfg.link), _accept()])
        for fam in sorted(set(relay_forward)):
            rule(FORWARD_CHAIN, [_meta_is("nfproto", "ipv%d" % fam), _meta_is("iifname", cfg.link), {"drop": None}])
    return {"nftables": items}


def nft_batch(desired: dict) -> dict:
    """``nft -j -f -`` input that replaces the table atomically (add, delete, then create it whole)."""
    table = [i["table"] for i in desired["nftables"] if "table" in i][0]
    ref = {"table": {"family": table["family"], "name": table["name"]}}
    return {"nftables": [{"add": ref}, {"delete": ref}] + [{"add": item} for item in desired["nftables"]]}


def nft_delete_batch(table: str = NFT_TABLE) -> dict:
    """``nft -j -f -`` input that removes the table if it exists (teardown)."""
    ref = {"table": {"family": NFT_FAMILY, "name": table}}
    return {"nftables": [{"add": ref}, {"delete": ref}]}


# --- comparing with the host -----------------------------------------------------------------------


# Prefixes of operands whose elements are all strings, by their tuple of elements: a table carries the same set in
# three rules per family and a diff or before/after text reads two tables, so most operands were parsed already.
_OPERAND_CACHE: dict = {}
_OPERAND_CACHE_MAX = 16


def _address_operand(value) -> Optional[List[str]]:
    """Prefixes of an nft address operand (address, prefix, range or set of them), or None if it is not one."""
    elements = value["set"] if isinstance(value, dict) and "set" in value else [value]
    key = _operand_key(elements)
    if key is not None:
        cached = _OPERAND_CACHE.get(key)
        if cached is None:
            cached = _address_operand_parse(elements)
            if len(_OPERAND_CACHE) >= _OPERAND_CACHE_MAX:
                _OPERAND_CACHE.clear()
            _OPERAND_CACHE[key] = cached
        return None if cached is None else list(cached)
    return _address_operand_parse(elements)


def _operand_key(elements) -> Optional[tuple]:
    """A hashable key that determines what _address_operand_parse reads of the elements (exact str and int types
    only, as json.loads gives them), or None when an element is anything else (then nothing is cached)."""
    if type(elements) is not list:  # pylint: disable=unidiomatic-typecheck
        return None
    key = []
    for element in elements:
        kind = type(element)
        if kind is str:
            key.append(element)
        elif kind is dict and "prefix" in element:
            prefix = element["prefix"]
            if type(prefix) is not dict or type(prefix.get("addr")) is not str or type(prefix.get("len")) is not int:  # pylint: disable=unidiomatic-typecheck
                return None
            key.append(("prefix", prefix["addr"], prefix["len"]))
        elif kind is dict and "range" in element:
            bounds = element["range"]
            if type(bounds) is not list or not all(type(a) is str for a in bounds):  # pylint: disable=unidiomatic-typecheck
                return None
            key.append(("range",) + tuple(bounds))
        else:
            return None
    return tuple(key)


def _address_operand_parse(elements) -> Optional[List[str]]:
    ipset = IPSet()
    try:
        for element in elements:
            if isinstance(element, str):
                ipset.add(element)
            elif isinstance(element, dict) and "prefix" in element:
                ipset.add("%s/%s" % (element["prefix"]["addr"], element["prefix"]["len"]))
            elif isinstance(element, dict) and "range" in element:
                first, last = (ipaddress.ip_address(a) for a in element["range"])
                ipset.add_range(first.version, int(first), int(last))
            else:
                return None
    except (ValueError, KeyError, TypeError):
        return None
    return ipset.prefixes()


def _canon(expr):
    """A comparable form of one nft JSON expression: address sets as minimal prefixes, flag lists sorted, and
    the mark update (m & a) ^ x or | x written as the function it computes."""
    if isinstance(expr, list):
        return sorted(expr) if expr and all(isinstance(e, str) for e in expr) else [_canon(e) for e in expr]  # flag lists
    if not isinstance(expr, dict):
        return expr
    if "match" in expr and isinstance(expr["match"], dict):
        match = expr["match"]
        left = match.get("left")
        if isinstance(left, dict) and "payload" in left and left["payload"].get("field") in ("daddr", "saddr"):
            prefixes = _address_operand(match.get("right"))
            if prefixes is not None:
                return {"match": {"op": match.get("op"), "left": _canon(left), "right": {"prefixes": prefixes}}}
    if "|" in expr and isinstance(expr["|"], list) and all(isinstance(e, str) for e in expr["|"]):
        return sorted(expr["|"])
    if "mangle" in expr and isinstance(expr["mangle"], dict) and expr["mangle"].get("key") == _MARK:
        value = expr["mangle"].get("value")
        op = next(iter(value), None) if isinstance(value, dict) and len(value) == 1 else None
        if op in ("|", "^"):
            inner, xor = value[op]
            if isinstance(inner, dict) and list(inner) == ["&"] and inner["&"][0] == _MARK and isinstance(xor, int):
                mask = inner["&"][1]
                if isinstance(mask, int) and (op == "|" or not mask & xor):
                    return {"mark set": [(mask | xor) & U32, xor]}
    return {k: v if k == "range" else _canon(v) for k, v in expr.items()}


_CHAIN_KEYS = ("family", "table", "name", "type", "hook", "prio", "policy", "dev")


def _canonical_table(doc: Optional[dict]) -> Tuple[Optional[str], dict, dict]:
    """(table name, {chain: properties}, {chain: [canonical rule JSON strings in order]}) of a listing."""
    name, chains, rules = None, {}, {}
    for item in (doc or {}).get("nftables", []):
        if "table" in item:
            name = item["table"].get("name")
        elif "chain" in item:
            chain = item["chain"]
            chains[chain.get("name")] = {k: chain[k] for k in _CHAIN_KEYS if k in chain}
            rules.setdefault(chain.get("name"), [])
        elif "rule" in item:
            rule = item["rule"]
            body = {k: v for k, v in rule.items() if k not in ("handle", "family", "table", "chain", "expr")}
            body["expr"] = _canon(rule.get("expr", []))
            rules.setdefault(rule.get("chain"), []).append(json.dumps(body, sort_keys=True))
        elif "set" in item or "map" in item or "flowtable" in item or "ct helper" in item:
            kind = next(iter(item))
            chains["%s %s" % (kind, item[kind].get("name"))] = {"object": kind}
    return name, chains, rules


@dataclass
class NftDiff:
    """What differs between the desired table and the one on the host; ``lines`` are for --diff and reports."""

    changed: bool = False
    lines: List[str] = field(default_factory=list)


def diff_nft(desired: dict, current: Optional[dict]) -> NftDiff:
    """Compare the desired table with ``nft -j list table`` output (None when the table does not exist).

    Equal tables (after canonicalization) mean nothing to do; otherwise ``nft_batch(desired)`` replaces it.
    """
    want_name, want_chains, want_rules = _canonical_table(desired)
    have_name, have_chains, have_rules = _canonical_table(current)
    result = NftDiff()
    if have_name is None:
        result.lines.append("+ table %s %s" % (NFT_FAMILY, want_name))
    for chain in sorted(set(have_chains) - set(want_chains)):
        result.lines.append("- chain %s" % chain)
    for chain, props in want_chains.items():
        if chain not in have_chains:
            result.lines.append("+ chain %s" % render_chain(props))
        elif have_chains[chain] != props:
            result.lines.append("- chain %s" % render_chain(have_chains[chain]))
            result.lines.append("+ chain %s" % render_chain(props))
    for chain in list(want_rules) + [c for c in have_rules if c not in want_rules]:
        want, have = want_rules.get(chain, []), have_rules.get(chain, [])
        if want == have:
            continue
        removed = [r for r in have if r not in want]
        added = [r for r in want if r not in have]
        result.lines.extend("- %s: %s" % (chain, render_rule_expr(json.loads(r)["expr"])) for r in removed)
        result.lines.extend("+ %s: %s" % (chain, render_rule_expr(json.loads(r)["expr"])) for r in added)
        if not removed and not added:
            result.lines.append("~ %s: rule order" % chain)
    result.changed = bool(result.lines)
    return result


# --- text for --diff -------------------------------------------------------------------------------


def render_chain(props: dict) -> str:
    if "object" in props:
        return "(%s)" % props["object"]
    return "%s { type %s hook %s priority %s; policy %s; }" % (
        props.get("name"), props.get("type"), props.get("hook"), props.get("prio"), props.get("policy"))


def _text(value, hexa: bool = False) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return "%#x" % value if hexa else str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(_text(v, hexa) for v in value)
    if isinstance(value, dict) and len(value) == 1:
        key, arg = next(iter(value.items()))
        if arg is None:
            return key  # a verdict
        if key == "meta":
            return "meta %s" % arg.get("key")
        if key == "payload":
            return "%s %s" % (arg.get("protocol"), arg.get("field"))
        if key == "tcp option":
            return "tcp option %s %s" % (arg.get("name"), arg.get("field"))
        if key in ("&", "|", "^") and isinstance(arg, list):
            return "(%s)" % (" %s " % key).join(_text(v, hexa) for v in arg)
        if key == "prefix":
            return "%s/%s" % (arg.get("addr"), arg.get("len"))
        if key == "range":
            return "-".join(_text(v) for v in arg)
        if key in ("set", "prefixes"):
            return "{ %s }" % ", ".join(_text(v) for v in arg)
        if key == "match":
            hexa = '{"meta": {"key": "mark"}}' in json.dumps(arg.get("left"), sort_keys=True)
            return "%s %s %s" % (_text(arg.get("left"), hexa), arg.get("op"), _text(arg.get("right"), hexa))
        if key == "mangle":
            hexa = arg.get("key") == _MARK
            return "%s set %s" % (_text(arg.get("key")), _text(arg.get("value"), hexa))
        if key == "mark set":
            return "meta mark set (meta mark & %#x) | %#x" % tuple(arg)
    return json.dumps(value, sort_keys=True)


def render_rule_expr(expr: list) -> str:
    return " ".join(_text(e) for e in expr)


def render_nft(doc: Optional[dict]) -> str:
    """nft-like text of a table listing (or of ``desired_nft``), for --diff before/after."""
    name, chains, rules = _canonical_table(doc)
    if name is None:
        return ""
    lines = ["table %s %s" % (NFT_FAMILY, name)]
    for chain, props in chains.items():
        lines.append("  chain %s" % render_chain(props))
        lines.extend("    %s" % render_rule_expr(json.loads(r)["expr"]) for r in rules.get(chain, []))
    return "\n".join(lines) + "\n"
