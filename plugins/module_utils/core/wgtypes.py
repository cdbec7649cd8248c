# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""WireGuard device model shared by the kernel (netlink) and userspace (UAPI) transports.

Plain data, no I/O, no Ansible imports. Keys are standard base64 strings (44 characters) everywhere
in this model; transports convert to their wire format. Endpoints are strings ``ip:port`` or
``[ipv6]:port``; allowed IPs are normalized CIDR strings (``ipaddress`` form).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..base.errors import KubeSpanError


class WireGuardError(KubeSpanError):
    """A WireGuard device could not be read or configured."""


def key_to_bytes(key: str) -> bytes:
    """Decode a base64 WireGuard key, refusing anything that is not exactly 32 bytes.

    The message never contains the value (it may be a private key or a preshared key): callers name the field."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("is not a base64 WireGuard key (%s, value hidden)" % (
            "%d characters" % len(key) if isinstance(key, str) else type(key).__name__))
    if len(raw) != 32:
        raise ValueError("decodes to %d bytes, a WireGuard key is 32 (44 characters of base64)" % len(raw))
    return raw


SECRET_PIECE = 8  # characters of base64: a text holding this many consecutive ones of a key holds part of it


def secret_pieces(key: str) -> frozenset:
    """Every SECRET_PIECE-character piece of a base64 key or secret, of its URL-safe form and (twice as long) of
    its hex form: what a field that may be shown is checked against (``holds_part_of``)."""
    key = str(key).strip()
    forms = [(key, SECRET_PIECE)]
    if "+" in key or "/" in key:
        forms.append((key.replace("+", "-").replace("/", "_"), SECRET_PIECE))
    try:
        forms.append((base64.b64decode(key, validate=True).hex(), 2 * SECRET_PIECE))
    except (binascii.Error, ValueError):
        pass
    return frozenset(text[i:i + width] for text, width in forms for i in range(len(text) - width + 1))


def holds_part_of(value: str, pieces: frozenset) -> bool:
    """Whether ``value`` holds one of ``pieces`` (secret_pieces of a key); hex is compared in lower case."""
    lower = value.lower()
    return any(piece in value or piece in lower for piece in pieces)


def _forms(key: str):
    """(text, piece width, compare in lower case) of each form of a base64 key: standard, URL-safe, hex."""
    forms = [(key, SECRET_PIECE, False)]
    if "+" in key or "/" in key:
        forms.append((key.replace("+", "-").replace("/", "_"), SECRET_PIECE, False))
    try:
        forms.append((base64.b64decode(key, validate=True).hex(), 2 * SECRET_PIECE, True))
    except (binascii.Error, ValueError):
        pass
    return forms


def count_exceeds(text: str, key: str, allowed: int = 1) -> bool:
    """Whether some piece of ``key`` (secret_pieces) occurs in ``text`` more often than in ``allowed`` copies of the key
    (the key's own field). A prefilter keeps it fast on large files: every piece contains one of a few aligned
    shorter blocks (6 of 8 characters at even offsets; 12 of 16 hex digits at offsets divisible by 4), which are
    counted first; only when a block occurs more often than in the key are the pieces themselves counted."""
    key = str(key).strip()
    lower = None
    for form, width, in_lower in _forms(key):
        size, step = (width - 2, 2) if width == SECRET_PIECE else (width - 4, 4)
        if in_lower and lower is None:
            lower = text.lower()
        haystack, own = (lower, key.lower()) if in_lower else (text, key)  # own: the key's own copy, as the text has it
        if any(haystack.count(form[i:i + size]) > allowed * own.count(form[i:i + size])
               for i in range(0, len(form) - size + 1, step)):
            if any(haystack.count(form[i:i + width]) > allowed * own.count(form[i:i + width])
                   for i in range(len(form) - width + 1)):
                return True
    return False


def key_to_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def normalize_cidr(value: str) -> str:
    """Return the canonical network form of an address or prefix (host bits must be zero)."""
    return str(ipaddress.ip_network(value, strict=False))


def format_endpoint(host: str, port: int) -> str:
    ip = ipaddress.ip_address(host)
    if ip.version == 6:
        return "[%s]:%d" % (ip.compressed, port)
    return "%s:%d" % (ip, port)


def parse_endpoint(value: str):
    """Split ``ip:port`` or ``[ipv6]:port`` into (ip string, port int); raise ValueError if malformed."""
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("endpoint %r: an IPv6 endpoint is written [address]:port" % value)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("endpoint %r: expected address:port or [ipv6]:port" % value)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("endpoint %r: %r is not an IP address" % (value, host))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("endpoint %r: port must be 1-65535" % value)
    return ip.compressed, int(port)


def normalize_endpoint(value: str) -> str:
    host, port = parse_endpoint(value)
    return format_endpoint(host, port)


@dataclass
class PeerState:
    """A peer as the device reports it."""

    public_key: str
    endpoint: Optional[str] = None
    allowed_ips: List[str] = field(default_factory=list)
    persistent_keepalive: int = 0
    preshared_key: Optional[str] = field(default=None, repr=False)  # base64; None when unset (all zero)
    last_handshake: float = 0.0  # unix time in seconds, 0 = never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class DeviceState:
    """A device as the transport reports it. ``private_key`` is kept only in memory, never returned."""

    private_key: Optional[str] = field(default=None, repr=False)  # key fields never appear in a repr
    public_key: Optional[str] = None
    listen_port: int = 0
    fwmark: int = 0
    peers: Dict[str, PeerState] = field(default_factory=dict)


@dataclass
class PeerUpdate:
    """One peer change. Fields left None are not touched on the device.

    ``allowed_ips`` replaces the peer's whole list when given. ``remove`` deletes the peer.
    ``update_only`` never creates the peer (used when only an existing peer's endpoint changes).
    """

    public_key: str
    remove: bool = False
    endpoint: Optional[str] = None
    allowed_ips: Optional[List[str]] = None
    persistent_keepalive: Optional[int] = None
    preshared_key: Optional[str] = field(default=None, repr=False)
    update_only: bool = False


@dataclass
class DeviceUpdate:
    """A batch of changes for one device; fields left None are not touched."""

    private_key: Optional[str] = field(default=None, repr=False)
    listen_port: Optional[int] = None
    fwmark: Optional[int] = None
    peers: List[PeerUpdate] = field(default_factory=list)

    def is_empty(self) -> bool:
        return self.private_key is None and self.listen_port is None and self.fwmark is None and not self.peers
