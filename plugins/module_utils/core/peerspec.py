# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""AllowedIPs of each peer and the set of networks routed through KubeSpan, as Talos builds them. Pure logic.

Talos (PeerSpecController): per peer, an IP set of its additional addresses (pod CIDRs when it advertises
Kubernetes networks), plus each of its node addresses as a host, minus the networks it excludes, plus its
KubeSpan address; minus whatever a peer processed earlier already holds (an overlap is a warning naming both
peers and the range: the earlier peer keeps the overlapping part, the later one is trimmed and kept, never
dropped); emitted as minimal prefixes, IPv4 first. Peers are processed in Talos's order, the affiliate (node
ID) order (:func:`order_key`; peers without a node ID after those with one, by public key), so a node here
routes an overlapping range to the same peer a Talos node does. Here (not in Talos) a peer never gets an
address or network of the local node either (a warning names it). The results are listed in public-key order.

Peer dicts use the keys of peers.build_peer_set plus optional lists: ``addresses`` (node addresses),
``additional_addresses`` (pod CIDRs) and ``exclude_advertised_networks``.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from itertools import accumulate, chain, compress, repeat
from operator import add, attrgetter, gt, is_, itemgetter, le
from typing import Dict, Iterable, List, Optional, Tuple

from .ipset import IPSet, parse_range
from .settings import ALLOW_DOWN_PEER_BYPASS

MAX_LISTED = 8

# The last assign_claims call: [the AllowedIPs lists it returned (in its order), every prefix text of them in one
# tuple, the union of the peers' sets]. routed_set starts from the union when it is handed exactly those lists,
# unchanged and in the same order (what a module run does). Nothing else is kept: every object alive after the
# call is one the cyclic collector scans again.
_LAST: list = []


def order_key(peer: dict) -> Tuple[int, str, str]:
    """The order peers are processed in: Talos's (the affiliate ID, which is the node ID, compared byte by byte;
    base62 text compares the same as str); peers without a node ID (hand-written or older entries) come after,
    by public key."""
    node_id = peer.get("node_id") or ""
    return (0, node_id, peer["public_key"]) if isinstance(node_id, str) and node_id else (1, "", peer["public_key"])


def _label(peer: dict) -> str:
    name = peer.get("name") or peer.get("label") or ""
    return "%s (%s)" % (name, peer["public_key"]) if name else str(peer["public_key"])


def summarize(ipset: IPSet) -> str:
    prefixes = ipset.prefixes()
    more = " and %d more" % (len(prefixes) - MAX_LISTED) if len(prefixes) > MAX_LISTED else ""
    return ", ".join(prefixes[:MAX_LISTED]) + more


def _items(peer: dict, key: str) -> list:
    value = peer.get(key) or []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError("peer %s: %s must be a list, got %r" % (_label(peer), key, value))
    return list(value)


class _Owners:
    """Which peer holds which interval: peers' sets are disjoint, so one sorted interval list per family."""

    def __init__(self):
        self.starts: Dict[int, List[int]] = {4: [], 6: []}
        self.ends: Dict[int, List[Tuple[int, int]]] = {4: [], 6: []}  # (end, owner index), sorted like starts

    def add(self, ipset: IPSet, owner: int) -> None:
        for family, first, last in ipset.intervals():
            starts = self.starts[family]
            i = bisect_left(starts, first)
            starts.insert(i, first)
            self.ends[family].insert(i, (last, owner))

    def overlapping(self, ipset: IPSet) -> IPSet:
        """The held intervals that overlap ``ipset`` (an IPSet; empty when nothing is held there)."""
        held = IPSet()
        for family, first, last in ipset.intervals():
            starts, ends = self.starts[family], self.ends[family]
            for k in range(bisect_left(ends, (first, -1)), bisect_right(starts, last)):
                held.add_range(family, starts[k], ends[k][0])
        return held

    def find(self, ipset: IPSet) -> List[int]:
        """Owner indexes of the intervals that overlap ``ipset``, in order of first appearance."""
        found = {}
        for family, first, last in ipset.intervals():
            i = bisect_left(self.ends[family], (first, -1))
            j = bisect_right(self.starts[family], last)
            for _end, owner in self.ends[family][i:j]:
                found.setdefault(owner, None)
        return sorted(found)


def _host(value):
    """An address as a host for IPSet.add: plain text is passed as is (IPSet's fast path), anything with a
    length or a zone goes through ip_interface as before (``10.0.0.5/24`` counts as 10.0.0.5)."""
    text = str(value).strip()
    if "/" in text or "%" in text:
        return ipaddress.ip_interface(text).ip
    return text


