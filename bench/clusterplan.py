# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Every node's peer set and data-plane plan at once, as the controller would compute them. Pure logic.

For node L the result is exactly what L's own run computes: ``peers.build_peer_set`` (peer specs and
warnings, or the error it raises), ``peerspec.routed_set`` of the specs, ``dataplane.desired_nft`` of that set
and the device peers built from the specs. Instead of n independent runs (n^2 validations and assignments):

1. Every affiliate is validated once (``peers._validate``: normalized entry and the IP set it claims). A bad
   entry or a name listed twice is the same error for every node, as build_peer_set raises it first.
2. Talos's assignment is computed once in the global node-ID order (peerspec.order_key): G(p) = claim(p) minus
   the claims of every earlier peer, with each peer's overlap warnings; and the union U of all claims. Specs
   are listed in public-key order, as build_peer_set lists them.
3. Node L excludes E = the entries with its key or its name and refuses its own set (local_ipset of its
   KubeSpan address, node addresses and networks). Its assignment is
   A_L(p) = claim(p) - local - (claims of earlier keys not in E). A peer whose claim overlaps neither the local
   set nor claim(E) gets exactly G(p) and the same warnings (the holders' sets differ from G only inside the
   local set and claim(E)), so its spec dict is shared between nodes. The other ("dirty") peers, found with a
   stabbing index over all claims, are recomputed in key order exactly as assign_claims does, their holders
   being the earlier peers whose set (G for a clean one, the recomputed set for a dirty one) meets them.
4. L's routed set is (U minus the parts only E claims) minus the local set minus the subnet: the union of the
   A_L(p) is the union of the non-excluded claims minus the local set, whatever the order.
5. Errors build_peer_set raises per node (own key on another name, duplicate key) are found by replaying its
   loop over the few entries that can raise one. Whatever the fast path does not cover (a KubeSpan address two
   nodes share, duplicate keys in the cluster with a node that does not raise, a member kept from its
   last-known entry, an unparsable local address, pathological overlaps past a work budget) falls back to
   calling build_peer_set for that node, so every result is exact.

Results are produced node by node (``iter_cluster_plans``), so memory stays that of one node plus the shared
global state; shared spec dicts and device peers must be treated as read-only.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ansible_collections.kubespan.mesh.plugins.module_utils.core import dataplane, peers, peerspec
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet

MAX_LISTED = peerspec.MAX_LISTED
# dirty-peer work (intervals visited) per node beyond which the node falls back to build_peer_set
_BUDGET_FACTOR = 4
# dirty peers per node beyond which it falls back (plus one per 16 peers): recomputing them is quadratic in their count
_DIRTY_MAX = 64


class NodeInput:
    """What one node's run receives about itself: build_peer_set's local_* arguments, and its last-known peers."""

    __slots__ = ("public_key", "address", "name", "addresses", "networks", "last_known")

    def __init__(self, public_key: str, address: str, name: Optional[str] = None, addresses: Iterable = (),
                 networks: Iterable = (), last_known: Optional[List[dict]] = None):
        self.public_key = public_key
        self.address = address
        self.name = name
        self.addresses = list(addresses)
        self.networks = list(networks)
        self.last_known = last_known

    def __repr__(self):
        fields = (self.public_key, self.address, self.name, self.addresses, self.networks, self.last_known)
        return "NodeInput(%r, %r, %r, %r, %r, last_known=%r)" % fields


class NodePlan:
    """One node's plan: ``error`` (the exception build_peer_set raises) or specs, warnings, routed set, nft table
    and device peers. ``path`` is "shared" (derived from the global assignment) or "fallback" (build_peer_set)."""

    __slots__ = ("node", "specs", "warnings", "routed", "nft", "device_peers", "error", "path")

    def __init__(self, node: NodeInput, path: str):
        self.node = node
        self.path = path
        self.specs = self.warnings = self.routed = self.nft = self.device_peers = self.error = None


_label, _summary = peerspec._label, peerspec.summarize  # the warnings must read exactly as assign_claims writes them
_same_as = peers._same_as  # True when validating an entry gives exactly the validated entry (cannot fail)


def _allowed(spec_source: dict, ipset: IPSet) -> dict:
    spec = dict(spec_source)
    spec["allowed_ips"] = ipset.prefixes()
    return spec


