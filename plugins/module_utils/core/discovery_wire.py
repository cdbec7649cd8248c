# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Protobuf wire codec for Talos's discovery protocol. Pure logic, no protobuf runtime.

The messages and field numbers are those of siderolabs/discovery-api (``api/v1alpha1/server/cluster.proto``,
package ``sidero.discovery.server``, and ``api/v1alpha1/client/affiliate.proto``, package
``sidero.discovery.client``) plus ``google.protobuf.Duration``. See docs/discovery.md.

Encoding follows the proto3 rules the reference implementations follow, byte for byte: fields in field-number
order, implicit-presence scalars left out when they hold their zero value, ``optional`` fields and message
fields written whenever they are set (None means unset), repeated fields one record per element.

Decoding is strict and total: whatever the input bytes, it returns a message or raises :class:`WireError`
(a ValueError) and nothing else. Truncated varints, varints longer than 64 bits, lengths past the end,
field number 0, wire types that do not match the field, groups (proto3 has none), invalid UTF-8 in strings
and nesting deeper than :data:`MAX_DEPTH` are errors. Unknown fields with a valid wire type are skipped,
as protobuf does. A message field that occurs twice is merged, a scalar that occurs twice keeps the last
value, as protobuf does.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, Dict, List, Optional, Tuple

from ..base.errors import KubeSpanError

MAX_DEPTH = 16
MAX_FIELD_NUMBER = (1 << 29) - 1

# wire types
VARINT = 0
FIXED64 = 1
LENGTH = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5

_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1


class WireError(KubeSpanError, ValueError):
    """The bytes are not a valid encoding of the expected message; the message says where and why."""


# --- primitives ----------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128; negative numbers are written as their 64-bit two's complement (10 bytes)."""
    if value < 0:
        value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """Return (value, new position). At most 10 bytes and 64 bits, as protobuf accepts."""
    result = 0
    shift = 0
    end = len(data)
    for count in range(10):
        if pos >= end:
            raise WireError("truncated varint at byte %d" % pos)
        byte = data[pos]
        pos += 1
        if count == 9 and byte > 1:
            raise WireError("varint longer than 64 bits ending at byte %d" % pos)
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise WireError("varint longer than 10 bytes ending at byte %d" % pos)


def _key(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, LENGTH) + encode_varint(len(payload)) + payload


def iter_fields(data: bytes):
    """Yield (field number, wire type, value, offset) of each record; value is an int or bytes."""
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        key, pos = decode_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise WireError("invalid field number %d at byte %d" % (number, start))
        if wire_type == VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated 64-bit field %d at byte %d" % (number, start))
            value = struct.unpack_from("<Q", data, pos)[0]
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated 32-bit field %d at byte %d" % (number, start))
            value = struct.unpack_from("<I", data, pos)[0]
            pos += 4
        elif wire_type == LENGTH:
            length, pos = decode_varint(data, pos)
            if length > end - pos:
                raise WireError("field %d at byte %d: length %d runs past the end (%d bytes left)" % (number, start, length, end - pos))
            value = bytes(data[pos:pos + length])
            pos += length
        else:
            raise WireError("field %d at byte %d: unsupported wire type %d (groups are not proto3)" % (number, start, wire_type))
        yield number, wire_type, value, start


# --- messages ------------------------------------------------------------------------------------

# Field kinds: scalar kinds name their proto type; a Message subclass is an embedded message.
_SCALAR_WIRE = {"string": LENGTH, "bytes": LENGTH, "uint32": VARINT, "uint64": VARINT, "int32": VARINT, "int64": VARINT, "bool": VARINT}
_ZERO = {"string": "", "bytes": b"", "uint32": 0, "uint64": 0, "int32": 0, "int64": 0, "bool": False}


