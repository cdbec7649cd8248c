# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""gRPC transport of the discovery protocol: the service ``sidero.discovery.server.Cluster`` and a client.

Only this module imports grpc (Debian/Ubuntu: python3-grpcio). Messages travel as raw bytes through generic
handlers and raw-bytes calls; discovery_wire encodes and decodes them, so no generated stubs are needed.
The service logic lives in discovery_server.DiscoveryService; this module adds the transport: the client's
address, status codes, streaming, TLS, the housekeeping thread (GC, rate-limiter GC, state saves).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator, List, NamedTuple, Optional
from urllib.parse import unquote

from ..base.errors import KubeSpanError
from ..core.discovery_settings import parse_service_endpoint  # the endpoint forms are a settings rule
from ..core.discovery_wire import (
    SERVICE_NAME,
    AffiliateDeleteRequest,
    AffiliateUpdateRequest,
    Duration,
    HelloRequest,
    HelloResponse,
    ListRequest,
    ServerAffiliate,
    WatchRequest,
    WatchResponse,
    WireError,
    decode_affiliates_bounded,
    ip_from_bytes,
)
from ..host.statefile import StateFileError
from .discovery_server import (
    AFFILIATE_DATA_MAX,
    AFFILIATE_ENDPOINT_MAX,
    AFFILIATE_ENDPOINTS_MAX,
    AFFILIATE_ID_MAX,
    CLUSTER_AFFILIATES_MAX,
    GC_INTERVAL,
    RESOURCE_EXHAUSTED,
    DiscoveryService,
    LimitError,
    LogSampler,
    source_key,
)

try:
    import grpc
except ImportError:  # pragma: no cover - reported when used
    grpc = None
    HAS_GRPC = False
else:
    HAS_GRPC = True

LOG = logging.getLogger("kubespan.discovery")
CLIENT_VERSION = "kubespan.mesh"
DEFAULT_TIMEOUT = 10.0  # Talos: Hello times out after 10 s
DEFAULT_TTL = 30 * 60.0
SERVER_MAX_RECEIVE = 64 * 1024  # the largest valid request is < 5 KiB
# The largest List a service within Talos's limits sends: 1,024 affiliates of at most a 256-byte ID, 2 KiB of
# data and 64 endpoints of 32 bytes, each field with its tag and length (3 bytes at most), plus slack. A larger
# answer is no real service's: the call fails with RESOURCE_EXHAUSTED before anything is decoded.
CLIENT_MAX_RECEIVE = CLUSTER_AFFILIATES_MAX * (
    3 + 3 + AFFILIATE_ID_MAX + 3 + AFFILIATE_DATA_MAX + AFFILIATE_ENDPOINTS_MAX * (2 + AFFILIATE_ENDPOINT_MAX)) + 64 * 1024
MAX_WATCHERS_PER_SOURCE = 16  # Watch streams held at once by one /24 (IPv4) or /64 (IPv6)


class DiscoveryRPCError(KubeSpanError):
    """A discovery call failed. ``code``: the gRPC status name (UNAVAILABLE, INVALID_ARGUMENT, ...)."""

    def __init__(self, code: str, details: str, method: str = ""):
        super().__init__("%s%s: %s" % (method + " " if method else "", code, details))
        self.code = code
        self.details = details
        self.method = method


def _require_grpc() -> None:
    if not HAS_GRPC:
        raise DiscoveryRPCError("UNAVAILABLE", "the Python grpc package is required for discovery: install python3-grpcio (Debian/Ubuntu)")


def peer_ip(peer: str) -> Optional[str]:
    """The IP of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``ipv6:%5B::1%5D:5``); None otherwise."""
    scheme, _sep, rest = (peer or "").partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    rest = unquote(rest)
    if rest.startswith("["):
        host = rest[1:rest.find("]")] if "]" in rest else ""
    else:
        host = rest.rpartition(":")[0] if scheme == "ipv4" else rest
    return host or None


def _method(name: str) -> str:
    return "/%s/%s" % (SERVICE_NAME, name)


# --- server ---------------------------------------------------------------------------------------


