# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The pure plans of one reconcile (reconcile/engine.py ``reconcile_mesh``): link and device, data plane.

Each planner takes the desired values and the host's current view *as data* (the link as netlink reports it, the
device as WireGuard reports it, the routes, rules and nftables table as read) and returns what to change, the
change lines the module reports and the before/after text of ``--diff``. Nothing here touches the host: the layer
test keeps this file in the core layer, below every adapter, and tests/unit/plugins/module_utils/test_meshplan.py
runs the planners without Netlink. engine.py reads the view, calls the planner and applies the plan through the
host adapters.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .dataplane import (
    DataPlaneConfig,
    desired_nft,
    desired_routes,
    desired_rules,
    diff_nft,
    diff_routes,
    diff_rules,
    fail_closed_routes,
    render_nft,
    render_route,
    render_rule,
)
from .peerspec import routed_set
from .plan import DesiredDevice, DesiredPeer, expected_device, plan_device, render_device
from .relay import move_allowed_ips
from .wgtypes import DeviceState, DeviceUpdate

# ----------------------------------------------------------------------------------------------- device


def desired_device(private_key: str, listen_port: int, fwmark: int, persistent_keepalive: int, cluster_secret: str,
                   peers: List[dict], endpoints: Dict[str, List[str]], via: Optional[dict]) -> DesiredDevice:
    """The WireGuard device wanted: one entry per peer with its usable ``endpoints`` (public key -> list); a relayed
    peer's ranges are on its relay's entry, its own entry keeps probing without any (``via``: relay.py)."""
    allowed = move_allowed_ips([(p["public_key"], p["allowed_ips"]) for p in peers], via) if via else None
    return DesiredDevice(
        private_key=private_key,
        listen_port=int(listen_port),
        fwmark=int(fwmark),
        peers=[DesiredPeer(public_key=p["public_key"], allowed_ips=allowed[p["public_key"]] if allowed else p["allowed_ips"],
                           endpoints=endpoints[p["public_key"]], persistent_keepalive=int(persistent_keepalive),
                           preshared_key=cluster_secret, label=p["name"]) for p in peers],
    )


def plan_link(ifname: str, link: Optional[dict], address: str, mtu: int) -> Tuple[List[Tuple[str, Optional[str]]], List[str]]:
    """(operations, change lines) that give the link ``ifname`` (``link``: netlink's view, None when missing) the
    MTU, exactly the one ``address`` and the up state. Operations: ("mtu", None), ("add", a), ("del", a), ("up", None)."""
    ops: List[Tuple[str, Optional[str]]] = []
    if link is None or link["mtu"] != int(mtu):
        ops.append(("mtu", None))
    stale = [a for a in (link["addresses"] if link else []) if a != address]
    if link is None or address not in link["addresses"]:
        ops.append(("add", address))
    for a in stale:
        ops.append(("del", a))
    if link is None or not link["up"]:
        ops.append(("up", None))
    changes = [{"mtu": "MTU -> %s" % mtu, "add": "add address %s" % arg, "del": "remove address %s" % arg,
                "up": "set %s up" % ifname}[op] for op, arg in ops]
    return ops, changes


@dataclass
class DevicePlan:
    """What the device step changes. ``create``: the interface (and with wireguard-go its process) is created first;
    ``update``: the WireGuard configuration to apply; ``link_ops``: plan_link's operations."""
    create: bool
    update: DeviceUpdate
    link_ops: List[Tuple[str, Optional[str]]]
    changes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    before: str = ""
    after: str = ""


