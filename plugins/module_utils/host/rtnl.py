# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Rtnetlink dumps (links, addresses, routes, rules) and the few writes of the boot-time fail-closed unit (fwmark
rules, device-less routes such as ``unreachable``) with the standard library only.

The node agent's tick reads links, addresses, routes and rules every 30 s and changes them only on drift.
Importing pyroute2 costs about 150 ms of CPU and 14 MB of memory in every tick's process (bench/results/agent),
more than the tick itself, so netlink.Netlink reads through this module and imports pyroute2 only for a write.
``kubespan failclosed`` runs before the network at every boot, on machines that may be slow (an emulated CPU took
14 s of CPU for it with pyroute2); its writes (add_rule, add_typed_route) are here too, so it never imports pyroute2
(tests/unit/.../test_rtnl.py compares what both write on a real network namespace).
The results have the shapes netlink.Netlink returned from pyroute2 (tests/unit/.../test_rtnl.py compares the two
on a real network namespace). No Ansible imports; Python 3.8 syntax.

Bounds: the kernel is the only peer of the socket (its port id 0 is checked), yet every length is checked
against the buffer, a dump is capped at MAX_MESSAGES messages and MAX_BYTES bytes, and anything malformed raises
RtnlError naming the dump.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Dict, List, Optional, Tuple

