# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Kernel WireGuard transport: generic netlink (family ``wireguard``) through pyroute2.

No Ansible imports. pyroute2 is imported lazily so that this file can be imported (and its pure
message-building and dump-parsing helpers unit-tested) on a machine without pyroute2 or without the
WireGuard kernel module.

Why this does not use ``pyroute2.WireGuard.set()``: Debian 12 ships pyroute2 0.7.2, whose WGPEER_F_*
constants are bit *indices* (0, 1, 2) rather than the kernel's masks (1, 2, 4), so its ``set()`` sends
REPLACE_ALLOWEDIPS where it means UPDATE_ONLY and REPLACE_PEERS where it means REMOVE_ME. Here the
messages are built with pyroute2's ``wgmsg`` class (its encoding is the same in 0.7.2 and 0.9.x) and the
kernel's real flag values, and are sent with a plain ``GenericNetlinkSocket``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import subprocess
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.wgtypes import (
    DeviceState,
    DeviceUpdate,
    PeerState,
    PeerUpdate,
    WireGuardError,
    format_endpoint,
    key_to_b64,
    key_to_bytes,
    normalize_cidr,
    parse_endpoint,
)

# uapi/linux/wireguard.h (the kernel's values, not pyroute2 0.7.2's)
WG_GENL_NAME = "wireguard"
WG_GENL_VERSION = 1
WG_CMD_GET_DEVICE = 0
WG_CMD_SET_DEVICE = 1
WGDEVICE_F_REPLACE_PEERS = 1 << 0
WGPEER_F_REMOVE_ME = 1 << 0
WGPEER_F_REPLACE_ALLOWEDIPS = 1 << 1
WGPEER_F_UPDATE_ONLY = 1 << 2
WG_KEY_LEN = 32

# linux/netlink.h
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300

# Budget for one SET_DEVICE message (netlink header included). Attribute lengths are 16-bit, so the
# WGDEVICE_A_PEERS nest of one message must stay below 64 KiB; 32 KiB leaves ample room.
MAX_MESSAGE_BYTES = 32768
# How often a dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried.
DUMP_RETRIES = 5

PYROUTE2_MISSING = (
    "the Python module pyroute2 is required for kernel WireGuard: install the Debian package "
    "python3-pyroute2 (apt-get install python3-pyroute2)"
)

_ZERO_KEY = bytes(WG_KEY_LEN)

# ---------------------------------------------------------------------------------------------------
# Pure helpers: no pyroute2, no kernel. Attribute lists use pyroute2's nla notation
# ([name, value] pairs, nested lists as {'attrs': [...]}), so they can be fed to ``wgmsg`` as they are.
# ---------------------------------------------------------------------------------------------------


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _nla_size(payload: int) -> int:
    return _align4(4 + payload)


_NLMSG_GENL_HEADER = 16 + 4
_KEY_NLA = _nla_size(WG_KEY_LEN)
_U32_NLA = _nla_size(4)
_U16_NLA = _nla_size(2)
_NEST_HEADER = 4
_ENDPOINT_NLA = {4: _nla_size(16), 6: _nla_size(28)}  # sockaddr_in, sockaddr_in6
_ALLOWEDIP_NLA = {4: _NEST_HEADER + _nla_size(2) + _nla_size(4) + _nla_size(1), 6: _NEST_HEADER + _nla_size(2) + _nla_size(16) + _nla_size(1)}


def _b64_key(key: str, what: str) -> str:
    """Validate a base64 key and return it in canonical form (what pyroute2's key NLAs expect)."""
    try:
        return key_to_b64(key_to_bytes(key))
    except ValueError as e:
        raise ValueError("%s: %s" % (what, e))


def allowed_ip_attr(cidr: str) -> Dict[str, Any]:
    """One WGPEER_A_ALLOWEDIPS entry for a CIDR (host bits are cleared, as the kernel would)."""
    net = ipaddress.ip_network(str(cidr).strip(), strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen],
        ]
    }


def endpoint_attr_value(endpoint: str) -> Dict[str, Any]:
    """The value of a WGPEER_A_ENDPOINT attribute; pyroute2 picks sockaddr_in or sockaddr_in6 from 'addr'."""
    host, port = parse_endpoint(endpoint)
    if "%" in host:
        raise ValueError("endpoint %r: scoped IPv6 addresses are not supported" % endpoint)
    return {"addr": host, "port": port}


