# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""The node agent's tick: repair drift, watch peers, cycle endpoints, persist statuses, write metrics.

Run by ``kubespan-agent.timer`` (oneshot). A tick re-applies the desired state the last playbook run
persisted (under the node lock), then samples the WireGuard device every ``sample_interval`` seconds
for ``watch_seconds`` (every second while data flows, and longer while data is unanswered:
:func:`peerstatus.next_sample_delay`) and feeds each sample to :func:`peerstatus.tick`, applying the
endpoint changes it asks for (under the lock, briefly). All memory between ticks is the status file.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

from ..core.peerstatus import (
    STATE_UP,
    PeerStatus,
    StatusSettings,
    bump_version,
    calculate_state,
    next_sample_delay,
    tick,
    up_peers,
    update_from_wireguard,
)
from ..core.relay import decide as decide_relays
from ..core.relay import via_map
from ..core.wgtypes import DeviceUpdate, WireGuardError
from ..discovery.discovery_watchfile import load_watcher
from ..host import layout
from ..host.statefile import LockBusy, StateFileError, atomic_write, state_lock
from ..reconcile.engine import ReconcileError, load_state, open_device, reapply_from_state, refresh_address, replace_state_peers, settings_from_state
from ..reconcile.nodestate import NodeState, load_statuses  # noqa: F401 (load_statuses: its home was here)

STATUS_FILE = layout.STATUSES
WATCH_MARGIN = 5.0  # seconds a Watch stream is held beyond the sampling window (the sync and the re-apply before it)


def real_sleep(sleep_fn) -> bool:
    """Whether the tick really waits (time.sleep): only then are Watch streams held (tests pass a fake clock)."""
    return sleep_fn is time.sleep


METRICS_FILE = layout.METRICS


def status_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATUS_FILE)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(statuses: Dict[str, PeerStatus], now: float, repairs: int, discovery_up: Optional[int] = None) -> str:
    """Prometheus text format for node_exporter's textfile collector.

    ``discovery_up``: with discovery enabled, 1 when this tick talked to the discovery service, else 0
    (None: discovery off, no such series). The alert rules (extensions/prometheus) use these names."""
    out = []

    def family(name, kind, help_text, samples):
        out.append("# HELP %s %s" % (name, help_text))
        out.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            out.append("%s{%s} %s" % (name, ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels), value))

    peers = sorted(statuses.items())

    def labels(key, st):
        return [("peer", key), ("label", st.label)]

    family("kubespan_peer_up", "gauge", "1 when the peer is up (recent handshake), else 0.",
           [(labels(k, s), 1 if s.state == STATE_UP else 0) for k, s in peers])
    family("kubespan_peer_state", "gauge", "Peer state as Talos computes it (one series per state, 1 for the current one).",
           [(labels(k, s) + [("state", state)], 1 if s.state == state else 0) for k, s in peers for state in ("unknown", "up", "down")])
    family("kubespan_peer_receive_bytes_total", "counter", "Bytes received from the peer.", [(labels(k, s), s.rx_bytes) for k, s in peers])
    family("kubespan_peer_transmit_bytes_total", "counter", "Bytes sent to the peer.", [(labels(k, s), s.tx_bytes) for k, s in peers])
    family("kubespan_peer_seconds_since_handshake", "gauge", "Seconds since the last handshake (-1: never).",
           [(labels(k, s), round(now - s.last_handshake, 1) if s.last_handshake else -1) for k, s in peers])
    family("kubespan_peer_last_handshake_timestamp_seconds", "gauge", "Unix time of the last handshake with the peer (0: never).",
           [(labels(k, s), round(s.last_handshake, 3) if s.last_handshake else 0) for k, s in peers])
    family("kubespan_peer_endpoint_changes_total", "counter", "Endpoint changes made by the agent.",
           [(labels(k, s), s.endpoint_changes) for k, s in peers])
    family("kubespan_peer_relayed", "gauge", "1 while the peer's traffic goes through the relay named by via (its direct "
           "entry keeps probing), else 0.",
           [(labels(k, s) + [("via", statuses[s.via].label if s.via in statuses and statuses[s.via].label else s.via)],
             1 if s.via else 0) for k, s in peers])
    family("kubespan_agent_last_tick_timestamp_seconds", "gauge", "When the last agent tick finished.", [([], round(now, 3))])
    family("kubespan_agent_last_tick_repairs", "gauge", "Drift repairs made by the last tick.", [([], repairs)])
    if discovery_up is not None:
        family("kubespan_discovery_up", "gauge", "1 when the last tick talked to the discovery service, else 0.", [([], discovery_up)])
    return "\n".join(out).replace("{}", "") + "\n"