class DiscoveryServer:
    """The discovery service on a gRPC port. ``start()`` returns the bound port; ``stop()`` saves the state.

    Watch streams hold a worker thread each: at most ``max_watchers`` (default: ``max_workers`` minus 8, so
    unary calls always find a thread), and at most ``max_watchers_per_source`` from one /24 or /64; more are
    refused with RESOURCE_EXHAUSTED. Rejections are logged through a LogSampler (at most 20 lines per 10 s,
    then one summary line).
    """

    def __init__(self, service: DiscoveryService, listen: str = "[::]:3000", tls_cert: Optional[bytes] = None,
                 tls_key: Optional[bytes] = None, max_workers: int = 128, max_watchers: Optional[int] = None,
                 state_file: Optional[str] = None, save_interval: float = 30.0, gc_interval: float = GC_INTERVAL,
                 logger: Optional[logging.Logger] = None, max_watchers_per_source: int = MAX_WATCHERS_PER_SOURCE,
                 log_sampler: Optional[LogSampler] = None):
        _require_grpc()
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        self.service = service
        self.listen = listen
        self.tls = tls_cert is not None
        self._credentials = (tls_key, tls_cert)
        self.max_workers = max(int(max_workers), 9)
        self.max_watchers = int(max_watchers) if max_watchers is not None else self.max_workers - 8
        self.state_file = state_file
        self.save_interval = save_interval
        self.gc_interval = gc_interval
        self.log = logger or LOG
        self.max_watchers_per_source = max(1, int(max_watchers_per_source))
        self.sampler = log_sampler or LogSampler()
        self._watchers = 0
        self._watchers_by_source = {}
        self._watch_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = None
        self._housekeeper = None
        self.port = 0

    # handlers

    def _reject(self, context, method: str, ip, code: str, message: str):
        status = grpc.StatusCode.RESOURCE_EXHAUSTED if code == RESOURCE_EXHAUSTED else grpc.StatusCode.INVALID_ARGUMENT
        summary = self.sampler.summary()
        if summary:
            self.log.warning("%s", summary)
        if self.sampler.admit("%s %s" % (method, status.name)):
            self.log.warning("rejected %s from %s: %s (%s)", method, ip or "unknown", message, status.name)
        context.abort(status, message)

    def _unary(self, method: str, func):
        def handler(request, context):
            ip = peer_ip(context.peer())
            try:
                return func(request, ip)
            except LimitError as exc:
                self._reject(context, method, ip, exc.code, exc.message)
        return grpc.unary_unary_rpc_method_handler(handler)

    def _watch(self, request, context):
        ip = peer_ip(context.peer())
        source = source_key(ip) or "unknown"
        with self._watch_lock:
            full = None
            if self._watchers >= self.max_watchers:
                full = "too many watchers on this service: the limit is %d" % self.max_watchers
            elif self._watchers_by_source.get(source, 0) >= self.max_watchers_per_source:
                full = "too many watchers from %s: the limit is %d per source network" % (source, self.max_watchers_per_source)
            else:
                self._watchers += 1
                self._watchers_by_source[source] = self._watchers_by_source.get(source, 0) + 1
        if full:
            self._reject(context, "Watch", ip, RESOURCE_EXHAUSTED, full)
        sub = None
        try:
            try:
                sub = self.service.watch(request, ip)
            except LimitError as exc:
                self._reject(context, "Watch", ip, exc.code, exc.message)
            context.add_callback(sub.close)  # wakes get() when the client goes away
            yield self.service.snapshot_bytes(sub)
            while context.is_active() and not self._stopping.is_set():
                event = sub.get(timeout=0.5)
                if event is not None:
                    yield self.service.event_bytes(event)
                elif sub.overflowed:
                    self.log.warning("Watch of %s: updates overflowed for a slow watcher: stream aborted (it re-watches)", ip or "unknown")
                    context.abort(grpc.StatusCode.ABORTED, "watcher too slow: updates overflowed; watch again")
                elif sub.closed:
                    break
        finally:
            if sub is not None:
                sub.close()
            with self._watch_lock:
                self._watchers -= 1
                left = self._watchers_by_source.get(source, 1) - 1
                if left > 0:
                    self._watchers_by_source[source] = left
                else:
                    self._watchers_by_source.pop(source, None)

    def _handlers(self):
        svc = self.service
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Hello": self._unary("Hello", svc.hello),
            "AffiliateUpdate": self._unary("AffiliateUpdate", svc.affiliate_update),
            "AffiliateDelete": self._unary("AffiliateDelete", svc.affiliate_delete),
            "List": self._unary("List", svc.list),
            "Watch": grpc.unary_stream_rpc_method_handler(self._watch),
        })

    # lifecycle

    def start(self) -> int:
        from concurrent import futures
        if self.state_file:
            try:
                loaded = self.service.state.load(self.state_file)
                self.log.info("loaded %d affiliates from %s", loaded, self.state_file)
            except StateFileError as exc:
                self.log.error("%s: starting with an empty state (the file is kept until the next save)", exc)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="discovery"),
            handlers=[self._handlers()],
            options=[("grpc.max_receive_message_length", SERVER_MAX_RECEIVE), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=self.max_workers * 4,
        )
        if self.tls:
            creds = grpc.ssl_server_credentials([self._credentials])
            port = server.add_secure_port(self.listen, creds)
        else:
            port = server.add_insecure_port(self.listen)
        if not port:
            raise OSError("cannot listen on %s" % self.listen)
        self.port = port
        server.start()
        self._server = server
        self._housekeeper = threading.Thread(target=self._housekeeping, name="discovery-housekeeping", daemon=True)
        self._housekeeper.start()
        self.log.info("discovery service listening on %s (port %d, %s)", self.listen, port, "TLS" if self.tls else "plaintext")
        return port

    def _save(self) -> None:
        if not self.state_file:
            return
        try:
            self.service.state.save(self.state_file)
        except StateFileError as exc:
            self.log.error("%s", exc)

    def _housekeeping(self) -> None:
        last_gc = last_save = time.monotonic()
        while not self._stopping.wait(min(1.0, self.gc_interval, self.save_interval)):
            now = time.monotonic()
            summary = self.sampler.summary()
            if summary:
                self.log.warning("%s", summary)
            if now - last_gc >= self.gc_interval:
                last_gc = now
                removed = self.service.state.gc()
                self.service.limiter.gc()
                if any(removed.values()):
                    self.log.info("gc: expired %d affiliates, %d endpoints, %d empty clusters",
                                  removed["affiliates"], removed["endpoints"], removed["clusters"])
            if self.state_file and self.service.state.dirty and now - last_save >= self.save_interval:
                last_save = now
                self._save()

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace).wait()
        if self._housekeeper is not None:
            self._housekeeper.join(5)
        summary = self.sampler.summary(force=True)
        if summary:
            self.log.warning("%s", summary)
        self._save()

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()