def plan_device_step(impl: str, ifname: str, desired: DesiredDevice, link: Optional[dict], current: Optional[DeviceState],
                     device_exists: bool, address: str, mtu: int, labels: dict, public_key: str, now: float,
                     port_in_use: bool = False) -> DevicePlan:
    """The device step's plan from the host's view: ``link`` (netlink's, None: no interface), ``current`` (the device as
    read, None: unreadable or missing), ``device_exists`` (False: it is created) and ``port_in_use`` (another process
    holds the listen port; asked only when the device is created)."""
    before_link = {"addresses": link["addresses"], "mtu": link["mtu"], "up": link["up"]} if link else {}
    after_link = {"addresses": [address], "mtu": int(mtu), "up": True}
    plan = DevicePlan(create=not device_exists, update=DeviceUpdate(), link_ops=[],
                      before=render_device(ifname, before_link, current, labels),
                      after=render_device(ifname, after_link, expected_device(desired, current, public_key, now), labels))
    if plan.create:
        plan.changes.append("create %s WireGuard interface %s" % (impl, ifname))
        if port_in_use:
            plan.warnings.append(
                "UDP port %s is already held by another process (see: ss -ulpn 'sport = :%s'), e.g. a pod's host port: "
                "WireGuard cannot listen on it; free the port or set kubespan_listen_port" % (desired.listen_port, desired.listen_port))
    # a created device starts empty: its whole configuration is applied (current is None then)
    plan.update, changes = plan_device(desired, None if plan.create else current, now)
    plan.changes.extend(changes)
    plan.link_ops, changes = plan_link(ifname, link, address, mtu)
    plan.changes.extend(changes)
    return plan


# ----------------------------------------------------------------------------------------------- data plane


def bypass_up_peers(allow_bypass: bool, up: Optional[Iterable[str]], via: Optional[dict]) -> Optional[List[str]]:
    """The up peers the routed set is built from: with down-peer bypass, the peers seen up plus those relayed through an
    up relay; without bypass ``up`` unchanged (routed_set ignores it)."""
    if allow_bypass and via:
        have = set(up or ())
        return sorted(have | {key for key, relay in via.items() if relay in have})
    return list(up) if up is not None else None


@dataclass
class DataPlanePlan:
    """What the data-plane step changes: routes and rules to delete and add (in that order), the nftables table."""
    add_routes: list
    del_routes: list
    add_rules: list
    del_rules: list
    nft_changed: bool
    want_nft: object
    changes: List[str] = field(default_factory=list)
    before: str = ""
    after: str = ""


def render_policy(routes, rules, nft_text) -> str:
    """The --diff text of the policy routing and the nftables table."""
    lines = ["", "[Routing]"] + ["route %s" % render_route(r) for r in sorted(routes, key=str)]
    lines += ["rule %s" % render_rule(r) for r in sorted(rules, key=str)]
    return "\n".join(lines) + "\n" + (nft_text or "")


def plan_dataplane(cfg: DataPlaneConfig, peers: List[dict], subnet: str, allow_bypass: bool, up: Optional[List[str]],
                   forward: Optional[List[int]], cur_routes: list, cur_rules: list, cur_nft) -> DataPlanePlan:
    """Policy routing (table, rules, the fail-closed routes) and the nftables table that forces the peers' networks into
    KubeSpan, against the current ``cur_routes`` (table and owned main routes), ``cur_rules`` and ``cur_nft`` (None: no
    table). ``forward``: the relay's forwarded families (relay_forward_families), None when not a relay."""
    routed = routed_set(peers, ipaddress.IPv6Network(subnet), bool(allow_bypass), up)
    # fail closed: unreachable defaults in the table and for the cluster's /64 (docs/dataplane.md)
    want_routes = desired_routes(cfg) + fail_closed_routes(cfg, subnet)
    want_rules, want_nft = desired_rules(cfg), desired_nft(routed, cfg, forward)
    add_routes, del_routes = diff_routes(want_routes, cur_routes)
    add_rules, del_rules = diff_rules(want_rules, cur_rules)
    nft = diff_nft(want_nft, cur_nft)
    plan = DataPlanePlan(add_routes=add_routes, del_routes=del_routes, add_rules=add_rules, del_rules=del_rules,
                         nft_changed=nft.changed, want_nft=want_nft)
    plan.changes.extend("remove route %s" % render_route(r) for r in del_routes)
    plan.changes.extend("add route %s" % render_route(r) for r in add_routes)
    plan.changes.extend("remove rule %s" % render_rule(r) for r in del_rules)
    plan.changes.extend("add rule %s" % render_rule(r) for r in add_rules)
    if nft.changed:
        plan.changes.append("%s nftables table inet %s (%d routed prefixes)" % (
            "update" if cur_nft is not None else "create", cfg.nft_table, len(routed.prefixes())))
    plan.before = render_policy(cur_routes, cur_rules, render_nft(cur_nft))
    plan.after = render_policy(want_routes, want_rules, render_nft(want_nft))
    return plan