def peer_ipset(peer: dict) -> IPSet:
    """The IP set a peer claims before conflicts are resolved. Raises ValueError naming the peer and the value."""
    ipset = IPSet()
    where = "peer %s" % _label(peer)
    for prefix in _items(peer, "additional_addresses"):
        try:
            ipset.add(prefix)  # host bits ignored: 10.244.3.1/24 is 10.244.3.0/24
        except ValueError:
            raise ValueError("%s: additional address %r is not an IP prefix" % (where, prefix))
    for addr in _items(peer, "addresses"):
        try:
            ipset.add(_host(addr))  # a node address counts as a host
        except ValueError:
            raise ValueError("%s: node address %r is not an IP address" % (where, addr))
    for prefix in _items(peer, "exclude_advertised_networks"):
        try:
            ipset.remove(prefix)
        except ValueError:
            raise ValueError("%s: excluded network %r is not an IP prefix" % (where, prefix))
    address = str(peer.get("address") or "").split("/", 1)[0]
    try:
        ipset.add(_host(address) if address else ipaddress.ip_address(address))
    except ValueError:
        raise ValueError("%s: KubeSpan address %r is not an IP address" % (where, peer.get("address")))
    return ipset


def local_ipset(addresses: Iterable = (), networks: Iterable = ()) -> IPSet:
    """The local node's own set: ``addresses`` as hosts (``10.0.0.5/24`` counts as 10.0.0.5), ``networks`` as written."""
    ipset = IPSet()
    for addr in addresses:
        try:
            ipset.add(_host(addr))
        except ValueError:
            raise ValueError("local address %r is not an IP address" % (addr,))
    for net in networks:
        try:
            ipset.add(net)
        except ValueError:
            raise ValueError("local network %r is not an IP prefix" % (net,))
    return ipset


def assign_allowed_ips(peers: Iterable[dict], local_addresses: Iterable = (), local_networks: Iterable = ()) -> Tuple[List[dict], List[str]]:
    """Return (copies of the peers in public-key order, each with ``allowed_ips``, warnings).

    ``local_addresses`` (hosts: this node's KubeSpan and node addresses) and ``local_networks`` (its pod
    CIDRs) are this node's own: no peer is given any of them. A peer whose claim overlaps a peer earlier in
    node-ID order (:func:`order_key`) loses the overlapping part and keeps the rest (Talos's rule); both cases
    are warnings naming the peers and the range.
    """
    local_set = local_ipset(local_addresses, local_networks)
    ordered = sorted(peers, key=order_key)
    return assign_claims(ordered, [peer_ipset(peer) for peer in ordered], local_set)


_STARTS, _ENDS = attrgetter("_starts"), attrgetter("_ends")


def _contested(claims: List[IPSet], local_set: IPSet) -> Tuple[set, IPSet]:
    """(indexes of the claims that overlap another claim or the local set, the union of the claims and the local
    set). One sort of every interval per family: a claim none of whose intervals overlaps an interval of
    another claim or of the local set keeps its whole set with no warning, whatever the key order, so only
    the contested ones need the held-interval index. The test is on whole claims, before the local set is
    removed (a superset of what matters, which only sends a few more peers down the exact path)."""
    contested = set()
    union = IPSet()
    for family in (4, 6):
        pick = itemgetter(family)
        starts_lists = list(map(pick, map(_STARTS, claims)))
        # (first, last, claim index) of every interval, made in C
        items = list(zip(chain.from_iterable(starts_lists), chain.from_iterable(map(pick, map(_ENDS, claims))),
                         chain.from_iterable(map(repeat, range(len(claims)), map(len, starts_lists)))))
        local_starts = local_set._starts[family]
        if local_starts:
            items.extend(zip(local_starts, local_set._ends[family], repeat(-1)))
        if not items:
            continue
        items.sort()
        starts, ends, owners = zip(*items)
        reach = list(accumulate(ends, max))  # reach[k]: the largest end among items 0..k
        # item k overlaps an earlier one when it starts at or before reach[k - 1]; a run of such items k..m
        # forms one cluster with item k - 1 (the cluster's first item), so all of k - 1..m are marked
        previous = -2
        for k in compress(range(1, len(items)), map(le, starts[1:], reach)):
            if k != previous + 1:
                contested.add(owners[k - 1])
            contested.add(owners[k])
            previous = k
        # the union (local set included, removed below): a new interval where an item starts past reach + 1
        breaks = list(compress(range(1, len(items)), map(gt, starts[1:], map(add, reach, repeat(1)))))
        union._starts[family] = [starts[0]] + [starts[k] for k in breaks]
        union._ends[family] = [reach[k - 1] for k in breaks] + [reach[-1]]
    contested.discard(-1)
    union.difference_update(local_set)
    return contested, union


