# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The endpoints a node announces to its peers, with Talos's selection and filter semantics. Pure logic.

Talos (LocalAffiliateController): the node's current addresses minus its own KubeSpan address (and the
SideroLink ULA), then the public IPs the discovery service observed (appended unless already present),
then the endpoint filters (siderolabs/net FilterIPs), then port 51820 on each, then the extra announced
endpoints (any port) unless already in the list.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .ipset import IPSet, parse_canonical
from .settings import LISTEN_PORT
from .wgtypes import format_endpoint, normalize_endpoint

DEFAULT_PORT = LISTEN_PORT  # the settings model's

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


# refused endpoint classes as (family, first, last, why), checked in this order (ipaddress's is_loopback,
# is_multicast, is_unspecified and is_link_local, plus the IPv4 limited broadcast)
_REFUSED = (
    (4, 0x7F000000, 0x7FFFFFFF, "loopback"), (6, 1, 1, "loopback"),
    (4, 0xE0000000, 0xEFFFFFFF, "multicast"), (6, 0xFF << 120, (1 << 128) - 1, "multicast"),
    (4, 0xFFFFFFFF, 0xFFFFFFFF, "broadcast"),
    (4, 0, 0, "unspecified"), (6, 0, 0, "unspecified"),
    (4, 0xA9FE0000, 0xA9FEFFFF, "link-local"), (6, 0xFE80 << 112, (0xFEC0 << 112) - 1, "link-local"),
)
_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses: judged as the IPv4 address


def endpoint_problem(host, own=None, subnet=None) -> Optional[str]:
    """Why ``host`` (an IP address, text or object) must not be a WireGuard endpoint, or None when it may be.

    Refused: not an address, loopback, multicast, the limited broadcast 255.255.255.255, unspecified, link-local
    (no zone to reach it by), an address in ``own`` (an IPSet, or a container of (family, integer) pairs: this
    node's own addresses) and an address inside ``subnet`` (an IPv6Network: the cluster's KubeSpan prefix, which the
    tunnel cannot carry itself).
    """
    text = str(host).strip()
    if text.startswith("["):
        text = text[1:-1] if text.endswith("]") else text
    parsed = parse_canonical(text)
    if parsed is not None:
        family, value = parsed[0], parsed[1]
    else:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return "not an IP address"
        family, value = ip.version, int(ip)
    if family == 6 and value >> 32 == _MAPPED >> 32:
        family, value = 4, value & 0xFFFFFFFF
    for fam, first, last, why in _REFUSED:
        if fam == family and first <= value <= last:
            return why
    if subnet is not None and family == 6 == subnet.version and int(subnet.network_address) <= value <= int(subnet.broadcast_address):
        return "inside the cluster's KubeSpan prefix"
    if own is not None:
        if isinstance(own, IPSet):
            first, last = own._overlapping(family, value, value)  # pylint: disable=protected-access
            mine = last > first
        else:
            mine = (family, value) in own
        if mine:
            return "this node's own address"
    return None


def parse_filter(text: str) -> Tuple[bool, Network]:
    """(positive, network) of one filter: ``cidr``, ``ip`` (a host), ``!cidr`` or ``!ip``. Raises ValueError naming it."""
    if not isinstance(text, str):
        raise ValueError("endpoint filter %r is not a string: write a CIDR such as 10.0.0.0/8 or !192.168.0.0/16" % (text,))
    value = text.strip()
    positive = not value.startswith("!")
    if not positive:
        value = value[1:].strip()
    try:
        # Go's netip.ParsePrefix keeps host bits and Prefix.Contains ignores them: the same as strict=False.
        return positive, ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("endpoint filter %r is not a CIDR or an IP address (optionally prefixed with '!')" % (text,))


def _parse_ip(value, what: str) -> Address:
    """An address; an interface form (``10.0.0.5/24``) counts as its address. Raises ValueError naming ``what``."""
    text = str(value).strip()
    try:
        return ipaddress.ip_interface(text).ip
    except ValueError:
        raise ValueError("%s %r is not an IP address" % (what, value))


def filter_ips(ips: Iterable, filters: Sequence[str]) -> List[str]:
    """Talos's FilterIPs: filters apply in list order over the input.

    A positive filter appends each matching address not yet in the result (input order); ``!cidr`` (or a
    bare ``!ip``, a host) removes matching addresses from the result so far, and a later positive filter may
    add them again. Addresses that no positive filter matches are dropped.
    """
    parsed = [parse_filter(f) for f in filters]
    addrs = [_parse_ip(ip, "address") for ip in ips]
    result: List[Address] = []
    for positive, net in parsed:
        for ip in addrs:
            if ip.version != net.version or ip not in net:
                continue
            if positive and ip not in result:
                result.append(ip)
            elif not positive and ip in result:
                result.remove(ip)
    return [ip.compressed for ip in result]


