# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The resident discovery watcher's status file (``watch.json``) and the agent tick's choice (docs/discovery.md).

The watcher (discovery_watch.py, ``kubespan watch``) writes ``watch.json`` in the state directory: a heartbeat, its
pid, a digest of the cluster ID and, per configured service, whether its Watch stream has a snapshot, where it is
connected, the address the service sees and this node's own affiliate as the service holds it. The tick
(agent.py, discovery_agent.DiscoveryRound) reads it here: :func:`current_watcher` says whether the tick may rely on
the watcher (then it opens no Watch or List and says no Hello) or must fall back to its own requests (fail safe).
Pure apart from reading the file: the standard library and statefile only.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Callable, Dict, List, Optional

from ..host import layout
from ..host.statefile import StateFileError, read_json

WATCH_FILE = layout.WATCH
WATCH_VERSION = 1
STALE_AFTER = 35.0  # a heartbeat older than this (or from the future) is a dead watcher: the tick falls back


def cluster_tag(cluster_id: str) -> str:
    """What watch.json keeps of the cluster ID (a digest: the ID itself is not written there)."""
    return hashlib.sha256(str(cluster_id).encode("utf-8")).hexdigest()[:16]


def watch_path(state_dir: str) -> str:
    return os.path.join(state_dir, WATCH_FILE)


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def current_watcher(status, cluster_id: str, endpoints: List[str], now: float,
                    alive: Callable[[object], bool] = pid_alive) -> Optional[Dict[str, dict]]:
    """The watcher's per-service entries (configured endpoint -> entry) when the tick may rely on it, else None.

    Relied on only when: the file is well formed, its heartbeat is at most STALE_AFTER old and not from the future,
    its process is alive, it watches this cluster and exactly the configured services, and every service's stream is
    connected with a snapshot. Anything else (no watcher, an old one, a service down): None, the tick's own
    Watch/List as before."""
    if not isinstance(status, dict) or status.get("version") != WATCH_VERSION or not endpoints:
        return None
    at = status.get("at")
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not now - STALE_AFTER <= at <= now + 5.0:
        return None
    if not alive(status.get("pid")):
        return None
    if status.get("cluster") != cluster_tag(cluster_id):
        return None
    services = status.get("services")
    if not isinstance(services, dict) or sorted(services) != sorted(endpoints):
        return None
    out = {}
    for endpoint in endpoints:
        entry = services.get(endpoint)
        if not isinstance(entry, dict) or entry.get("connected") is not True:
            return None
        out[endpoint] = entry
    return out


def load_watcher(state_dir: str, cluster_id: str, endpoints: List[str], now: float) -> Optional[Dict[str, dict]]:
    """current_watcher of the state directory's watch.json (None when missing or unreadable)."""
    try:
        status = read_json(watch_path(state_dir))
    except (OSError, StateFileError, ValueError):
        return None
    return current_watcher(status, cluster_id, endpoints, now)


class WatchedSelf:
    """This node's own affiliate as the watcher saw it, in the shape stored_is_current reads (id, data, endpoints)."""

    def __init__(self, node_id: str, entry) -> None:
        self.id = node_id
        self.data = b""
        self.endpoints: List[bytes] = []
        if isinstance(entry, dict):
            try:
                self.data = base64.b64decode(str(entry.get("data") or ""), validate=True)
                self.endpoints = [base64.b64decode(str(e), validate=True) for e in list(entry.get("endpoints") or [])[:64]]
            except (ValueError, TypeError):
                self.data, self.endpoints = b"", []


def self_listing(entry: dict, node_id: str) -> list:
    """What the tick gives stored_is_current instead of a List: this node's own affiliate as the watcher last saw it
    ([] when the service does not have it: the tick publishes again at once, as after a List without it)."""
    own = entry.get("self") if isinstance(entry, dict) else None
    return [WatchedSelf(node_id, own)] if isinstance(own, dict) and node_id else []
