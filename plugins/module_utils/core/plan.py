# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Plan WireGuard device changes: desired peers vs. what the device reports. Pure logic.

Only what differs is sent to the device, one peer at a time, so unchanged peers keep their handshake,
session and endpoint. An endpoint is set for a new peer, for a peer without one, and for a peer whose
current endpoint is not among its candidates while it has no recent handshake; an endpoint WireGuard
learned from authenticated traffic (roaming) is left alone while the peer is up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import List, Optional, Tuple

from ..base.collector import collector_off
from .settings import PERSISTENT_KEEPALIVE
from .wgtypes import DeviceState, DeviceUpdate, PeerState, PeerUpdate

# Talos: a peer without a handshake for this long is down (180 s + 5 s + 90 s).
PEER_DOWN_INTERVAL = 275.0
_first = itemgetter(0)


@dataclass
class DesiredPeer:
    public_key: str
    allowed_ips: List[str]
    endpoints: List[str] = field(default_factory=list)
    persistent_keepalive: int = PERSISTENT_KEEPALIVE
    preshared_key: Optional[str] = field(default=None, repr=False)  # never in a repr
    label: str = ""


@dataclass
class DesiredDevice:
    private_key: str
    listen_port: int
    fwmark: int
    peers: List[DesiredPeer] = field(default_factory=list)

    def __repr__(self):
        return "DesiredDevice(listen_port=%r, fwmark=%r, peers=%d)" % (self.listen_port, self.fwmark, len(self.peers))


@collector_off
def plan_device(desired: DesiredDevice, current: Optional[DeviceState], now: float) -> Tuple[DeviceUpdate, List[str]]:
    """Return the update that makes ``current`` match ``desired`` and a list of human-readable changes."""
    current = current or DeviceState()
    update = DeviceUpdate()
    changes = []
    if current.private_key != desired.private_key:
        update.private_key = desired.private_key
        changes.append("set private key" if current.private_key is None else "replace private key")
    if current.listen_port != desired.listen_port:
        update.listen_port = desired.listen_port
        changes.append("listen port %s -> %s" % (current.listen_port or "unset", desired.listen_port))
    if current.fwmark != desired.fwmark:
        update.fwmark = desired.fwmark
        changes.append("fwmark %#x -> %#x" % (current.fwmark, desired.fwmark))

    wanted = {p.public_key: p for p in desired.peers}
    peer_updates = update.peers
    have_peers = current.peers
    for key in sorted(have_peers):
        if key not in wanted:
            peer_updates.append(PeerUpdate(public_key=key, remove=True))
            changes.append("remove peer %s" % key)
    for key in sorted(wanted):
        want = wanted[key]
        allowed = sorted(want.allowed_ips)
        have = have_peers.get(key)
        if have is None:
            peer_updates.append(PeerUpdate(
                public_key=key,
                endpoint=want.endpoints[0] if want.endpoints else None,
                allowed_ips=allowed,
                persistent_keepalive=want.persistent_keepalive,
                preshared_key=want.preshared_key,
            ))
            changes.append("add peer %s%s" % (want.label + " " if want.label else "", key))
            continue
        # the usual re-run: nothing differs, and no update object is made for the peer
        what = None
        have_allowed = have.allowed_ips
        if have_allowed != allowed and sorted(have_allowed) != allowed:  # a sorted list is its own sort
            what = ["allowed IPs %s -> %s" % (",".join(sorted(have_allowed)) or "none", ",".join(allowed))]
        if have.persistent_keepalive != want.persistent_keepalive:
            what = (what or []) + ["keepalive %s -> %s" % (have.persistent_keepalive, want.persistent_keepalive)]
        if (have.preshared_key or None) != (want.preshared_key or None):
            what = (what or []) + ["preshared key"]
        endpoint = pick_configured_endpoint(have.endpoint, have.last_handshake, want.endpoints, now)
        if endpoint is not None:
            what = (what or []) + ["endpoint %s -> %s" % (have.endpoint or "none", endpoint)]
        if what:
            pu = PeerUpdate(public_key=key, update_only=True)
            if sorted(have_allowed) != allowed:
                pu.allowed_ips = allowed
            if have.persistent_keepalive != want.persistent_keepalive:
                pu.persistent_keepalive = want.persistent_keepalive
            if (have.preshared_key or None) != (want.preshared_key or None):
                pu.preshared_key = want.preshared_key or ("A" * 43 + "=")
            if endpoint is not None:
                pu.endpoint = endpoint
            peer_updates.append(pu)
            changes.append("update peer %s%s: %s" % (want.label + " " if want.label else "", key, "; ".join(what)))
    return update, changes


def pick_configured_endpoint(current: Optional[str], last_handshake: float, candidates: List[str], now: float) -> Optional[str]:
    """Endpoint to set on an existing peer, or None to leave it as it is."""
    if not candidates:
        return None
    if not current:
        return candidates[0]
    if current in candidates:
        return None
    recent = last_handshake > 0 and (now - last_handshake) < PEER_DOWN_INTERVAL
    if recent:
        return None  # roamed, and working: keep what WireGuard learned
    return candidates[0]


@collector_off
def render_device(ifname: str, link: dict, device: Optional[DeviceState], labels: dict) -> str:
    """A wg-quick-like text of the interface for --diff, without any key material but public keys."""
    if device is None and not link:
        return ""
    lines = ["[Interface] %s" % ifname]
    if link:
        for key in ("addresses", "mtu", "up"):
            if key in link:
                value = link[key]
                lines.append("%s = %s" % (key, ", ".join(value) if isinstance(value, list) else value))
    if device is not None:
        lines.append("public_key = %s" % (device.public_key or "unset"))
        lines.append("listen_port = %s" % device.listen_port)
        lines.append("fwmark = %#x" % device.fwmark)
        peers = device.peers
        # one string per peer: its blank line and six lines (what the join of each line would give)
        lines.extend(
            "\n[Peer] %s\npublic_key = %s\npreshared_key = %s\nallowed_ips = %s\nendpoint = %s\npersistent_keepalive = %s" % (
                labels.get(key) or "", key, "(set)" if peer.preshared_key else "(none)", ", ".join(sorted(peer.allowed_ips)),
                peer.endpoint or "none", peer.persistent_keepalive)
            for key, peer in sorted(peers.items(), key=_first))
    return "\n".join(lines) + "\n"


@collector_off
def expected_device(desired: DesiredDevice, current: Optional[DeviceState], public_key: str, now: float) -> DeviceState:
    """What the device will report after the plan is applied (for --diff 'after')."""
    current = current or DeviceState()
    state = DeviceState(public_key=public_key, listen_port=desired.listen_port, fwmark=desired.fwmark)
    for want in desired.peers:
        have = current.peers.get(want.public_key)
        endpoint = want.endpoints[0] if want.endpoints else None
        if have is not None:
            picked = pick_configured_endpoint(have.endpoint, have.last_handshake, want.endpoints, now)
            endpoint = picked if picked is not None else have.endpoint
        state.peers[want.public_key] = PeerState(
            public_key=want.public_key,
            endpoint=endpoint,
            allowed_ips=sorted(want.allowed_ips),
            persistent_keepalive=want.persistent_keepalive,
            preshared_key="(set)" if want.preshared_key else None,
        )
    return state