def announced_endpoints(
    addresses: Iterable,
    exclude: Iterable = (),
    discovered_public_ips: Iterable = (),
    filters: Optional[Sequence[str]] = None,
    port: int = DEFAULT_PORT,
    extra_endpoints: Iterable[str] = (),
) -> List[str]:
    """The endpoints this node announces, in Talos's order.

    ``addresses``: the node's addresses in host order (``ip`` or ``ip/len``); loopback, link-local,
    multicast and unspecified ones are skipped, duplicates keep their first position. ``exclude``:
    addresses or prefixes never announced (the node's own KubeSpan address or the cluster's KubeSpan
    prefix; Talos also drops its SideroLink ULA). ``discovered_public_ips``: the addresses the discovery
    service saw this node come from, appended when absent unless endpoint_problem refuses it or ``exclude``
    holds it. ``filters``: endpoint filters in Talos syntax; None means no filtering, an empty list (Talos's
    explicitly empty ``filters.endpoints``) announces none of these addresses (the extra endpoints remain).
    ``extra_endpoints``: ``ip:port`` / ``[ipv6]:port`` appended after, skipping exact duplicates. Raises ValueError naming a bad value.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("KubeSpan port %r must be an integer from 1 to 65535" % (port,))
    excluded = []
    for item in exclude:
        try:
            excluded.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError("excluded network %r is not an IP address or prefix" % (item,))
    ips: List[Address] = []
    for value in addresses:
        ip = _parse_ip(value, "node address")
        if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        if any(ip.version == net.version and ip in net for net in excluded):
            continue
        if ip not in ips:
            ips.append(ip)
    for value in discovered_public_ips:
        ip = _parse_ip(value, "discovered public IP")
        if endpoint_problem(ip) or any(ip.version == net.version and ip in net for net in excluded):
            continue  # never announce what the service reports as a broadcast, loopback, ... or our own ULA
        if ip not in ips:
            ips.append(ip)
    selected = [ip.compressed for ip in ips]
    if filters is not None:
        selected = filter_ips(selected, filters)
    result = [format_endpoint(ip, port) for ip in selected]
    for value in extra_endpoints:
        try:
            endpoint = normalize_endpoint(value)
        except ValueError as exc:
            raise ValueError("extra announced endpoint: %s" % exc)
        if endpoint not in result:
            result.append(endpoint)
    return result


ANNOUNCE_VERSION = 2  # 2: "filters" None (unset: no filtering) differs from [] (explicitly empty: nothing announced)


def announce_inputs(addresses: Iterable, exclude: Iterable, filters: Optional[Sequence[str]], port: int,
                    extra_endpoints: Iterable[str]) -> dict:
    """What announced_endpoints is computed from, as plain JSON data (kept on the node for the agent)."""
    return {"version": ANNOUNCE_VERSION, "addresses": [str(a) for a in addresses], "exclude": [str(n) for n in exclude],
            "filters": None if filters is None else [str(f) for f in filters], "port": int(port), "extra_endpoints": [str(e) for e in extra_endpoints or ()]}


def endpoints_from_inputs(inputs: dict, discovered_public_ips: Iterable = ()) -> List[str]:
    """announced_endpoints of ``announce_inputs`` data, with the addresses the discovery service saw this node come
    from inserted where Talos inserts them: after the node's own addresses, before the filters and the extra
    endpoints (so a filter that excludes it drops it, and its place follows the filters' order)."""
    version = inputs.get("version")
    if version not in (1, ANNOUNCE_VERSION):
        raise ValueError("unknown announce data version %r" % (version,))
    filters = inputs["filters"]
    if version == 1 and not filters:
        filters = None  # version 1 wrote [] for "no filters"
    return announced_endpoints(inputs["addresses"], exclude=inputs["exclude"], discovered_public_ips=discovered_public_ips,
                               filters=filters, port=int(inputs["port"]),
                               extra_endpoints=inputs["extra_endpoints"])


def _endpoint_ip(endpoint: str) -> Optional[Address]:
    host = str(endpoint).rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def filter_peer_endpoints(peers: Sequence[dict], filters: Optional[Sequence[str]]) -> List[dict]:
    """Talos's ``filters.peerEndpoints`` (kubespan_filters_peer_endpoints): the endpoints of OTHER peers that this node
    dials, filtered with FilterIPs (filter_ips) on their addresses; None: no filtering, [] : no endpoint is dialled
    (the peers may still dial this node). The order follows filter_ips (filter order, then the peer's order); an
    endpoint whose address is not an IP is dropped when filtering. Returns new peer dicts; the input is not changed."""
    if filters is None:
        return [dict(p) for p in peers]
    parse = [parse_filter(f) for f in filters]  # raises ValueError naming a bad filter before any peer is touched
    del parse
    out = []
    for peer in peers:
        endpoints = list(peer.get("endpoints") or [])
        ips = [_endpoint_ip(ep) for ep in endpoints]
        kept = filter_ips([ip for ip in ips if ip is not None], filters)
        peer = dict(peer)
        peer["endpoints"] = [ep for text in kept for ep, ip in zip(endpoints, ips) if ip is not None and ip.compressed == text]
        out.append(peer)
    return out