class _Index:
    """Intervals of possibly overlapping sets, each with an owner: which owners meet a given set.

    Per family, sorted by start, with the running maximum of the ends: a query walks back from the last
    interval starting at or before the query's end while that maximum reaches the query's start."""

    def __init__(self, owned: List[Tuple[int, IPSet]]):
        self.starts, self.ends, self.owners, self.reach = {}, {}, {}, {}
        for family in (4, 6):
            items = sorted((first, last, owner) for owner, ipset in owned for _f, first, last in ipset.intervals(family))
            self.starts[family] = [i[0] for i in items]
            self.ends[family] = [i[1] for i in items]
            self.owners[family] = [i[2] for i in items]
            reach, top = [], -1
            for item in items:
                top = max(top, item[1])
                reach.append(top)
            self.reach[family] = reach
        self.size = sum(len(v) for v in self.starts.values())

    def meeting(self, ipset: IPSet, found: set, budget: int) -> int:
        """Add to ``found`` the owners of intervals that overlap ``ipset``; returns the budget left (< 0: over)."""
        for family, first, last in ipset.intervals():
            starts, ends, owners, reach = self.starts[family], self.ends[family], self.owners[family], self.reach[family]
            k = bisect_right(starts, last) - 1
            while k >= 0 and reach[k] >= first:
                if ends[k] >= first:
                    found.add(owners[k])
                k -= 1
                budget -= 1
            if budget < 0:
                return budget
        return budget


class _Global:
    """The cluster-wide state shared by every node's plan."""

    def __init__(self, subnet, affiliates, members, cfg, device_peer):
        self.subnet = subnet
        self.cfg = cfg
        self.device_peer = device_peer
        self.error = None  # the exception every node's build_peer_set raises on the fresh affiliates
        fresh: Dict[str, dict] = {}
        claims: Dict[str, IPSet] = {}
        for aff in affiliates:
            try:
                norm, claim = peers._validate(aff, subnet)
            except Exception as exc:  # noqa: BLE001 - the same exception for every node
                self.error = exc
                return
            if norm["name"] in fresh:
                self.error = peers.PeerError("peer %s is listed twice" % norm["name"])
                return
            fresh[norm["name"]] = norm
            claims[norm["name"]] = claim
        self.fresh = fresh
        try:
            self.missing = None if members is None else [name for name in dict.fromkeys(members) if name not in fresh]
        except Exception as exc:  # noqa: BLE001 - build_peer_set raises it for every node, before anything else
            self.error = exc
            return
        names = sorted(fresh)
        self.name_rank = {name: i for i, name in enumerate(names)}
        self.by_key: Dict[str, List[str]] = {}
        by_addr: Dict[str, List[str]] = {}
        for name in names:
            self.by_key.setdefault(fresh[name]["public_key"], []).append(name)
            by_addr.setdefault(fresh[name]["address"], []).append(name)
        self.by_addr = by_addr
        self.dup_keys = any(len(v) > 1 for v in self.by_key.values())
        # names that can raise in every node's loop whatever the node: members of duplicate keys or addresses
        self.conflicted = sorted({n for v in self.by_key.values() if len(v) > 1 for n in v}
                                 | {n for v in by_addr.values() if len(v) > 1 for n in v}, key=self.name_rank.get)
        if self.dup_keys:
            return  # no node can use a global key order: those that do not raise fall back
        # the global assignment, in node-ID order (assign_claims with no local set)
        order = sorted(names, key=lambda n: peerspec.order_key(fresh[n]))
        self.order = order
        self.kidx = {name: i for i, name in enumerate(order)}
        self.claims = [claims[name] for name in order]
        self.assigned: List[IPSet] = []
        self.specs: List[dict] = []
        self.warned: Dict[int, List[str]] = {}
        self.held = peerspec._Owners()  # every owner's global set G (disjoint), by key-order index
        union = IPSet()
        for k, name in enumerate(order):
            peer, claim = fresh[name], self.claims[k]
            ipset = claim.copy()
            held = union & ipset
            warnings = []
            if held:
                holders = self.held.find(ipset)
                for q in holders[:MAX_LISTED]:
                    warnings.append("peer address overlap: %s claims %s, already held by peer %s, which keeps it"
                                    % (_label(peer), _summary(ipset & self.assigned[q]), _label(fresh[order[q]])))
                if len(holders) > MAX_LISTED:
                    warnings.append("peer address overlap: %s also claims addresses of %d more peers, which keep them"
                                    % (_label(peer), len(holders) - MAX_LISTED))
                ipset.difference_update(held)
                if ipset.is_empty():
                    warnings.append("peer %s has no address left after resolving overlaps: no traffic is routed to it" % _label(peer))
            if warnings:
                self.warned[k] = warnings
            self.held.add(ipset, k)
            union.update(ipset)
            self.assigned.append(ipset)
            self.specs.append(_allowed(peer, ipset))
        self.union = union
        self.routed = union.copy().remove(subnet)
        self.claim_index = _Index(list(enumerate(self.claims)))
        self.device_peers = [device_peer(spec) for spec in self.specs] if device_peer else None


