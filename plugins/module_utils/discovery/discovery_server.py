# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""State of the discovery service: clusters of affiliates, TTLs, limits, watchers, persistence. Pure logic.

The service stores what clients send, encrypted: the affiliate data blob (AES-GCM) and the endpoint blobs
(AES-ECB, so identical endpoints deduplicate). It never holds a key. The cluster ID and affiliate IDs are
plaintext routing keys. Time comes from an injected ``clock`` (seconds, wall clock: expirations are persisted).

Talos's limits (siderolabs/discovery-service pkg/limits) are enforced here; every violation raises
:class:`LimitError` whose ``code`` is ``invalid_argument`` or ``resource_exhausted`` and whose message names
the limit. Where this differs from Talos's service, it says so (docs/discovery.md).
"""

from __future__ import annotations

import base64
import binascii
import collections
import ipaddress
import json
import math
import threading
import time
from typing import Callable, Deque, Dict, List, Optional

from ..base.errors import KubeSpanError
from ..core.discovery_wire import (
    AffiliateDeleteRequest,
    AffiliateDeleteResponse,
    AffiliateUpdateRequest,
    AffiliateUpdateResponse,
    HelloRequest,
    HelloResponse,
    ListRequest,
    ListResponse,
    RedirectMessage,
    ServerAffiliate,
    WatchRequest,
    WatchResponse,
    WireError,
)
from ..host.statefile import StateFileError, atomic_write, read_text

CLUSTER_ID_MAX = 256
AFFILIATE_ID_MAX = 256
AFFILIATE_DATA_MAX = 2048
AFFILIATE_ENDPOINT_MAX = 32
AFFILIATE_ENDPOINTS_MAX = 64
TTL_MAX = 30 * 60.0
CLUSTER_AFFILIATES_MAX = 1024
RATE_PER_SECOND = 15.0
RATE_BURST = 60
GC_INTERVAL = 60.0
# Ours (Talos has no such limits): bounds on memory for the whole service. CLUSTERS_MAX bounds clusters nobody
# uses twice; AFFILIATES_MAX and MEMORY_MAX bound every cluster together (docs/discovery.md, "Abuse"):
# MEMORY_MAX counts the estimated bytes of what is stored (see affiliate_cost), not the process's RSS.
CLUSTERS_MAX = 100000
AFFILIATES_MAX = 10000
MEMORY_MAX = 64 * 1024 * 1024
# Estimated Python overhead of one stored affiliate and of one stored endpoint: a maximum-size affiliate counts
# 17.5 KB, above the 11.6 KB tracemalloc measures for it on CPython 3.11, to leave room for the allocator.
AFFILIATE_OVERHEAD = 600
ENDPOINT_OVERHEAD = 200
# Updates queued per watcher before it is cut off (Talos: 32); it re-watches and gets a fresh snapshot.
WATCH_QUEUE_MAX = 32
STATE_FORMAT = 1

INVALID_ARGUMENT = "invalid_argument"
RESOURCE_EXHAUSTED = "resource_exhausted"


class LimitError(KubeSpanError):
    """A request breaks a service limit. ``code``: INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> LimitError:
    return LimitError(INVALID_ARGUMENT, message)


def validate_cluster_id(cluster_id: str) -> None:
    if not cluster_id:
        raise _invalid("cluster ID can't be empty")
    size = len(cluster_id.encode("utf-8"))
    if size > CLUSTER_ID_MAX:
        raise _invalid("cluster ID is too long: %d bytes, the limit is %d" % (size, CLUSTER_ID_MAX))


def validate_affiliate_id(affiliate_id: str) -> None:
    if not affiliate_id:
        raise _invalid("affiliate ID can't be empty")
    size = len(affiliate_id.encode("utf-8"))
    if size > AFFILIATE_ID_MAX:
        raise _invalid("affiliate ID is too long: %d bytes, the limit is %d" % (size, AFFILIATE_ID_MAX))


