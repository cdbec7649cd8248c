# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""FROZEN copy of ipset.py, peerspec.py and peers.py as of commit 5a18b89 (before the scale optimizations).

Changed since, on purpose, and only there (issue 17, Talos's rules): assign_allowed_ips processes the peers in
node-ID order (peers without a node ID after, by public key) and lists its results in public-key order;
build_peer_set warns instead of raising on a KubeSpan address that two peers, or a peer and this node, share.

Used only by test_peerset_differential.py as the reference the optimized code must match exactly (peer specs,
AllowedIPs, routed sets, warnings, error messages). Do not edit or import from plugins' code paths.

Not everything is frozen: three leaf helpers are imported from the live code (keys.valid_node_id,
wgtypes.key_to_bytes, wgtypes.normalize_endpoint). The differential tests therefore check the peer-set,
AllowedIPs and routed-set algorithms, not those validators: a change to one of them changes both sides
alike and is covered by their own unit tests (test_identity, test_wgtypes, test_fuzz).
"""
# ruff: noqa

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_left, bisect_right
from typing import Dict, Iterable, List, Optional, Tuple

BITS = {4: 32, 6: 128}
_ADDRESS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
# IPv6 addresses below 2**48 (::, ::1, IPv4-compatible, IPv4-mapped) are left to ipaddress both ways: their
# text form differs between Python versions (3.13 writes IPv4-mapped addresses as ::ffff:a.b.c.d).
_V6_PLAIN = 1 << 48


def format_address(family: int, value: int) -> str:
    """The text form ``ipaddress`` gives the address (RFC 5952 for IPv6), without building an address object."""
    if family == 4:
        return "%d.%d.%d.%d" % (value >> 24, (value >> 16) & 255, (value >> 8) & 255, value & 255)
    if value < _V6_PLAIN:
        return ipaddress.IPv6Address(value).compressed
    hextets = ["%x" % ((value >> shift) & 0xFFFF) for shift in range(112, -16, -16)]
    best_start, best_len, start, run = -1, 0, -1, 0
    for index, hextet in enumerate(hextets):
        if hextet == "0":
            if not run:
                start = index
            run += 1
            if run > best_len:
                best_start, best_len = start, run
        else:
            run = 0
    if best_len > 1:  # the first longest run of two or more zero groups becomes "::"
        return ":".join(hextets[:best_start]) + "::" + ":".join(hextets[best_start + best_len:])
    return ":".join(hextets)


def _parse_canonical(text: str) -> Optional[Tuple[int, int, int]]:
    """Fast path of parse_range for text in the form this module and ipaddress write (``10.0.0.0/8``,
    ``fd00::1``): inet_pton, then the text must read back unchanged. None for anything else, which then
    takes the ipaddress path (same values, same errors)."""
    addr, sep, length_text = text.partition("/")
    family = 6 if ":" in addr else 4
    try:
        number = int.from_bytes(socket.inet_pton(_AF[family], addr), "big")
    except (OSError, ValueError):
        return None
    if (family == 6 and number < _V6_PLAIN) or format_address(family, number) != addr:
        return None
    bits = BITS[family]
    length = bits
    if sep:
        if not (length_text.isascii() and length_text.isdigit()) or str(int(length_text)) != length_text or int(length_text) > bits:
            return None
        length = int(length_text)
    host = (1 << (bits - length)) - 1
    first = number & ~host
    return family, first, first | host


def parse_range(value) -> Tuple[int, int, int]:
    """(family, first, last) of an address or prefix; host bits of a prefix are ignored (10.244.3.1/24 is 10.244.3.0/24).

    Accepts strings and ipaddress objects; raises ValueError naming the value.
    """
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        net = value.network
    elif isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = value
    elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        net = ipaddress.ip_network(value)
    elif isinstance(value, str):
        fast = _parse_canonical(value.strip())
        if fast is not None:
            return fast
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError("%r is not an IP address or prefix" % (value,))
    else:
        raise ValueError("%r is not an IP address or prefix" % (value,))
    return net.version, int(net.network_address), int(net.broadcast_address)


def range_to_prefixes(family: int, first: int, last: int) -> List[str]:
    """The minimal list of prefixes covering first..last (inclusive), in address order."""
    bits = BITS[family]
    result = []
    while first <= last:
        align = first & -first if first else 1 << bits
        size = min(align, 1 << ((last - first + 1).bit_length() - 1))
        result.append("%s/%d" % (format_address(family, first), bits - size.bit_length() + 1))
        first += size
    return result


class IPSet:
    """A mutable set of IP addresses. ``add``/``remove`` take addresses or prefixes and return the set itself."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, items: Iterable = ()):
        self._starts: Dict[int, List[int]] = {4: [], 6: []}
        self._ends: Dict[int, List[int]] = {4: [], 6: []}
        for item in items:
            self.add(item)

    # --- building ---------------------------------------------------------------------------------

    def add(self, item) -> IPSet:
        self.add_range(*parse_range(item))
        return self

    def remove(self, item) -> IPSet:
        self.remove_range(*parse_range(item))
        return self

    def add_range(self, family: int, first: int, last: int) -> None:
        starts, ends = self._starts[family], self._ends[family]
        i = bisect_left(ends, first - 1)  # first interval that ends at or after first-1 (touches or overlaps)
        j = bisect_right(starts, last + 1)  # past the last interval that starts at or before last+1
        if i < j:
            first = min(first, starts[i])
            last = max(last, ends[j - 1])
        starts[i:j] = [first]
        ends[i:j] = [last]

    def remove_range(self, family: int, first: int, last: int) -> None:
        starts, ends = self._starts[family], self._ends[family]
        i = bisect_left(ends, first)
        j = bisect_right(starts, last)
        if i >= j:
            return
        new_starts, new_ends = [], []
        if starts[i] < first:
            new_starts.append(starts[i])
            new_ends.append(first - 1)
        if ends[j - 1] > last:
            new_starts.append(last + 1)
            new_ends.append(ends[j - 1])
        starts[i:j] = new_starts
        ends[i:j] = new_ends

    def update(self, other: IPSet) -> IPSet:
        """In-place union."""
        for family, first, last in other.intervals():
            self.add_range(family, first, last)
        return self

    def difference_update(self, other: IPSet) -> IPSet:
        """In-place difference."""
        if other.interval_count() > self.interval_count():
            diff = self.difference(other)
            self._starts, self._ends = diff._starts, diff._ends
            return self
        for family, first, last in other.intervals():
            self.remove_range(family, first, last)
        return self

    def copy(self) -> IPSet:
        new = IPSet()
        new._starts = {f: list(v) for f, v in self._starts.items()}
        new._ends = {f: list(v) for f, v in self._ends.items()}
        return new

    # --- queries ----------------------------------------------------------------------------------

    def intervals(self, family: Optional[int] = None):
        """(family, first, last) integer intervals, sorted, IPv4 first."""
        for fam in (4, 6) if family is None else (family,):
            for first, last in zip(self._starts[fam], self._ends[fam]):
                yield fam, first, last

    def interval_count(self, family: Optional[int] = None) -> int:
        return sum(len(self._starts[fam]) for fam in ((4, 6) if family is None else (family,)))

    def _overlapping(self, family: int, first: int, last: int) -> Tuple[int, int]:
        """Index range [i, j) of this set's intervals that overlap first..last."""
        return bisect_left(self._ends[family], first), bisect_right(self._starts[family], last)

    def contains(self, item) -> bool:
        """True when the whole address or prefix is in the set."""
        family, first, last = parse_range(item)
        i, j = self._overlapping(family, first, last)
        return j - i == 1 and self._starts[family][i] <= first and self._ends[family][i] >= last

    def __contains__(self, item) -> bool:
        return self.contains(item)

    def overlaps(self, other) -> bool:
        """True when this set shares at least one address with ``other`` (an IPSet, address or prefix)."""
        if not isinstance(other, IPSet):
            other = IPSet([other])
        small, big = (self, other) if self.interval_count() <= other.interval_count() else (other, self)
        for family, first, last in small.intervals():
            i, j = big._overlapping(family, first, last)
            if i < j:
                return True
        return False

    def intersection(self, other: IPSet) -> IPSet:
        small, big = (self, other) if self.interval_count() <= other.interval_count() else (other, self)
        result = IPSet()
        for family, first, last in small.intervals():
            i, j = big._overlapping(family, first, last)
            for k in range(i, j):
                result._append(family, max(first, big._starts[family][k]), min(last, big._ends[family][k]))
        return result

    def difference(self, other: IPSet) -> IPSet:
        result = IPSet()
        for family, first, last in self.intervals():
            i, j = other._overlapping(family, first, last)
            for k in range(i, j):
                if other._starts[family][k] > first:
                    result._append(family, first, other._starts[family][k] - 1)
                first = other._ends[family][k] + 1
            if first <= last:
                result._append(family, first, last)
        return result

    def union(self, other: IPSet) -> IPSet:
        small, big = (self, other) if self.interval_count() <= other.interval_count() else (other, self)
        return big.copy().update(small)

    def _append(self, family: int, first: int, last: int) -> None:
        """Append an interval known to lie after (and not touch) the last one; used by the set operations."""
        starts, ends = self._starts[family], self._ends[family]
        if ends and ends[-1] + 1 >= first:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)

    __or__ = union
    __and__ = intersection
    __sub__ = difference

    def is_empty(self) -> bool:
        return not self._starts[4] and not self._starts[6]

    def __bool__(self) -> bool:
        return not self.is_empty()

    def __eq__(self, other) -> bool:
        if not isinstance(other, IPSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __ne__(self, other) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # mutable

    # --- output -----------------------------------------------------------------------------------

    def prefixes(self, family: Optional[int] = None) -> List[str]:
        """Minimal prefixes covering the set: sorted, IPv4 before IPv6 (netipx IPSet.Prefixes())."""
        result = []
        for fam, first, last in self.intervals(family):
            result.extend(range_to_prefixes(fam, first, last))
        return result

    def ranges(self, family: Optional[int] = None) -> List[Tuple[str, str]]:
        """(first, last) address strings of each maximal interval, sorted, IPv4 first."""
        return [(_ADDRESS[fam](first).compressed, _ADDRESS[fam](last).compressed) for fam, first, last in self.intervals(family)]

    def __repr__(self) -> str:
        return "IPSet(%r)" % (self.prefixes(),)


MAX_LISTED = 8


def _label(peer: dict) -> str:
    name = peer.get("name") or peer.get("label") or ""
    return "%s (%s)" % (name, peer["public_key"]) if name else str(peer["public_key"])


def _summary(ipset: IPSet) -> str:
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
            i = bisect_left(self.starts[family], first)
            self.starts[family].insert(i, first)
            self.ends[family].insert(i, (last, owner))

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
    public-key order loses the overlapping part (Talos's rule); both cases are warnings naming the peers.
    """
    local_set = local_ipset(local_addresses, local_networks)
    ordered = sorted(peers, key=lambda p: (0, p["node_id"], p["public_key"]) if p.get("node_id") else (1, "", p["public_key"]))
    claimed = IPSet()
    owners = _Owners()
    done: List[Tuple[dict, IPSet]] = []
    result, warnings = [], []
    for peer in ordered:
        ipset = peer_ipset(peer)
        refused = ipset & local_set
        if refused:
            warnings.append("peer %s claims this node's own addresses %s: they are not routed to it" % (_label(peer), _summary(refused)))
            ipset.difference_update(refused)
        if ipset.overlaps(claimed):
            holders = owners.find(ipset & claimed)
            for index in holders[:MAX_LISTED]:
                other, other_set = done[index]
                warnings.append("peer address overlap: %s claims %s, already held by peer %s, which keeps it"
                                % (_label(peer), _summary(ipset & other_set), _label(other)))
            if len(holders) > MAX_LISTED:
                warnings.append("peer address overlap: %s also claims addresses of %d more peers, which keep them"
                                % (_label(peer), len(holders) - MAX_LISTED))
            ipset.difference_update(claimed)
            if ipset.is_empty():
                warnings.append("peer %s has no address left after resolving overlaps: no traffic is routed to it" % _label(peer))
        claimed.update(ipset)
        owners.add(ipset, len(done))
        done.append((peer, ipset))
        spec = dict(peer)
        spec["allowed_ips"] = ipset.prefixes()
        result.append(spec)
    return sorted(result, key=lambda spec: spec["public_key"]), warnings


def routed_set(
    peers: Iterable[dict],
    kubespan_prefix,
    allow_down_peer_bypass: bool = False,
    up_peers: Optional[Iterable[str]] = None,
) -> IPSet:
    """Networks the node forces into KubeSpan (the nftables set): the union of the peers' ``allowed_ips``
    minus the cluster's KubeSpan prefix (routed on the interface itself).

    Without bypass (Talos's default, ForceRouting) every peer counts, so traffic to a down peer is dropped
    by WireGuard rather than sent in the clear. With ``allow_down_peer_bypass`` only the peers whose public
    key is in ``up_peers`` count, and traffic to the others takes the normal routes while they are down.
    """
    up = set(up_peers or ()) if allow_down_peer_bypass else None
    result = IPSet()
    for peer in peers:
        if up is not None and peer["public_key"] not in up:
            continue
        for prefix in peer.get("allowed_ips") or []:
            result.add(prefix)
    result.remove(kubespan_prefix)
    return result


from ansible_collections.kubespan.mesh.plugins.module_utils.core.keys import valid_node_id
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import key_to_bytes, normalize_endpoint

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
            warnings.append("peer %s has this node's own KubeSpan address %s (cloned MAC addresses?): this node keeps "
                            "it, the peer is meshed with the rest of its addresses" % (name, aff["address"]))
        elif aff["address"] in by_addr:
            warnings.append("peers %s and %s have the same KubeSpan address %s (cloned MAC addresses?): the first in "
                            "node-ID order keeps it, both are meshed" % (by_addr[aff["address"]], name, aff["address"]))
        by_key[aff["public_key"]] = name
        by_addr.setdefault(aff["address"], name)
        peers.append(dict(aff))
    # AllowedIPs as Talos builds them: pod networks, node addresses as hosts, minus excluded networks,
    # plus the KubeSpan address; never this node's own addresses; overlaps go to the first in key order.
    local = [str(local_address).split("/", 1)[0]] + list(local_addresses)
    peers, assign_warnings = assign_allowed_ips(peers, local, local_networks)
    return peers, warnings + assign_warnings