def _reapply_changed(state_dir: str, statuses, want, applied, log: Callable[[str], None], lock_timeout: float, what: str,
                     prefix: str, node: Optional[NodeState] = None, **reapply):
    """Re-apply the desired state with ``reapply`` when ``want`` differs from what was ``applied`` last; returns what
    is applied now. The statuses are written first, under the node lock (the tick's one deliberate mid-tick write,
    NodeState.write_statuses): a playbook run (mesh module) reads them to build the same routed set and relayed
    peers, and would otherwise undo this change with the last tick's statuses until the end of this one."""
    if want == applied:
        return applied
    node = node or NodeState(state_dir)
    try:
        with state_lock(state_dir, timeout=lock_timeout):
            node.write_statuses(statuses)
            result = reapply_from_state(state_dir, node=node, **reapply)
    except LockBusy as exc:
        log("%s not updated now: %s" % (what, exc))
        return applied
    for change in result.changes:
        log("%s: %s" % (prefix, change))
    return want


def _follow_bypass(state_dir: str, statuses, applied: Optional[List[str]], log: Callable[[str], None], lock_timeout: float,
                   node: Optional[NodeState] = None) -> Optional[List[str]]:
    """With down-peer bypass, keep the routed set equal to the networks of the peers that are up.

    Checked at every sample, applied only when the set of up peers changed (and once per tick, to repair
    drift): a peer that comes up is forced into the mesh at once, not at the end of the tick (Talos once
    missed new peers here); one that goes down, or whose path stalled, is bypassed until it is back.
    """
    want = up_peers(statuses)
    return _reapply_changed(state_dir, statuses, want, applied, log, lock_timeout, "bypass set", "bypass set", node, up_peers=want)


def _follow_relays(state_dir: str, statuses, applied: Optional[dict], log: Callable[[str], None], lock_timeout: float,
                   node: Optional[NodeState] = None) -> Optional[dict]:
    """Re-apply the desired state when the relayed peers changed (relay.py): their ranges move to the relay's entry or back.
    Checked at every sample, like the bypass set."""
    want = via_map(statuses)
    return _reapply_changed(state_dir, statuses, want, applied, log, lock_timeout, "relayed peers", "relay", node, via=want)


def _relay_eligible(state: dict) -> List[str]:
    """Public keys of the peers that may be relayed: members of the inventory (they run this agent and use the same relay);
    a peer known only from discovery (a Talos node) keeps its direct entry."""
    members = set(state.get("members") or ())
    return [p["public_key"] for p in state.get("peers") or [] if p.get("name") in members]


def _peer_updater(state_dir: str, state: dict, log: Callable[[str], None], lock_timeout: float, node: Optional[NodeState] = None):
    """update_peers for DiscoveryRound: replace the desired state's peers under the node lock, unless a playbook run
    changed the state meanwhile (NodeState reads the file again under the lock when it changed on disk)."""
    node = node or NodeState(state_dir)

    def update(peers):
        with state_lock(state_dir, timeout=lock_timeout):
            current = node.state()
            if current is None or current.get("disabled") or any(current.get(k) != state.get(k) for k in ("inventory_peers", "discovery", "cluster_id")):
                log("discovery: the desired state changed during this tick (a playbook run): the peer set is updated at the next tick")
                return
            old = {p["public_key"]: p["name"] for p in current.get("peers") or []}
            replace_state_peers(state_dir, peers, node)
        new = {p["public_key"]: p["name"] for p in peers}
        added = sorted(new[k] for k in new if k not in old)
        removed = sorted(old[k] for k in old if k not in new)
        log("discovery: peer set updated (added: %s; removed: %s; %d peers)" % (", ".join(added) or "-", ", ".join(removed) or "-", len(peers)))
    return update


