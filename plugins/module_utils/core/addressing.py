# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Cluster-derived IPv6 ULA addressing, as Talos derives it. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Iterable, Optional, Tuple

PURPOSE_UNKNOWN = 0
PURPOSE_BOOTSTRAP = 1
PURPOSE_KUBESPAN = 2
PURPOSE_SIDEROLINK = 3
PURPOSE_VIRTUAL_SIDEROLINK = 4

_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def ula_prefix(cluster_id: str, purpose: int = PURPOSE_KUBESPAN) -> ipaddress.IPv6Network:
    """Return the /64 ULA prefix for a cluster ID and purpose.

    sha256 of the cluster ID; bytes 0..15 of the address are the last 16 bytes of the hash, then
    byte 0 becomes 0xfd and byte 7 the purpose, and the prefix is cut at /64.
    """
    if not cluster_id:
        raise ValueError("the cluster ID is empty: generate one with the kubespan.mesh.gen_secrets playbook")
    if not 0 <= int(purpose) <= 255:
        raise ValueError("ULA purpose must be 0-255, got %r" % (purpose,))
    digest = hashlib.sha256(cluster_id.encode("utf-8")).digest()
    raw = bytearray(digest[-16:])
    raw[0] = 0xFD
    raw[7] = int(purpose)
    for i in range(8, 16):
        raw[i] = 0
    return ipaddress.IPv6Network((bytes(raw), 64))


def parse_mac(mac: str) -> bytes:
    if not isinstance(mac, str) or not _MAC_RE.match(mac):
        raise ValueError("not a 48-bit MAC address in aa:bb:cc:dd:ee:ff form: %r" % (mac,))
    return bytes(int(part, 16) for part in mac.split(":"))


def eui64_address(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    """Modified EUI-64: the MAC split by ff:fe with the universal/local bit flipped."""
    m = parse_mac(mac)
    raw = bytearray(prefix.network_address.packed)
    raw[8:11] = m[0:3]
    raw[8] ^= 0x02
    raw[11] = 0xFF
    raw[12] = 0xFE
    raw[13:16] = m[3:6]
    return ipaddress.IPv6Address(bytes(raw))


def node_id_address(prefix: ipaddress.IPv6Network, node_id: str) -> ipaddress.IPv6Address:
    """Fallback interface identifier for hosts without a physical NIC (containers).

    The 64-bit interface ID is the first 8 bytes of sha256("kubespan-node-address:" + node ID) with
    the universal/local bit cleared (a locally generated identifier, RFC 4291 section 2.5.1). The node
    ID is persisted with the identity, so the address is stable across restarts, MAC changes and
    container re-creation as long as /var/lib/kubespan is kept, and it cannot collide with an EUI-64
    address derived from a universal MAC (those have the bit set).
    """
    if not node_id:
        raise ValueError("node ID is empty")
    digest = hashlib.sha256(("kubespan-node-address:" + node_id).encode("utf-8")).digest()
    iid = bytearray(digest[:8])
    iid[0] &= 0xFD
    raw = prefix.network_address.packed[:8] + bytes(iid)
    return ipaddress.IPv6Address(raw)


def first_physical_link(links: Iterable[Tuple[str, int, Optional[str], Optional[str]]]) -> Optional[Tuple[str, str]]:
    """Pick the first physical Ethernet link by name, as Talos does.

    ``links`` yields (name, arp hardware type, link kind or None, MAC). A physical link is of type
    Ethernet (1) and has no link kind (not a bond, bridge, vlan, veth, ...). Returns (name, mac) or None.
    """
    candidates = []
    for name, hwtype, kind, mac in links:
        if hwtype != 1 or kind or not mac or mac == "00:00:00:00:00:00":
            continue
        candidates.append((name, mac.lower()))
    if not candidates:
        return None
    return sorted(candidates)[0]


def node_address(cluster_id: str, node_id: str, physical: Optional[Tuple[str, str]], source: str = "auto"):
    """Return (address, subnet, source description) for this node.

    ``source`` is ``auto`` (physical NIC MAC when there is one, else the node ID), ``mac`` (a physical
    NIC is required) or ``node-id``.
    """
    prefix = ula_prefix(cluster_id)
    if source not in ("auto", "mac", "node-id"):
        raise ValueError("address source must be auto, mac or node-id, got %r" % (source,))
    if source in ("auto", "mac") and physical:
        name, mac = physical
        return eui64_address(prefix, mac), prefix, "mac:%s" % name
    if source == "mac":
        raise ValueError("address source 'mac' asked for, but this host has no physical Ethernet link; use 'auto' or 'node-id'")
    return node_id_address(prefix, node_id), prefix, "node-id"
