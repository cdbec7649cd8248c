# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Fail closed from boot: ``kubespan failclosed``, run by ``kubespan-failclosed.service`` before the network.

From the persisted desired state alone (no network, no WireGuard, no discovery) it installs what keeps
traffic to the mesh off the underlay until the agent's first tick brings the link up: the policy rules,
the nftables table that marks the peers' networks (every peer's, whatever the bypass setting: there is no
evidence yet that a peer is down) and the fail-closed ``unreachable`` routes (dataplane.fail_closed_routes).
It only adds what is missing; it never removes or replaces anything, so running it on a live node changes
nothing that the agent or a playbook run installed. No state, or a disabled one: nothing to do, success.

It runs at every boot before the network, so it must be cheap on a slow machine: it imports neither pyroute2 nor
the agent (cli.py imports this module alone for ``failclosed``); reads and writes go through the standard-library
rtnetlink of rtnl.py (StdlibNetlink below), the nftables table through one ``nft`` process.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, List, Optional, Tuple

from ..base.errors import KubeSpanError
from ..core.dataplane import (
    MAIN_TABLE,
    DataPlaneConfig,
    desired_nft,
    desired_rules,
    diff_routes,
    diff_rules,
    fail_closed_routes,
    nft_batch,
    owned_main_routes,
    render_route,
    render_rule,
)
from ..host import layout
from ..host.netlink import Netlink, NetlinkError
from ..host.rtnl import Rtnl, RtnlError
from ..host.statefile import StateFileError, read_json

STATE_FILE = layout.STATE
STATE_VERSION = 1
MAX_PEERS = 10000  # a bound on what a state file may claim (the role's own clusters are far smaller)


class FailClosedError(KubeSpanError, ValueError):
    """The desired state cannot be turned into the fail-closed pieces; the message names the field."""


class StdlibNetlink(Netlink):
    """netlink.Netlink (whose reads are rtnl.py's already) with the two writes restore needs through rtnl.py too:
    fwmark rules and device-less routes. Nothing here imports pyroute2."""

    def _writer(self) -> Rtnl:
        if self._rtnl is None:
            self._rtnl = Rtnl()
        return self._rtnl

    def add_route(self, route: dict, replace: bool = False) -> None:
        rtype = route.get("type") or "unicast"
        try:
            self._writer().add_typed_route(route["family"], route["dst"], route["table"], route.get("metric", 0), rtype, replace=replace)
        except RtnlError as exc:
            raise NetlinkError(str(exc))

    def add_rule(self, rule: dict) -> None:
        try:
            self._writer().add_rule(rule["family"], rule["priority"], rule["table"], rule["fwmark"], rule["fwmask"])
        except RtnlError as exc:
            raise NetlinkError(str(exc))

    @property
    def ipr(self):
        raise NetlinkError("the fail-closed path writes through rtnl.py only (pyroute2 is not imported at boot)")


def _config(settings: dict) -> DataPlaneConfig:
    def number(key, default):
        value = settings.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FailClosedError("settings.%s in the desired state is not an integer: re-run the kubespan.mesh playbook" % key)
        return value

    def text(key, default):
        value = settings.get(key, default)
        if not isinstance(value, str):
            raise FailClosedError("settings.%s in the desired state is not a string: re-run the kubespan.mesh playbook" % key)
        return value

    try:
        d = DataPlaneConfig()  # its defaults are the data plane's constants (Talos's numbers)
        return DataPlaneConfig(mtu=number("mtu", d.mtu), link=text("interface", d.link), route_table=number("route_table", d.route_table),
                               rule_priority=number("rule_priority", d.rule_priority), wireguard_mark=number("fwmark", d.wireguard_mark),
                               force_mark=number("force_mark", d.force_mark), mark_mask=number("mark_mask", d.mark_mask),
                               nft_table=text("nft_table", d.nft_table)).validate()
    except FailClosedError:
        raise
    except ValueError as exc:
        raise FailClosedError("desired state settings: %s" % exc)


def plan(state: Optional[dict]) -> Optional[Tuple[DataPlaneConfig, List[dict], List[dict], dict, int]]:
    """(config, rules, fail-closed routes, nftables table, routed prefix count) from a desired state, or None
    when there is none or KubeSpan is disabled. Pure; raises FailClosedError naming the bad field."""
    from ..core.peerspec import routed_set
    if state is None or not isinstance(state, dict) or state.get("disabled"):
        return None
    if state.get("version") != STATE_VERSION:
        raise FailClosedError("the desired state has an unknown format (version %r): re-run the kubespan.mesh playbook"
                              % (state.get("version"),))
    settings = state.get("settings")
    if not isinstance(settings, dict):
        raise FailClosedError("the desired state has no settings mapping: re-run the kubespan.mesh playbook")
    cfg = _config(settings)
    try:
        subnet = ipaddress.IPv6Network(str(state.get("subnet")))
    except ValueError:
        raise FailClosedError("the desired state's subnet is not an IPv6 network: re-run the kubespan.mesh playbook")
    peers = state.get("peers") or []
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise FailClosedError("the desired state's peers are not a list of at most %d peers" % MAX_PEERS)
    for i, peer in enumerate(peers):
        if not isinstance(peer, dict) or not isinstance(peer.get("allowed_ips"), list) \
                or not all(isinstance(a, str) for a in peer["allowed_ips"]):
            raise FailClosedError("peer %d of the desired state has no list of allowed_ips: re-run the kubespan.mesh playbook" % i)
    try:
        routed = routed_set([{"public_key": str(i), "allowed_ips": p["allowed_ips"]} for i, p in enumerate(peers)], subnet)
    except ValueError as exc:
        raise FailClosedError("the desired state's allowed_ips: %s" % exc)
    return cfg, desired_rules(cfg), fail_closed_routes(cfg, str(subnet)), desired_nft(routed, cfg), len(routed.prefixes())


def restore(state_dir: str, log: Callable[[str], None], netlink=None, list_table=None, apply_batch=None) -> List[str]:
    """Add the missing fail-closed pieces; returns what was added (empty: nothing was missing or nothing to do)."""
    import os
    try:
        state = read_json(os.path.join(state_dir, STATE_FILE))
    except StateFileError as exc:
        raise FailClosedError(str(exc))
    planned = plan(state)
    if planned is None:
        log("fail closed: no enabled desired state in %s, nothing to do" % state_dir)
        return []
    cfg, rules, routes, table, count = planned
    if netlink is None:
        netlink = StdlibNetlink()
    if list_table is None or apply_batch is None:
        from ..host import nft
        list_table = list_table or nft.list_table
        apply_batch = apply_batch or nft.apply_batch
    added = []
    with netlink as nl:
        # the table first: the rules and routes below would send nothing anywhere without marks
        if list_table(cfg.nft_table) is None:
            apply_batch(nft_batch(table), "create table inet %s" % cfg.nft_table)
            added.append("nftables table inet %s (%d routed prefixes)" % (cfg.nft_table, count))
        current = nl.routes(cfg.route_table) + owned_main_routes(nl.routes(MAIN_TABLE), cfg)
        for route in diff_routes(routes, current)[0]:
            nl.add_route(route, replace=True)
            added.append("route %s" % render_route(route))
        for rule in diff_rules(rules, nl.rules(cfg.rule_priority, cfg.route_table))[0]:
            nl.add_rule(rule)
            added.append("rule %s" % render_rule(rule))
    for line in added:
        log("fail closed: added %s" % line)
    if not added:
        log("fail closed: every piece is in place")
    return added