def tick_watcher(state_dir: str, state: dict, now: float, endpoints: List[str]):
    """The tick's choice (discovery_watch.current_watcher): the resident watcher's entries when it is alive, current and
    connected to every configured service (then the tick opens no Watch or List and says no Hello), else None (the
    tick's own Hello, Watch and List, as without a watcher: fail safe)."""
    return load_watcher(state_dir, str(state.get("cluster_id") or ""), endpoints, now)


def _discovery_sync(state_dir: str, state: dict, log: Callable[[str], None], now_fn, lock_timeout: float, client_factory=None,
                    watch_seconds: float = 0.0, node: Optional[NodeState] = None):
    """The discovery part of a tick (discovery_agent): returns (DiscoveryRound or None, the desired state to use).
    ``watch_seconds``: how long the Watch streams are held (the sampling window; 0: List only).

    Nothing here can end the tick: an unreachable service, bad settings or a bug is logged and the tick goes on
    with the peers it had."""
    from ..discovery.discovery_agent import DiscoveryRound, DiscoverySettingsError, make_client, normalize_settings
    try:
        watcher = tick_watcher(state_dir, state, now_fn(), normalize_settings(state.get("discovery"))["endpoints"])
        disc = DiscoveryRound(state_dir, state, log, now_fn, client_factory=client_factory or make_client, watch_seconds=watch_seconds,
                              watcher=watcher)
    except DiscoverySettingsError as exc:
        log("discovery skipped: %s" % exc)
        return None, state
    node = node or NodeState(state_dir)
    update = _peer_updater(state_dir, state, log, lock_timeout, node)
    try:
        disc.sync(update)
    except LockBusy as exc:
        log("discovery: peer set not updated now: %s" % exc)
    except Exception as exc:  # pylint: disable=broad-except  # discovery must never stop the agent's repairs
        log("discovery failed in this tick (%s: %s): keeping the current peers" % (type(exc).__name__, exc))
        disc.close()
        return None, state
    try:
        return disc, node.state() or state
    except StateFileError:
        return disc, state


def _discovery_poll(state_dir: str, state: dict, disc, log: Callable[[str], None], lock_timeout: float, peers: List[dict],
                    node: Optional[NodeState] = None) -> List[dict]:
    """Apply the affiliates the Watch streams brought (new, changed, gone) within the sampling window: the new peer set
    goes into the desired state and onto the device at once (a node joins within seconds, not at the next tick).
    Returns the peers to sample with. Never ends the tick."""
    current = discovery_poll_apply(state_dir, state, disc.poll, log, lock_timeout, "applied (watch)", node)
    return current.get("peers", peers) if isinstance(current, dict) else peers


def discovery_poll_apply(state_dir: str, state: dict, merge, log: Callable[[str], None], lock_timeout: float, prefix: str,
                         node: Optional[NodeState] = None):
    """``merge(update_peers)`` (DiscoveryRound.poll, or merge_views for the resident watcher, discovery_watch.py); when the
    peer set changed, re-apply the desired state under the node lock. Returns the desired state then in force, or None
    when nothing changed or it failed (logged; never raises)."""
    node = node or NodeState(state_dir)
    try:
        if not merge(_peer_updater(state_dir, state, log, lock_timeout, node)):
            return None
        with state_lock(state_dir, timeout=lock_timeout):
            res = reapply_from_state(state_dir, node=node)
            current = node.state() or {}
        for change in res.changes:
            log("%s: %s" % (prefix, change))
        return current
    except LockBusy as exc:
        log("discovery: watched changes not applied now: %s" % exc)
    except Exception as exc:  # pylint: disable=broad-except  # discovery must never stop the agent's repairs
        log("discovery: watched changes not applied (%s: %s)" % (type(exc).__name__, exc))
    return None