def _int_in_range(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError("%s must be an integer %d-%d, got %r" % (what, low, high, value))
    return value


def peer_attr_chunks(peer: PeerUpdate, max_chunk_bytes: int = MAX_MESSAGE_BYTES - 64) -> List[Tuple[List[list], int]]:
    """Translate one PeerUpdate into WGDEVICE_A_PEERS entries: a list of (attrs, encoded size).

    The first chunk carries every attribute; when the allowed IPs do not fit into ``max_chunk_bytes`` the
    rest follow in continuation chunks with the public key, the allowed IPs and only the UPDATE_ONLY
    flag (REPLACE_ALLOWEDIPS there would drop what the earlier chunks added), as wireguard-tools does.
    """
    public_key = _b64_key(peer.public_key, "peer public key")
    key_attr = ["WGPEER_A_PUBLIC_KEY", public_key]
    base = _NEST_HEADER + _KEY_NLA
    if peer.remove:
        return [([key_attr, ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]], base + _U32_NLA)]

    attrs: List[list] = [key_attr]
    size = base
    flags = 0
    if peer.update_only:
        flags |= WGPEER_F_UPDATE_ONLY
    if peer.allowed_ips is not None:
        flags |= WGPEER_F_REPLACE_ALLOWEDIPS
    if flags:
        attrs.append(["WGPEER_A_FLAGS", flags])
        size += _U32_NLA
    if peer.preshared_key is not None:
        # "" clears the preshared key (the kernel takes an all-zero key as "none").
        psk = key_to_b64(_ZERO_KEY) if peer.preshared_key == "" else _b64_key(peer.preshared_key, "preshared key")
        attrs.append(["WGPEER_A_PRESHARED_KEY", psk])
        size += _KEY_NLA
    if peer.endpoint is not None:
        value = endpoint_attr_value(peer.endpoint)
        attrs.append(["WGPEER_A_ENDPOINT", value])
        size += _ENDPOINT_NLA[6 if ":" in value["addr"] else 4]
    if peer.persistent_keepalive is not None:
        attrs.append(["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", _int_in_range(peer.persistent_keepalive, 0, 65535, "persistent_keepalive")])
        size += _U16_NLA
    if isinstance(peer.allowed_ips, (str, bytes)):
        raise ValueError("allowed_ips must be a list of CIDRs, not a string")
    entries = []
    for cidr in peer.allowed_ips or []:
        try:
            entry = allowed_ip_attr(cidr)
        except ValueError:
            raise ValueError("allowed IP %r of peer %s is not an address or CIDR" % (cidr, public_key))
        entries.append((entry, _ALLOWEDIP_NLA[6 if entry["attrs"][0][1] == socket.AF_INET6 else 4]))

    chunks: List[Tuple[List[list], int]] = []
    if size + _NEST_HEADER + _ALLOWEDIP_NLA[6] > max_chunk_bytes:
        raise ValueError("message budget of %d bytes is too small for one peer" % max_chunk_bytes)
    current: List[Dict[str, Any]] = []
    for entry, entry_size in entries:
        if current and size + _NEST_HEADER + entry_size > max_chunk_bytes:
            chunks.append((attrs + [["WGPEER_A_ALLOWEDIPS", current]], size + _NEST_HEADER))
            attrs = [key_attr]
            size = base
            if peer.update_only:
                attrs.append(["WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY])
                size += _U32_NLA
            current = []
        current.append(entry)
        size += entry_size
    if current:
        chunks.append((attrs + [["WGPEER_A_ALLOWEDIPS", current]], size + _NEST_HEADER))
    else:
        chunks.append((attrs, size))
    return chunks


def set_device_batches(ifname: str, update: DeviceUpdate, max_message_bytes: int = MAX_MESSAGE_BYTES) -> List[List[list]]:
    """Split a DeviceUpdate into the attribute lists of one or more WG_CMD_SET_DEVICE messages.

    Device attributes go into the first message only; peers are packed in order, a peer whose allowed
    IPs overflow a message continues in the next ones. Returns [] for an empty update.
    """
    if update.is_empty():
        return []
    name = ["WGDEVICE_A_IFNAME", ifname]
    fresh = _NLMSG_GENL_HEADER + _nla_size(len(ifname.encode()) + 1) + _NEST_HEADER
    first: List[list] = [name]
    size = fresh
    if update.private_key is not None:
        first.append(["WGDEVICE_A_PRIVATE_KEY", _b64_key(update.private_key, "private key")])
        size += _KEY_NLA
    if update.listen_port is not None:
        first.append(["WGDEVICE_A_LISTEN_PORT", _int_in_range(update.listen_port, 0, 65535, "listen_port")])
        size += _U16_NLA
    if update.fwmark is not None:
        first.append(["WGDEVICE_A_FWMARK", _int_in_range(update.fwmark, 0, 0xFFFFFFFF, "fwmark")])
        size += _U32_NLA

    batches: List[List[list]] = []
    attrs: List[list] = first
    peers: List[Dict[str, Any]] = []
    for peer in update.peers:
        for chunk, chunk_size in peer_attr_chunks(peer, max_message_bytes - fresh):
            if peers and size + chunk_size > max_message_bytes:
                batches.append(attrs + [["WGDEVICE_A_PEERS", peers]])
                attrs, peers, size = [name], [], fresh
            peers.append({"attrs": chunk})
            size += chunk_size
    batches.append(attrs + ([["WGDEVICE_A_PEERS", peers]] if peers else []))
    return batches


def get_device_attrs(ifname: str) -> List[list]:
    """Attributes of the WG_CMD_GET_DEVICE dump request."""
    return [["WGDEVICE_A_IFNAME", ifname]]


def _get_attr(obj: Any, name: str) -> Any:
    """get_attr() on a decoded pyroute2 message or a plain {'attrs': [...]} dict (as in tests)."""
    if hasattr(obj, "get_attr"):
        return obj.get_attr(name)
    for item in obj.get("attrs", []):
        if item[0] == name:
            return item[1]
    return None


def _key_value(value: Any) -> Optional[str]:
    """A key attribute as pyroute2 decodes it (base64 bytes or str, or raw 32 bytes) -> base64 str or None if zero."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("value", value.get("key"))
    if isinstance(value, (bytes, bytearray)) and len(value) == WG_KEY_LEN:
        raw = bytes(value)
    else:
        try:
            text = value.decode("ascii") if isinstance(value, (bytes, bytearray)) else str(value)
            raw = key_to_bytes(text)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise WireGuardError("malformed key attribute from the kernel (%d bytes): %s" % (len(value) if hasattr(value, "__len__") else 0, exc))
    return None if raw == _ZERO_KEY else key_to_b64(raw)


def _allowed_ip_value(entry: Any) -> str:
    family = _get_attr(entry, "WGALLOWEDIP_A_FAMILY")
    addr = _get_attr(entry, "WGALLOWEDIP_A_IPADDR")
    cidr = _get_attr(entry, "WGALLOWEDIP_A_CIDR_MASK")
    if isinstance(addr, str):  # pyroute2's 'hex' NLA decodes to "fd:00:..."
        addr = bytes.fromhex(addr.replace(":", ""))
    length = 4 if family == socket.AF_INET else 16
    if family not in (socket.AF_INET, socket.AF_INET6) or addr is None or cidr is None or len(addr) < length:
        raise WireGuardError("unexpected allowed IP in the kernel's answer: %r" % (entry,))
    return normalize_cidr("%s/%d" % (ipaddress.ip_address(bytes(addr[:length])), cidr))


def _endpoint_value(value: Any) -> Optional[str]:
    if not value or not value.get("addr"):
        return None
    addr = value["addr"]
    if isinstance(addr, (bytes, bytearray)):
        addr = str(ipaddress.ip_address(bytes(addr)))
    if not value.get("port") and ipaddress.ip_address(addr).is_unspecified:
        return None
    return format_endpoint(addr, int(value["port"]))


def _handshake_value(value: Any) -> float:
    if not value:
        return 0.0
    return float(value.get("tv_sec", 0)) + float(value.get("tv_nsec", 0)) / 1e9


def parse_device_dump(messages: Iterable[Any]) -> DeviceState:
    """Merge the messages of one WG_CMD_GET_DEVICE dump into a DeviceState.

    The kernel puts the device attributes into the first message only and may split both the peer list
    and one peer's allowed IPs over several messages (a continued peer repeats only its public key and
    carries more allowed IPs): peers are merged by public key, scalar attributes taken where present.
    """
    state = DeviceState()
    allowed: Dict[str, List[str]] = {}
    for msg in messages:
        if _get_attr(msg, "WGDEVICE_A_LISTEN_PORT") is not None:
            state.listen_port = int(_get_attr(msg, "WGDEVICE_A_LISTEN_PORT"))
        if _get_attr(msg, "WGDEVICE_A_FWMARK") is not None:
            state.fwmark = int(_get_attr(msg, "WGDEVICE_A_FWMARK"))
        if _get_attr(msg, "WGDEVICE_A_PRIVATE_KEY") is not None:
            state.private_key = _key_value(_get_attr(msg, "WGDEVICE_A_PRIVATE_KEY"))
        if _get_attr(msg, "WGDEVICE_A_PUBLIC_KEY") is not None:
            state.public_key = _key_value(_get_attr(msg, "WGDEVICE_A_PUBLIC_KEY"))
        for peer in _get_attr(msg, "WGDEVICE_A_PEERS") or []:
            public_key = _key_value(_get_attr(peer, "WGPEER_A_PUBLIC_KEY"))
            if public_key is None:
                raise WireGuardError("a peer in the kernel's answer has no public key")
            ps = state.peers.get(public_key)
            if ps is None:
                ps = state.peers[public_key] = PeerState(public_key=public_key)
                allowed[public_key] = []
            value = _get_attr(peer, "WGPEER_A_ENDPOINT")
            if value is not None:
                ps.endpoint = _endpoint_value(value)
            value = _get_attr(peer, "WGPEER_A_PRESHARED_KEY")
            if value is not None:
                ps.preshared_key = _key_value(value)
            value = _get_attr(peer, "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if value is not None:
                ps.persistent_keepalive = int(value)
            value = _get_attr(peer, "WGPEER_A_LAST_HANDSHAKE_TIME")
            if value is not None:
                ps.last_handshake = _handshake_value(value)
            value = _get_attr(peer, "WGPEER_A_RX_BYTES")
            if value is not None:
                ps.rx_bytes = int(value)
            value = _get_attr(peer, "WGPEER_A_TX_BYTES")
            if value is not None:
                ps.tx_bytes = int(value)
            for entry in _get_attr(peer, "WGPEER_A_ALLOWEDIPS") or []:
                allowed[public_key].append(_allowed_ip_value(entry))
    for public_key, cidrs in allowed.items():
        state.peers[public_key].allowed_ips = sorted(set(cidrs))
    return state


# ---------------------------------------------------------------------------------------------------
# Kernel side (pyroute2, imported lazily)
# ---------------------------------------------------------------------------------------------------


def _import_wgmsg():
    try:
        from pyroute2.netlink.generic.wireguard import wgmsg
    except ImportError as e:
        raise WireGuardError("%s (%s)" % (PYROUTE2_MISSING, e))
    return wgmsg


def make_message(cmd: int, attrs: List[list]):
    """A pyroute2 ``wgmsg`` for a command and an attribute list (not yet encoded).

    pyroute2's encoder replaces the entries of ``attrs`` (and of nested lists) in place: build a fresh list
    for every message, as ``KernelWireGuard.apply()`` does.
    """
    wgmsg = _import_wgmsg()
    msg = wgmsg()
    msg["cmd"] = cmd
    msg["version"] = WG_GENL_VERSION
    msg["attrs"] = attrs
    return msg


def _netlink_error_code(exc: BaseException) -> Optional[int]:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, OSError):
        return exc.errno
    return None


def _describe(exc: BaseException) -> str:
    code = _netlink_error_code(exc)
    if code is not None and code > 0:
        return "[Errno %d] %s" % (code, os.strerror(code))
    return str(exc) or type(exc).__name__


def _genl_socket():
    """A generic netlink socket bound to the wireguard family (works with pyroute2 0.7.2 and 0.9.x)."""
    wgmsg = _import_wgmsg()
    try:
        from pyroute2.netlink.generic import GenericNetlinkSocket
    except ImportError as e:
        raise WireGuardError("%s (%s)" % (PYROUTE2_MISSING, e))
    sock = GenericNetlinkSocket()
    # pyroute2 logs an unknown family at ERROR level on the root logger (stderr noise in modules): we raise instead
    for target in (sock, getattr(sock, "asyncore", None)):
        if target is not None:
            target.module_err_level = "debug"
    try:
        sock.bind(WG_GENL_NAME, wgmsg)
    except Exception as e:  # NetlinkError (ENOENT) when the family is unknown
        sock.close()
        if _netlink_error_code(e) == errno.ENOENT:
            raise WireGuardError("the kernel has no WireGuard support (generic netlink family 'wireguard' not found; is the wireguard module loaded?)")
        raise WireGuardError("cannot open the WireGuard netlink interface: %s" % _describe(e))
    return sock


def kernel_wireguard_available() -> bool:
    """True when this kernel can create WireGuard links (module loaded, loadable, or built in)."""
    if os.path.isdir("/sys/module/wireguard"):
        return True
    modprobe = shutil.which("modprobe") or next((p for p in ("/usr/sbin/modprobe", "/sbin/modprobe") if os.path.exists(p)), None)
    if modprobe:
        try:
            subprocess.run([modprobe, "-q", "wireguard"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        if os.path.isdir("/sys/module/wireguard"):
            return True
    try:
        sock = _genl_socket()  # resolving the family also makes the kernel try to autoload the module
    except WireGuardError:
        return False
    sock.close()
    return True


def _link_kind(ipr, index: int) -> Optional[str]:
    links = ipr.get_links(index)
    if not links:
        return None
    info = links[0].get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def create_link(ifname: str) -> bool:
    """Create the WireGuard link ``ifname`` unless it exists; True if it was created.

    An existing link of another kind is an error.
    """
    try:
        from pyroute2 import IPRoute
    except ImportError as e:
        raise WireGuardError("%s (%s)" % (PYROUTE2_MISSING, e))
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            try:
                ipr.link("add", ifname=ifname, kind="wireguard")
                return True
            except Exception as e:
                code = _netlink_error_code(e)
                if code != errno.EEXIST:
                    if code in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL):
                        raise WireGuardError("cannot create link %s of kind wireguard: the kernel has no WireGuard support (%s)" % (ifname, _describe(e)))
                    raise WireGuardError("cannot create link %s of kind wireguard: %s" % (ifname, _describe(e)))
                found = ipr.link_lookup(ifname=ifname)
        kind = _link_kind(ipr, found[0]) if found else None
        if kind != "wireguard":
            raise WireGuardError("link %s exists but is of kind %r, not wireguard" % (ifname, kind))
        return False
    finally:
        ipr.close()


class KernelWireGuard:
    """One kernel WireGuard device, configured over generic netlink."""

    def __init__(self, ifname: str, max_message_bytes: int = MAX_MESSAGE_BYTES):
        if not ifname or len(ifname.encode()) > 15 or "/" in ifname or any(c.isspace() for c in ifname):
            raise WireGuardError("invalid interface name %r" % (ifname,))
        self.ifname = ifname
        self.max_message_bytes = max_message_bytes
        self._sock = _genl_socket()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> KernelWireGuard:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _request(self, msg, flags: int) -> List[Any]:
        if self._sock is None:
            raise WireGuardError("the WireGuard netlink socket is closed")
        try:
            return list(self._sock.nlm_request(msg, msg_type=self._sock.prid, msg_flags=flags))
        except Exception as e:
            code = _netlink_error_code(e)
            if code == errno.ENODEV:
                raise WireGuardError("no WireGuard device %s" % self.ifname)
            if code is None:
                raise
            if code == errno.EOPNOTSUPP:
                raise WireGuardError("%s is not a WireGuard device" % self.ifname)
            raise WireGuardError("WireGuard netlink request on %s failed: %s" % (self.ifname, _describe(e)))

    def read(self) -> DeviceState:
        """Dump the device (merging a multi-message dump); retried when a concurrent change interrupts it."""
        for _attempt in range(DUMP_RETRIES):
            msgs = self._request(make_message(WG_CMD_GET_DEVICE, get_device_attrs(self.ifname)), NLM_F_REQUEST | NLM_F_DUMP)
            if not any(m["header"]["flags"] & NLM_F_DUMP_INTR for m in msgs):
                return parse_device_dump(msgs)
        raise WireGuardError("the dump of %s kept being interrupted by concurrent changes" % self.ifname)

    def apply(self, update: DeviceUpdate) -> None:
        """Send a DeviceUpdate (validated completely before anything is sent)."""
        try:
            batches = set_device_batches(self.ifname, update, self.max_message_bytes)
        except ValueError as e:
            raise WireGuardError("invalid WireGuard update for %s: %s" % (self.ifname, e))
        for attrs in batches:
            self._request(make_message(WG_CMD_SET_DEVICE, attrs), NLM_F_REQUEST | NLM_F_ACK)
