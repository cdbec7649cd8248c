# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Relaying through a member (issue 16 item 3): which peer goes through which relay, and when back. Pure logic.

Two nodes behind symmetric NATs (``masquerade random``) can never punch a hole to each other: each NAT maps
the node's socket to a new port per destination, so the mapping the other side learns (from discovery or
from the observed endpoints) is not the one it would have to send to. A member marked as a relay
(``kubespan_relay: true``, usually a public node) is reachable from both, and WireGuard routes by
AllowedIPs, so:

- On a node that does not relay: a peer whose direct path has not been up for RELAY_AFTER seconds while a
  relay peer is up is *relayed*: its AllowedIPs move to that relay's peer entry (the relay's AllowedIPs gain
  the peer's ranges) and the peer's own entry keeps no AllowedIPs. The direct entry stays configured with its
  endpoint and persistent keepalive, so WireGuard keeps initiating handshakes on it, and the agent keeps
  cycling its endpoints as before (it is down). As soon as the direct entry completes a handshake that is
  newer than the move, the ranges move back to it.
- The relay needs nothing per pair: its WireGuard already holds both peers' AllowedIPs, its kernel routes
  the inner packet back into ``kubespan`` (the ULA /64 is on the link; pod networks are marked into table
  180), and its nftables forward chain accepts ``kubespan`` to ``kubespan`` only (dataplane.py).
- Both sides must use the same relay, since each side's WireGuard accepts an inner packet only from the peer
  entry whose AllowedIPs hold its source: every node picks the up relay with the lowest public key (not
  sticky: two nodes that briefly disagreed on which relays are up agree again once they see the same ones).
- Only members of this inventory are relayed (the state's ``members``): a Talos node, or a node known only
  from discovery, would drop what a relay forwards to it (the relay's entry there has no AllowedIPs for the
  sender), so it keeps its direct entry. Relays are never relayed themselves.

Fail closed is unchanged: the nftables set, the marks and the routes do not depend on which entry holds a
range; the traffic still goes into ``kubespan`` and is encrypted to the relay (which is a cluster member and
sees the inner packet: docs/security.md).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

# A peer whose direct path has not been up for this long (two of the agent's 5 s samples after Talos's 15 s
# unknown, so about 20 s after its first endpoint was set) is relayed when a relay is up.
RELAY_AFTER = 20.0
# At most this many relay public keys are used (bounded work per sample; the first ones in key order).
MAX_RELAYS = 16

_UP = "up"


def _usable(status) -> bool:
    return status is not None and status.state == _UP and not status.stalled


def up_relays(statuses: dict, relays: Iterable[str]) -> List[str]:
    """The relays (public keys) whose own peer entry is up and not stalled, lowest key first."""
    return sorted(key for key in set(relays or ()) if _usable(statuses.get(key)))[:MAX_RELAYS]


def decide(statuses: dict, relays: Iterable[str], eligible: Iterable[str], now: float,
           relay_after: float = RELAY_AFTER) -> List[str]:
    """Update each status's ``via`` (the relay's public key, "" for the direct entry), ``down_since`` and
    ``relayed_since`` in place, from the statuses of this sample. Returns journal events.

    ``relays``: public keys of the members marked as relays (this node's own key is never among its peers).
    ``eligible``: public keys of the peers that may be relayed (members of the inventory that run the agent).
    """
    relays = set(relays or ())
    eligible = set(eligible or ())
    live = up_relays(statuses, relays)
    events = []
    for key in sorted(statuses):
        st = statuses[key]
        who = "peer %s" % (st.label or key)
        direct_ok = _usable(st)
        if key in relays or key not in eligible:
            if st.via:
                events.append("%s: back to its direct entry (%s)" % (who, "it is a relay" if key in relays else "not relayable"))
            st.via, st.down_since, st.relayed_since = "", 0.0, 0.0
            continue
        if st.via:
            if st.last_handshake > st.relayed_since:
                events.append("%s: direct handshake, traffic moves back from relay %s" % (who, _name(statuses, st.via)))
                st.via, st.relayed_since = "", 0.0
                st.down_since = 0.0 if direct_ok else now
                continue
            target = live[0] if live else ""
            if target != st.via:
                if target:
                    events.append("%s: relay %s is not up, now through relay %s" % (who, _name(statuses, st.via), _name(statuses, target)))
                else:
                    events.append("%s: relay %s is not up and no other relay is: back to the direct entry" % (who, _name(statuses, st.via)))
                st.via = target
                if not target:
                    st.relayed_since = 0.0
            continue
        if direct_ok:
            st.down_since = 0.0
            continue
        if not st.down_since or st.down_since > now:
            st.down_since = now
        if live and now - st.down_since >= relay_after:
            st.via, st.relayed_since = live[0], now
            events.append("%s: no direct path for %.0f s, traffic goes through relay %s (direct entry keeps probing)"
                          % (who, now - st.down_since, _name(statuses, st.via)))
    return events


def _name(statuses: dict, key: str) -> str:
    st = statuses.get(key)
    return (st.label if st is not None and st.label else "") or key


def via_map(statuses: dict) -> Dict[str, str]:
    """peer public key -> relay public key, for the relayed peers."""
    return {key: st.via for key, st in statuses.items() if getattr(st, "via", "")}


def move_allowed_ips(peers: List[Tuple[str, List[str]]], via: Optional[Dict[str, str]]) -> Dict[str, List[str]]:
    """public key -> the AllowedIPs its WireGuard entry gets, from (public key, allowed IPs) pairs and ``via``.

    A relayed peer's ranges go to its relay's entry (appended, no duplicates) and its own entry gets none;
    a ``via`` naming a relay that is not a peer, the peer itself, or a peer that is relayed itself is ignored
    (the ranges stay on the direct entry)."""
    result = {key: list(ips) for key, ips in peers}
    via = via or {}
    for key, _ips in peers:
        relay = via.get(key)
        if not relay or relay == key or relay not in result or via.get(relay):
            continue
        moved = result[key]
        result[key] = []
        target = result[relay]
        target.extend(ip for ip in moved if ip not in target)
    return result