def run_tick(state_dir: str, log: Callable[[str], None], now_fn=time.time, sleep_fn=time.sleep,
             lock_timeout: float = 20.0, status_settings: Optional[StatusSettings] = None, metrics_file: Optional[str] = None,
             discovery_client=None) -> int:
    """One agent tick. Returns the process exit code (non-zero when something is broken).

    With discovery enabled in the desired state, the tick first talks to the discovery service (Hello, List,
    AffiliateUpdate when due) and updates the peers, then re-applies and samples as usual, then publishes
    harvested endpoints. ``discovery_client``: a factory of discovery clients (tests)."""
    settings_status = status_settings or StatusSettings()
    node = NodeState(state_dir)  # the tick's files, each read once (again only when changed on disk: NodeState)
    state = node.state()
    if state is None:
        log("no desired state in %s: nothing to do until the playbook has run" % state_dir)
        return 0
    if state.get("disabled"):
        log("KubeSpan is disabled on this node (kubespan_enabled: false): nothing to do")
        return 0
    try:
        if refresh_address(state_dir, log, lock_timeout, node):
            state = node.state() or state
    except Exception as exc:  # pylint: disable=broad-except  # the address check must never stop the agent's repairs
        log("KubeSpan address not checked in this tick (%s: %s)" % (type(exc).__name__, exc))
    settings = settings_from_state(state)
    settings_status.persistent_keepalive = int(settings.persistent_keepalive)
    disc = None
    if (state.get("discovery") or {}).get("enabled"):
        # the Watch streams are held for the sampling window (plus the time the sync and the re-apply take)
        disc, state = _discovery_sync(state_dir, state, log, now_fn, lock_timeout, discovery_client,
                                      settings_status.watch_seconds + WATCH_MARGIN if real_sleep(sleep_fn) else 0.0, node)
    try:
        return _tick_body(state_dir, state, settings, settings_status, log, now_fn, sleep_fn, lock_timeout, metrics_file, disc, node)
    finally:
        if disc is not None:
            disc.close()