class _Affiliate:
    __slots__ = ("id", "data", "expires", "endpoints")

    def __init__(self, affiliate_id: str):
        self.id = affiliate_id
        self.data = b""
        self.expires = 0.0
        self.endpoints: List[List] = []  # [blob, expires], in arrival order

    def export(self) -> ServerAffiliate:
        return ServerAffiliate(id=self.id, data=self.data, endpoints=[e[0] for e in self.endpoints])

    def cost(self) -> int:
        return affiliate_cost(self.id, self.data, (e[0] for e in self.endpoints))


def affiliate_cost(affiliate_id: str, data: bytes, endpoints) -> int:
    """The estimated memory of one stored affiliate (what MEMORY_MAX counts): its bytes plus Python's overhead."""
    return (AFFILIATE_OVERHEAD + len(affiliate_id) + len(data)
            + sum(ENDPOINT_OVERHEAD + len(blob) for blob in endpoints))


def source_key(ip: Optional[str]) -> Optional[str]:
    """The network a client address counts against: its /24 (IPv4) or /64 (IPv6); None when unknown.

    Rate limits and the cap on watchers apply per source network, not per address: one host with many
    addresses of the same /64 (or a /24 of hosts) counts once. An IPv4-mapped IPv6 address counts as IPv4.
    """
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network("%s/%d" % (addr, prefix), strict=False))


