# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The resident discovery watcher (``kubespan watch``, unit kubespan-watch.service; docs/discovery.md).

Talos's client holds one connection per service: one Hello and one Watch per (re)connection. The oneshot agent
cannot (it lives for one tick), so this small resident process does it for the node: per configured service it
says Hello once per connection (following redirects, as the agent does), holds one Watch stream open, and on every
snapshot or event merges and applies exactly as the agent's sampling window does (DiscoveryRound's merge, the
agent's peer updater and re-apply, under the node lock, with the same bounds on hostile input). On an error it
reconnects with exponential backoff and jitter. It never publishes: AffiliateUpdate stays with the agent's tick.

While it is alive and every service's stream is open (``watch.json`` in the state directory: a heartbeat every
HEARTBEAT seconds, per service whether its stream has a snapshot), the agent's tick opens no Watch or List and says
no Hello of its own (discovery_watchfile.current_watcher); when the watcher is dead, stale or disconnected from any service, the
tick falls back to what it did before (fail safe).
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from typing import Callable, Dict, Optional

from ..core.discovery_affiliates import apply_watch_event
from ..core.discovery_crypto import key_from_secret
from ..discovery.discovery_agent import (
    MAX_AFFILIATES,
    MAX_REASON_CHARS,
    MAX_REDIRECTS,
    DiscoveryRound,
    DiscoverySettingsError,
    make_client,
    normalize_settings,
    service_errors,
    service_settings,
    service_target,
)
from ..discovery.discovery_watchfile import WATCH_FILE, WATCH_VERSION, cluster_tag, watch_path
from ..host.statefile import write_json
from ..reconcile.engine import load_state
from .agent import discovery_poll_apply

HEARTBEAT = 10.0  # seconds between two writes of watch.json (also how often the desired state is re-read)
BACKOFF_MIN = 1.0  # the first reconnection waits 0.5-1 s, then doubling up to BACKOFF_MAX (Talos: backoff with jitter)
BACKOFF_MAX = 60.0
LOCK_TIMEOUT = 20.0
MERGE_EVERY = 30.0  # merge again without an event as often as the tick did (local changes: a new default route, filters)