# --- client ---------------------------------------------------------------------------------------


class HelloResult(NamedTuple):
    client_ip: Optional[str]  # this node's address as the service saw it (a NAT's public address), None if not reported
    redirect: Optional[str]  # endpoint to use instead, when the service redirects


class WatchEvent(NamedTuple):
    snapshot: bool  # True for the first message: the whole cluster (replace what you knew)
    deleted: bool  # True: the affiliates (IDs only) were deleted
    affiliates: List[ServerAffiliate]


class DiscoveryClient:
    """Calls to one discovery service. Thread-safe; ``close()`` (or ``with``) releases the channel.

    ``target``: ``host:port`` (or a Talos-style URL, see parse_service_endpoint). TLS unless ``insecure``;
    ``ca_cert`` (PEM bytes) replaces the system roots, ``server_name`` overrides the name checked in the
    certificate. Every call raises DiscoveryRPCError on failure (UNAVAILABLE, DEADLINE_EXCEEDED, ...).
    """

    def __init__(self, target: str, insecure: bool = False, ca_cert: Optional[bytes] = None, server_name: Optional[str] = None,
                 timeout: float = DEFAULT_TIMEOUT, client_version: str = CLIENT_VERSION):
        _require_grpc()
        self.target, self.tls = parse_service_endpoint(target, insecure)
        self.timeout = timeout
        self.client_version = client_version
        options = [("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE)]
        if self.tls:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(root_certificates=ca_cert), options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self._calls = {name: self._channel.unary_unary(_method(name)) for name in ("Hello", "AffiliateUpdate", "AffiliateDelete", "List")}
        self._watch = self._channel.unary_stream(_method("Watch"))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, name: str, request, timeout: Optional[float]) -> bytes:
        try:
            return self._calls[name](request.encode(), timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise DiscoveryRPCError(exc.code().name if exc.code() else "UNKNOWN", exc.details() or "", name)

    @staticmethod
    def _parse(name: str, cls, data: bytes):
        try:
            return cls.decode(data)
        except WireError as exc:
            raise DiscoveryRPCError("DATA_LOSS", "malformed response: %s" % exc, name)

    def hello(self, cluster_id: str, timeout: Optional[float] = None) -> HelloResult:
        resp = self._parse("Hello", HelloResponse, self._call("Hello", HelloRequest(cluster_id=cluster_id, client_version=self.client_version), timeout))
        client_ip = None
        if resp.client_ip:
            try:
                client_ip = ip_from_bytes(resp.client_ip)
            except WireError:
                client_ip = None
        return HelloResult(client_ip, resp.redirect.endpoint if resp.redirect is not None and resp.redirect.endpoint else None)

    def update(self, cluster_id: str, affiliate_id: str, data: Optional[bytes] = None, endpoints=(), ttl: float = DEFAULT_TTL,
               timeout: Optional[float] = None) -> None:
        """Publish (or refresh) an affiliate: ``data`` None keeps the stored data (used to add endpoints for another
        affiliate); ``endpoints`` are merged into the stored ones; everything sent expires after ``ttl`` seconds."""
        req = AffiliateUpdateRequest(cluster_id=cluster_id, affiliate_id=affiliate_id, affiliate_data=data,
                                     affiliate_endpoints=list(endpoints), ttl=Duration.from_seconds(ttl))
        self._call("AffiliateUpdate", req, timeout)

    def delete(self, cluster_id: str, affiliate_id: str, timeout: Optional[float] = None) -> None:
        self._call("AffiliateDelete", AffiliateDeleteRequest(cluster_id=cluster_id, affiliate_id=affiliate_id), timeout)

    def list(self, cluster_id: str, timeout: Optional[float] = None, max_affiliates: int = CLUSTER_AFFILIATES_MAX) -> AffiliateList:
        """The cluster's affiliates: at most ``max_affiliates`` (Talos's per-cluster limit) are decoded; the list's
        ``truncated`` is True when the service sent more (the rest is ignored, unread)."""
        data = self._call("List", ListRequest(cluster_id=cluster_id), timeout)
        try:
            affiliates, truncated = decode_affiliates_bounded(data, max_affiliates)
        except WireError as exc:
            raise DiscoveryRPCError("DATA_LOSS", "malformed response: %s" % exc, "List")
        result = AffiliateList(affiliates)
        result.truncated = truncated
        return result

    def watch(self, cluster_id: str, timeout: Optional[float] = None) -> WatchStream:
        """A server stream: iterate for WatchEvents (the first is the snapshot); ``cancel()`` ends it from any thread.
        ``timeout`` bounds the whole stream (None: until cancelled or the service goes away)."""
        call = self._watch(WatchRequest(cluster_id=cluster_id).encode(), timeout=timeout)
        return WatchStream(call)


class AffiliateList(list):
    """A list of ServerAffiliate; ``truncated``: the service sent more than the client decoded."""

    truncated = False


class WatchStream:
    """Iterator of WatchEvent over a Watch call; raises DiscoveryRPCError when the stream fails (not on cancel())."""

    def __init__(self, call):
        self._call = call
        self._first = True
        self._cancelled = False

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        try:
            data = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration
            raise DiscoveryRPCError(exc.code().name if exc.code() else "UNKNOWN", exc.details() or "", "Watch")
        resp = DiscoveryClient._parse("Watch", WatchResponse, data)
        event = WatchEvent(self._first, resp.deleted, resp.affiliates)
        self._first = False
        return event

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


__all__ = ["AffiliateList", "DiscoveryClient", "DiscoveryRPCError", "DiscoveryServer", "HelloResult", "WatchEvent", "WatchStream", "HAS_GRPC",
           "parse_service_endpoint", "peer_ip"]