class Subscription:
    """A watcher of one cluster: ``snapshot`` first, then :meth:`get` returns (deleted, ServerAffiliate) events.

    When more than ``WATCH_QUEUE_MAX`` events wait, the subscription is cut off (``overflowed``): the client
    must watch again and gets a fresh snapshot, as with Talos's service.
    """

    def __init__(self, state: DiscoveryState, cluster_id: str, snapshot: List[ServerAffiliate]):
        self._state = state
        self.cluster_id = cluster_id
        self.snapshot = snapshot
        self._events: Deque = collections.deque()
        self._cond = threading.Condition()
        self.overflowed = False
        self.closed = False

    def _push(self, deleted: bool, affiliate: ServerAffiliate) -> None:
        with self._cond:
            if self.closed or self.overflowed:
                return
            if len(self._events) >= WATCH_QUEUE_MAX:
                self.overflowed = True
                self._events.clear()
            else:
                self._events.append((deleted, affiliate))
            self._cond.notify_all()

    def get(self, timeout: Optional[float] = None):
        """The next (deleted, affiliate) event, or None after ``timeout`` seconds, on overflow or once closed."""
        with self._cond:
            if not self._events and not self.closed and not self.overflowed:
                self._cond.wait(timeout)
            if self._events:
                return self._events.popleft()
            return None

    def pending(self) -> int:
        with self._cond:
            return len(self._events)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._events.clear()
            self._cond.notify_all()
        self._state._unsubscribe(self)


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second, bursts of ``burst`` (Talos: 15/s, 60, per IP).

    DiscoveryService uses the client's source network as key (source_key: /24 or /64), not its address.
    """

    def __init__(self, rate: float = RATE_PER_SECOND, burst: int = RATE_BURST, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self._buckets: Dict[str, List[float]] = {}
        self._lock = threading.Lock()

    def allow(self, ip: str) -> bool:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(ip)
            if bucket is None:
                bucket = self._buckets[ip] = [self.burst, now]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return True
            bucket[0] = tokens
            return False

    def gc(self) -> int:
        """Forget IPs whose bucket is full again (they would be allowed a full burst anyway)."""
        now = self.clock()
        with self._lock:
            full = [ip for ip, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
            for ip in full:
                del self._buckets[ip]
            return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


class LogSampler:
    """Bounds the log lines of rejected requests: at most ``limit`` per ``interval`` seconds are logged; the rest
    are counted by kind and summed up in one line (:meth:`summary`) when the interval ends.

    ``admit(kind)`` -> True: log this one. ``summary()`` -> the line for the rejections not logged in the last
    interval, or None; call it at each rejection and from housekeeping."""

    def __init__(self, limit: int = 20, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.interval, self.clock = int(limit), float(interval), clock
        self._start = clock()
        self._logged = 0
        self._suppressed: Dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, kind: str) -> bool:
        with self._lock:
            if self._logged < self.limit:
                self._logged += 1
                return True
            if len(self._suppressed) < 64 or kind in self._suppressed:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            else:
                self._suppressed["other"] = self._suppressed.get("other", 0) + 1
            return False

    def summary(self, force: bool = False) -> Optional[str]:
        """The line for the rejections not logged since the interval began, once it is over (or now: ``force``)."""
        with self._lock:
            now = self.clock()
            if now - self._start < self.interval and not force:
                return None
            suppressed, elapsed = self._suppressed, now - self._start
            self._start, self._logged, self._suppressed = now, 0, {}
        if not suppressed:
            return None
        kinds = sorted(suppressed.items(), key=lambda kv: (-kv[1], kv[0]))
        return "%d more rejected requests in the last %.0f s, not logged one by one: %s" % (
            sum(suppressed.values()), elapsed, ", ".join("%s: %d" % kv for kv in kinds[:10]))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class DiscoveryState:
    """All clusters. Thread-safe; every method that needs the time reads ``clock()`` once."""

    def __init__(self, clock: Callable[[], float] = time.time, clusters_max: int = CLUSTERS_MAX,
                 affiliates_max: int = AFFILIATES_MAX, memory_max: int = MEMORY_MAX):
        self.clock = clock
        self.clusters_max = clusters_max
        self.affiliates_max = affiliates_max
        self.memory_max = memory_max
        self._clusters: Dict[str, Dict[str, _Affiliate]] = {}
        self._affiliates = 0  # in every cluster
        self._memory = 0  # sum of affiliate_cost of every stored affiliate
        self._subscriptions: Dict[str, List[Subscription]] = {}
        self._lock = threading.RLock()
        self.dirty = False  # changed since the last save

    # --- requests --------------------------------------------------------------------------------

    def update(self, cluster_id: str, affiliate_id: str, data: Optional[bytes], endpoints: List[bytes], ttl: float) -> bool:
        """AffiliateUpdate: set the data (None: keep it), merge endpoints, extend expirations to now + ttl.

        Returns True when watchers were notified (something changed). A request that breaks a limit changes
        nothing. Endpoints beyond AFFILIATE_ENDPOINTS_MAX are no error: the endpoints this request does not
        carry are evicted, those refreshed longest ago first, so the latest update (its data and its
        endpoints) is always stored. Talos's service stores the data too but then answers RESOURCE_EXHAUSTED
        and stores no new endpoint, which let anyone knowing the cluster ID lock an affiliate's endpoints.
        """
        validate_cluster_id(cluster_id)
        validate_affiliate_id(affiliate_id)
        if data is not None and len(data) > AFFILIATE_DATA_MAX:
            raise _invalid("affiliate data is too big: %d bytes, the limit is %d" % (len(data), AFFILIATE_DATA_MAX))
        for blob in endpoints:
            if len(blob) > AFFILIATE_ENDPOINT_MAX:
                raise _invalid("affiliate endpoint is too big: %d bytes, the limit is %d" % (len(blob), AFFILIATE_ENDPOINT_MAX))
        if len(endpoints) > AFFILIATE_ENDPOINTS_MAX:
            raise _invalid("too many endpoints in one request: %d, the limit is %d" % (len(endpoints), AFFILIATE_ENDPOINTS_MAX))
        if math.isnan(ttl) or ttl <= 0:
            raise _invalid("ttl must be positive")
        if ttl > TTL_MAX:
            raise _invalid("ttl is too large: %g s, the limit is %d s" % (ttl, TTL_MAX))
        now = self.clock()
        expires = now + ttl
        requested = set(endpoints)
        with self._lock:
            cluster = self._clusters.get(cluster_id)
            if cluster is None:
                if len(self._clusters) >= self.clusters_max:
                    raise LimitError(RESOURCE_EXHAUSTED, "too many clusters on this service: the limit is %d" % self.clusters_max)
            affiliate = (cluster or {}).get(affiliate_id)
            if affiliate is None:
                if cluster is not None and len(cluster) >= CLUSTER_AFFILIATES_MAX:
                    raise LimitError(RESOURCE_EXHAUSTED, "too many affiliates in the cluster: the limit is %d" % CLUSTER_AFFILIATES_MAX)
                if self._affiliates >= self.affiliates_max:
                    raise LimitError(RESOURCE_EXHAUSTED, "too many affiliates on this service: the limit is %d (all clusters)"
                                     % self.affiliates_max)
            known = {e[0] for e in affiliate.endpoints} if affiliate else set()
            new = list(dict.fromkeys(b for b in endpoints if b not in known))
            # the endpoints kept: refreshed ones get the new expiry; when over the limit, evict the oldest not in this request
            kept = [[e[0], max(e[1], expires) if e[0] in requested else e[1]] for e in (affiliate.endpoints if affiliate else [])]
            evicted = max(0, len(kept) + len(new) - AFFILIATE_ENDPOINTS_MAX)
            if evicted:
                victims = sorted((i for i, e in enumerate(kept) if e[0] not in requested), key=lambda i: (kept[i][1], i))[:evicted]
                drop = set(victims)
                kept = [e for i, e in enumerate(kept) if i not in drop]
            kept.extend([bytes(b), expires] for b in new)
            new_data = bytes(data) if data is not None and len(data) > 0 else (affiliate.data if affiliate else b"")
            old_cost = affiliate.cost() if affiliate else 0
            new_cost = affiliate_cost(affiliate_id, new_data, (e[0] for e in kept))
            if new_cost > old_cost and self._memory - old_cost + new_cost > self.memory_max:
                raise LimitError(RESOURCE_EXHAUSTED, "the service's memory limit is reached: %d MiB of affiliates stored "
                                 "(limit %d MiB)" % (self._memory // (1 << 20), self.memory_max // (1 << 20)))
            created = affiliate is None
            if cluster is None:
                cluster = self._clusters[cluster_id] = {}
            if created:
                affiliate = cluster[affiliate_id] = _Affiliate(affiliate_id)
                self._affiliates += 1
            changed = created or bool(new) or bool(evicted)
            if data is not None and len(data) > 0:
                changed = changed or new_data != affiliate.data
                affiliate.data = new_data
                affiliate.expires = expires  # as Talos: new data sets the expiry, endpoints only extend it
            affiliate.endpoints = kept
            if affiliate.expires < expires and (data is None or len(data) == 0):
                affiliate.expires = expires
            self._memory += new_cost - old_cost
            self.dirty = True
            if changed:
                self._notify(cluster_id, False, affiliate.export())
            return changed

    def delete(self, cluster_id: str, affiliate_id: str) -> bool:
        validate_cluster_id(cluster_id)
        validate_affiliate_id(affiliate_id)
        with self._lock:
            cluster = self._clusters.get(cluster_id)
            if not cluster or affiliate_id not in cluster:
                return False
            self._forget(cluster.pop(affiliate_id))
            self.dirty = True
            self._notify(cluster_id, True, ServerAffiliate(id=affiliate_id))
            return True

    def list(self, cluster_id: str) -> List[ServerAffiliate]:
        """The cluster's affiliates (expired ones that GC has not removed yet included, as in Talos), sorted by ID."""
        validate_cluster_id(cluster_id)
        with self._lock:
            cluster = self._clusters.get(cluster_id) or {}
            return [cluster[aid].export() for aid in sorted(cluster)]

    def subscribe(self, cluster_id: str) -> Subscription:
        """Watch: the snapshot and the subscription are taken atomically, so no update falls in between."""
        validate_cluster_id(cluster_id)
        with self._lock:
            sub = Subscription(self, cluster_id, self.list(cluster_id))
            self._subscriptions.setdefault(cluster_id, []).append(sub)
            return sub

    def _forget(self, affiliate: _Affiliate) -> None:
        self._affiliates -= 1
        self._memory -= affiliate.cost()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscriptions.get(sub.cluster_id) or []
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self._subscriptions.pop(sub.cluster_id, None)

    def _notify(self, cluster_id: str, deleted: bool, affiliate: ServerAffiliate) -> None:
        for sub in list(self._subscriptions.get(cluster_id) or ()):
            sub._push(deleted, affiliate)

    # --- housekeeping ----------------------------------------------------------------------------

    def gc(self) -> Dict[str, int]:
        """Remove expired affiliates (watchers get a delete) and expired endpoints (watchers get the update);
        forget clusters with neither affiliates nor watchers."""
        now = self.clock()
        removed = endpoints = clusters = 0
        with self._lock:
            for cluster_id in list(self._clusters):
                cluster = self._clusters[cluster_id]
                for affiliate_id in sorted(cluster):
                    affiliate = cluster[affiliate_id]
                    if affiliate.expires <= now:
                        self._forget(cluster.pop(affiliate_id))
                        removed += 1
                        self._notify(cluster_id, True, ServerAffiliate(id=affiliate_id))
                        continue
                    kept = [e for e in affiliate.endpoints if e[1] > now]
                    if len(kept) != len(affiliate.endpoints):
                        endpoints += len(affiliate.endpoints) - len(kept)
                        self._memory -= affiliate.cost()
                        affiliate.endpoints = kept
                        self._memory += affiliate.cost()
                        self._notify(cluster_id, False, affiliate.export())
                if not cluster and not self._subscriptions.get(cluster_id):
                    del self._clusters[cluster_id]
                    clusters += 1
            if removed or endpoints or clusters:
                self.dirty = True
        return {"affiliates": removed, "endpoints": endpoints, "clusters": clusters}

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {
                "clusters": len(self._clusters),
                "affiliates": sum(len(c) for c in self._clusters.values()),
                "endpoints": sum(len(a.endpoints) for c in self._clusters.values() for a in c.values()),
                "subscriptions": sum(len(s) for s in self._subscriptions.values()),
            }

    def memory(self) -> int:
        """The estimated bytes stored (what memory_max bounds)."""
        with self._lock:
            return self._memory

    # --- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> list:
        """What to_json serializes, copied under the lock: (cluster ID, [(affiliate ID, data, expires, [(blob, expires)])]).

        Cheap (references to immutable bytes); the encoding happens outside the lock, so a save of a large state
        does not stall the requests."""
        with self._lock:
            return [(cid, [(aid, a.data, a.expires, [(e[0], e[1]) for e in a.endpoints]) for aid, a in cluster.items()])
                    for cid, cluster in self._clusters.items() if cluster]

    def to_json(self, snapshot: Optional[list] = None) -> dict:
        snapshot = self.snapshot() if snapshot is None else snapshot
        return {
            "format": STATE_FORMAT,
            "saved_at": self.clock(),
            "clusters": {
                cid: {aid: {"data": b64(data), "expires": expires, "endpoints": [[b64(blob), exp] for blob, exp in endpoints]}
                      for aid, data, expires, endpoints in sorted(affiliates)}
                for cid, affiliates in sorted(snapshot)
            },
        }

    def load_json(self, doc, where: str = "state") -> int:
        """Replace the clusters with a saved state (expired entries are dropped). Returns the affiliates loaded.
        Raises StateFileError naming ``where`` when the document is not a state this code wrote."""
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or not isinstance(doc.get("clusters"), dict):
            raise StateFileError("%s is not a discovery service state (format %d)" % (where, STATE_FORMAT))
        now = self.clock()
        clusters: Dict[str, Dict[str, _Affiliate]] = {}
        count = memory = 0
        try:
            for cid, cluster in doc["clusters"].items():
                validate_cluster_id(cid)
                for aid, entry in cluster.items():
                    validate_affiliate_id(aid)
                    affiliate = _Affiliate(aid)
                    affiliate.data = base64.b64decode(entry["data"], validate=True)
                    affiliate.expires = float(entry["expires"])
                    affiliate.endpoints = [[base64.b64decode(blob, validate=True), float(exp)] for blob, exp in entry["endpoints"]]
                    if (len(affiliate.data) > AFFILIATE_DATA_MAX or len(affiliate.endpoints) > AFFILIATE_ENDPOINTS_MAX
                            or any(len(e[0]) > AFFILIATE_ENDPOINT_MAX for e in affiliate.endpoints)):
                        raise ValueError("affiliate %s breaks a limit" % aid)
                    affiliate.endpoints = [e for e in affiliate.endpoints if e[1] > now]
                    if affiliate.expires > now:
                        clusters.setdefault(cid, {})[aid] = affiliate
                        count += 1
                        memory += affiliate.cost()
                if len(clusters.get(cid, {})) > CLUSTER_AFFILIATES_MAX:
                    raise ValueError("cluster has more than %d affiliates" % CLUSTER_AFFILIATES_MAX)
                if count > self.affiliates_max or memory > self.memory_max or len(clusters) > self.clusters_max:
                    raise ValueError("more affiliates than the service's limits (%d affiliates, %d MiB)"
                                     % (self.affiliates_max, self.memory_max // (1 << 20)))
        except (AttributeError, KeyError, TypeError, ValueError, binascii.Error, LimitError) as exc:
            raise StateFileError("%s is corrupt: %s" % (where, exc))
        with self._lock:
            self._clusters = clusters
            self._affiliates = count
            self._memory = memory
            self.dirty = False
        return count

    def save(self, path: str) -> None:
        """Write the state atomically (statefile.atomic_write, mode 0600)."""
        with self._lock:
            snapshot = self.snapshot()
            self.dirty = False
        doc = self.to_json(snapshot)  # encoded outside the lock
        atomic_write(path, (json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n").encode("ascii"))

    def load(self, path: str) -> int:
        """Load a state file written by :meth:`save`; a missing file loads nothing (returns 0)."""
        text = read_text(path)
        if text is None:
            return 0
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise StateFileError("%s is not valid JSON (%s): the file is corrupt" % (path, exc))
        return self.load_json(doc, path)


def client_ip_bytes(ip: Optional[str]) -> bytes:
    """The client address as Hello reports it: 4 bytes for IPv4 (also when it came as ::ffff:a.b.c.d), 16 for IPv6."""
    if not ip:
        return b""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return b""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.packed


REQUEST_SOURCES_MAX = 4096  # client addresses counted one by one; the rest are counted under "other"
REQUEST_METHODS = ("Hello", "AffiliateUpdate", "AffiliateDelete", "List", "Watch")


class RequestCounter:
    """Requests received per client address and method since the service started (refused ones too): what the
    ``--stats-file`` option writes, so that a test (molecule/discovery) can count each node's requests over a window.
    Bounded: at most ``max_sources`` addresses, the rest under "other"."""

    def __init__(self, max_sources: int = REQUEST_SOURCES_MAX):
        self.max_sources = max(1, int(max_sources))
        self._counts: Dict[str, Dict[str, int]] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._saved = -1

    def count(self, ip: Optional[str], method: str) -> None:
        key = str(ip) if ip else "unknown"
        with self._lock:
            if key not in self._counts and len(self._counts) >= self.max_sources:
                key = "other"
            per = self._counts.setdefault(key, {})
            per[method] = per.get(method, 0) + 1
            self._version += 1

    def snapshot(self) -> Dict[str, Dict[str, int]]:
        with self._lock:
            return {k: dict(v) for k, v in self._counts.items()}

    def save(self, path: str, clock: Callable[[], float] = time.time) -> bool:
        """Write the counts (JSON, atomically, 0600) when they changed since the last save; True when written."""
        with self._lock:
            version = self._version
            counts = {k: dict(v) for k, v in self._counts.items()}
        if version == self._saved:
            return False
        atomic_write(path, json.dumps({"at": clock(), "requests": counts}, sort_keys=True).encode("utf-8"), 0o600)
        self._saved = version
        return True


class DiscoveryService:
    """The service's requests as bytes in, bytes out: decoding, rate limit, limits, state. No transport.

    Every method takes the encoded request and the client's IP (text, None when unknown) and returns the
    encoded response, or raises LimitError (INVALID_ARGUMENT for malformed requests and broken limits,
    RESOURCE_EXHAUSTED for the rate limit and full clusters).
    """

    def __init__(self, state: Optional[DiscoveryState] = None, limiter: Optional[RateLimiter] = None, redirect: str = "",
                 report_client_ip: bool = True):
        self.state = state if state is not None else DiscoveryState()
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.redirect = redirect
        self.report_client_ip = report_client_ip
        self.requests = RequestCounter()

    def _admit(self, ip: Optional[str], method: str = "") -> None:
        if method:
            self.requests.count(ip, method)
        source = source_key(ip)
        if source and not self.limiter.allow(source):
            raise LimitError(RESOURCE_EXHAUSTED, "rate limit: more than %g requests/s (burst %d) from %s"
                             % (self.limiter.rate, self.limiter.burst, source))

    @staticmethod
    def _decode(message_class, request: bytes):
        try:
            return message_class.decode(request)
        except WireError as exc:
            raise _invalid("malformed %s: %s" % (message_class.__name__, exc))

    def hello(self, request: bytes, ip: Optional[str] = None) -> bytes:
        self._admit(ip, "Hello")
        req = self._decode(HelloRequest, request)
        validate_cluster_id(req.cluster_id)
        resp = HelloResponse(client_ip=client_ip_bytes(ip) if self.report_client_ip else b"")
        if self.redirect:
            resp.redirect = RedirectMessage(endpoint=self.redirect)
        return resp.encode()

    def affiliate_update(self, request: bytes, ip: Optional[str] = None) -> bytes:
        self._admit(ip, "AffiliateUpdate")
        req = self._decode(AffiliateUpdateRequest, request)
        if req.ttl is None:
            validate_cluster_id(req.cluster_id)
            validate_affiliate_id(req.affiliate_id)
            raise _invalid("ttl is required")
        self.state.update(req.cluster_id, req.affiliate_id, req.affiliate_data, req.affiliate_endpoints, req.ttl.total_seconds())
        return AffiliateUpdateResponse().encode()

    def affiliate_delete(self, request: bytes, ip: Optional[str] = None) -> bytes:
        self._admit(ip, "AffiliateDelete")
        req = self._decode(AffiliateDeleteRequest, request)
        self.state.delete(req.cluster_id, req.affiliate_id)
        return AffiliateDeleteResponse().encode()

    def list(self, request: bytes, ip: Optional[str] = None) -> bytes:
        self._admit(ip, "List")
        req = self._decode(ListRequest, request)
        return ListResponse(affiliates=self.state.list(req.cluster_id)).encode()

    def watch(self, request: bytes, ip: Optional[str] = None) -> Subscription:
        """Subscribe; send :meth:`snapshot_bytes` first, then :meth:`event_bytes` of each ``get()``; close() at the end."""
        self._admit(ip, "Watch")
        req = self._decode(WatchRequest, request)
        return self.state.subscribe(req.cluster_id)

    @staticmethod
    def snapshot_bytes(sub: Subscription) -> bytes:
        return WatchResponse(affiliates=sub.snapshot).encode()

    @staticmethod
    def event_bytes(event) -> bytes:
        deleted, affiliate = event
        return WatchResponse(affiliates=[affiliate], deleted=deleted).encode()
