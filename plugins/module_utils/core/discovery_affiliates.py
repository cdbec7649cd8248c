# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Affiliates through the discovery service: sealing this node's, opening and merging the others'. Pure logic.

This project's affiliate dict (roles/kubespan ``kubespan_affiliate``, peers.validate_affiliate) is::

    {"name", "node_id", "public_key", "address", "endpoints": ["ip:port"...], "addresses": [...],
     "additional_addresses": [cidr...], "exclude_advertised_networks": [cidr...]}

On the wire it is Talos's client ``Affiliate`` (node_id, addresses, hostname, nodename, KubeSpan{public_key,
address, additional_addresses, exclude_advertised_addresses}) sealed with AES-GCM, plus one ECB-sealed
``Endpoint`` per endpoint; the affiliate ID on the service is the node ID, as in Talos.

Merge rules (Talos's, with the inventory first): inventory affiliates, then discovered ones merged by node ID
(lists union, the inventory's order first; the node's identity, public key and KubeSpan address, must agree),
new node IDs added as peers. Skipped: this node's own ID, affiliates without data or without KubeSpan.
Dropped with a reason, never raised: data that does not open or parse (wrong secret, forged, corrupt,
oversize), an affiliate ID that is not the node ID inside the data (a replayed blob), and a public key or name
already used by another peer. Overlapping addresses and networks are not judged here: peers.build_peer_set trims
them in Talos's node-ID order with a warning naming both peers and the range, for inventory and discovered
peers alike, and keeps every peer (issue 17; docs/discovery.md, "Overlaps").

Bounded claims (docs/security.md): with ``allowed_networks`` (kubespan_allowed_peer_networks), whatever a
discovered affiliate claims (node addresses and pod networks, also the ones it adds to an inventory node) outside
that allowlist, plus the inventory's pod networks, is trimmed with a warning naming the node and the prefixes;
``never_routed`` (this node's host addresses, default gateways, the discovery service's address) is trimmed too, and
so is anything inside the cluster's KubeSpan prefix but the affiliate's own KubeSpan address.
Endpoints a discovered affiliate reports are dropped when unusable (endpoints.endpoint_problem). Warnings are
capped: past MAX_TRIM_WARNINGS nodes one line counts the rest.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, List, Optional, Tuple

from ..base.errors import KubeSpanError
from .discovery_crypto import DiscoveryCryptoError, open_data, open_endpoint, seal_data, seal_endpoint
from .discovery_wire import (
    ClientAffiliate,
    ControlPlane,
    Endpoint,
    KubeSpan,
    ServerAffiliate,
    WireError,
    endpoint_from_message,
    endpoint_to_message,
    ip_from_bytes,
    ip_to_bytes,
    prefix_from_message,
    prefix_to_message,
)
from .endpoints import endpoint_problem
from .ipset import IPSet
from .peers import PeerError, validate_affiliate
from .peerspec import local_ipset, summarize
from .wgtypes import key_to_bytes, parse_endpoint

SOURCE_DISCOVERY = "discovery"
MAX_TRIM_WARNINGS = 16  # nodes named in trim warnings per merge; the rest are counted in one line
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
LIST_KEYS = ("endpoints", "addresses", "additional_addresses", "exclude_advertised_networks")


class AffiliateError(KubeSpanError, ValueError):
    """A discovered affiliate is unusable; the message says which and why."""


# --- this node -> the service --------------------------------------------------------------------


def affiliate_message(aff: dict, hostname: str = "", machine_type: str = "", operating_system: str = "",
                      api_server_port: int = 0) -> Tuple[ClientAffiliate, List[Endpoint]]:
    """This project's affiliate dict -> Talos's client Affiliate and its Endpoints (ValueError on bad values).

    ``machine_type``: Talos's machine type name (``controlplane``, ``worker``, ``init``); ``api_server_port``: with
    a control-plane type (controlplane, init), published as ControlPlane.api_server_port as Talos does."""
    kubespan = KubeSpan(
        public_key=aff["public_key"],
        address=ip_to_bytes(aff["address"]),
        additional_addresses=[prefix_to_message(p) for p in aff.get("additional_addresses") or []],
        exclude_advertised_addresses=[prefix_to_message(p) for p in aff.get("exclude_advertised_networks") or []],
    )
    msg = ClientAffiliate(
        node_id=aff.get("node_id") or "",
        addresses=[ip_to_bytes(a) for a in aff.get("addresses") or []],
        hostname=hostname or aff.get("name") or "",
        nodename=aff.get("name") or "",
        machine_type=machine_type,
        operating_system=operating_system,
        kubespan=kubespan,
    )
    if machine_type in ("controlplane", "init") and api_server_port:
        msg.control_plane = ControlPlane(api_server_port=int(api_server_port))
    return msg, [endpoint_to_message(e) for e in aff.get("endpoints") or []]


def seal_affiliate(key: bytes, aff: dict, **fields) -> Tuple[bytes, List[bytes]]:
    """(affiliate data, endpoint blobs) to publish with AffiliateUpdate under affiliate ID ``aff["node_id"]``."""
    msg, endpoints = affiliate_message(aff, **fields)
    return seal_data(key, msg.encode()), [seal_endpoint(key, e.encode()) for e in endpoints]


def seal_endpoints(key: bytes, endpoints: Iterable[str]) -> List[bytes]:
    """Endpoint blobs alone: to publish endpoints harvested for another affiliate (AffiliateUpdate without data)."""
    return [seal_endpoint(key, endpoint_to_message(e).encode()) for e in endpoints]


# --- the service -> this node --------------------------------------------------------------------


def _name(msg: ClientAffiliate) -> str:
    for candidate in (msg.nodename, msg.hostname.split(".", 1)[0] if msg.hostname else ""):
        if candidate and _NAME_RE.match(candidate):
            return candidate
    return "discovered-%s" % re.sub(r"[^A-Za-z0-9]", "", msg.node_id)[:12]


def affiliate_from_message(msg: ClientAffiliate, endpoints: Iterable[str] = ()) -> dict:
    """Talos's client Affiliate (decrypted) -> this project's affiliate dict; AffiliateError if it has no usable KubeSpan data."""
    if msg.kubespan is None or not msg.kubespan.public_key:
        raise AffiliateError("node %s has no KubeSpan data (KubeSpan disabled there?)" % msg.node_id)
    try:
        key_to_bytes(msg.kubespan.public_key)
    except ValueError as exc:
        raise AffiliateError("node %s: public key %s" % (msg.node_id, exc))
    try:
        address = ip_from_bytes(msg.kubespan.address)
        if ":" not in address:
            raise WireError("the KubeSpan address is not IPv6")
        aff = {
            "name": _name(msg),
            "node_id": msg.node_id,
            "public_key": msg.kubespan.public_key,
            "address": address,
            "endpoints": list(dict.fromkeys(endpoints)),
            "addresses": list(dict.fromkeys(ip_from_bytes(a) for a in msg.addresses)),
            "additional_addresses": [prefix_from_message(p) for p in msg.kubespan.additional_addresses],
            "exclude_advertised_networks": [prefix_from_message(p) for p in msg.kubespan.exclude_advertised_addresses],
            "source": SOURCE_DISCOVERY,
        }
    except WireError as exc:
        raise AffiliateError("node %s: %s" % (msg.node_id, exc))
    return aff


def open_affiliate(key: bytes, server_affiliate: ServerAffiliate) -> Tuple[Optional[dict], List[str]]:
    """Decrypt and convert one affiliate from List/Watch: (dict or None, reasons). Never raises on bad data.

    None with no reason: nothing to use yet (no data). None with a reason: dropped. Endpoints that do not open
    are skipped one by one, each with a reason.
    """
    aid = server_affiliate.id
    if not server_affiliate.data:
        return None, []
    try:
        msg = ClientAffiliate.decode(open_data(key, server_affiliate.data))
    except (DiscoveryCryptoError, WireError) as exc:
        return None, ["discovered affiliate %s dropped: %s" % (aid, exc)]
    if msg.node_id != aid:
        return None, ["discovered affiliate %s dropped: its data belongs to node %r (a replayed or misfiled blob)" % (aid, msg.node_id[:64])]
    reasons = []
    if msg.kubespan is not None and msg.kubespan.field4_ignored:
        reasons.append("discovered affiliate %s: KubeSpan field 4 (read as exclude_advertised_addresses) holds %d record(s) that "
                       "are not IP prefixes: ignored, its claims are kept whole" % (aid, msg.kubespan.field4_ignored))
    endpoints = []
    for blob in server_affiliate.endpoints:
        try:
            endpoints.append(endpoint_from_message(Endpoint.decode(open_endpoint(key, blob))))
        except (DiscoveryCryptoError, WireError) as exc:
            reasons.append("discovered affiliate %s: an endpoint was skipped: %s" % (aid, exc))
    try:
        return affiliate_from_message(msg, endpoints), reasons
    except AffiliateError as exc:
        return None, reasons + ["discovered affiliate %s dropped: %s" % (aid, exc)]


def open_affiliates(key: bytes, server_affiliates: Iterable[ServerAffiliate], local_node_id: str = "") -> Tuple[List[dict], List[str]]:
    """All affiliates of a List or a Watch snapshot, skipping this node's own ID; sorted by node ID."""
    result, reasons = [], []
    for sa in sorted(server_affiliates, key=lambda a: a.id):
        if local_node_id and sa.id == local_node_id:
            continue
        aff, why = open_affiliate(key, sa)
        reasons.extend(why)
        if aff is not None:
            result.append(aff)
    return result, reasons


def apply_watch_event(current: dict, snapshot: bool, deleted: bool, affiliates: Iterable[ServerAffiliate]) -> dict:
    """The cluster as a Watch stream describes it: ``current`` (affiliate ID -> ServerAffiliate) after one event.

    A snapshot replaces everything; a deleted event removes the IDs; any other event sets the affiliates.
    Returns a new dict; feed ``list(result.values())`` to :func:`open_affiliates`.
    """
    result = {} if snapshot else dict(current)
    for affiliate in affiliates:
        if deleted:
            result.pop(affiliate.id, None)
        else:
            result[affiliate.id] = affiliate
    return result


# --- merge ----------------------------------------------------------------------------------------


def allowed_ipset(networks: Iterable[str]) -> IPSet:
    """The allowlist as an IPSet; ValueError naming kubespan_allowed_peer_networks and the bad entry."""
    result = IPSet()
    if not isinstance(networks, (list, tuple)):
        raise ValueError("kubespan_allowed_peer_networks must be a list of CIDRs, got %s" % type(networks).__name__)
    for net in networks:
        try:
            result.add(ipaddress.ip_network(str(net).strip(), strict=False))
        except ValueError:
            raise ValueError("kubespan_allowed_peer_networks entry %r is not a network in CIDR form (e.g. 10.0.0.0/8)" % (net,))
    return result


def _trim(aff: dict, allowed: IPSet) -> IPSet:
    """Trim ``aff``'s node addresses and pod networks (in place) to ``allowed``; returns what was cut off."""
    cut = IPSet()
    for key in ("addresses", "additional_addresses"):
        values = aff.get(key) or []
        kept = []
        for value in values:
            one = IPSet([ipaddress.ip_interface(value).ip]) if key == "addresses" else IPSet([value])
            outside = one.difference(allowed)
            if outside.is_empty():
                kept.append(value)
                continue
            cut.update(outside)
            if key == "additional_addresses":
                kept.extend(one.intersection(allowed).prefixes())
        if kept != values:
            aff[key] = list(dict.fromkeys(kept))
    return cut


def _usable_endpoints(aff: dict, own: IPSet, subnet) -> List[str]:
    """Drop (in place) the endpoints of ``aff`` that are unusable; returns the problems."""
    kept, problems = [], []
    for ep in aff.get("endpoints") or []:
        why = endpoint_problem(parse_endpoint(ep)[0], own, subnet)
        if why:
            problems.append("%s (%s)" % (ep, why))
        else:
            kept.append(ep)
    aff["endpoints"] = kept
    return problems


def _union(first: list, second: list) -> list:
    return list(dict.fromkeys(list(first or []) + list(second or [])))


def merge_affiliates(
    inventory: Iterable[dict],
    discovered: Optional[Iterable[dict]],
    subnet: ipaddress.IPv6Network,
    local_node_id: str = "",
    local_public_key: str = "",
    local_address: str = "",
    local_addresses: Iterable[str] = (),
    local_networks: Iterable[str] = (),
    last_discovered: Optional[Iterable[dict]] = None,
    allowed_networks: Optional[Iterable[str]] = None,
    never_routed: Iterable[str] = (),
) -> Tuple[List[dict], List[str]]:
    """Inventory affiliates merged with discovered ones: (affiliates for peers.build_peer_set, reasons).

    ``discovered`` None means the service is not available: ``last_discovered`` (what the previous merge
    returned with source "discovery") stands in, so an outage never tears down peers. Discovered entries in
    the result carry ``"source": "discovery"``; inventory entries keep their shape (plus endpoints and lists
    learnt from discovery for the same node ID).

    ``allowed_networks``: kubespan_allowed_peer_networks (None: no bound, every claim is kept);
    ``never_routed``: addresses and networks no discovered claim may cover (this node's host addresses, default
    gateways, the discovery service's address): both trim discovered claims, with bounded warnings.
    """
    reasons: List[str] = []
    if discovered is None:
        discovered = [a for a in last_discovered or [] if a.get("source") == SOURCE_DISCOVERY]
        if discovered:
            reasons.append("discovery service unavailable: keeping the %d affiliates discovered last" % len(discovered))
    result = [dict(a) for a in inventory]
    by_node = {a.get("node_id"): i for i, a in enumerate(result) if a.get("node_id")}
    local_claims = IPSet()
    try:
        local_claims = local_ipset([str(local_address).split("/", 1)[0]] if local_address else [], []).union(
            local_ipset(local_addresses, local_networks))
    except ValueError as exc:
        reasons.append("local addresses ignored for overlap checks: %s" % exc)
    never = local_ipset(never_routed, [])
    not_kubespan = IPSet(["0.0.0.0/0", "::/0"]).difference(IPSet([str(subnet)]))
    allowed = None
    if allowed_networks is not None:
        try:
            allowed = allowed_ipset(allowed_networks)
        except ValueError as exc:  # fail closed: only the inventory's pod networks (Settings.validate names it first)
            reasons.append("%s: discovered peers may claim only the inventory's pod networks" % exc)
            allowed = IPSet()
        for a in result:  # the inventory's pod networks are allowed as the inventory is trusted
            for net in a.get("additional_addresses") or []:
                try:
                    allowed.add(ipaddress.ip_network(str(net).strip(), strict=False))
                except ValueError:
                    pass  # build_peer_set names it
    # never-routed addresses are cut after the allowlist
    keep = IPSet(["0.0.0.0/0", "::/0"]).difference(never) if not never.is_empty() else None
    own_endpoints = never.union(local_claims)
    trimmed_nodes = 0

    # Overlaps are not judged here: every peer, from the inventory or discovered, goes to peers.build_peer_set,
    # which trims each overlap in Talos's node-ID order and names both peers and the range (issue 17). What is
    # decided here is identity: the first affiliate with a public key or a name keeps it. Incumbents come first
    # for that: an affiliate this node already accepted (in last_discovered) keeps its key and name against one
    # that appears later, then node ID order.
    incumbents = {a.get("node_id") for a in last_discovered or [] if a.get("source") == SOURCE_DISCOVERY}
    for raw in sorted(discovered, key=lambda a: (a.get("node_id") not in incumbents, str(a.get("node_id")))):
        node_id = raw.get("node_id") or ""
        label = "discovered node %s (%s)" % (node_id, raw.get("name"))
        if local_node_id and node_id == local_node_id:
            continue
        if local_public_key and raw.get("public_key") == local_public_key:
            reasons.append("%s dropped: it claims this node's public key" % label)
            continue
        try:
            aff = validate_affiliate(raw, subnet)
        except PeerError as exc:
            reasons.append("%s dropped: %s" % (label, exc))
            continue
        aff["source"] = SOURCE_DISCOVERY
        bad_endpoints = _usable_endpoints(aff, own_endpoints, subnet)
        cut = _trim(aff, allowed) if allowed is not None else IPSet()
        # inside the cluster's KubeSpan prefix an affiliate claims its own KubeSpan address and nothing else (a
        # Talos node's addresses hold its own; a wider claim would take other nodes' addresses in node-ID order)
        cut.update(_trim(aff, not_kubespan.union(IPSet([aff["address"]]))))
        if keep is not None:
            cut.update(_trim(aff, keep))
        if bad_endpoints or cut:
            trimmed_nodes += 1
            if trimmed_nodes <= MAX_TRIM_WARNINGS:
                if cut:
                    reasons.append("%s: claims outside kubespan_allowed_peer_networks (or other nodes' KubeSpan addresses, this "
                                   "node's own addresses, gateways or discovery service) trimmed: %s" % (label, summarize(cut)))
                if bad_endpoints:
                    reasons.append("%s: endpoints refused: %s%s" % (label, ", ".join(bad_endpoints[:4]),
                                                                    " and %d more" % (len(bad_endpoints) - 4) if len(bad_endpoints) > 4 else ""))
        index = by_node.get(node_id)
        if index is not None:
            known = result[index]
            if known.get("public_key") != aff["public_key"] or str(known.get("address", "")).split("/", 1)[0] != aff["address"]:
                reasons.append("%s dropped: its public key or KubeSpan address differs from the inventory's for that node ID" % label)
                continue
            merged = dict(known)
            merged["endpoints"] = _union(known.get("endpoints"), aff["endpoints"])
            for key in LIST_KEYS[1:]:
                merged[key] = _union(known.get(key), aff.get(key))
            result[index] = merged
            continue
        if any(a.get("public_key") == aff["public_key"] for a in result):
            reasons.append("%s dropped: its public key belongs to another peer" % label)
            continue
        if any(a.get("name") == aff["name"] for a in result):
            reasons.append("%s dropped: the name %s belongs to another peer" % (label, aff["name"]))
            continue
        by_node[node_id] = len(result)
        result.append(aff)
    if trimmed_nodes > MAX_TRIM_WARNINGS:
        reasons.append("claims or endpoints of %d more discovered nodes trimmed (not listed)" % (trimmed_nodes - MAX_TRIM_WARNINGS))
    return result, reasons


def discovered_only(affiliates: Iterable[dict]) -> List[dict]:
    """The entries of a merge result that came from discovery alone (what to keep as ``last_discovered``)."""
    return [dict(a) for a in affiliates if a.get("source") == SOURCE_DISCOVERY]
