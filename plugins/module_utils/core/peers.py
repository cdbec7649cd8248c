# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Peer set from affiliates: validation, merging with last-known state, peer specs. Pure logic."""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Optional, Tuple

from ..base.collector import collector_off
from ..base.errors import KubeSpanError
from .ipset import BITS, IPSet, format_address, parse_canonical, parse_canonical_exact
from .keys import BASE62_ALPHABET, valid_node_id
from .peerspec import assign_claims, local_ipset
from .settings import ALLOWED_PEER_NETWORKS
from .wgtypes import key_to_bytes, normalize_endpoint

MAX_ENDPOINTS = 64
MAX_NETWORKS = 1024
# kubespan_allowed_peer_networks' default (discovery_affiliates trims discovered claims to it): the private ranges
# (RFC 1918, RFC 6598 shared space, IPv6 ULA, which holds every cluster's KubeSpan prefix); the inventory's pod
# networks are always added
DEFAULT_ALLOWED_PEER_NETWORKS = ALLOWED_PEER_NETWORKS  # the settings model's


class PeerError(KubeSpanError, ValueError):
    """Affiliate data is invalid; the message names the host and the value."""


def _endpoint(value, seen: Optional[dict] = None) -> str:
    """normalize_endpoint with a fast path for canonical text (``10.0.0.1:51820``, ``[fd00::1]:51820``): same
    result, and anything else (including every error) goes through normalize_endpoint. ``seen`` (optional)
    gets the parse of each canonical host (parse_canonical, a pure function of the text) for _address."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
        if sep and "/" not in host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            parsed = parse_canonical(host)
            if parsed is not None and seen is not None:
                seen[host] = parsed
            if parsed is not None and (parsed[0] == 6) == text.startswith("["):
                if port[0] != "0":
                    return text  # what the formatting below gives: the port has no leading zero
                return "[%s]:%d" % (host, int(port)) if parsed[0] == 6 else "%s:%d" % (host, int(port))
    return normalize_endpoint(value)


def _address(value, seen: Optional[dict] = None) -> Tuple[str, Tuple[int, int, int]]:
    """(text, range) of a node address as validate_affiliate normalizes it (``10.0.0.5/24`` is 10.0.0.5).
    ``seen``: hosts _endpoint already parsed (a node address is usually also an endpoint's host)."""
    text = str(value).strip()
    parsed = None if "/" in text else (seen and seen.get(text)) or parse_canonical(text)
    if parsed is not None:
        return text, parsed
    ip = ipaddress.ip_interface(text).ip
    number = int(ip)
    return str(ip), (ip.version, number, number)


def _prefix(value, _seen=None) -> Tuple[str, Tuple[int, int, int]]:
    """(text, range) of a network as validate_affiliate normalizes it (host bits dropped)."""
    text = str(value).strip()
    parsed = parse_canonical_exact(text)
    if parsed is not None:
        family, first, last, exact = parsed
        if exact and "/" in text:
            return text, (family, first, last)  # canonical address, canonical length, no host bits: as written
        return "%s/%d" % (format_address(family, first), BITS[family] - (last - first).bit_length()), (family, first, last)
    net = ipaddress.ip_network(text, strict=False)
    return str(net), (net.version, int(net.network_address), int(net.broadcast_address))


_KINDS = (("addresses", "address", _address), ("additional_addresses", "prefix", _prefix),
          ("exclude_advertised_networks", "prefix", _prefix))  # in the order their errors are reported


def _subnet_bounds(subnet: ipaddress.IPv6Network) -> Tuple[int, int]:
    first = int(subnet.network_address)
    return first, first | int(subnet.hostmask)


def _validate(aff: dict, subnet: ipaddress.IPv6Network, bounds: Optional[Tuple[int, int]] = None) -> Tuple[dict, IPSet]:
    """validate_affiliate plus the IP set the peer claims (peerspec.peer_ipset of the result), from one parse.
    ``bounds``: _subnet_bounds(subnet), when the caller validates many affiliates."""
    if not isinstance(aff, dict):
        raise PeerError("peer entry must be a mapping, got %s" % type(aff).__name__)
    get = aff.get
    name = get("name")
    if not name or not isinstance(name, str):
        raise PeerError("peer entry without a name: %r" % ({k: aff[k] for k in aff if k != "preshared_key"},))
    pub = get("public_key")
    try:
        key_to_bytes(pub)
    except ValueError as exc:
        raise PeerError("peer %s: public_key %s" % (name, exc))
    node_id = get("node_id") or ""
    # valid_node_id's rule, with str.strip doing the per-character test in C (then the same call decides)
    if node_id and not (isinstance(node_id, str) and len(node_id) <= 256 and not node_id.strip(BASE62_ALPHABET)) \
            and not valid_node_id(node_id):
        raise PeerError("peer %s: node_id %s is not a base62 node ID" % (name, repr(node_id)[:60]))
    address_text = str(get("address", "")).split("/", 1)[0]
    parsed = parse_canonical(address_text)
    if parsed is not None and parsed[0] == 6 and address_text.strip() == address_text:
        address, number = address_text, parsed[1]
    else:
        try:
            ip = ipaddress.IPv6Address(address_text)
        except ValueError:
            raise PeerError("peer %s: address %r is not an IPv6 address" % (name, get("address")))
        address, number = str(ip), int(ip)
    subnet_first, subnet_last = bounds or _subnet_bounds(subnet)
    if not subnet_first <= number <= subnet_last:
        raise PeerError(
            "peer %s: KubeSpan address %s is outside this cluster's subnet %s: the nodes disagree on "
            "kubespan_cluster_id; give every host of the group the same cluster secrets" % (name, address, subnet))
    endpoints = []
    seen = {}
    raw_eps = get("endpoints") or []
    if not isinstance(raw_eps, (list, tuple)):
        raise PeerError("peer %s: endpoints must be a list, got %r" % (name, raw_eps))
    if len(raw_eps) > MAX_ENDPOINTS:
        raise PeerError("peer %s: %d endpoints, at most %d are allowed" % (name, len(raw_eps), MAX_ENDPOINTS))
    for ep in raw_eps:
        try:
            norm = _endpoint(ep, seen)
        except ValueError as exc:
            raise PeerError("peer %s: %s" % (name, exc))
        if norm not in endpoints:
            endpoints.append(norm)
    result = {
        "name": name,
        "node_id": node_id,
        "public_key": pub,
        "address": address,
        "endpoints": endpoints,
    }
    spans = []  # the claimed ranges: pod networks and node addresses
    excluded = ()
    for key, kind, convert in _KINDS:
        values = get(key) or []
        if not isinstance(values, (list, tuple)):
            raise PeerError("peer %s: %s must be a list, got %r" % (name, key, values))
        if not values:
            continue
        if len(values) > MAX_NETWORKS:
            raise PeerError("peer %s: %d %s, at most %d are allowed" % (name, len(values), key, MAX_NETWORKS))
        normalized = []
        if key == "exclude_advertised_networks":
            found = excluded = []
        else:
            found = spans
        for value in values:
            try:
                text, span = convert(value, seen)
            except ValueError:
                raise PeerError("peer %s: %s entry %r is not an IP %s" % (name, key, value, kind))
            normalized.append(text)
            found.append(span)
        result[key] = normalized
    # the claim as peerspec.peer_ipset builds it: pod networks, node addresses as hosts, minus the excluded
    # networks, plus the KubeSpan address (a union is order-free: the ranges are merged in address order)
    kubespan = (6, number, number)
    if not excluded:
        spans.append(kubespan)
    spans.sort()
    claim = IPSet.from_sorted_ranges(spans)
    if excluded:
        for span in excluded:
            claim.remove_range(*span)
        claim.add_range(*kubespan)
    return result, claim


def validate_affiliate(aff: dict, subnet: ipaddress.IPv6Network) -> dict:
    """Return a normalized copy of one affiliate or raise PeerError naming the host and the field."""
    return _validate(aff, subnet)[0]


def _same_as(entry, norm: dict) -> bool:
    """True when validating ``entry`` gives exactly ``norm`` (an affiliate validate_affiliate returned): every
    field it reads equals norm's, which is its own normalization (validation reads only these fields,
    through ``.get(...) or default``, and is idempotent on its result)."""
    if not isinstance(entry, dict):
        return False
    get = entry.get
    # every field validation reads: node_id, name, public_key, address and the four lists (a tuple never equals a list)
    return ((get("node_id") or "") == norm["node_id"] and get("name") == norm["name"]
            and get("public_key") == norm["public_key"] and get("address") == norm["address"]
            and (get("endpoints") or []) == norm.get("endpoints", [])
            and (get("addresses") or []) == norm.get("addresses", [])
            and (get("additional_addresses") or []) == norm.get("additional_addresses", [])
            and (get("exclude_advertised_networks") or []) == norm.get("exclude_advertised_networks", []))


@collector_off
def build_peer_set(
    local_public_key: str,
    local_address: str,
    subnet: ipaddress.IPv6Network,
    affiliates: Iterable[dict],
    members: Optional[Iterable[str]] = None,
    last_known: Optional[Iterable[dict]] = None,
    local_name: Optional[str] = None,
    local_addresses: Iterable[str] = (),
    local_networks: Iterable[str] = (),
) -> Tuple[List[dict], List[str]]:
    """Merge fresh affiliates with last-known ones and return (peer specs, warnings).

    ``affiliates``: what this run knows (hosts in the play). ``members``: every host name of the
    cluster group; a member without fresh data keeps its last-known entry (so ``--limit`` never drops
    peers), and a last-known entry whose host is no longer a member is dropped. ``members`` None means
    the fresh affiliates are the whole cluster.
    """
    warnings = []
    fresh = {}
    claims: Dict[str, IPSet] = {}  # name -> the IP set its fresh entry claims
    known_claims: Dict[str, IPSet] = {}  # name -> the IP set its last-known entry claims
    bounds = _subnet_bounds(subnet)
    for aff in affiliates:
        norm, claim = _validate(aff, subnet, bounds)
        if norm["name"] in fresh:
            raise PeerError("peer %s is listed twice" % norm["name"])
        fresh[norm["name"]] = norm
        claims[norm["name"]] = claim

    chosen: Dict[str, dict] = dict(fresh)
    if members is not None:
        member_set = dict.fromkeys(members)  # in order, and a constant-time membership test
        known = {}
        for entry in last_known or []:
            current = fresh.get(entry.get("name")) if isinstance(entry, dict) and isinstance(entry.get("name"), str) else None
            if current is not None and _same_as(entry, current):
                continue  # valid (it equals fresh data, already validated) and unused: the fresh data wins
            try:
                norm, claim = _validate(entry, subnet, bounds)
            except PeerError as exc:
                warnings.append("ignoring last-known peer data: %s" % exc)
                continue
            known[norm["name"]] = norm
            known_claims[norm["name"]] = claim
        for name in member_set:
            if name in chosen or name == local_name:
                continue
            if name in known:
                chosen[name] = known[name]
                warnings.append("peer %s is not in this play: keeping its last known identity and endpoints" % name)
            else:
                warnings.append(
                    "peer %s is in the cluster group but not in this play and was never seen by this node: "
                    "it joins on a run that includes it" % name)
        for name in list(chosen):
            if name not in member_set and name not in fresh:
                del chosen[name]

    by_key: Dict[str, str] = {}
    by_addr: Dict[str, str] = {}
    peers, peer_claims = [], []
    own_address = None
    for name in sorted(chosen):
        aff = chosen[name]
        if aff["public_key"] == local_public_key or name == local_name:
            if aff["public_key"] == local_public_key and local_name and name != local_name:
                raise PeerError("peer %s has this node's own public key: two hosts share one identity "
                                "(a cloned /var/lib/kubespan?); remove the copy on one of them" % name)
            continue
        if aff["public_key"] in by_key:
            raise PeerError("peers %s and %s have the same public key %s: two hosts share one identity "
                            "(a cloned /var/lib/kubespan?)" % (by_key[aff["public_key"]], name, aff["public_key"]))
        if own_address is None:
            own_address = str(ipaddress.IPv6Address(local_address.split("/")[0]))
        # a KubeSpan address another node has too (cloned MACs give the same EUI-64) is an overlap like any
        # other, as in Talos: the peer is kept and loses the address (this node keeps its own; the first peer in
        # node-ID order keeps a shared one); the assignment below trims it and names both peers
        if aff["address"] == own_address:
            warnings.append("peer %s has this node's own KubeSpan address %s (cloned MAC addresses?): this node keeps "
                            "it, the peer is meshed with the rest of its addresses" % (name, aff["address"]))
        elif aff["address"] in by_addr:
            warnings.append("peers %s and %s have the same KubeSpan address %s (cloned MAC addresses?): the first in "
                            "node-ID order keeps it, both are meshed" % (by_addr[aff["address"]], name, aff["address"]))
        by_key[aff["public_key"]] = name
        by_addr.setdefault(aff["address"], name)
        peers.append(aff)
        peer_claims.append(claims[name] if name in fresh else known_claims[name])
    # AllowedIPs as Talos builds them: pod networks, node addresses as hosts, minus excluded networks,
    # plus the KubeSpan address; never this node's own addresses; overlaps go to the first in node-ID order.
    local = [str(local_address).split("/", 1)[0]] + list(local_addresses)
    # assign_claims, writing into the validated entries themselves (made by _validate for this call only)
    peers, assign_warnings = assign_claims(peers, peer_claims, local_ipset(local, local_networks), False)
    return peers, warnings + assign_warnings
