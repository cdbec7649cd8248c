# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""A set of IPv4 and IPv6 addresses built from prefixes, as Go's netipx.IPSetBuilder (which Talos uses). Pure logic.

Each family is a sorted list of disjoint, non-adjacent inclusive integer intervals. Adding or removing one
prefix is a binary search plus one slice assignment, so sets of thousands of prefixes stay fast; set
operations walk the smaller operand and search in the larger one. IPv4 and IPv6 never mix (an IPv4-mapped
IPv6 address is IPv6, as in Go's netip). ``prefixes()`` emits the minimal prefixes covering the set, sorted,
IPv4 before IPv6, like netipx's ``IPSet.Prefixes()``.
"""

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
    text = socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
    if _NTOP_RFC5952:
        return text
    return _format_v6(value)


def _format_v6(value: int) -> str:
    """RFC 5952 text of an IPv6 address of 2**48 or more, in Python (the reference for inet_ntop's output)."""
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


def _ntop_is_rfc5952() -> bool:
    """True when this libc's inet_ntop writes IPv6 as RFC 5952 (as ipaddress does) on tricky cases; else the
    Python formatter is used (same text, slower)."""
    samples = (0x20010DB8000000000000000000000001, 0x20010DB8000000010000000000000001, 0x20010DB8000100000001000000000000,
               0xFD000000000000000000000000000000, 0x20010DB8000000000001000000000000, 0xFFFF << 112,
               0x20010DB8AAAABBBBCCCCDDDDEEEE0000, 0x1 << 48, 0x20010DB800000000FFFF000000000000)
    try:
        return all(socket.inet_ntop(socket.AF_INET6, v.to_bytes(16, "big")) == _format_v6(v) for v in samples)
    except (OSError, ValueError, AttributeError):
        return False


# "/length" text of a block of 2**(b - 1) addresses, by b (the block size's bit_length)
_SUFFIXES = {family: ["/%d" % (bits + 1 - b) if b else "" for b in range(bits + 2)] for family, bits in BITS.items()}
_LENGTHS = {family: {str(length): length for length in range(bits + 1)} for family, bits in BITS.items()}
_HOSTMASKS = {family: [(1 << (bits - length)) - 1 for length in range(bits + 1)] for family, bits in BITS.items()}


def parse_canonical(text: str) -> Optional[Tuple[int, int, int]]:
    """Fast path of parse_range for text in the form this module and ipaddress write (``10.0.0.0/8``,
    ``fd00::1``): inet_pton, then the text must read back unchanged. None for anything else, which then
    takes the ipaddress path (same values, same errors)."""
    addr, sep, length_text = text.partition("/")
    family = 6 if ":" in addr else 4
    try:
        packed = socket.inet_pton(_AF[family], addr)
    except (OSError, ValueError):
        return None
    number = int.from_bytes(packed, "big")
    if family == 6 and number < _V6_PLAIN:
        return None
    # canonical when it reads back unchanged: inet_ntop writes what ipaddress writes (checked at import for IPv6)
    canonical = socket.inet_ntop(_AF[family], packed) if family == 4 or _NTOP_RFC5952 else format_address(family, number)
    if canonical != addr:
        return None
    length = _LENGTHS[family].get(length_text) if sep else BITS[family]  # "24", never "024", "+24" or "٢٤"
    if length is None:
        return None
    host = _HOSTMASKS[family][length]
    first = number & ~host
    return family, first, first | host


def parse_canonical_exact(text: str) -> Optional[Tuple[int, int, int, bool]]:
    """parse_canonical plus whether the text has no host bits (then it is its own normalized form)."""
    addr, sep, length_text = text.partition("/")
    family = 6 if ":" in addr else 4
    try:
        packed = socket.inet_pton(_AF[family], addr)
    except (OSError, ValueError):
        return None
    number = int.from_bytes(packed, "big")
    if family == 6 and number < _V6_PLAIN:
        return None
    canonical = socket.inet_ntop(_AF[family], packed) if family == 4 or _NTOP_RFC5952 else format_address(family, number)
    if canonical != addr:
        return None
    length = _LENGTHS[family].get(length_text) if sep else BITS[family]
    if length is None:
        return None
    host = _HOSTMASKS[family][length]
    first = number & ~host
    return family, first, first | host, first == number


def parse_range(value) -> Tuple[int, int, int]:
    """(family, first, last) of an address or prefix; host bits of a prefix are ignored (10.244.3.1/24 is 10.244.3.0/24).

    Accepts strings and ipaddress objects; raises ValueError naming the value.
    """
    if isinstance(value, str):
        fast = parse_canonical(value.strip())
        if fast is not None:
            return fast
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError("%r is not an IP address or prefix" % (value,))
    elif isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        net = value.network
    elif isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = value
    elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        net = ipaddress.ip_network(value)
    else:
        raise ValueError("%r is not an IP address or prefix" % (value,))
    return net.version, int(net.network_address), int(net.broadcast_address)


def range_to_prefixes(family: int, first: int, last: int) -> List[str]:
    """The minimal list of prefixes covering first..last (inclusive), in address order."""
    return [span[0] for span in prefix_spans(family, first, last)]


def prefix_spans(family: int, first: int, last: int) -> List[Tuple[str, int, int]]:
    """range_to_prefixes with each prefix's own first and last address: (text, first, last)."""
    bits = BITS[family]
    size = last - first + 1
    if not size & (size - 1) and not first & (size - 1) and size > 0:  # one aligned block: a single prefix
        return [("%s/%d" % (format_address(family, first), bits - size.bit_length() + 1), first, last)]
    result = []
    while first <= last:
        align = first & -first if first else 1 << bits
        size = min(align, 1 << ((last - first + 1).bit_length() - 1))
        result.append(("%s/%d" % (format_address(family, first), bits - size.bit_length() + 1), first, first + size - 1))
        first += size
    return result


_NTOP_RFC5952 = _ntop_is_rfc5952()


class IPSet:
    """A mutable set of IP addresses. ``add``/``remove`` take addresses or prefixes and return the set itself."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, items: Iterable = ()):
        self._starts: Dict[int, List[int]] = {4: [], 6: []}
        self._ends: Dict[int, List[int]] = {4: [], 6: []}
        for item in items:
            self.add(item)

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def from_sorted_ranges(cls, ranges: List[Tuple[int, int, int]]) -> IPSet:
        """The set of (family, first, last) ranges given in sorted order (overlapping and adjacent ones merge), in
        one pass: what add_range of each gives, without a search per range."""
        result = cls()
        if not ranges:
            return result
        starts, ends = result._starts, result._ends
        family, first, last = ranges[0]
        for fam, lo, hi in ranges:
            if fam == family and lo <= last + 1:
                if hi > last:
                    last = hi
                continue
            starts[family].append(first)
            ends[family].append(last)
            family, first, last = fam, lo, hi
        starts[family].append(first)
        ends[family].append(last)
        return result

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
        for family in (4, 6):
            add = self.add_range
            for first, last in zip(other._starts[family], other._ends[family]):
                add(family, first, last)
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
        if family is None:
            return len(self._starts[4]) + len(self._starts[6])
        return len(self._starts[family])

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
        for family in (4, 6):
            big_starts, big_ends = big._starts[family], big._ends[family]
            if not big_starts:
                continue
            for first, last in zip(small._starts[family], small._ends[family]):
                if bisect_left(big_ends, first) < bisect_right(big_starts, last):
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
        append = result.append
        for fam in (4, 6) if family is None else (family,):
            suffixes = _SUFFIXES[fam]
            for first, last in zip(self._starts[fam], self._ends[fam]):
                size = last - first + 1
                if not size & (size - 1) and not first & (size - 1):  # one aligned block (the usual case): its own text
                    append(format_address(fam, first) + suffixes[size.bit_length()])
                else:
                    result.extend(range_to_prefixes(fam, first, last))
        return result

    def ranges(self, family: Optional[int] = None) -> List[Tuple[str, str]]:
        """(first, last) address strings of each maximal interval, sorted, IPv4 first."""
        return [(_ADDRESS[fam](first).compressed, _ADDRESS[fam](last).compressed) for fam, first, last in self.intervals(family)]

    def __repr__(self) -> str:
        return "IPSet(%r)" % (self.prefixes(),)