from ..base.errors import KubeSpanError

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_NEWRULE = 32
RTM_GETADDR = 22
RTM_GETROUTE = 26
RTM_GETRULE = 34
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
MAX_MESSAGES = 1000000
MAX_BYTES = 256 * 2**20

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_FIBRULEHDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_INFO_KIND = 1, 3, 4, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE, RTAX_MTU = 1, 4, 5, 6, 8, 15, 2
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
RTPROT_STATIC = 4  # the protocol pyroute2 gives a route by default (the path this replaced: the same routes)
RT_SCOPE_UNIVERSE = 0
FR_ACT_TO_TBL = 1  # a rule's action: look up a table
RT_TABLE_UNSPEC = 0
# device-less route types a write may add (linux/rtnetlink.h); a unicast route needs a device: not here
TYPED_ROUTES = {"blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9}


class RtnlError(KubeSpanError):
    """A dump failed or the kernel's answer did not parse; the message names the dump."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attributes(data: bytes, offset: int, end: int, what: str) -> Dict[int, bytes]:
    """{type: payload} of the rtattrs in data[offset:end] (the first of a type wins, as pyroute2's get_attr)."""
    attrs: Dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            raise RtnlError("%s: attribute of length %d at offset %d overruns its message" % (what, length, offset))
        attrs.setdefault(kind & NLA_TYPE_MASK, data[offset + _RTATTR.size:offset + length])
        offset += _align(length)
    return attrs


def _u32(payload: Optional[bytes], what: str) -> Optional[int]:
    if payload is None:
        return None
    if len(payload) < 4:
        raise RtnlError("%s: a 32-bit attribute of %d bytes" % (what, len(payload)))
    return _U32.unpack_from(payload)[0]


def _text(payload: Optional[bytes]) -> Optional[str]:
    return None if payload is None else payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def _address(payload: Optional[bytes], family: int, what: str) -> Optional[str]:
    if payload is None:
        return None
    want = 4 if family == socket.AF_INET else 16
    if family not in (socket.AF_INET, socket.AF_INET6) or len(payload) != want:
        raise RtnlError("%s: an address of %d bytes in family %d" % (what, len(payload), family))
    return socket.inet_ntop(family, payload)


def parse_messages(chunks: List[bytes], seq: int, what: str) -> Tuple[List[Tuple[int, bytes, int]], bool]:
    """Netlink messages of a dump's answer, as (type, whole message bytes, header size); done flag."""
    out = []
    for data in chunks:
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                raise RtnlError("%s: message of length %d at offset %d overruns the answer" % (what, length, offset))
            if mseq == seq:
                if kind == NLMSG_DONE:
                    return out, True
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0] if length >= _NLMSGHDR.size + 4 else -1
                    if code:
                        raise RtnlError("%s: the kernel answered %s" % (what, os.strerror(-code) if code < 0 else code))
                else:
                    out.append((kind, data[offset:offset + length], _NLMSGHDR.size))
            offset += _align(length)
    return out, False


def _rtattr(kind: int, payload: bytes) -> bytes:
    data = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return data + b"\0" * (_align(len(data)) - len(data))


def _u32_attr(kind: int, value: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise RtnlError("%s: %r is not a 32-bit unsigned number" % (what, value))
    return _rtattr(kind, _U32.pack(value))


def _family(family: int, what: str) -> int:
    if family == 4:
        return socket.AF_INET
    if family == 6:
        return socket.AF_INET6
    raise RtnlError("%s: family %r is neither 4 nor 6" % (what, family))


def rule_message(family: int, priority: int, table: int, fwmark: int, fwmask: int) -> bytes:
    """The body (fib_rule_hdr and attributes) of RTM_NEWRULE ``fwmark FWMARK/FWMASK lookup TABLE priority PRIORITY``."""
    what = "add rule fwmark %r/%r lookup %r" % (fwmark, fwmask, table)
    fam = _family(family, what)
    header = _FIBRULEHDR.pack(fam, 0, 0, 0, table if isinstance(table, int) and 0 < table < 256 else RT_TABLE_UNSPEC,
                              0, 0, FR_ACT_TO_TBL, 0)
    return header + b"".join([_u32_attr(FRA_PRIORITY, priority, what), _u32_attr(FRA_FWMARK, fwmark, what),
                              _u32_attr(FRA_FWMASK, fwmask, what), _u32_attr(FRA_TABLE, table, what)])


def typed_route_message(family: int, dst: str, table: int, metric: int, rtype: str) -> bytes:
    """The body (rtmsg and attributes) of RTM_NEWROUTE ``RTYPE DST table TABLE metric METRIC`` (no device)."""
    what = "add %s route %s table %r" % (rtype, dst, table)
    fam = _family(family, what)
    if rtype not in TYPED_ROUTES:
        raise RtnlError("%s: only %s routes are written here" % (what, ", ".join(sorted(TYPED_ROUTES))))
    try:
        net = ipaddress.ip_network(dst, strict=True)
    except ValueError:
        raise RtnlError("%s: not a network" % what)
    if net.version != family:
        raise RtnlError("%s: not an IPv%d network" % (what, family))
    header = _RTMSG.pack(fam, net.prefixlen, 0, 0, table if isinstance(table, int) and 0 < table < 256 else RT_TABLE_UNSPEC,
                         RTPROT_STATIC, RT_SCOPE_UNIVERSE, TYPED_ROUTES[rtype], 0)
    attrs = [_u32_attr(RTA_TABLE, table, what)]
    if net.prefixlen:
        attrs.append(_rtattr(RTA_DST, net.network_address.packed))
    attrs.append(_u32_attr(RTA_PRIORITY, metric, what))
    return header + b"".join(attrs)


class Rtnl:
    """One NETLINK_ROUTE socket for dumps and the few writes; close() or use as a context manager."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            self.sock.bind((0, 0))
        except OSError as exc:
            raise RtnlError("cannot open a netlink socket: %s" % (exc.strerror or exc))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dump(self, kind: int, header: bytes, what: str) -> List[Tuple[int, bytes, int]]:
        self.seq += 1
        request = _NLMSGHDR.pack(_NLMSGHDR.size + len(header), kind, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0) + header
        msgs: List[Tuple[int, bytes, int]] = []
        total = 0
        try:
            self.sock.send(request)
            while True:
                data, sender = self.sock.recvfrom(1 << 20)
                if sender[0] != 0:  # only the kernel (port id 0) answers a dump
                    continue
                if not data:
                    raise RtnlError("%s: the answer ended without NLMSG_DONE" % what)
                total += len(data)
                if total > MAX_BYTES:
                    raise RtnlError("%s: more than %d bytes" % (what, MAX_BYTES))
                got, done = parse_messages([data], self.seq, what)
                msgs.extend(got)
                if len(msgs) > MAX_MESSAGES:
                    raise RtnlError("%s: more than %d messages" % (what, MAX_MESSAGES))
                if done:
                    return msgs
        except OSError as exc:
            raise RtnlError("%s: %s" % (what, exc.strerror or exc))

    def request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        """One write, acknowledged: returns when the kernel answered success, raises RtnlError naming ``what``
        with the kernel's error otherwise."""
        self.seq += 1
        message = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + body
        try:
            self.sock.send(message)
            for _attempt in range(64):  # the acknowledgement is the answer; anything else (a stray multicast) is skipped
                data, sender = self.sock.recvfrom(65536)
                if sender[0] != 0:
                    continue
                if not data:
                    break
                offset = 0
                while offset + _NLMSGHDR.size <= len(data):
                    length, mkind, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                    if length < _NLMSGHDR.size or offset + length > len(data):
                        raise RtnlError("%s: message of length %d at offset %d overruns the answer" % (what, length, offset))
                    if mseq == self.seq and mkind == NLMSG_ERROR:
                        if length < _NLMSGHDR.size + 4:
                            raise RtnlError("%s: a short acknowledgement" % what)
                        code = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                        if code:
                            raise RtnlError("%s: the kernel answered %s" % (what, os.strerror(-code) if code < 0 else code))
                        return
                    offset += _align(length)
        except OSError as exc:
            raise RtnlError("%s: %s" % (what, exc.strerror or exc))
        raise RtnlError("%s: the kernel did not acknowledge" % what)

    # -------------------------------------------------------------------------------------------- writes

    def add_rule(self, family: int, priority: int, table: int, fwmark: int, fwmask: int) -> None:
        """``ip -FAMILY rule add fwmark FWMARK/FWMASK lookup TABLE priority PRIORITY`` (an existing equal rule: EEXIST)."""
        self.request(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, rule_message(family, priority, table, fwmark, fwmask),
                     "add rule fwmark %#x/%#x lookup %s priority %s" % (fwmark, fwmask, table, priority))

    def add_typed_route(self, family: int, dst: str, table: int, metric: int, rtype: str, replace: bool = False) -> None:
        """``ip -FAMILY route add|replace RTYPE DST table TABLE metric METRIC``: a device-less route (unreachable...)."""
        self.request(RTM_NEWROUTE, NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL),
                     typed_route_message(family, dst, table, metric, rtype),
                     "%s %s route %s table %s" % ("replace" if replace else "add", rtype, dst, table))

    # -------------------------------------------------------------------------------------------- dumps

    def links(self) -> List[dict]:
        """Every link: {index, ifname, type, flags, mtu, kind, address (raw bytes or None)}."""
        result = []
        for _kind, msg, hdr in self.dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "link dump"):
            if len(msg) < hdr + _IFINFOMSG.size:
                raise RtnlError("link dump: a short message")
            _family, itype, index, flags, _change = _IFINFOMSG.unpack_from(msg, hdr)
            attrs = attributes(msg, hdr + _IFINFOMSG.size, len(msg), "link dump")
            info = attrs.get(IFLA_LINKINFO)
            kind = _text(attributes(info, 0, len(info), "link dump").get(IFLA_INFO_KIND)) if info is not None else None
            result.append({"index": index, "ifname": _text(attrs.get(IFLA_IFNAME)) or "", "type": itype, "flags": flags,
                           "mtu": _u32(attrs.get(IFLA_MTU), "link dump") or 0, "kind": kind, "address": attrs.get(IFLA_ADDRESS)})
        return result

    def addresses(self, family: int) -> List[dict]:
        """Every address of ``family``: {index, prefixlen, scope, address (IFA_ADDRESS, else IFA_LOCAL, as text)}."""
        result = []
        for _kind, msg, hdr in self.dump(RTM_GETADDR, _IFADDRMSG.pack(family, 0, 0, 0, 0), "address dump"):
            if len(msg) < hdr + _IFADDRMSG.size:
                raise RtnlError("address dump: a short message")
            fam, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(msg, hdr)
            if fam != family:
                continue
            attrs = attributes(msg, hdr + _IFADDRMSG.size, len(msg), "address dump")
            addr = _address(attrs.get(IFA_ADDRESS), fam, "address dump") or _address(attrs.get(IFA_LOCAL), fam, "address dump")
            result.append({"index": index, "prefixlen": prefixlen, "scope": scope, "address": addr})
        return result

    def routes(self, family: int) -> List[dict]:
        """Every route of ``family`` in every table: {table (RTA_TABLE, else the header's), dst (text or None),
        dst_len, type, oif, priority, mtu (RTAX_MTU or None), gateway}."""
        result = []
        for _kind, msg, hdr in self.dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), "route dump"):
            if len(msg) < hdr + _RTMSG.size:
                raise RtnlError("route dump: a short message")
            fam, dst_len, _src_len, _tos, table, _proto, _scope, rtype, _flags = _RTMSG.unpack_from(msg, hdr)
            if fam != family:
                continue
            attrs = attributes(msg, hdr + _RTMSG.size, len(msg), "route dump")
            metrics = attrs.get(RTA_METRICS)
            mtu = _u32(attributes(metrics, 0, len(metrics), "route dump").get(RTAX_MTU), "route dump") if metrics is not None else None
            result.append({"table": _u32(attrs.get(RTA_TABLE), "route dump") or table, "dst": _address(attrs.get(RTA_DST), fam, "route dump"),
                           "dst_len": dst_len, "type": rtype, "oif": _u32(attrs.get(RTA_OIF), "route dump"),
                           "priority": _u32(attrs.get(RTA_PRIORITY), "route dump"), "mtu": mtu,
                           "gateway": _address(attrs.get(RTA_GATEWAY), fam, "route dump")})
        return result

    def rules(self, family: int) -> List[dict]:
        """Every policy rule of ``family``: {priority, table (FRA_TABLE, else the header's), fwmark, fwmask}."""
        result = []
        for _kind, msg, hdr in self.dump(RTM_GETRULE, _FIBRULEHDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), "rule dump"):
            if len(msg) < hdr + _FIBRULEHDR.size:
                raise RtnlError("rule dump: a short message")
            fam, _dl, _sl, _tos, table, _r1, _r2, _action, _flags = _FIBRULEHDR.unpack_from(msg, hdr)
            if fam != family:
                continue
            attrs = attributes(msg, hdr + _FIBRULEHDR.size, len(msg), "rule dump")
            result.append({"priority": _u32(attrs.get(FRA_PRIORITY), "rule dump"), "table": _u32(attrs.get(FRA_TABLE), "rule dump") or table,
                           "fwmark": _u32(attrs.get(FRA_FWMARK), "rule dump"), "fwmask": _u32(attrs.get(FRA_FWMASK), "rule dump")})
        return result