def backoff_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnection number ``failures`` (1, 2, ...): BACKOFF_MIN doubling per failure, at most
    BACKOFF_MAX, with "equal jitter" (between half and all of it), so nodes that lost one service do not come back at
    the same instant."""
    n = max(1, int(failures))
    base = min(BACKOFF_MAX, BACKOFF_MIN * (2.0 ** min(n - 1, 30)))
    return base / 2.0 + base / 2.0 * min(1.0, max(0.0, rand()))


class _ServiceWatch:
    """One configured service: Hello per connection, one Watch stream, reconnection with backoff (a thread)."""

    def __init__(self, owner: Watcher, endpoint: str, settings: dict, cluster_id: str, node_id: str):
        self.owner = owner
        self.configured = endpoint
        self.settings = settings
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.current: Dict[str, object] = {}
        self.connected = False
        self.client_ip: Optional[str] = None
        self.since = 0.0
        self.error = ""
        self.failures = 0
        self.stop = threading.Event()
        self.stream = None
        self.client = None
        self.thread = threading.Thread(target=self.run, daemon=True, name="kubespan-watch")

    def entry(self) -> dict:
        with self.lock:
            own = self.current.get(self.node_id) if self.node_id else None
            out = {"connected": self.connected, "endpoint": self.endpoint, "client_ip": self.client_ip, "since": self.since,
                   "error": self.error, "affiliates": len(self.current)}
            out["self"] = ({"data": base64.b64encode(own.data or b"").decode(), "endpoints": [base64.b64encode(e).decode() for e in own.endpoints]}
                           if own is not None else None)
        return out

    def view(self) -> list:
        with self.lock:
            return list(self.current.values())

    def close(self) -> None:
        self.stop.set()
        stream, client = self.stream, self.client
        if stream is not None:
            try:
                stream.cancel()
            except Exception:  # pylint: disable=broad-except  # cancelling never fails the watcher
                pass
        if client is not None:
            try:
                client.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def _connect(self):
        """Hello on a new connection, following redirects as the agent does (at most MAX_REDIRECTS, never back)."""
        settings = self.settings
        client = self.owner.client_factory(settings)
        self.client = client
        hello = client.hello(self.cluster_id)
        asked = [self.configured]
        while hello.redirect and len(asked) <= MAX_REDIRECTS:
            target = str(hello.redirect).strip()
            if target in asked:
                break
            try:
                service_target(target, settings["insecure"])
            except DiscoverySettingsError:
                break
            client.close()
            settings = dict(settings, endpoint=target, server_name="")
            client = self.owner.client_factory(settings)
            self.client = client
            asked.append(target)
            hello = client.hello(self.cluster_id)
        return client, asked[-1], hello

    def run(self) -> None:
        errors = service_errors()
        while not self.stop.is_set():
            error = ""
            try:
                client, endpoint, hello = self._connect()
                with self.lock:
                    self.endpoint, self.client_ip = endpoint, hello.client_ip
                if self.stop.is_set():
                    break
                self.stream = client.watch(self.cluster_id, timeout=None)
                for event in self.stream:
                    with self.lock:
                        self.current = apply_watch_event(self.current, event.snapshot, event.deleted, event.affiliates)
                        if len(self.current) > MAX_AFFILIATES:  # a hostile service: keep the first by ID, as List does
                            self.current = {k: self.current[k] for k in sorted(self.current)[:MAX_AFFILIATES]}
                        if event.snapshot:
                            self.connected, self.since, self.error = True, self.owner.now_fn(), ""
                    if event.snapshot:
                        if self.failures:
                            self.owner.log("discovery watch: %s connected again (after %d failures)" % (self.configured, self.failures))
                        self.failures = 0
                    self.owner.changed.set()
                if self.stop.is_set():
                    break
                raise ValueError("the service ended the Watch stream")
            except errors as exc:
                error = str(exc)[:MAX_REASON_CHARS]
            except Exception as exc:  # pylint: disable=broad-except  # a bug must not end the watcher: back off and retry
                error = ("%s: %s" % (type(exc).__name__, exc))[:MAX_REASON_CHARS]
            finally:
                stream, client = self.stream, self.client
                self.stream = self.client = None
                if stream is not None:
                    try:
                        stream.cancel()
                    except Exception:  # pylint: disable=broad-except
                        pass
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # pylint: disable=broad-except
                        pass
            if self.stop.is_set():
                break
            with self.lock:
                self.connected = False
                self.error = error
            self.failures += 1
            delay = backoff_delay(self.failures)
            if self.failures == 1 or self.failures & (self.failures - 1) == 0:  # logged at failures 1, 2, 4, 8, ...
                self.owner.log("discovery watch: %s: %s; reconnecting in %.1f s (failure %d; the agent's tick lists "
                               "meanwhile)" % (self.configured, error, delay, self.failures))
            self.owner.heartbeat()
            self.stop.wait(delay)


class Watcher:
    """The resident process: re-reads the desired state every HEARTBEAT seconds, runs one _ServiceWatch per configured
    service while discovery is on, merges and applies on every change, writes the heartbeat."""

    def __init__(self, state_dir: str, log: Callable[[str], None], now_fn: Callable[[], float] = time.time,
                 client_factory: Optional[Callable] = None, lock_timeout: float = LOCK_TIMEOUT):
        self.state_dir = state_dir
        self.log = log
        self.now_fn = now_fn
        self.client_factory = client_factory or make_client
        self.lock_timeout = lock_timeout
        self.changed = threading.Event()
        self.watches: Dict[str, _ServiceWatch] = {}
        self.key_of: Optional[tuple] = None
        self.hb_lock = threading.Lock()

    def _config(self):
        """(cluster ID, settings, node ID) of the desired state when discovery is on, else None."""
        try:
            state = load_state(self.state_dir)
        except Exception as exc:  # pylint: disable=broad-except  # unreadable now: keep what runs, try again
            self.log("discovery watch: desired state unreadable (%s): trying again in %.0f s" % (exc, HEARTBEAT))
            return self.key_of
        if not state or state.get("disabled") or not (state.get("discovery") or {}).get("enabled"):
            return None
        try:
            settings = normalize_settings(state.get("discovery"))
        except DiscoverySettingsError as exc:
            self.log("discovery watch: %s" % exc)
            return None
        node_id = (state.get("local_affiliate") or {}).get("node_id") or ""
        return (state.get("cluster_id") or "", json.dumps(settings, sort_keys=True), node_id, settings)

    def reconfigure(self) -> None:
        config = self._config()
        key = config[:3] if config else None
        if key == (self.key_of[:3] if self.key_of else None):
            return
        self.stop_all()
        self.key_of = config
        if config is None:
            self.log("discovery watch: discovery is off (or no desired state yet): no stream held")
            return
        cluster_id, _rep, node_id, settings = config
        for endpoint in settings["endpoints"]:
            w = _ServiceWatch(self, endpoint, service_settings(settings, endpoint), cluster_id, node_id)
            self.watches[endpoint] = w
            w.thread.start()
        self.log("discovery watch: holding a Watch stream on %s" % ", ".join(settings["endpoints"]))

    def stop_all(self) -> None:
        watches, self.watches = self.watches, {}
        for w in watches.values():
            w.close()
        for w in watches.values():
            w.thread.join(timeout=2.0)

    def heartbeat(self) -> None:
        config = self.key_of
        if config is None:
            status = {"version": WATCH_VERSION, "pid": os.getpid(), "at": self.now_fn(), "cluster": "", "services": {}}
        else:
            status = {"version": WATCH_VERSION, "pid": os.getpid(), "at": self.now_fn(), "cluster": cluster_tag(config[0]),
                      "services": {ep: w.entry() for ep, w in list(self.watches.items())}}
        with self.hb_lock:
            try:
                write_json(watch_path(self.state_dir), status)
            except Exception as exc:  # pylint: disable=broad-except  # the tick then falls back: log, go on
                self.log("discovery watch: %s not written (%s): the agent's tick lists on its own" % (WATCH_FILE, exc))

    def merge(self) -> bool:
        """Merge the services' views and apply, as the agent's sampling window does (DiscoveryRound.merge_views, the
        agent's peer updater and re-apply under the node lock). True when the peer set changed."""
        state = load_state(self.state_dir)
        if not state or state.get("disabled") or not (state.get("discovery") or {}).get("enabled"):
            return False
        rnd = DiscoveryRound(self.state_dir, state, self.log, self.now_fn, client_factory=self.client_factory)
        rnd.key = key_from_secret(state["cluster_secret"])
        views = {}
        for ep, w in list(self.watches.items()):
            with w.lock:
                if w.connected:
                    views[ep] = list(w.current.values())
        if not views:
            return False
        return discovery_poll_apply(self.state_dir, state, lambda update: rnd.merge_views(views, update), self.log,
                                    self.lock_timeout, "applied (discovery watch)")

    def run(self, stop: threading.Event) -> int:
        self.log("discovery watch: started (pid %d)" % os.getpid())
        next_beat = 0.0
        last_merge = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self.reconfigure()
                    self.heartbeat()
                    next_beat = now + HEARTBEAT
                if now - last_merge >= MERGE_EVERY:
                    self.changed.set()
                if self.changed.wait(max(0.0, min(1.0, next_beat - time.monotonic()))):
                    self.changed.clear()
                    last_merge = time.monotonic()
                    try:
                        self.merge()
                    except Exception as exc:  # pylint: disable=broad-except  # the tick's fallback covers a failed merge
                        self.log("discovery watch: changes not applied (%s: %s)" % (type(exc).__name__, exc))
                    self.heartbeat()
        finally:
            self.stop_all()
            try:
                os.unlink(watch_path(self.state_dir))  # stopped: the next tick lists at once
            except OSError:
                pass
            self.log("discovery watch: stopped")
        return 0


def main(state_dir: str, log: Callable[[str], None]) -> int:
    """``kubespan watch``: run until SIGTERM or SIGINT."""
    import signal
    stop = threading.Event()

    def handler(_signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return Watcher(state_dir, log).run(stop)