class Field:
    """One field of a message: number, attribute name, kind (scalar name or Message class), label."""

    __slots__ = ("number", "name", "kind", "label")

    def __init__(self, number: int, name: str, kind, label: str = "singular"):
        if label not in ("singular", "optional", "repeated"):
            raise ValueError("bad label %r" % label)
        self.number, self.name, self.kind, self.label = number, name, kind, label

    @property
    def is_message(self) -> bool:
        return isinstance(self.kind, type)

    def default(self):
        if self.label == "repeated":
            return []
        if self.is_message or self.label == "optional":
            return None
        return _ZERO[self.kind]


def _encode_scalar(kind: str, number: int, value) -> bytes:
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError("field %d wants str, got %s" % (number, type(value).__name__))
        return _length_delimited(number, value.encode("utf-8"))
    if kind == "bytes":
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError("field %d wants bytes, got %s" % (number, type(value).__name__))
        return _length_delimited(number, bytes(value))
    if kind == "bool":
        return _key(number, VARINT) + encode_varint(1 if value else 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("field %d wants int, got %s" % (number, type(value).__name__))
    limits = {"uint32": (0, _MASK32), "uint64": (0, _MASK64), "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
    low, high = limits[kind]
    if not low <= value <= high:
        raise ValueError("field %d: %d is out of range for %s" % (number, value, kind))
    return _key(number, VARINT) + encode_varint(value)


def _decode_scalar(kind: str, name: str, value):
    if kind == "string":
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("field %s is not valid UTF-8" % name)
    if kind == "bytes":
        return value
    if kind == "bool":
        return value != 0
    if kind == "uint32":
        return value & _MASK32
    if kind == "uint64":
        return value
    if kind == "int32":
        value &= _MASK32
        return value - (1 << 32) if value >> 31 else value
    # int64
    return value - (1 << 64) if value >> 63 else value


class Message:
    """Base class: subclasses list FIELDS and FULL_NAME; attributes are plain Python values."""

    FULL_NAME = ""
    FIELDS: Tuple[Field, ...] = ()

    def __init__(self, **values):
        for field in self.FIELDS:
            setattr(self, field.name, values.pop(field.name, field.default()))
        if values:
            raise TypeError("%s has no field(s) %s" % (type(self).__name__, ", ".join(sorted(values))))

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, f.name) == getattr(other, f.name) for f in self.FIELDS)

    def __ne__(self, other):
        return not self == other

    __hash__ = None  # mutable

    def __repr__(self):
        parts = []
        for field in self.FIELDS:
            value = getattr(self, field.name)
            if value != field.default():
                parts.append("%s=%r" % (field.name, value))
        return "%s(%s)" % (type(self).__name__, ", ".join(parts))

    # encoding

    def encode(self) -> bytes:
        out = []
        for field in sorted(self.FIELDS, key=lambda f: f.number):
            value = getattr(self, field.name)
            if field.label == "repeated":
                for item in value or ():
                    out.append(self._encode_one(field, item))
            elif value is None:
                if not field.is_message and field.label == "singular":
                    raise TypeError("%s.%s must not be None" % (type(self).__name__, field.name))
                continue
            elif field.is_message or field.label == "optional" or value != _ZERO[field.kind]:
                out.append(self._encode_one(field, value))
        return b"".join(out)

    @staticmethod
    def _encode_one(field: Field, value) -> bytes:
        if field.is_message:
            if not isinstance(value, field.kind):
                raise TypeError("field %s wants %s, got %s" % (field.name, field.kind.__name__, type(value).__name__))
            return _length_delimited(field.number, value.encode())
        return _encode_scalar(field.kind, field.number, value)

    # decoding

    @classmethod
    def decode(cls, data) -> Message:
        """Parse ``data`` (bytes-like). Raises WireError, and only WireError, on any malformed input."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise WireError("%s: expected bytes, got %s" % (cls.__name__, type(data).__name__))
        msg = cls()
        msg._merge(bytes(data), 0)
        return msg

    # field numbers read by _tentative instead of the strict rules (a field whose number is not confirmed)
    TENTATIVE: Tuple[int, ...] = ()

    def _tentative(self, records: List[Tuple[int, int, Any]]) -> None:
        """Read this message's TENTATIVE records ((number, wire type, value) of every occurrence so far)."""

    def _merge(self, data: bytes, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise WireError("messages nested deeper than %d" % MAX_DEPTH)
        by_number: Dict[int, Field] = {f.number: f for f in self.FIELDS}
        tentative = None
        for number, wire_type, value, offset in iter_fields(data):
            if number in self.TENTATIVE:
                if tentative is None:
                    tentative = self.__dict__.setdefault("_tentative_records", [])
                tentative.append((number, wire_type, value))
                continue
            field = by_number.get(number)
            if field is None:
                continue  # unknown field: skipped, as protobuf does
            expected = LENGTH if field.is_message else _SCALAR_WIRE[field.kind]
            if wire_type != expected:
                raise WireError("%s.%s (field %d) at byte %d has wire type %d, expected %d"
                                % (type(self).__name__, field.name, number, offset, wire_type, expected))
            if field.is_message:
                if field.label == "repeated":
                    item = field.kind()
                    item._merge(value, depth + 1)
                    getattr(self, field.name).append(item)
                else:
                    current = getattr(self, field.name)
                    if current is None:
                        current = field.kind()
                        setattr(self, field.name, current)
                    current._merge(value, depth + 1)
                continue
            decoded = _decode_scalar(field.kind, "%s.%s" % (type(self).__name__, field.name), value)
            if field.label == "repeated":
                getattr(self, field.name).append(decoded)
            else:
                setattr(self, field.name, decoded)
        if tentative is not None:
            self._tentative(tentative)


def _fields(*specs) -> Tuple[Field, ...]:
    return tuple(Field(*spec) for spec in specs)


# --- google.protobuf ------------------------------------------------------------------------------


class Duration(Message):
    FULL_NAME = "google.protobuf.Duration"
    FIELDS = _fields((1, "seconds", "int64"), (2, "nanos", "int32"))

    @classmethod
    def from_seconds(cls, seconds: float) -> Duration:
        whole = int(seconds)
        nanos = int(round((seconds - whole) * 1e9))
        if nanos >= 1000000000:
            whole, nanos = whole + 1, nanos - 1000000000
        return cls(seconds=whole, nanos=nanos)

    def total_seconds(self) -> float:
        return self.seconds + self.nanos / 1e9


# --- sidero.discovery.client (the plaintext inside the encrypted blobs) ---------------------------


class IPPrefix(Message):
    FULL_NAME = "sidero.discovery.client.IPPrefix"
    FIELDS = _fields((1, "ip", "bytes"), (2, "bits", "uint32"))


def _strict_prefix(wire_type: int, value) -> Optional[IPPrefix]:
    """One record read as an IPPrefix only if it is exactly one: length-delimited, holding field 1 (4 or 16 bytes)
    and at most field 2 (bits within the address length), each once, nothing else. None otherwise."""
    if wire_type != LENGTH:
        return None
    seen: Dict[int, Any] = {}
    try:
        for number, inner_type, inner, _offset in iter_fields(value):
            if number in seen or (number, inner_type) not in ((1, LENGTH), (2, VARINT)):
                return None
            seen[number] = inner
    except WireError:
        return None
    ip, bits = seen.get(1, b""), seen.get(2, 0)
    if len(ip) not in (4, 16) or bits > 8 * len(ip):
        return None
    return IPPrefix(ip=ip, bits=bits)


class KubeSpan(Message):
    """exclude_advertised_addresses (4): Talos 1.12.4+ (``excludeAdvertisedNetworks``, discovery-api v0.1.8).

    The field number is not confirmed from a public copy of discovery-api v0.1.8 (docs/discovery.md, "Field 4"):
    it is written as a repeated IPPrefix, and read as one only when every field-4 record is exactly a
    well-formed IPPrefix (:func:`_strict_prefix`). Anything else in field 4 (another type under that number) is
    ignored as a whole, never misread nor an error: ``exclude_advertised_addresses`` stays empty (the peer's
    claims are kept whole, which routes more through the mesh, never less) and ``field4_ignored`` counts the
    records left unread.
    """

    FULL_NAME = "sidero.discovery.client.KubeSpan"
    FIELDS = _fields((1, "public_key", "string"), (2, "address", "bytes"), (3, "additional_addresses", IPPrefix, "repeated"),
                     (4, "exclude_advertised_addresses", IPPrefix, "repeated"))
    TENTATIVE = (4,)
    field4_ignored = 0

    def _tentative(self, records: List[Tuple[int, int, Any]]) -> None:
        prefixes = [_strict_prefix(wire_type, value) for _number, wire_type, value in records]
        if all(p is not None for p in prefixes):
            self.exclude_advertised_addresses, self.field4_ignored = prefixes, 0
        else:
            self.exclude_advertised_addresses, self.field4_ignored = [], len(records)


class ControlPlane(Message):
    FULL_NAME = "sidero.discovery.client.ControlPlane"
    FIELDS = _fields((1, "api_server_port", "uint32"))


class ClientAffiliate(Message):
    FULL_NAME = "sidero.discovery.client.Affiliate"
    FIELDS = _fields((1, "node_id", "string"), (2, "addresses", "bytes", "repeated"), (3, "hostname", "string"), (4, "nodename", "string"),
                     (5, "machine_type", "string"), (6, "operating_system", "string"), (7, "kubespan", KubeSpan, "optional"),
                     (8, "control_plane", ControlPlane, "optional"))


class Endpoint(Message):
    FULL_NAME = "sidero.discovery.client.Endpoint"
    FIELDS = _fields((1, "ip", "bytes"), (2, "port", "uint32"))


# --- sidero.discovery.server (what the service sees) ----------------------------------------------


class ServerAffiliate(Message):
    FULL_NAME = "sidero.discovery.server.Affiliate"
    FIELDS = _fields((1, "id", "string"), (2, "data", "bytes"), (3, "endpoints", "bytes", "repeated"))


class HelloRequest(Message):
    FULL_NAME = "sidero.discovery.server.HelloRequest"
    FIELDS = _fields((1, "cluster_id", "string"), (2, "client_version", "string"))


class RedirectMessage(Message):
    FULL_NAME = "sidero.discovery.server.RedirectMessage"
    FIELDS = _fields((1, "endpoint", "string"))


class HelloResponse(Message):
    FULL_NAME = "sidero.discovery.server.HelloResponse"
    FIELDS = _fields((1, "redirect", RedirectMessage, "optional"), (2, "client_ip", "bytes"))


class AffiliateUpdateRequest(Message):
    FULL_NAME = "sidero.discovery.server.AffiliateUpdateRequest"
    FIELDS = _fields((1, "cluster_id", "string"), (2, "affiliate_id", "string"), (3, "affiliate_data", "bytes", "optional"),
                     (4, "affiliate_endpoints", "bytes", "repeated"), (5, "ttl", Duration, "optional"))


class AffiliateUpdateResponse(Message):
    FULL_NAME = "sidero.discovery.server.AffiliateUpdateResponse"


class AffiliateDeleteRequest(Message):
    FULL_NAME = "sidero.discovery.server.AffiliateDeleteRequest"
    FIELDS = _fields((1, "cluster_id", "string"), (2, "affiliate_id", "string"))


class AffiliateDeleteResponse(Message):
    FULL_NAME = "sidero.discovery.server.AffiliateDeleteResponse"


class ListRequest(Message):
    FULL_NAME = "sidero.discovery.server.ListRequest"
    FIELDS = _fields((1, "cluster_id", "string"))


class ListResponse(Message):
    FULL_NAME = "sidero.discovery.server.ListResponse"
    FIELDS = _fields((1, "affiliates", ServerAffiliate, "repeated"))


class WatchRequest(Message):
    FULL_NAME = "sidero.discovery.server.WatchRequest"
    FIELDS = _fields((1, "cluster_id", "string"))


class WatchResponse(Message):
    FULL_NAME = "sidero.discovery.server.WatchResponse"
    FIELDS = _fields((1, "affiliates", ServerAffiliate, "repeated"), (2, "deleted", "bool"))


def decode_affiliates_bounded(data, max_affiliates: int) -> Tuple[List[ServerAffiliate], bool]:
    """A ListResponse (or a WatchResponse's affiliates) decoded up to ``max_affiliates`` affiliates:
    (affiliates, truncated). Decoding stops at the first affiliate beyond the limit, so the cost of a hostile
    answer is bounded by the limit, not by its size; truncated is then True. Raises WireError as decode does."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("ListResponse: expected bytes, got %s" % type(data).__name__)
    affiliates: List[ServerAffiliate] = []
    for number, wire_type, value, offset in iter_fields(bytes(data)):
        if number != 1:
            continue
        if wire_type != LENGTH:
            raise WireError("ListResponse.affiliates (field 1) at byte %d has wire type %d, expected %d" % (offset, wire_type, LENGTH))
        if len(affiliates) >= max_affiliates:
            return affiliates, True
        item = ServerAffiliate()
        item._merge(value, 1)
        affiliates.append(item)
    return affiliates, False


CLIENT_MESSAGES = (ClientAffiliate, KubeSpan, IPPrefix, Endpoint, ControlPlane)
SERVER_MESSAGES = (ServerAffiliate, HelloRequest, RedirectMessage, HelloResponse, AffiliateUpdateRequest, AffiliateUpdateResponse,
                   AffiliateDeleteRequest, AffiliateDeleteResponse, ListRequest, ListResponse, WatchRequest, WatchResponse)
ALL_MESSAGES = CLIENT_MESSAGES + SERVER_MESSAGES + (Duration,)

SERVICE_NAME = "sidero.discovery.server.Cluster"
# method name -> (request class, response class, server streaming)
METHODS: Dict[str, Tuple[Any, Any, bool]] = {
    "Hello": (HelloRequest, HelloResponse, False),
    "AffiliateUpdate": (AffiliateUpdateRequest, AffiliateUpdateResponse, False),
    "AffiliateDelete": (AffiliateDeleteRequest, AffiliateDeleteResponse, False),
    "List": (ListRequest, ListResponse, False),
    "Watch": (WatchRequest, WatchResponse, True),
}


# --- IP helpers (Go's netip MarshalBinary: 4 or 16 bytes, zone-less) ----------------------------


def ip_to_bytes(value) -> bytes:
    """``1.2.3.4`` -> 4 bytes, an IPv6 address -> 16 bytes (``/len`` suffixes ignored)."""
    return ipaddress.ip_address(str(value).split("/", 1)[0].strip()).packed


def ip_from_bytes(raw: bytes) -> str:
    """4 or 16 bytes -> the address as text; raises WireError for any other length."""
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    raise WireError("an IP address is 4 or 16 bytes, got %d" % len(raw))


def prefix_to_message(value: str) -> IPPrefix:
    """``10.244.3.1/24`` -> IPPrefix(ip=10.244.3.1, bits=24): the address is kept as written, like netip.Prefix."""
    iface = ipaddress.ip_interface(str(value).strip())
    return IPPrefix(ip=iface.ip.packed, bits=iface.network.prefixlen)


def prefix_from_message(prefix: IPPrefix) -> str:
    address = ip_from_bytes(prefix.ip)
    limit = 32 if len(prefix.ip) == 4 else 128
    if prefix.bits > limit:
        raise WireError("prefix %s/%d: at most %d bits" % (address, prefix.bits, limit))
    return "%s/%d" % (address, prefix.bits)


def endpoint_to_message(value: str) -> Endpoint:
    """``1.2.3.4:51820`` or ``[2001:db8::1]:51820`` -> Endpoint."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("endpoint %r has no port" % value)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("endpoint %r: bad port" % value)
    return Endpoint(ip=ip_to_bytes(host), port=int(port))


def endpoint_from_message(endpoint: Endpoint) -> str:
    address = ip_from_bytes(endpoint.ip)
    if not 0 < endpoint.port < 65536:
        raise WireError("endpoint %s: port %d is out of range" % (address, endpoint.port))
    return ("[%s]:%d" if ":" in address else "%s:%d") % (address, endpoint.port)