def _tick_body(state_dir, state, settings, settings_status, log, now_fn, sleep_fn, lock_timeout, metrics_file, disc, node) -> int:
    rc = 0
    peers = state.get("peers", [])

    try:
        with state_lock(state_dir, timeout=lock_timeout):
            res = reapply_from_state(state_dir, node=node)
    except LockBusy as exc:
        log("skipped this tick: %s" % exc)
        return 0
    for change in res.changes:
        log("repaired: %s" % change)

    statuses, problem = node.statuses()
    if problem:
        log(problem)
        rc = 1
    dev = open_device(res.implementation, settings.interface)
    applied_up: Optional[List[str]] = None
    relays = list(getattr(settings, "relays", None) or [])
    eligible = _relay_eligible(state) if relays else []
    applied_via: Optional[dict] = via_map(statuses)  # what the re-apply above used
    try:
        elapsed = 0.0
        while True:
            before = statuses
            try:
                device = dev.read()
            except WireGuardError as exc:
                # the device vanished while we watched (interface deleted, wireguard-go killed): repair now
                # rather than at the next tick; a second failure ends the tick with an error
                log("device lost during the tick (%s): re-applying the desired state" % exc)
                with state_lock(state_dir, timeout=lock_timeout):
                    for change in reapply_from_state(state_dir, node=node).changes:
                        log("repaired: %s" % change)
                dev.close()
                dev = open_device(res.implementation, settings.interface)
                device = dev.read()
            statuses, updates, events = tick(statuses, device, peers, now_fn(), settings_status)
            for event in events:
                log(event)
            if updates:
                with state_lock(state_dir, timeout=lock_timeout):
                    dev.apply(DeviceUpdate(peers=updates))
            if relays or applied_via:
                for event in decide_relays(statuses, relays, eligible, now_fn()):
                    log(event)
                applied_via = _follow_relays(state_dir, statuses, applied_via, log, lock_timeout, node)
            if settings.allow_down_peer_bypass:
                applied_up = _follow_bypass(state_dir, statuses, applied_up, log, lock_timeout, node)
            # every 5 s for 20 s; every 1 s while data flows, and on while data is unanswered (peerstatus.next_sample_delay)
            delay = next_sample_delay(before, statuses, elapsed, now_fn(), settings_status)
            if not delay:
                break
            elapsed += delay
            if disc is not None and disc.watching():
                # sleep until the next sample, applying what the Watch streams bring as it arrives
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if disc.wait(end - time.monotonic()):
                        peers = _discovery_poll(state_dir, state, disc, log, lock_timeout, peers, node)
            else:
                sleep_fn(delay)
    finally:
        dev.close()
    node.set_statuses(statuses)
    node.commit()  # the statuses, once, at the end of the tick
    if disc is not None:
        try:
            disc.harvest(statuses, peers)
        except Exception as exc:  # pylint: disable=broad-except  # harvesting is best effort
            log("discovery: harvesting failed (%s: %s)" % (type(exc).__name__, exc))
    path = metrics_file or os.path.join(state_dir, METRICS_FILE)
    # node_exporter's textfile directory may not exist yet (the role does not own it): create it
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    discovery_up = (1 if disc is not None else 0) if (state.get("discovery") or {}).get("enabled") else None
    atomic_write(path, render_metrics(statuses, now_fn(), len(res.changes), discovery_up).encode("utf-8"), 0o644)
    return rc


def status_records(state_dir: str, now: Optional[float] = None) -> List[dict]:
    """Peer status records for listings, Talos's field names: the agent's memory (last endpoint change,
    last used endpoint) merged with a live read of the device, the state computed as Talos does."""
    state = load_state(state_dir)
    if state is None:
        raise ReconcileError("no desired state in %s yet: run the kubespan.mesh playbook first" % state_dir)
    if state.get("disabled"):
        raise ReconcileError("KubeSpan is disabled on this node (kubespan_enabled: false)")
    statuses, problem = load_statuses(state_dir)
    if problem:
        raise StateFileError(problem)
    settings = settings_from_state(state)
    dev = open_device(settings.implementation, settings.interface)
    try:
        device = dev.read()
    finally:
        dev.close()
    now = time.time() if now is None else now
    records = []
    labels = {p["public_key"]: p.get("name") or "" for p in state.get("peers", [])}
    for spec in sorted(state.get("peers", []), key=lambda p: p["public_key"]):
        key = spec["public_key"]
        st = PeerStatus.from_dict(statuses[key].to_dict()) if key in statuses else PeerStatus(label=spec["name"])
        live = device.peers.get(key)
        if live is not None:
            update_from_wireguard(st, live)
            if not st.last_used_endpoint and live.endpoint:
                st.last_used_endpoint = live.endpoint
        st.state = calculate_state(st, now) if live is not None else "unknown"
        bump_version(statuses.get(key), st)
        records.append({
            "id": key,
            "version": st.version,
            "label": spec["name"],
            "endpoint": st.endpoint,
            "state": st.state,
            "receiveBytes": st.rx_bytes,
            "transmitBytes": st.tx_bytes,
            "lastHandshakeTime": st.last_handshake,
            "lastUsedEndpoint": st.last_used_endpoint,
            "lastEndpointChange": st.last_endpoint_change,
            "endpointChanges": st.endpoint_changes,
            "secondsSinceHandshake": round(now - st.last_handshake, 1) if st.last_handshake else None,
            "via": (labels.get(st.via) or st.via) if st.via else "",
        })
    return records
