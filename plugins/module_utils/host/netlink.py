# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Links and addresses over rtnetlink: the node agent's reads (link, addresses, routes, rules) through the
standard-library dumps of rtnl.py, every write and the playbook-time reads through pyroute2's IPRoute (works with
Debian's 0.7.2 and PyPI 0.9.x), imported on first use: a tick that finds no drift never imports pyroute2."""

from __future__ import annotations

import ipaddress
import socket
from typing import List, Optional, Tuple

from ..base.errors import KubeSpanError
from ..core.settings import LINK_NAME
from .rtnl import Rtnl, RtnlError

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_HOST = 254
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
# rtnetlink route types by number (linux/rtnetlink.h): the ones a KubeSpan table may hold or an admin may add
RTN_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}


class NetlinkError(KubeSpanError):
    """A netlink operation failed; the message names the interface and the operation."""


def _iproute():
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise NetlinkError("pyroute2 is required on the node: install the python3-pyroute2 package")
    return IPRoute()


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _kind(msg) -> Optional[str]:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None:
        return None
    return info.get_attr("IFLA_INFO_KIND")


class Netlink:
    """A thin, replaceable adapter: one rtnl dump socket and, from the first write, one IPRoute socket."""

    def __init__(self):
        self._ipr = None
        self._rtnl = None

    @property
    def ipr(self):
        # lazy: pyroute2's import costs ~150 ms CPU and ~14 MB per agent process; only a write needs it
        if self._ipr is None:
            self._ipr = _iproute()
        return self._ipr

    def _dump(self, method: str, *args):
        """A read-only dump through rtnl (standard library); RtnlError -> NetlinkError."""
        try:
            if self._rtnl is None:
                self._rtnl = Rtnl()
            return getattr(self._rtnl, method)(*args)
        except RtnlError as exc:
            raise NetlinkError(str(exc))

    def close(self):
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def link_index(self, ifname: str) -> Optional[int]:
        found = [link["index"] for link in self._dump("links") if link["ifname"] == ifname]
        return found[0] if found else None

    def link(self, ifname: str) -> Optional[dict]:
        """Return {index, mtu, up, kind, addresses} of a link, or None when it does not exist."""
        found = [link for link in self._dump("links") if link["ifname"] == ifname]
        if not found:
            return None
        msg = found[0]
        return {
            "index": msg["index"],
            "mtu": msg["mtu"],
            "up": bool(msg["flags"] & IFF_UP),
            "kind": msg["kind"],
            "addresses": self.addresses(msg["index"]),
        }

    def addresses(self, index: int, family: int = socket.AF_INET6) -> List[str]:
        """Global-scope addresses of a link as 'addr/prefixlen'."""
        result = []
        for msg in self._dump("addresses", family):
            if msg["index"] != index or msg["scope"] != RT_SCOPE_UNIVERSE:
                continue
            if msg["address"]:
                result.append("%s/%d" % (ipaddress.ip_address(msg["address"]).compressed, msg["prefixlen"]))
        return sorted(result)

    def set_mtu(self, index: int, mtu: int) -> None:
        self._do("set MTU %d" % mtu, index, lambda: self.ipr.link("set", index=index, mtu=mtu))

    def set_up(self, index: int) -> None:
        self._do("set up", index, lambda: self.ipr.link("set", index=index, state="up"))

    def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        self._do("add address %s" % cidr, index, lambda: self.ipr.addr(
            "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, flags=IFA_F_NODAD))

    def del_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        self._do("delete address %s" % cidr, index, lambda: self.ipr.addr(
            "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen))

    # ------------------------------------------------------------------ policy routing (table, rules)

    def routes(self, table: int) -> List[dict]:
        """Routes of ``table`` as dataplane route dicts (family, dst, table, oif, metric, mtu)."""
        names = {msg["index"]: msg["ifname"] for msg in self._dump("links")}
        result = []
        for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for msg in self._dump("routes", family):
                if msg["table"] != table:
                    continue
                dst = msg["dst"] or ("0.0.0.0" if fam == 4 else "::")
                route = {"family": fam, "dst": "%s/%d" % (dst, msg["dst_len"]), "table": table,
                         "oif": names.get(msg["oif"], ""), "metric": msg["priority"] or 0, "mtu": msg["mtu"] or 0}
                if msg["type"] != RTN_UNICAST:
                    route["type"] = RTN_TYPES.get(msg["type"], str(msg["type"]))
                result.append(route)
        return result

    def add_route(self, route: dict, replace: bool = False) -> None:
        if (route.get("type") or "unicast") != "unicast":  # fail closed: a device-less route (unreachable)
            family = socket.AF_INET if route["family"] == 4 else socket.AF_INET6
            self._do("%s %s route %s table %s" % ("replace" if replace else "add", route["type"], route["dst"], route["table"]), "-",
                     lambda: self.ipr.route("replace" if replace else "add", family=family, dst=route["dst"], table=route["table"],
                                            priority=route["metric"], type=route["type"]))
            return
        idx = self.link_index(route["oif"])
        if idx is None:
            raise NetlinkError("cannot route table %s via %s: no such link" % (route["table"], route["oif"]))
        family = socket.AF_INET if route["family"] == 4 else socket.AF_INET6
        self._do("%s route %s table %s" % ("replace" if replace else "add", route["dst"], route["table"]), idx,
                 lambda: self.ipr.route("replace" if replace else "add", family=family, dst=route["dst"], oif=idx,
                                        table=route["table"], priority=route["metric"], metrics={"mtu": route["mtu"]}))

    def del_route(self, route: dict) -> None:
        family = socket.AF_INET if route["family"] == 4 else socket.AF_INET6
        kwargs = {"family": family, "dst": route["dst"], "table": route["table"], "priority": route.get("metric", 0),
                  "type": route.get("type") or "unicast"}
        self._do("delete route %s table %s" % (route["dst"], route["table"]), route.get("oif", "-"),
                 lambda: self.ipr.route("del", **kwargs))

    def rules(self, priority: int, table: int) -> List[dict]:
        """Policy rules at ``priority`` or pointing at ``table``, as dataplane rule dicts."""
        result = []
        for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for msg in self._dump("rules", family):
                prio = msg["priority"] or 0
                tab = msg["table"]
                if prio != priority and tab != table:
                    continue
                result.append({"family": fam, "priority": prio, "fwmark": msg["fwmark"] or 0,
                               "fwmask": msg["fwmask"] or 0, "table": tab})
        return result

    def add_rule(self, rule: dict) -> None:
        family = socket.AF_INET if rule["family"] == 4 else socket.AF_INET6
        self._do("add rule fwmark %#x/%#x lookup %s" % (rule["fwmark"], rule["fwmask"], rule["table"]), "-",
                 lambda: self.ipr.rule("add", family=family, table=rule["table"], priority=rule["priority"],
                                       fwmark=rule["fwmark"], fwmask=rule["fwmask"]))

    def del_rule(self, rule: dict) -> None:
        family = socket.AF_INET if rule["family"] == 4 else socket.AF_INET6
        self._do("delete rule priority %s" % rule["priority"], "-",
                 lambda: self.ipr.rule("del", family=family, table=rule["table"], priority=rule["priority"],
                                       fwmark=rule["fwmark"], fwmask=rule["fwmask"]))

    def delete_link(self, index: int) -> None:
        self._do("delete link", index, lambda: self.ipr.link("del", index=index))

    def _do(self, what, index, func):
        try:
            func()
        except Exception as exc:  # pyroute2 raises NetlinkError subclasses of OSError with varying shapes
            raise NetlinkError("link %s: cannot %s: %s" % (index, what, exc))

    def links(self) -> List[Tuple[str, int, Optional[str], Optional[str]]]:
        """(name, hardware type, kind, MAC) of every link, for the physical-NIC choice."""
        result = []
        for msg in self.ipr.get_links():
            result.append((_attr(msg, "IFLA_IFNAME", ""), msg["ifi_type"], _kind(msg), _attr(msg, "IFLA_ADDRESS")))
        return result

    def node_addresses(self, exclude_ifname: Optional[str] = None) -> List[Tuple[str, str]]:
        """(interface name, address) of the addresses a node announces (select_node_addresses): links up,
        global scope, IPv4 before IPv6 and numerically sorted."""
        links = {}
        for msg in self.ipr.get_links():
            links[msg["index"]] = (_attr(msg, "IFLA_IFNAME", ""), bool(msg["flags"] & IFF_UP), _attr(msg, "IFLA_OPERSTATE", "UNKNOWN"))
        records = []
        for msg in self.ipr.get_addr():
            name, admin_up, operstate = links.get(msg["index"], ("", False, "DOWN"))
            if exclude_ifname and name == exclude_ifname:
                continue
            addr = _attr(msg, "IFA_ADDRESS") or _attr(msg, "IFA_LOCAL")
            if addr:
                records.append((name, addr, admin_up and str(operstate).upper() in LINK_UP_STATES, msg["scope"]))
        return select_node_addresses(records)

    def host_addresses(self, exclude_ifname: Optional[str] = None) -> List[Tuple[str, str]]:
        """(interface name, address) of every address on the host, in kernel order."""
        names = {}
        for msg in self.ipr.get_links():
            names[msg["index"]] = _attr(msg, "IFLA_IFNAME", "")
        result = []
        for msg in self.ipr.get_addr():
            name = names.get(msg["index"], "")
            if exclude_ifname and name == exclude_ifname:
                continue
            addr = _attr(msg, "IFA_ADDRESS") or _attr(msg, "IFA_LOCAL")
            if addr:
                result.append((name, addr))
        return result


LINK_UP_STATES = ("UP", "UNKNOWN")  # operstate of a link that carries traffic (dummy and loopback links say UNKNOWN)
# Links whose addresses are never node addresses: kube-proxy's IPVS dummy holds every Service ClusterIP
NEVER_NODE_LINKS = ("kube-ipvs0",)


def select_node_addresses(records) -> List[Tuple[str, str]]:
    """The node addresses Talos announces, from (interface name, address, link up, scope) records.

    As Talos's node addresses: only links that are up (administratively up, operstate up or unknown), only
    global scope (RT_SCOPE_UNIVERSE: no host or link scope), never kube-proxy's ``kube-ipvs0`` (Service
    ClusterIPs); then IPv4 before IPv6, each numerically, duplicates removed (the first interface kept).
    Loopback, link-local, multicast and pod/service networks are left to the caller (endpoint_candidates)."""
    chosen = {}
    for name, addr, up, scope in records:
        if not up or scope != RT_SCOPE_UNIVERSE or name in NEVER_NODE_LINKS:
            continue
        try:
            ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
        except ValueError:
            continue
        chosen.setdefault(ip, name)
    return [(chosen[ip], ip.compressed) for ip in sorted(chosen, key=lambda ip: (ip.version, int(ip)))]


def endpoint_candidates(addresses, exclude_networks=()) -> List[str]:
    """Addresses usable as WireGuard endpoints: no loopback, link-local, multicast or unspecified, no
    address inside ``exclude_networks`` (the cluster's own KubeSpan ULA); de-duplicated, IPv4 first,
    each family in input order."""
    excluded = [ipaddress.ip_network(n) for n in exclude_networks]
    v4, v6 = [], []
    seen = set()
    for _name, addr in addresses:
        try:
            ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        if any(ip.version == net.version and ip in net for net in excluded):
            continue
        if ip in seen:
            continue
        seen.add(ip)
        (v4 if ip.version == 4 else v6).append(ip.compressed)
    return v4 + v6


def host_never_routed(interface: str = LINK_NAME, extra=()) -> List[str]:
    """Addresses never routed into the mesh (docs/security.md, bounded claims): this host's addresses (all links
    but the KubeSpan one), the gateways of its default routes (main table) and ``extra`` (the discovery services'
    IP literals; None entries are skipped). Read from the kernel; without netlink only ``extra`` (the plan then
    also excludes the node's addresses it publishes). Loopback, link-local, multicast and unspecified
    addresses are left out, duplicates once, in the order found."""
    found: List[str] = []
    try:
        with Netlink() as nl:
            found.extend(addr for _name, addr in nl.host_addresses(exclude_ifname=interface))
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in nl.ipr.get_routes(family=family, table=254):
                    gateway = msg.get_attr("RTA_GATEWAY") if msg["dst_len"] == 0 else None
                    if gateway:
                        found.append(gateway)
    except Exception:  # noqa: BLE001 - pyroute2 raises its own types; a host without netlink keeps the published addresses
        found = []
    found.extend(a for a in extra if a)
    result: List[str] = []
    for addr in found:
        try:
            ip = ipaddress.ip_address(str(addr).split("%", 1)[0])
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified) and str(ip) not in result:
            result.append(str(ip))
    return result