def assign_claims(peers: List[dict], claims: List[IPSet], local_set: IPSet, copy: bool = True) -> Tuple[List[dict], List[str]]:
    """assign_allowed_ips for peers whose claims (``peer_ipset`` of each, same order) are already built;
    ``local_set`` is ``local_ipset`` of this node's own addresses and networks. The claims are consumed. ``copy``
    False writes ``allowed_ips`` into the given dicts instead of copies of them (for a caller whose dicts are its
    own, such as peers.build_peer_set's validated entries)."""
    order = sorted(range(len(peers)), key=[order_key(peer) for peer in peers].__getitem__)  # Talos's order
    contested, union = _contested(claims, local_set)
    owners = _Owners()  # every interval a contested peer holds so far: the part of Talos's union that can matter
    done: List[Tuple[dict, IPSet]] = []
    warnings = []
    check_local = not local_set.is_empty()
    for index in (order if len(contested) == len(peers) else [i for i in order if i in contested]):
        peer, ipset = peers[index], claims[index]
        if check_local and ipset.overlaps(local_set):
            refused = ipset & local_set
            warnings.append("peer %s claims this node's own addresses %s: they are not routed to it" % (_label(peer), summarize(refused)))
            ipset.difference_update(refused)
        claimed = owners.overlapping(ipset)  # the part of the union that matters for this peer
        if claimed:
            holders = owners.find(ipset & claimed)
            for held in holders[:MAX_LISTED]:
                other, other_set = done[held]
                warnings.append("peer address overlap: %s claims %s, already held by peer %s, which keeps it"
                                % (_label(peer), summarize(ipset & other_set), _label(other)))
            if len(holders) > MAX_LISTED:
                warnings.append("peer address overlap: %s also claims addresses of %d more peers, which keep them"
                                % (_label(peer), len(holders) - MAX_LISTED))
            ipset.difference_update(claimed)
            if ipset.is_empty():
                warnings.append("peer %s has no address left after resolving overlaps: no traffic is routed to it" % _label(peer))
        owners.add(ipset, len(done))
        done.append((peer, ipset))
    # every claim is now the peer's final set (the uncontested ones as they came): the specs, built in the
    # peers' own order (it is their order in memory, which keeps large clusters cache-friendly), then sorted
    specs = []
    for peer, ipset in zip(peers, claims):
        spec = dict(peer) if copy else peer
        spec["allowed_ips"] = ipset.prefixes()
        specs.append(spec)
    result = [specs[i] for i in sorted(range(len(peers)), key=[peer["public_key"] for peer in peers].__getitem__)]
    lists = [spec["allowed_ips"] for spec in result]
    _LAST[:] = [lists, tuple(chain.from_iterable(lists)), union]
    return result, warnings


def routed_set(
    peers: Iterable[dict],
    kubespan_prefix,
    allow_down_peer_bypass: bool = ALLOW_DOWN_PEER_BYPASS,
    up_peers: Optional[Iterable[str]] = None,
) -> IPSet:
    """Networks the node forces into KubeSpan (the nftables set): the union of the peers' ``allowed_ips``
    minus the cluster's KubeSpan prefix (routed on the interface itself).

    Without bypass (Talos's default, ForceRouting) every peer counts, so traffic to a down peer is dropped
    by WireGuard rather than sent in the clear. With ``allow_down_peer_bypass`` only the peers whose public
    key is in ``up_peers`` count, and traffic to the others takes the normal routes while they are down.
    """
    up = set(up_peers or ()) if allow_down_peer_bypass else None
    peers = list(peers)
    if _LAST:
        lists, texts, union = _LAST
        given = [peer.get("allowed_ips") if isinstance(peer, dict) else None for peer in peers]
        if len(given) == len(lists) and all(map(is_, given, lists)) and tuple(chain.from_iterable(given)) == texts:
            result = union.copy()
            if up is not None:
                # the peers' sets are disjoint: the up peers' union is the whole union minus the down peers' sets
                down = IPSet()
                for peer in peers:
                    if peer["public_key"] not in up:
                        for prefix in peer["allowed_ips"]:
                            down.add_range(*parse_range(prefix))
                result.difference_update(down)
            result.remove(kubespan_prefix)
            return result
    result = IPSet()
    spans = []
    for peer in peers:
        if up is not None and peer["public_key"] not in up:
            continue
        for prefix in peer.get("allowed_ips") or []:
            spans.append(parse_range(prefix))  # raises naming a bad value
    spans.sort()  # a union is order-free; in address order each interval lands at the end of its list
    for span in spans:
        result.add_range(*span)
    result.remove(kubespan_prefix)
    return result