def _fallback(glob: _Global, node: NodeInput, members) -> NodePlan:
    """build_peer_set for this node, then what the module derives from it."""
    result = NodePlan(node, "fallback")
    try:
        specs, warnings = peers.build_peer_set(node.public_key, node.address, glob.subnet, glob.affiliates, members,
                                               node.last_known, node.name, node.addresses, node.networks)
    except Exception as exc:  # noqa: BLE001 - the node's outcome is the exception
        result.error = exc
        return result
    result.specs, result.warnings = specs, warnings
    result.routed = peerspec.routed_set(specs, glob.subnet)
    if glob.cfg is not None:
        result.nft = dataplane.desired_nft(result.routed, glob.cfg)
    if glob.device_peer is not None:
        result.device_peers = [glob.device_peer(spec) for spec in specs]
    return result


class _Fallback(Exception):
    """The fast path does not cover this node."""


def _node_plan(glob: _Global, node: NodeInput, members) -> NodePlan:
    if glob.error is not None:
        result = NodePlan(node, "shared")
        result.error = glob.error
        return result
    try:
        return _fast(glob, node, members)
    except Exception:  # noqa: BLE001 - _Fallback, or inputs the fast path does not model: the node's own run decides
        return _fallback(glob, node, members)


def _fast(glob: _Global, node: NodeInput, members) -> NodePlan:
    fresh, subnet = glob.fresh, glob.subnet
    local_key, local_name = node.public_key, node.name
    warnings: List[str] = []
    if members is not None:  # last-known entries and members without fresh data, as build_peer_set reads them
        known = set()
        for entry in node.last_known or []:
            current = fresh.get(entry.get("name")) if isinstance(entry, dict) and isinstance(entry.get("name"), str) else None
            if current is not None and _same_as(entry, current):
                continue
            try:
                norm = peers.validate_affiliate(entry, subnet)
            except peers.PeerError as exc:
                warnings.append("ignoring last-known peer data: %s" % exc)
                continue
            except Exception:  # noqa: BLE001 - whatever build_peer_set does with it
                raise _Fallback()
            known.add(norm["name"])
        for name in glob.missing:
            if name == local_name:
                continue
            if name in known:
                raise _Fallback()  # a peer kept from its last-known entry: not in the global assignment
            warnings.append("peer %s is in the cluster group but not in this play and was never seen by this node: "
                            "it joins on a run that includes it" % name)
    # the errors build_peer_set's loop can raise, replayed over the entries that can raise one
    try:
        own_address = str(ipaddress.IPv6Address(node.address.split("/")[0]))
    except Exception:  # noqa: BLE001 - raised (or not) at a point of the loop the replay does not model
        raise _Fallback()
    excluded = list(glob.by_key.get(local_key, ()))
    if local_name in fresh and local_name not in excluded:
        excluded.append(local_name)
    suspects = set(glob.conflicted) | set(excluded) | set(glob.by_addr.get(own_address, ()))
    seen_key, seen_addr = {}, {}
    for name in sorted(suspects, key=glob.name_rank.get):
        aff = fresh[name]
        if aff["public_key"] == local_key or name == local_name:
            if aff["public_key"] == local_key and local_name and name != local_name:
                return _error(node, peers.PeerError(
                    "peer %s has this node's own public key: two hosts share one identity "
                    "(a cloned /var/lib/kubespan?); remove the copy on one of them" % name))
            continue
        if aff["public_key"] in seen_key:
            return _error(node, peers.PeerError(
                "peers %s and %s have the same public key %s: two hosts share one identity "
                "(a cloned /var/lib/kubespan?)" % (seen_key[aff["public_key"]], name, aff["public_key"])))
        if aff["address"] == own_address or aff["address"] in seen_addr:
            raise _Fallback()  # build_peer_set warns (in its loop's order) and trims the shared address
        seen_key[aff["public_key"]] = name
        seen_addr[aff["address"]] = name
    if glob.dup_keys:
        raise _Fallback()
    try:
        local = peerspec.local_ipset([str(node.address).split("/", 1)[0]] + list(node.addresses), node.networks)
    except Exception as exc:  # noqa: BLE001 - build_peer_set raises it after its loop
        return _error(node, exc)

    kidx = glob.kidx
    out = sorted(kidx[name] for name in excluded)
    out_set = set(out)
    lost = IPSet()  # claim(E): what removing the excluded entries can free
    for k in out:
        lost.update(glob.claims[k])
    touch = local.union(lost)
    found: set = set()
    budget = glob.claim_index.meeting(touch, found, _BUDGET_FACTOR * glob.claim_index.size + 64)
    if budget < 0:
        raise _Fallback()
    dirty = sorted(found - out_set)
    if len(dirty) > _DIRTY_MAX + len(glob.order) // 16:
        raise _Fallback()  # most peers differ from the global assignment: the per-node run is cheaper

    # the dirty peers, in key order, as assign_claims computes them
    order, claims, assigned = glob.order, glob.claims, glob.assigned
    check_local = not local.is_empty()
    new_sets: Dict[int, IPSet] = {}
    new_warnings: Dict[int, List[str]] = {}
    new_specs: Dict[int, dict] = {}
    for p in dirty:
        peer = fresh[order[p]]
        ipset = claims[p].copy()
        notes = []
        if check_local and ipset.overlaps(local):
            refused = ipset & local
            notes.append("peer %s claims this node's own addresses %s: they are not routed to it" % (_label(peer), _summary(refused)))
            ipset.difference_update(refused)
        holders = [q for q in glob.held.find(ipset) if q < p and q not in out_set and q not in new_sets]
        holders.extend(q for q, qset in new_sets.items() if q < p and qset.overlaps(ipset))
        if holders:
            holders.sort()
            for q in holders[:MAX_LISTED]:
                notes.append("peer address overlap: %s claims %s, already held by peer %s, which keeps it"
                             % (_label(peer), _summary(ipset & new_sets.get(q, assigned[q])), _label(fresh[order[q]])))
            if len(holders) > MAX_LISTED:
                notes.append("peer address overlap: %s also claims addresses of %d more peers, which keep them"
                             % (_label(peer), len(holders) - MAX_LISTED))
            for q in holders:
                ipset.difference_update(new_sets.get(q, assigned[q]))
            if ipset.is_empty():
                notes.append("peer %s has no address left after resolving overlaps: no traffic is routed to it" % _label(peer))
        new_sets[p] = ipset
        if notes:
            new_warnings[p] = notes
        new_specs[p] = _allowed(peer, ipset)

    result = NodePlan(node, "shared")
    specs = list(glob.specs)
    for p, spec in new_specs.items():
        specs[p] = spec
    for k in reversed(out):
        del specs[k]
    # build_peer_set lists the specs in public-key order (keys are unique here: duplicates fall back)
    by_key = sorted(range(len(specs)), key=[spec["public_key"] for spec in specs].__getitem__)
    result.specs = [specs[i] for i in by_key]
    for k in sorted((set(glob.warned) - out_set) | set(new_warnings)):
        warnings.extend(new_warnings.get(k, ()) if k in new_sets else glob.warned[k])
    result.warnings = warnings

    routed = glob.routed.copy()
    if out:
        routed.difference_update(lost)
        for p in dirty:
            part = claims[p] & lost
            if part:
                routed.update(part.remove(subnet))
    if check_local:
        routed.difference_update(local)
    result.routed = routed
    if glob.cfg is not None:
        result.nft = dataplane.desired_nft(routed, glob.cfg)
    if glob.device_peer is not None:
        device = list(glob.device_peers)
        for p, spec in new_specs.items():
            device[p] = glob.device_peer(spec)
        for k in reversed(out):
            del device[k]
        result.device_peers = [device[i] for i in by_key]
    return result


