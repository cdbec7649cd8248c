# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Peer set from affiliates: validation, merging with last-known state, peer specs. Pure logic."""

from __future__ import annotations

import ipaddress
from typing import Dict, Iterable, List, Optional, Tuple

from .identity import valid_node_id
from .peerspec import assign_allowed_ips
from .wgtypes import key_to_bytes, normalize_endpoint

MAX_ENDPOINTS = 64
MAX_NETWORKS = 1024


class PeerError(ValueError):
    """Affiliate data is invalid; the message names the host and the value."""


def validate_affiliate(aff: dict, subnet: ipaddress.IPv6Network) -> dict:
    """Return a normalized copy of one affiliate or raise PeerError naming the host and the field."""
    if not isinstance(aff, dict):
        raise PeerError("peer entry must be a mapping, got %s" % type(aff).__name__)
    name = aff.get("name")
    if not name or not isinstance(name, str):
        raise PeerError("peer entry without a name: %r" % ({k: aff[k] for k in aff if k != "preshared_key"},))
    where = "peer %s" % name
    pub = aff.get("public_key")
    try:
        key_to_bytes(pub)
    except ValueError as exc:
        raise PeerError("%s: public_key %s" % (where, exc))
    node_id = aff.get("node_id") or ""
    if node_id and not valid_node_id(node_id):
        raise PeerError("%s: node_id %s is not a base62 node ID" % (where, repr(node_id)[:60]))
    try:
        address = ipaddress.IPv6Address(str(aff.get("address", "")).split("/", 1)[0])
    except ValueError:
        raise PeerError("%s: address %r is not an IPv6 address" % (where, aff.get("address")))
    if address not in subnet:
        raise PeerError(
            "%s: KubeSpan address %s is outside this cluster's subnet %s: the nodes disagree on "
            "kubespan_cluster_id; give every host of the group the same cluster secrets" % (where, address, subnet))
    endpoints = []
    raw_eps = aff.get("endpoints") or []
    if not isinstance(raw_eps, (list, tuple)):
        raise PeerError("%s: endpoints must be a list, got %r" % (where, raw_eps))
    if len(raw_eps) > MAX_ENDPOINTS:
        raise PeerError("%s: %d endpoints, at most %d are allowed" % (where, len(raw_eps), MAX_ENDPOINTS))
    for ep in raw_eps:
        try:
            norm = normalize_endpoint(ep)
        except ValueError as exc:
            raise PeerError("%s: %s" % (where, exc))
        if norm not in endpoints:
            endpoints.append(norm)
    result = {
        "name": name,
        "node_id": node_id,
        "public_key": pub,
        "address": str(address),
        "endpoints": endpoints,
    }
    for key, kind in (("addresses", "address"), ("additional_addresses", "prefix"), ("exclude_advertised_networks", "prefix")):
        values = aff.get(key) or []
        if not isinstance(values, (list, tuple)):
            raise PeerError("%s: %s must be a list, got %r" % (where, key, values))
        if len(values) > MAX_NETWORKS:
            raise PeerError("%s: %d %s, at most %d are allowed" % (where, len(values), key, MAX_NETWORKS))
        normalized = []
        for value in values:
            try:
                if kind == "address":
                    normalized.append(str(ipaddress.ip_interface(str(value).strip()).ip))
                else:
                    normalized.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
            except ValueError:
                raise PeerError("%s: %s entry %r is not an IP %s" % (where, key, value, kind))
        if normalized:
            result[key] = normalized
    return result


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
    for aff in affiliates:
        norm = validate_affiliate(aff, subnet)
        if norm["name"] in fresh:
            raise PeerError("peer %s is listed twice" % norm["name"])
        fresh[norm["name"]] = norm

    chosen: Dict[str, dict] = dict(fresh)
    if members is not None:
        member_set = list(dict.fromkeys(members))
        known = {}
        for entry in last_known or []:
            try:
                norm = validate_affiliate(entry, subnet)
            except PeerError as exc:
                warnings.append("ignoring last-known peer data: %s" % exc)
                continue
            known[norm["name"]] = norm
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
    peers = []
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
        if aff["address"] == str(ipaddress.IPv6Address(local_address.split("/")[0])):
            raise PeerError("peer %s claims this node's own KubeSpan address %s" % (name, aff["address"]))
        if aff["address"] in by_addr:
            raise PeerError("peers %s and %s claim the same KubeSpan address %s" % (by_addr[aff["address"]], name, aff["address"]))
        by_key[aff["public_key"]] = name
        by_addr[aff["address"]] = name
        peers.append(dict(aff))
    # AllowedIPs as Talos builds them: pod networks, node addresses as hosts, minus excluded networks,
    # plus the KubeSpan address; never this node's own addresses; overlaps go to the first in key order.
    local = [str(local_address).split("/", 1)[0]] + list(local_addresses)
    peers, assign_warnings = assign_allowed_ips(peers, local, local_networks)
    return peers, warnings + assign_warnings
