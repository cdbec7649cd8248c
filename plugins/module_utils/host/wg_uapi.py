# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Userspace WireGuard transport: the cross-platform UAPI over wireguard-go's unix socket.

Protocol (wireguard.com/xplatform): ``get=1`` or ``set=1`` followed by ``key=value`` lines and an empty
line; the answer ends with ``errno=N`` and an empty line. Keys are lowercase hex on the wire.
"""

from __future__ import annotations

import binascii
import os
import socket
import time
from functools import lru_cache
from typing import List

from ..core.wgtypes import (
    DeviceState,
    DeviceUpdate,
    PeerState,
    WireGuardError,
    key_to_b64,
    key_to_bytes,
    normalize_cidr,
    normalize_endpoint,
)
from .systemd import WIREGUARD_GO_UNIT, systemctl

DEFAULT_SOCKET_DIR = "/var/run/wireguard"
ZERO_KEY_HEX = "0" * 64
# Keys of a get=1 answer that an error may name (an unknown key is named "(unknown)": it is not ours to quote).
_KNOWN_KEYS = frozenset((
    "errno", "private_key", "listen_port", "fwmark", "public_key", "preshared_key", "endpoint", "allowed_ip",
    "persistent_keepalive_interval", "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes",
    "tx_bytes", "protocol_version",
))


# A device read re-parses every peer's allowed IPs and endpoint, the same strings in every sample of an agent tick
# (six reads per tick): memoized, a 1,000-peer read after the first costs about a seventh (bench/notes/agent.md).
# Only here, where the values are strings split from the answer; a malformed one raises (never cached) as before.
# Sizes: 8192 allowed IPs (about 2,700 peers with 3 each) and 4096 endpoints; past that, the LRU misses, as before.
@lru_cache(maxsize=8192)
def _read_cidr(value: str) -> str:
    return normalize_cidr(value)


@lru_cache(maxsize=4096)
def _read_endpoint(value: str) -> str:
    return normalize_endpoint(value)


def socket_path(ifname: str, socket_dir: str = DEFAULT_SOCKET_DIR) -> str:
    return os.path.join(socket_dir, ifname + ".sock")


def _hex(key_b64: str) -> str:
    return binascii.hexlify(key_to_bytes(key_b64)).decode("ascii")


def _b64(key_hex: str) -> str:
    try:
        raw = binascii.unhexlify(key_hex)
    except (binascii.Error, ValueError):
        raise WireGuardError("device returned a malformed key")
    if len(raw) != 32:
        raise WireGuardError("device returned a key of %d bytes" % len(raw))
    return key_to_b64(raw)


def parse_get_response(text: str) -> DeviceState:
    """Parse the answer to ``get=1`` into a DeviceState; a malformed answer is a WireGuardError naming the line."""
    position = [0, ""]  # line number and key being parsed, for the error (never the value: it may be key hex)
    try:
        return _parse_get_response(text, position)
    except (ValueError, TypeError):
        raise WireGuardError("malformed UAPI answer from wireguard-go: line %d, key %s" % (position[0], position[1]))


def _parse_get_response(text: str, position: list) -> DeviceState:
    state = DeviceState()
    peer = None
    errno_value = None
    hs_sec = 0
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        key, sep, value = line.partition("=")
        position[0] = number
        position[1] = key if key in _KNOWN_KEYS else "(unknown)"
        if not sep:
            # The line is not quoted: a garbled private_key or preshared_key line would be key hex.
            raise WireGuardError("malformed UAPI answer from wireguard-go: line %d has no '='" % number)
        if key == "errno":
            errno_value = int(value)
            continue
        if key == "private_key":
            if value != ZERO_KEY_HEX:
                state.private_key = _b64(value)
        elif key == "listen_port":
            state.listen_port = int(value)
        elif key == "fwmark":
            state.fwmark = int(value)
        elif key == "public_key":
            peer = PeerState(public_key=_b64(value))
            state.peers[peer.public_key] = peer
            hs_sec = 0
        elif peer is None:
            continue  # unknown device-level key: ignore for forward compatibility
        elif key == "preshared_key":
            peer.preshared_key = None if value == ZERO_KEY_HEX else _b64(value)
        elif key == "endpoint":
            peer.endpoint = _read_endpoint(value)
        elif key == "allowed_ip":
            peer.allowed_ips.append(_read_cidr(value))
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
        elif key == "last_handshake_time_sec":
            hs_sec = int(value)
            peer.last_handshake = float(hs_sec)
        elif key == "last_handshake_time_nsec":
            if hs_sec:
                peer.last_handshake = hs_sec + int(value) / 1e9
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
    if errno_value is None:
        raise WireGuardError("UAPI answer has no errno line (truncated)")
    if errno_value != 0:
        raise WireGuardError("UAPI get failed with errno %d" % errno_value)
    for p in state.peers.values():
        p.allowed_ips.sort()
    if state.private_key:
        from ..core.keys import public_key_for
        state.public_key = public_key_for(state.private_key)
    return state


def build_set_request(update: DeviceUpdate) -> str:
    """Encode a DeviceUpdate as a UAPI ``set=1`` request."""
    lines: List[str] = ["set=1"]
    if update.private_key is not None:
        lines.append("private_key=%s" % _hex(update.private_key))
    if update.listen_port is not None:
        lines.append("listen_port=%d" % update.listen_port)
    if update.fwmark is not None:
        lines.append("fwmark=%d" % update.fwmark)
    for pu in update.peers:
        lines.append("public_key=%s" % _hex(pu.public_key))
        if pu.remove:
            lines.append("remove=true")
            continue
        if pu.update_only:
            lines.append("update_only=true")
        if pu.preshared_key is not None:
            lines.append("preshared_key=%s" % _hex(pu.preshared_key))
        if pu.endpoint is not None:
            lines.append("endpoint=%s" % normalize_endpoint(pu.endpoint))
        if pu.persistent_keepalive is not None:
            lines.append("persistent_keepalive_interval=%d" % pu.persistent_keepalive)
        if pu.allowed_ips is not None:
            lines.append("replace_allowed_ips=true")
            for cidr in pu.allowed_ips:
                lines.append("allowed_ip=%s" % normalize_cidr(cidr))
    return "\n".join(lines) + "\n\n"


class UapiWireGuard:
    """A wireguard-go device reached through its UAPI socket."""

    def __init__(self, ifname: str, socket_dir: str = DEFAULT_SOCKET_DIR, timeout: float = 5.0):
        self.ifname = ifname
        self.path = socket_path(ifname, socket_dir)
        self.timeout = timeout

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def _call(self, request: str) -> str:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise WireGuardError("cannot reach wireguard-go for %s at %s: %s" % (self.ifname, self.path, exc.strerror or exc))
            sock.sendall(request.encode("ascii"))
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"errno=" in data or (chunks and b"errno=" in b"".join(chunks[-2:])):
                    joined = b"".join(chunks)
                    idx = joined.rfind(b"errno=")
                    if joined.find(b"\n\n", idx) != -1:
                        break
            return b"".join(chunks).decode("ascii", "replace")
        except socket.timeout:
            raise WireGuardError("wireguard-go for %s did not answer within %.0f s" % (self.ifname, self.timeout))
        except OSError as exc:  # reset or closed mid-answer (wireguard-go starting or stopping): callers retry or report
            raise WireGuardError("wireguard-go for %s at %s broke off its answer: %s" % (self.ifname, self.path, exc.strerror or exc))
        finally:
            sock.close()

    def read(self) -> DeviceState:
        return parse_get_response(self._call("get=1\n\n"))

    def apply(self, update: DeviceUpdate) -> None:
        if update.is_empty():
            return
        answer = self._call(build_set_request(update)).strip()
        if answer != "errno=0":
            raise WireGuardError("wireguard-go refused the configuration of %s: %s" % (self.ifname, answer[:200]))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def ensure_running(ifname: str, timeout: float = 15.0, unit: str = WIREGUARD_GO_UNIT) -> bool:
    """Start wireguard-go (through its systemd ``unit``) unless its UAPI socket answers, and wait until it does.
    True if started; WireGuardError naming the unit when it cannot be started or does not answer in time."""
    dev = UapiWireGuard(ifname)
    if dev.exists():
        try:
            dev.read()
            return False
        except WireGuardError:
            pass  # stale socket: restart below
    res = systemctl("restart", unit)
    if res.returncode != 0:
        raise WireGuardError("cannot start %s: %s" % (unit, res.stdout.strip()[-500:]))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if dev.exists():
            try:
                dev.read()
                return True
            except WireGuardError:
                pass
        time.sleep(0.1)
    raise WireGuardError("wireguard-go did not create %s within %.0f s (journalctl -u %s)" % (dev.path, timeout, unit))


def stop(unit: str = WIREGUARD_GO_UNIT) -> None:
    """Stop wireguard-go (its systemd unit); the interface goes with it."""
    systemctl("stop", unit)