def _error(node: NodeInput, exc: Exception) -> NodePlan:
    result = NodePlan(node, "shared")
    result.error = exc
    return result


def iter_cluster_plans(
    subnet: ipaddress.IPv6Network,
    affiliates: List[dict],
    nodes: Iterable[NodeInput],
    members: Optional[Iterable[str]] = None,
    cfg: Optional[dataplane.DataPlaneConfig] = None,
    device_peer: Optional[Callable[[dict], object]] = None,
) -> Iterator[NodePlan]:
    """Yield each node's plan, in the order of ``nodes``: what build_peer_set(node.public_key, node.address,
    subnet, affiliates, members, node.last_known, node.name, node.addresses, node.networks) returns or raises,
    routed_set(specs, subnet), desired_nft(routed, cfg) when ``cfg`` is given, and [device_peer(spec) for spec
    in specs] when ``device_peer`` is given (called once per distinct spec: shared specs share their peer)."""
    affiliates = list(affiliates)
    members = None if members is None else list(members)
    glob = _Global(subnet, affiliates, members, cfg, device_peer)
    glob.affiliates = affiliates
    for node in nodes:
        yield _node_plan(glob, node, members)


def nodes_from_affiliates(affiliates: Iterable[dict], last_known: Optional[Dict[str, List[dict]]] = None) -> List[NodeInput]:
    """One NodeInput per affiliate, as a node that is that affiliate runs: its key, its KubeSpan address as /128,
    its name, its node addresses and its additional addresses; ``last_known`` by node name."""
    return [NodeInput(aff["public_key"], "%s/128" % aff["address"], aff["name"], aff.get("addresses") or [],
                      aff.get("additional_addresses") or [], (last_known or {}).get(aff["name"]))
            for aff in affiliates]
