# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Peer status and endpoint cycling for the node agent, as Talos's KubeSpan manager does it. Pure logic.

The agent is a oneshot run by a systemd timer, so all memory between ticks is the statuses it
persists (``statuses_to_json`` / ``statuses_from_json``), and the clock is always passed in.

Talos (talos-kubespan-facts.md section 4; Talos's adapters/kubespan/peer_status.go), kept exact:

- ``calculate_state``: unknown / up / down from the last handshake and the last endpoint change, with
  ENDPOINT_CONNECTION_TIMEOUT (15 s) and PEER_DOWN_INTERVAL (275 s).
- ``should_change_endpoint``, ``pick_new_endpoint`` (round robin; a single endpoint is not re-set) and
  ``update_endpoint``.
- The WireGuard endpoint is set to the last used endpoint only while WireGuard reports none or that
  same one: an endpoint WireGuard learned from authenticated traffic (roaming, NAT) is not overwritten.

Where this differs, and why:

- First sight (no remembered status, e.g. a lost status file on a running mesh): Talos starts with an
  empty memory only at boot, when no session exists. Here a peer may already have a session; calling
  that an endpoint change would mark a healthy idle peer down 15 s later (no new handshake comes for up
  to two minutes) and cycle it. So the endpoint WireGuard already uses is adopted as the last used one,
  changed "long ago" if the peer has had a handshake, "now" (15 s of grace, as Talos) if not.
- A peer whose counters went backwards was re-created on the device: its status starts afresh.
- Talos judges an endpoint at its 30 s reconcile at the earliest; the agent may sample more often, so
  a down peer is moved on only once its endpoint has had PEER_RECONCILE_INTERVAL (30 s): a handshake
  retry or a persistent keepalive (25 s) must get a chance to prove the endpoint before it is left.
- A clock that went backwards pulls remembered times back to "now" instead of freezing the state.
- Only real changes are returned: setting an endpoint WireGuard already has is not an update, so a tick
  that finds nothing to change changes nothing. A peer the device does not list is not cycled (the
  engine's re-apply adds it; an update-only change could not).

Faster dead-path detection (Talos needs 275 s without a handshake). What WireGuard guarantees (Linux
drivers/net/wireguard timers.c, receive.c; wireguard-go the same):

- A peer that receives a data packet answers within KEEPALIVE_TIMEOUT (10 s), with data or a keepalive.
- Persistent keepalives (25 s) are re-armed by any packet sent *or received*, so on an idle link only
  one side sends them: the other side's rx stays flat for up to the next rekey (120 to 165 s) while it
  is perfectly healthy. "rx flat while tx grows" alone would flap that side; tx grows by keepalives.
- A keepalive is a 32-byte transport message, and tx/rx count WireGuard message bytes.

So a peer is *stalled* when we sent more than keepalives could account for since rx last grew, and
still nothing came back STALL_AFTER (20 s) after we first saw that: a live peer has answered by then
(10 s passive keepalive; or 15 s + jitter for our WireGuard's own re-handshake if the peer lost the
session). Unanswered handshake initiations count as sent, so an idle dead path is also caught once
WireGuard's rekey (120 s after the last handshake) goes unanswered. A stalled peer counts as down for
cycling and for the down-peer bypass set (``up_peers``), never for the state, and only while WireGuard uses the endpoint we set (a roamed
endpoint is left to Talos's rule). The switch keeps the session: the next packet goes out over the new
endpoint, the peer roams to our new address and answers; WireGuard's pending handshake retries (every
5 s while data is unanswered) complete there, so Talos's state sees a handshake after the change.

Sampling: the detector is time based, so ``tick`` may be called at any rate. With one sample per 30 s
tick, traffic comes back 60 to 90 s after the path died (one sample sees the unanswered data, the next
confirms it). The 60 s goal needs the agent to keep sampling within a run: every SAMPLE_INTERVAL (5 s)
for WATCH_SECONDS (20 s), the timer starting the next run 30 s after the last. Then traffic comes back
25 to 40 s after the path died (tests/unit/.../test_peerstatus.py simulates both schedules). Issue 18
(< 20 s): ``next_sample_delay`` samples every FAST_SAMPLE_INTERVAL (1 s) while a peer carries data, and
goes on past the window while data is unanswered, so the peer is moved STALL_AFTER after the death was
first seen, in the same run: 21 to 22 s inside a run's window, up to 30 s in the 10 s between two runs.
STALL_AFTER is the floor (docs/reliability.md#failover-to-another-endpoint-issue-18).
Limitation: a path dead in one direction only, while the peer's keepalives still arrive, is left to
Talos's 275 s rule on this side; the other side, which receives nothing, detects it as soon as it has
data to send.

Never-up peers and hole punching (docs/dataplane.md#nat-traversal). A peer WireGuard never had a
handshake with (a new peer, or one re-created after a reboot) is not cycled by Talos's 15 s + 30 s rule:

- Its candidates are ranked (``rank_candidates``): the endpoint it was last up on (``last_up_endpoint``,
  remembered across re-creation), then the announced list backwards. Talos's announced order is the
  node's interface addresses, then the address the discovery service saw it come from, then the extra
  announced endpoints (and harvested ones are merged after them): what is seen from outside, and what
  works across NATs, comes last; interface addresses only work on the same LAN, where every candidate
  usually works anyway. Both sides rank the same way, so both aim at the other's NAT mapping first.
- The first pick is made at first sight (not 30 s later), and a never-up peer moves on after
  NEVER_UP_DWELL (10 s: two handshake retries at WireGuard's 5 s) instead of 15 s + 30 s.
- Every endpoint change of a peer without a live session is a *kick*: the persistent keepalive is set to
  0 and back in the same update, which makes WireGuard send a keepalive at once, so a handshake
  initiation goes out to the new endpoint now (within WireGuard's 5 s rate limit) and is retried every
  5 s for 90 s. WireGuard alone would stop after 90 s and only try again when traffic comes, which
  never happens on an idle mesh, so a hole would never be punched.
Why two port-preserving, endpoint-dependent NATs then connect: our initiation to the far mapping opens
our router's conntrack entry (30 s unreplied); the far side's initiation to our mapping, sent within
those 30 s, matches it and is let in; our WireGuard answers to the source it came from (roaming), which
the far router lets in as the reply to what it just sent. A Talos peer sees ordinary endpoints and
handshakes only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from .plan import PEER_DOWN_INTERVAL
from .settings import PERSISTENT_KEEPALIVE
from .wgtypes import DeviceState, PeerState, PeerUpdate, normalize_endpoint

STATE_UNKNOWN = "unknown"
STATE_UP = "up"
STATE_DOWN = "down"
STATES = (STATE_UNKNOWN, STATE_UP, STATE_DOWN)

# Talos: time to wait for the first handshake after the endpoint was set.
ENDPOINT_CONNECTION_TIMEOUT = 15.0
# Talos: peer statuses are reconciled every 30 s (and on events).
PEER_RECONCILE_INTERVAL = 30.0

# WireGuard: a transport message with an empty payload (16-byte header + 16-byte tag).
KEEPALIVE_MESSAGE_BYTES = 32
# Unanswered data for this long means a dead path (see the module documentation).
STALL_AFTER = 20.0
# Proposed agent schedule: within one run, sample every SAMPLE_INTERVAL seconds for WATCH_SECONDS.
SAMPLE_INTERVAL = 5.0
WATCH_SECONDS = 20.0
# While a peer carries data, or its data is unanswered: sample every FAST_SAMPLE_INTERVAL seconds, and past
# WATCH_SECONDS (by up to STALL_AFTER + SAMPLE_INTERVAL) until the detector has decided (``next_sample_delay``).
FAST_SAMPLE_INTERVAL = 1.0
# WireGuard's KEEPALIVE_TIMEOUT (10 s: a peer answers received data by then, at least with a keepalive) plus margin.
SUSPECT_AFTER = 12.0
# A peer that never had a handshake moves on to its next ranked candidate after this long without one.
NEVER_UP_DWELL = 10.0
# WireGuard's REJECT_AFTER_TIME: an older handshake means no session, a handshake is needed first.
SESSION_LIFETIME = 180.0

STATUS_FILE_VERSION = 1


@dataclass
class StatusSettings:
    """Knobs of the status logic. ``stall_after`` 0 turns the fast detector off (Talos's rules only)."""

    persistent_keepalive: int = PERSISTENT_KEEPALIVE
    stall_after: float = STALL_AFTER
    never_up_dwell: float = NEVER_UP_DWELL  # 0: never-up peers follow Talos's rules (no ranking, no kick)
    sample_interval: float = SAMPLE_INTERVAL
    watch_seconds: float = WATCH_SECONDS


@dataclass
class PeerStatus:
    """One peer's status (Talos's PeerStatusSpec plus the detector's memory).

    Endpoints are ``ip:port`` / ``[ipv6]:port`` strings, "" when none; times are unix seconds, 0 = never.
    """

    label: str = ""
    endpoint: str = ""  # as WireGuard reports it
    state: str = STATE_UNKNOWN
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: float = 0.0
    last_used_endpoint: str = ""  # the endpoint we set last (or adopted)
    last_endpoint_change: float = 0.0
    endpoint_changes: int = 0  # how many times we set an endpoint (metrics)
    # Fast detector: when rx was last seen to grow (or the baseline was reset), tx at that moment,
    # and the first sample that saw more than keepalives sent since then (0 = none).
    rx_changed_at: float = 0.0
    tx_at_rx_change: int = 0
    unanswered_since: float = 0.0
    stalled: bool = False
    version: int = 0  # as a Talos resource version: +1 each time what a listing shows changed
    # Relaying (relay.py): the relay's public key while this peer's traffic goes through it ("" = direct), since
    # when its direct path has not been up (0 = it is), and when its ranges moved to the relay.
    via: str = ""
    down_since: float = 0.0
    relayed_since: float = 0.0
    last_up_endpoint: str = ""  # the endpoint WireGuard used when the peer was last up (kept across re-creation)
    ranked_first: str = ""  # a never-up peer's best ranked candidate when last looked at (a new best one is tried at once)

    def to_dict(self) -> dict:
        """JSON-able form; Talos's YAML key names where Talos has the field."""
        return {key: getattr(self, attr) for attr, key, _kind in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> PeerStatus:
        """Inverse of ``to_dict``; missing keys take their defaults, wrong types raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a peer status must be a mapping, got %s" % type(data).__name__)
        status = cls()
        for attr, key, kind in _FIELDS:
            if key not in data:
                continue
            value = data[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):  # bool is no int here
                raise ValueError("peer status field %s must be %s, got %r" % (key, kind.__name__, value))
            setattr(status, attr, value)
        if status.state not in STATES:
            raise ValueError("peer status field state must be one of %s, got %r" % ("/".join(STATES), status.state))
        return status


_FIELDS = (
    ("label", "label", str),
    ("endpoint", "endpoint", str),
    ("state", "state", str),
    ("rx_bytes", "receiveBytes", int),
    ("tx_bytes", "transmitBytes", int),
    ("last_handshake", "lastHandshakeTime", float),
    ("last_used_endpoint", "lastUsedEndpoint", str),
    ("last_endpoint_change", "lastEndpointChange", float),
    ("endpoint_changes", "endpointChanges", int),
    ("rx_changed_at", "rxChangedAt", float),
    ("tx_at_rx_change", "txAtRxChange", int),
    ("unanswered_since", "unansweredSince", float),
    ("stalled", "stalled", bool),
    ("version", "version", int),
    ("via", "via", str),
    ("down_since", "downSince", float),
    ("relayed_since", "relayedSince", float),
    ("last_up_endpoint", "lastUpEndpoint", str),
    ("ranked_first", "rankedFirst", str),
)

# What a listing shows of a status (Talos bumps a resource's version when its spec changes).
_VISIBLE = ("label", "endpoint", "state", "rx_bytes", "tx_bytes", "last_handshake", "last_used_endpoint", "via")


def bump_version(prev: Optional[PeerStatus], status: PeerStatus) -> None:
    if prev is None:
        status.version = max(status.version, 0) + 1
    elif any(getattr(prev, attr) != getattr(status, attr) for attr in _VISIBLE):
        status.version = prev.version + 1


def statuses_to_json(statuses: Dict[str, PeerStatus]) -> dict:
    return {"version": STATUS_FILE_VERSION, "peers": {key: statuses[key].to_dict() for key in sorted(statuses)}}


def statuses_from_json(data) -> Dict[str, PeerStatus]:
    """Statuses from the persisted form; ValueError (naming the peer) if it is not one we wrote."""
    if not isinstance(data, dict) or data.get("version") != STATUS_FILE_VERSION or not isinstance(data.get("peers"), dict):
        raise ValueError("not a version %d peer status document" % STATUS_FILE_VERSION)
    statuses = {}
    for key, value in data["peers"].items():
        try:
            statuses[str(key)] = PeerStatus.from_dict(value)
        except ValueError as exc:
            raise ValueError("peer %s: %s" % (key, exc))
    return statuses


# ----------------------------------------------------------------------------------------------- Talos

def calculate_state_with_durations(status: PeerStatus, since_handshake: float, since_endpoint_change: float) -> str:
    """Talos's CalculateStateWithDurations: set and return ``status.state``.

    Past T0+275 s (T0 = last endpoint change) the peer is up if it had a handshake in the last 275 s.
    Before that, a handshake after T0 means up; without one the state is unknown for 15 s, then down.
    Down without any endpoint ever used is unknown.
    """
    handshake_after_change = status.last_handshake > status.last_endpoint_change
    if since_endpoint_change > PEER_DOWN_INTERVAL:
        state = STATE_UP if since_handshake < PEER_DOWN_INTERVAL else STATE_DOWN
    elif since_endpoint_change < ENDPOINT_CONNECTION_TIMEOUT:
        state = STATE_UP if handshake_after_change else STATE_UNKNOWN
    else:
        state = STATE_UP if handshake_after_change else STATE_DOWN
    if state == STATE_DOWN and not status.last_used_endpoint:
        state = STATE_UNKNOWN
    status.state = state
    return state


def calculate_state(status: PeerStatus, now: float) -> str:
    return calculate_state_with_durations(status, now - status.last_handshake, now - status.last_endpoint_change)


def should_change_endpoint(status: PeerStatus) -> bool:
    return status.state == STATE_DOWN or not status.last_used_endpoint


def pick_new_endpoint(status: PeerStatus, endpoints: List[str]) -> str:
    """Talos's PickNewEndpoint: the candidate after the last used one (round robin), "" for none."""
    if not endpoints:
        return ""
    if not status.last_used_endpoint:
        return endpoints[0]
    idx = endpoints.index(status.last_used_endpoint) if status.last_used_endpoint in endpoints else -1
    if len(endpoints) == 1 and idx == 0 and status.endpoint == status.last_used_endpoint:
        return ""  # a single endpoint cannot rotate
    return endpoints[(idx + 1) % len(endpoints)]


def rank_candidates(status: PeerStatus, endpoints: List[str]) -> List[str]:
    """The order in which a never-up peer's candidates are tried: the endpoint it was last up on, then the announced
    list backwards (observed mappings and extra endpoints before interface addresses; see the module doc)."""
    ranked = [status.last_up_endpoint] if status.last_up_endpoint in endpoints else []
    ranked.extend(ep for ep in reversed(endpoints) if ep not in ranked)
    return ranked


def never_up(status: PeerStatus) -> bool:
    """WireGuard never had a handshake with this peer entry."""
    return status.last_handshake <= 0


def pick_ranked_endpoint(status: PeerStatus, endpoints: List[str]) -> str:
    """The ranked candidate after the last used one ("" when there is no other to try)."""
    ranked = rank_candidates(status, endpoints)
    if not ranked:
        return ""
    if status.last_used_endpoint not in ranked:
        return ranked[0]
    new = ranked[(ranked.index(status.last_used_endpoint) + 1) % len(ranked)]
    return "" if new == status.last_used_endpoint else new


def update_endpoint(status: PeerStatus, endpoint: str, now: float) -> None:
    status.endpoint = endpoint
    status.last_used_endpoint = endpoint
    status.last_endpoint_change = now
    status.state = STATE_UNKNOWN


def update_from_wireguard(status: PeerStatus, peer: PeerState) -> None:
    status.endpoint = _normalize(peer.endpoint)
    status.last_handshake = float(peer.last_handshake or 0.0)
    status.rx_bytes = int(peer.rx_bytes)
    status.tx_bytes = int(peer.tx_bytes)


# ----------------------------------------------------------------------------------------------- fast detector

def keepalive_allowance(elapsed: float, persistent_keepalive: int) -> int:
    """Bytes we may send in ``elapsed`` seconds with nothing to say: one persistent keepalive per
    interval, plus one for the window's start and one passive keepalive after the last data received."""
    count = 2 + (int(elapsed // persistent_keepalive) if persistent_keepalive > 0 else 0)
    return count * KEEPALIVE_MESSAGE_BYTES


def reset_detector(status: PeerStatus, now: float) -> None:
    status.rx_changed_at = now
    status.tx_at_rx_change = status.tx_bytes
    status.unanswered_since = 0.0
    status.stalled = False


def observe(status: PeerStatus, peer: PeerState, now: float, persistent_keepalive: int) -> None:
    """Store one device sample in the status and update the detector."""
    rx_grew = int(peer.rx_bytes) != status.rx_bytes
    update_from_wireguard(status, peer)
    if rx_grew or not status.rx_changed_at:
        reset_detector(status, now)
    elif not status.unanswered_since:
        sent = status.tx_bytes - status.tx_at_rx_change
        if sent > keepalive_allowance(now - status.rx_changed_at, persistent_keepalive):
            status.unanswered_since = now


def is_stalled(status: PeerStatus, now: float, stall_after: float) -> bool:
    return stall_after > 0 and status.unanswered_since > 0 and now - status.unanswered_since >= stall_after


# ----------------------------------------------------------------------------------------------- tick

def tick(previous_statuses: Dict[str, PeerStatus], device_state: Optional[DeviceState], peer_specs: List[dict], now: float,
         settings: Optional[StatusSettings] = None) -> Tuple[Dict[str, PeerStatus], List[PeerUpdate], List[str]]:
    """One agent sample: new statuses, endpoint updates to apply (update-only), journal events.

    ``previous_statuses`` is not modified. ``peer_specs`` are dicts with ``public_key``, ``name`` and
    ``endpoints`` (candidates in order; malformed ones are ignored); statuses of peers no longer
    specified are dropped. ``device_state`` None means the device could not be read: nothing is cycled.
    """
    settings = settings or StatusSettings()
    device_peers = device_state.peers if device_state is not None else {}
    statuses = {}
    updates = []
    events = []
    for spec in sorted(peer_specs, key=lambda s: s["public_key"]):
        key = spec["public_key"]
        status, endpoint, peer_events = _tick_peer(previous_statuses.get(key), device_peers.get(key), spec, now, settings)
        statuses[key] = status
        if endpoint:
            keepalive = settings.persistent_keepalive
            if settings.never_up_dwell > 0 and keepalive > 0 and now - status.last_handshake >= SESSION_LIFETIME:
                # the kick (see the module doc): keepalive 0 then back, so WireGuard starts a handshake now
                updates.append(PeerUpdate(public_key=key, endpoint=endpoint, persistent_keepalive=0, update_only=True))
                updates.append(PeerUpdate(public_key=key, persistent_keepalive=keepalive, update_only=True))
            else:
                updates.append(PeerUpdate(public_key=key, endpoint=endpoint, update_only=True))
        events.extend(peer_events)
    return statuses, updates, events


def _tick_peer(prev: Optional[PeerStatus], peer: Optional[PeerState], spec: dict, now: float, settings: StatusSettings):
    """One peer of ``tick``: (new status, endpoint to set or "", events)."""
    who = "peer %s" % (spec.get("name") or spec["public_key"])
    events = []
    endpoints = []
    for ep in spec.get("endpoints") or []:
        norm = _normalize(ep)
        if norm and norm not in endpoints:
            endpoints.append(norm)
    if prev is not None and peer is not None and (peer.rx_bytes < prev.rx_bytes or peer.tx_bytes < prev.tx_bytes):
        events.append("%s was re-created on the device: its status starts afresh" % who)
        carried_version, carried_up, prev = prev.version, prev.last_up_endpoint, None
    else:
        carried_version, carried_up = 0, ""
    status = replace(prev) if prev is not None else PeerStatus(version=carried_version, last_up_endpoint=carried_up)
    for attr in ("last_endpoint_change", "rx_changed_at", "unanswered_since", "down_since", "relayed_since"):
        if getattr(status, attr) > now:  # the clock went backwards
            setattr(status, attr, now)
    status.label = spec.get("name") or ""
    old_state = status.state
    if peer is None:
        if calculate_state(status, now) != old_state:
            events.append("%s is %s (was %s; not on the device)" % (who, status.state, old_state))
        bump_version(prev, status)
        return status, "", events

    seen = _normalize(peer.endpoint)
    observe(status, peer, now, settings.persistent_keepalive)
    if prev is None and seen:
        # First sight: adopt what WireGuard uses instead of calling it a change (see the module doc).
        status.last_used_endpoint = seen
        status.last_endpoint_change = 0.0 if status.last_handshake > 0 else now
    elif prev is not None and seen and seen != prev.endpoint and seen != status.last_used_endpoint:
        events.append("%s roamed to %s (learned by WireGuard from the peer's traffic; kept)" % (who, seen))
    calculate_state(status, now)
    status.stalled = is_stalled(status, now, settings.stall_after)
    if status.state == STATE_UP and seen:
        status.last_up_endpoint = seen

    # Talos's rule (not faster than its 30 s reconcile), or the detector on an endpoint we set.
    due = should_change_endpoint(status) and (
        not status.last_used_endpoint or now - status.last_endpoint_change >= PEER_RECONCILE_INTERVAL)
    fast = status.stalled and status.state != STATE_DOWN and seen != "" and seen == status.last_used_endpoint
    # A never-up peer (see the module doc): ranked candidates, the first at first sight, a short dwell on each.
    punch = settings.never_up_dwell > 0 and never_up(status) and status.state != STATE_UP and len(endpoints) > 1
    restart = False
    if punch:
        ranked = rank_candidates(status, endpoints)
        # first sight, a last used endpoint no longer offered, or a new best candidate (discovery just told us the
        # peer's NAT mapping): the best one now; else the next one after the dwell
        restart = prev is None or status.last_used_endpoint not in ranked or status.ranked_first != ranked[0]
        due, fast = (status.last_used_endpoint != ranked[0] or seen != ranked[0]) if restart else (
            now - status.last_endpoint_change >= settings.never_up_dwell), False
        status.ranked_first = ranked[0]
    changed = False
    if due or fast:
        if restart:
            new = rank_candidates(status, endpoints)[0]
        elif punch:
            new = pick_ranked_endpoint(status, endpoints)
        else:
            new = pick_new_endpoint(status, endpoints)
        if new:
            if punch:
                events.append("%s never up: trying %s (candidate %d of %d, %.0f s each)" % (
                    who, new, rank_candidates(status, endpoints).index(new) + 1, len(endpoints), settings.never_up_dwell))
            elif not status.last_used_endpoint:
                events.append("%s: endpoint %s (first candidate)" % (who, new))
            elif status.state == STATE_DOWN:
                events.append("%s down on %s, trying %s" % (who, status.endpoint or status.last_used_endpoint, new))
            else:
                events.append("%s stalled on %s: %d bytes sent, nothing received for %.0f s; trying %s"
                              % (who, seen, status.tx_bytes - status.tx_at_rx_change, now - status.rx_changed_at, new))
            update_endpoint(status, new, now)
            status.endpoint_changes += 1
            reset_detector(status, now)
            changed = True
        elif fast and not (prev is not None and prev.stalled):
            events.append("%s stalled on %s, no other endpoint to try" % (who, seen))

    # Talos: set the endpoint to the last used one only while WireGuard reports none or that one (a
    # roamed endpoint is kept). Only a real difference is an update.
    target = ""
    if status.last_used_endpoint and (not status.endpoint or status.endpoint == status.last_used_endpoint):
        status.endpoint = status.last_used_endpoint
        if status.endpoint != seen:
            target = status.endpoint
            if not changed:
                events.append("%s: WireGuard has no endpoint, restoring %s" % (who, target))
    if status.state != old_state and not changed:
        events.append("%s is %s (was %s)" % (who, status.state, old_state))
    bump_version(prev, status)
    return status, target, events


def next_sample_delay(previous: Dict[str, PeerStatus], statuses: Dict[str, PeerStatus], elapsed: float, now: float,
                      settings: Optional[StatusSettings] = None) -> float:
    """Seconds until the agent's next sample within this run, 0.0 to end the run (docs/reliability.md#failover).

    ``previous``: the statuses before the sample that gave ``statuses`` (for a run's first sample, the persisted ones);
    ``elapsed``: the planned seconds since the run's first sample; ``now``: the sample's time. Talos's and the detector's rules are unchanged; only
    when they are looked at is:

    - every FAST_SAMPLE_INTERVAL (1 s) while an up peer carries data (it sent more than two keepalives since the
      last sample) or has data unanswered: a path that dies under traffic is seen unanswered within about a second,
      not up to SAMPLE_INTERVAL later, and STALL_AFTER counts from there;
    - past ``watch_seconds``, while a peer's data has been unanswered for SUSPECT_AFTER (longer than a live peer's
      passive keepalive takes) and is not yet judged stalled, until the detector decides (the data is answered, or
      the peer is moved), at most STALL_AFTER + SAMPLE_INTERVAL more: a dead path is left at the first sample the
      rule allows, not at the next timer tick. A one-way stream (answered by a keepalive every 10 s) does not
      lengthen the runs.

    With the detector off (``stall_after`` 0) the schedule is the plain one: every ``sample_interval`` for
    ``watch_seconds``."""
    settings = settings or StatusSettings()
    interval = max(settings.sample_interval, 0.1)
    limit = settings.watch_seconds
    if settings.stall_after > 0:
        # only peers the detector may move: not down (Talos's rule has them), had a handshake (never-up peers have
        # their own dwell), on the endpoint we set (a roamed one is left to Talos); so a dead peer, or a never-up
        # one sending handshake initiations, does not make every run longer or denser
        movable = {key: st for key, st in statuses.items() if st.state != STATE_DOWN and st.last_handshake > 0
                   and st.endpoint != "" and st.endpoint == st.last_used_endpoint}
        unanswered = [st for st in movable.values() if st.unanswered_since > 0 and not st.stalled]
        busy = any(st.state == STATE_UP and key in previous and st.tx_bytes - previous[key].tx_bytes > keepalive_allowance(0, 0)
                   for key, st in movable.items())
        if busy or unanswered:
            interval = min(interval, FAST_SAMPLE_INTERVAL)
        if any(now - st.unanswered_since >= SUSPECT_AFTER for st in unanswered):
            limit += settings.stall_after + settings.sample_interval
    return interval if elapsed + interval <= limit + 1e-9 else 0.0


def up_peers(statuses: Dict[str, PeerStatus]) -> List[str]:
    """Public keys of the peers whose networks are routed through the mesh when down-peer bypass is allowed.

    Up as Talos computes it, and not stalled: a path the detector has seen die (data sent, nothing back
    for STALL_AFTER) is bypassed at once instead of after Talos's 275 s. That cannot flap a healthy peer:
    the detector never fires on one (idle, one-way or keepalive-only traffic; see the module doc), and a
    stalled peer returns to the set as soon as anything is received from it.
    """
    return [key for key in sorted(statuses) if statuses[key].state == STATE_UP and not statuses[key].stalled]


@lru_cache(maxsize=4096)
def _normalize(endpoint: Optional[str]) -> str:
    """Canonical ``ip:port`` or "" (memoized: more than half of a tick's CPU went here, bench/agent_tick.py)."""
    if not endpoint:
        return ""
    try:
        return normalize_endpoint(endpoint)
    except ValueError:
        return ""
