# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The discovery client side of the node agent and of playbook runs (docs/discovery.md).

The agent is a oneshot run by a timer, so it cannot hold a Watch stream: each tick it calls Hello (the
address the service sees becomes an extra endpoint candidate of this node), List (the whole cluster), and
AffiliateUpdate of this node's own affiliate when it changed, when half its TTL has passed (Talos: TTL
30 min, refresh at 15 min) or when the service no longer has it (a restart without a state file). The
discovered affiliates are merged with the inventory's peers (discovery_affiliates.merge_affiliates) and
the new peer set replaces the desired state's peers (under the node lock) when it differs. With
harvesting on, endpoints of up peers that WireGuard observed are published for those peers.

A service that cannot be reached (or refuses us) never changes the peers: the agent logs a warning and
keeps the last discovered affiliates. Memory between ticks: ``discovery.json`` in the state directory
(mode 0600): the last discovered affiliates, when and what was last published, the last reasons logged.

The pure parts (settings, planning what to publish, merging) take plain values; :class:`DiscoveryRound`
does the I/O through a client made by ``client_factory`` (discovery_grpc.DiscoveryClient by default).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import threading
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from ..core import discovery_settings
from ..core.discovery_affiliates import SOURCE_DISCOVERY, discovered_only, merge_affiliates, open_affiliates, seal_affiliate, seal_endpoints
from ..core.discovery_settings import DiscoverySettingsError, service_target
from ..core.endpoints import endpoint_problem, endpoints_from_inputs, filter_peer_endpoints
from ..core.peers import PeerError, build_peer_set
from ..core.settings import LINK_NAME, LISTEN_PORT
from ..core.wgtypes import format_endpoint, normalize_endpoint, parse_endpoint
from ..host import layout
from ..host.netlink import host_never_routed
from ..host.statefile import StateFileError, read_json, write_json
from .discovery_watchfile import self_listing

DISCOVERY_FILE = layout.DISCOVERY
ANNOUNCE_FILE = layout.ANNOUNCE  # the inputs of the announced endpoints (engine.ensure_identity), read at each tick
DISCOVERY_VERSION = 1
DEFAULT_TTL = 1800.0  # Talos: 30 min, refreshed at TTL/2
RPC_TIMEOUT = 5.0  # per call: a dead service must not stall the agent's tick
MAX_REDIRECTS = 3  # Hello redirects followed per tick (Talos's client follows them; a loop or a chain stops here)
# Bounds against a hostile or broken service (docs/discovery.md, "Abuse"): the affiliates read from one List
# (Talos's per-cluster limit; discovery_grpc decodes no more), the reasons logged one by one per tick (the rest
# are counted in one line) and kept in discovery.json, and the length of each kept reason.
MAX_AFFILIATES = 1024
MAX_REASONS = 20
MAX_REASON_CHARS = 512  # room for a trim warning: its text, 8 prefixes and "and N more" (peerspec.MAX_LISTED)
AFFILIATE_KEYS = ("name", "node_id", "public_key", "address", "endpoints", "addresses", "additional_addresses",
                  "exclude_advertised_networks")


MAX_SERVICES = discovery_settings.MAX_SERVICES  # discovery endpoints at once (the settings model's)
MACHINE_TYPES = discovery_settings.MACHINE_TYPES  # Talos's machine.Type names, published as machine_type
HELLO_INTERVAL = 900.0  # Hello again after 15 min, or after an error (Talos's client says Hello once per connection)


def default_settings() -> dict:
    """The discovery settings as persisted when nothing is set: the settings model's defaults, and this agent's own
    TTL and RPC timeout (no settings: no role variable, no module option)."""
    return dict(discovery_settings.normalize(None), ttl=DEFAULT_TTL, timeout=RPC_TIMEOUT)


def normalize_settings(raw: Optional[dict]) -> dict:
    """Discovery settings as persisted in the desired state; DiscoverySettingsError on bad values.

    The settings' rules are core/discovery_settings.normalize (the role's early check runs them too); here only the
    agent's own ``ttl`` and ``timeout`` are added and checked."""
    out = dict(discovery_settings.normalize(raw), ttl=DEFAULT_TTL, timeout=RPC_TIMEOUT)
    for key in ("ttl", "timeout"):
        if (raw or {}).get(key) is not None:
            out[key] = raw[key]
    try:
        out["ttl"] = float(out["ttl"])
        out["timeout"] = float(out["timeout"])
    except (TypeError, ValueError):
        raise DiscoverySettingsError("discovery ttl and timeout must be numbers")
    if not 0 < out["ttl"] <= 1800:
        raise DiscoverySettingsError("discovery ttl %s must be > 0 and <= 1800 seconds (the service's limit)" % out["ttl"])
    if not 0 < out["timeout"] <= 60:
        raise DiscoverySettingsError("discovery timeout %s must be > 0 and <= 60 seconds" % out["timeout"])
    return out


def service_settings(settings: dict, endpoint: str) -> dict:
    """The settings of one of the services (``endpoint``), for make_client and delete_affiliate."""
    return dict(settings, endpoint=endpoint, endpoints=[endpoint])


def endpoint_literal(endpoint: str) -> Optional[str]:
    """The IP address of a discovery endpoint given as an IP literal, else None (a host name is not resolved)."""
    try:
        host = service_target(endpoint, True)[0].rpartition(":")[0].strip("[]")
        return str(ipaddress.ip_address(host))
    except (DiscoverySettingsError, ValueError):
        return None


def strip_affiliate(entry: dict) -> dict:
    """An affiliate dict from a peer spec or an inventory entry (drops allowed_ips, version, ...)."""
    return {k: entry[k] for k in AFFILIATE_KEYS if k in entry}


def local_affiliate(affiliates: Iterable[dict], public_key: str, local_name: Optional[str]) -> Optional[dict]:
    """This node's own entry among the inventory affiliates (by public key, else by name)."""
    by_name = None
    for aff in affiliates:
        if not isinstance(aff, dict):
            continue
        if aff.get("public_key") == public_key:
            return strip_affiliate(aff)
        if local_name and aff.get("name") == local_name and by_name is None:
            by_name = aff
    return strip_affiliate(by_name) if by_name is not None and by_name.get("public_key") == public_key else None


def public_endpoint(client_ip: Optional[str], listen_port: int, subnet: Optional[str] = None) -> Optional[str]:
    """The endpoint candidate Hello's observed address gives this node (Talos: the public IP as an endpoint), or None.

    Skipped (endpoints.endpoint_problem): no address, loopback, link-local, unspecified, multicast, the broadcast
    255.255.255.255, this node's own KubeSpan address and anything inside the cluster's own KubeSpan subnet (a
    service reached through the mesh sees our ULA, which is no underlay endpoint). One of this node's own node
    addresses is kept: the service seeing it is the ordinary case on a flat network.
    """
    if not client_ip:
        return None
    try:
        ip = ipaddress.ip_address(str(client_ip).strip())
    except ValueError:
        return None
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    try:
        net = ipaddress.ip_network(subnet, strict=False) if subnet else None
    except ValueError:
        net = None
    if endpoint_problem(ip, None, net):
        return None
    return format_endpoint(str(ip), int(listen_port))


def publishable_affiliate(local: dict, public_ep: Optional[str], announce: Optional[dict] = None) -> dict:
    """This node's affiliate as published: its inventory entry with the Hello-observed endpoint.

    With ``announce`` (the inputs of the node's announced endpoints, kept by the identity step), the endpoints are
    computed again with the observed address inserted where Talos inserts it: after the node's own addresses and
    before the endpoint filters and the extra endpoints, so the filters apply to it. Without it (a node set up by
    an older version), the observed endpoint is appended last.
    """
    aff = strip_affiliate(local)
    public_eps = [public_ep] if isinstance(public_ep, str) else [e for e in public_ep or () if e]
    if announce is not None:
        try:
            observed = [parse_endpoint(ep)[0] for ep in public_eps]
            aff["endpoints"] = endpoints_from_inputs(announce, observed)
            return aff
        except (KeyError, TypeError, ValueError):
            pass  # unusable announce data: the inventory's endpoints, as below
    endpoints = []
    for ep in list(aff.get("endpoints") or []) + public_eps:
        try:
            norm = normalize_endpoint(ep)
        except ValueError:
            continue
        if norm not in endpoints:
            endpoints.append(norm)
    aff["endpoints"] = endpoints
    return aff


def affiliate_digest(target: str, cluster_id: str, aff: dict) -> str:
    """What identifies a publication: the service, the cluster and the affiliate's content (not its ciphertext, which is random)."""
    text = json.dumps({"target": target, "cluster": cluster_id, "affiliate": aff}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def publish_due(last: Optional[dict], digest: str, now: float, ttl: float, present: bool = True) -> Optional[str]:
    """Why this node's affiliate must be (re)published now, or None: new, changed, half the TTL passed, or lost by the service."""
    if not last or not last.get("digest"):
        return "first publication"
    if last.get("digest") != digest:
        return "affiliate changed"
    at = float(last.get("at") or 0)
    if now < at or now - at >= ttl / 2.0:
        return "refresh (TTL/2)"
    if not present:
        return "the service does not have it as published (restarted, or overwritten by someone else)"
    return None


def stored_is_current(key: bytes, listed: Iterable, node_id: str, data_plain: bytes, blobs: Iterable[bytes]) -> bool:
    """Whether the service holds this node's affiliate as published: its data opens (with the cluster key) to
    ``data_plain``, the plaintext this node would seal now, and every endpoint blob of ``blobs`` (sealed
    deterministically) is stored. False when it is missing, overwritten by junk or another content, or when
    endpoints were evicted: then the node publishes again at once instead of at the next refresh."""
    from ..core.discovery_crypto import DiscoveryCryptoError, open_data
    for sa in listed:
        if sa.id != node_id:
            continue
        if not sa.data:
            return False
        try:
            if open_data(key, sa.data) != data_plain:
                return False
        except DiscoveryCryptoError:
            return False
        return set(blobs) <= set(sa.endpoints)
    return False


def bound_reasons(reasons: List[str]) -> List[str]:
    """At most MAX_REASONS reasons (each cut to MAX_REASON_CHARS), then one line counting the rest."""
    kept = [r if len(r) <= MAX_REASON_CHARS else r[:MAX_REASON_CHARS - 3] + "..." for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        kept.append("%d more reasons not logged one by one (the first %d are above)" % (len(reasons) - MAX_REASONS, MAX_REASONS))
    return kept


def harvest_plan(statuses: Dict[str, object], peers: Iterable[dict], harvested: Dict[str, dict], now: float, ttl: float,
                 local_node_id: str = "") -> List[Tuple[str, str]]:
    """(node ID, endpoint) pairs to publish for up peers whose WireGuard-observed endpoint is new or due for a refresh.

    ``statuses``: public key -> PeerStatus (state, endpoint); ``harvested``: node ID -> {"endpoint", "at"} of the
    last publication. As Talos's harvestExtraEndpoints: only peers that are up, only the endpoint WireGuard uses.
    """
    by_key = {p.get("public_key"): p for p in peers if isinstance(p, dict)}
    plan = []
    for key in sorted(statuses):
        st = statuses[key]
        spec = by_key.get(key)
        if spec is None or getattr(st, "state", "") != "up" or not getattr(st, "endpoint", ""):
            continue
        node_id = spec.get("node_id") or ""
        if not node_id or node_id == local_node_id:
            continue
        try:
            endpoint = normalize_endpoint(st.endpoint)
            host = parse_endpoint(endpoint)[0]
        except ValueError:
            continue
        if ipaddress.ip_address(host).is_loopback:
            continue
        last = harvested.get(node_id) or {}
        at = float(last.get("at") or 0)
        if last.get("endpoint") == endpoint and at <= now < at + ttl / 2.0:
            continue
        plan.append((node_id, endpoint))
    return plan


def plan_peers(inventory_peers: Iterable[dict], discovered: Optional[List[dict]], last_discovered: Optional[List[dict]],
               local_public_key: str, local_address: str, subnet: str, local: Optional[dict] = None,
               local_name: Optional[str] = None, allowed_networks: Optional[Iterable[str]] = None,
               never_routed: Iterable[str] = (), peer_endpoint_filters: Optional[List[str]] = None) -> Tuple[List[dict], List[dict], List[str]]:
    """The peer set from the inventory's peers and the discovered affiliates: (peer specs, new last_discovered, reasons).

    ``discovered`` None: the service was not asked or not reachable, ``last_discovered`` stands in (an outage
    never removes peers). A merge that would fail (a clash the merge rules let through) falls back to the
    inventory's peers alone, with the reason. ``allowed_networks`` (kubespan_allowed_peer_networks; None: no
    bound) and ``never_routed`` (engine.host_never_routed) bound the discovered claims (merge_affiliates);
    ``never_routed`` is also given to no peer at all (build_peer_set's local addresses). ``peer_endpoint_filters``
    (kubespan_filters_peer_endpoints, Talos filters.peerEndpoints; None: none) filters the peers' endpoints this node dials.
    """
    net = ipaddress.IPv6Network(subnet)
    local = local or {}
    local_addresses = list(local.get("addresses") or [])
    local_networks = list(local.get("additional_addresses") or [])
    never_routed = list(never_routed)
    inventory = [strip_affiliate(p) for p in inventory_peers]
    merged, reasons = merge_affiliates(inventory, discovered, net, local_node_id=local.get("node_id") or "",
                                       local_public_key=local_public_key, local_address=local_address,
                                       local_addresses=local_addresses, local_networks=local_networks,
                                       last_discovered=last_discovered, allowed_networks=allowed_networks,
                                       never_routed=never_routed)
    local_addresses += never_routed
    try:
        peers, warnings = build_peer_set(local_public_key, local_address, net, merged, None, None, local_name,
                                         local_addresses, local_networks)
    except PeerError as exc:
        peers, warnings = build_peer_set(local_public_key, local_address, net, inventory, None, None, local_name,
                                         local_addresses, local_networks)
        peers = filter_peer_endpoints(peers, peer_endpoint_filters)
        return peers, list(last_discovered or []), reasons + ["discovered affiliates not used: %s" % exc] + warnings
    return filter_peer_endpoints(peers, peer_endpoint_filters), discovered_only(merged), reasons + warnings


def same_peers(a: Iterable[dict], b: Iterable[dict]) -> bool:
    """Peer spec lists equal apart from their resource versions."""
    def norm(peers):
        return sorted(json.dumps({k: v for k, v in p.items() if k != "version"}, sort_keys=True) for p in peers)
    return norm(a) == norm(b)


# --- memory between ticks ---------------------------------------------------------------------------


def discovery_path(state_dir: str) -> str:
    return os.path.join(state_dir, DISCOVERY_FILE)


def load_memory(state_dir: str) -> Tuple[dict, Optional[str]]:
    """The discovery memory (empty when missing) and a problem to log when it was corrupt (then: start afresh)."""
    path = discovery_path(state_dir)
    try:
        data = read_json(path)
    except (StateFileError, ValueError) as exc:
        return {}, "%s is unreadable (%s): discovery starts afresh" % (path, exc)
    if data is None:
        return {}, None
    if not isinstance(data, dict) or data.get("version") != DISCOVERY_VERSION:
        return {}, "%s has an unknown format: discovery starts afresh" % path
    affiliates = data.get("affiliates")
    if not isinstance(affiliates, list) or not all(isinstance(a, dict) for a in affiliates):
        data["affiliates"] = []
    data["affiliates"] = data["affiliates"][:MAX_AFFILIATES]
    reasons = data.get("reasons")
    data["reasons"] = bound_reasons([str(r) for r in reasons]) if isinstance(reasons, list) else []
    for key in ("published", "harvested"):
        if not isinstance(data.get(key), dict):
            data[key] = {}
    return data, None


def announce_path(state_dir: str) -> str:
    return os.path.join(state_dir, ANNOUNCE_FILE)


def save_announce_inputs(state_dir: str, inputs: dict) -> None:
    """Keep what the announced endpoints are computed from, for the node agent: with discovery, it inserts the
    address the service sees (Hello) where Talos does, before the endpoint filters. Written only when it differs."""
    path = announce_path(state_dir)
    try:
        if read_json(path) == inputs:
            return
    except StateFileError:
        pass  # rewritten below
    write_json(path, inputs)


def load_announce_inputs(state_dir: str) -> Optional[dict]:
    """The inputs save_announce_inputs kept, or None (none yet, or unreadable: the caller keeps its old behaviour)."""
    try:
        value = read_json(announce_path(state_dir))
    except (OSError, StateFileError):
        return None
    return value if isinstance(value, dict) else None


def save_memory(state_dir: str, memory: dict) -> None:
    memory = dict(memory, version=DISCOVERY_VERSION)
    write_json(discovery_path(state_dir), memory)


def keep_merged(state_dir: str, memory: dict) -> None:
    """Take the merge results (affiliates, reasons, each service's found) from discovery.json as it is now into
    ``memory``: the resident watcher wrote them since this tick read it, and the tick did not merge."""
    disk, problem = load_memory(state_dir)
    if problem:
        return
    for key in ("affiliates", "reasons", "found"):
        if key in disk:
            memory[key] = disk[key]
    for endpoint, entry in (disk.get("services") or {}).items():
        mine = (memory.get("services") or {}).get(endpoint)
        if isinstance(entry, dict) and isinstance(mine, dict) and "found" in entry:
            mine["found"] = entry["found"]


def last_discovered(state_dir: str) -> List[dict]:
    """The affiliates the agent discovered last (for a playbook run's merge); [] when none or unreadable."""
    memory, _problem = load_memory(state_dir)
    return [a for a in memory.get("affiliates") or [] if a.get("source") == SOURCE_DISCOVERY]


def agent_warning(state_dir: str) -> Optional[str]:
    """A warning for a playbook run when the node agent's last discovery round failed (None when it worked or never ran)."""
    memory, problem = load_memory(state_dir)
    if problem:
        return problem
    error = memory.get("last_error")
    if not error:
        return None
    return ("the node agent could not reach the discovery service at its last tick (%s): the peers are the inventory's "
            "plus the %d affiliates discovered before" % (error, len(memory.get("affiliates") or [])))


# --- I/O ------------------------------------------------------------------------------------------


def make_client(settings: dict):
    """A DiscoveryClient for the settings (raises DiscoveryRPCError when grpc is missing, OSError for the CA file)."""
    from .discovery_grpc import DiscoveryClient
    ca = None
    if settings.get("ca_file"):
        with open(settings["ca_file"], "rb") as handle:
            ca = handle.read()
    return DiscoveryClient(settings["endpoint"], insecure=settings["insecure"], ca_cert=ca,
                           server_name=settings.get("server_name") or None, timeout=float(settings.get("timeout") or RPC_TIMEOUT))


def _errors():
    from ..core.discovery_crypto import DiscoveryCryptoError
    from .discovery_grpc import DiscoveryRPCError
    return (DiscoveryRPCError, DiscoveryCryptoError, OSError, ValueError)


def service_errors():
    """The errors a discovery service's call may raise (transport, crypto, OS, bad data): logged, never fatal."""
    return _errors()


def delete_affiliate(settings: dict, cluster_id: str, node_id: str, client_factory: Callable = make_client) -> Optional[str]:
    """AffiliateDelete of this node on every configured service (KubeSpan or discovery disabled). Returns a warning, or
    None when done."""
    endpoints = list(settings.get("endpoints") or []) or ([settings["endpoint"]] if settings.get("endpoint") else [])
    if not endpoints or not node_id:
        return None
    warnings = []
    for endpoint in endpoints:
        try:
            client = client_factory(service_settings(settings, endpoint))
            try:
                client.delete(cluster_id, node_id)
            finally:
                client.close()
        except _errors() as exc:
            warnings.append("could not remove this node's affiliate from the discovery service %s (%s): the other nodes drop "
                            "it when it expires (at most %d s)" % (endpoint, exc, int(settings.get("ttl") or DEFAULT_TTL)))
    return "; ".join(warnings) or None


def merge_discovered(lists: Iterable[Optional[List[dict]]]) -> Optional[List[dict]]:
    """The opened affiliates of several services merged by node ID as Talos merges affiliates: list fields are united
    (each item appended when absent, in order), non-empty scalars of a later service overwrite. None when every list is
    None (no service answered); the result is sorted by node ID (open_affiliates' order)."""
    merged: Dict[str, dict] = {}
    answered = False
    for found in lists:
        if found is None:
            continue
        answered = True
        for aff in found:
            node_id = aff.get("node_id") or ""
            cur = merged.get(node_id)
            if cur is None:
                merged[node_id] = {k: (list(v) if isinstance(v, list) else v) for k, v in aff.items()}
                continue
            for key, value in aff.items():
                if isinstance(value, list):
                    items = cur.setdefault(key, [])
                    items.extend(item for item in value if item not in items)
                elif value not in (None, ""):
                    cur[key] = value
    if not answered:
        return None
    return [merged[k] for k in sorted(merged)]


def hello_due(memory: dict, now: float) -> bool:
    """Whether this tick says Hello to a service: never said, HELLO_INTERVAL passed, the clock went back, or the last
    tick had an error with it (then the redirect and the observed address are learned again)."""
    at = memory.get("hello_at")
    if not isinstance(at, (int, float)) or memory.get("last_error"):
        return True
    return now < at or now - at >= HELLO_INTERVAL


class _Service:
    """One discovery service of a round: its own client, Hello, Watch stream and memory (Talos >= 1.14: one client per
    configured endpoint). The first service keeps its memory at the top of discovery.json (as with one endpoint); the
    others under ``services`` by endpoint."""

    def __init__(self, rnd: DiscoveryRound, index: int, endpoint: str):
        self.rnd = rnd
        self.configured = endpoint
        self.settings = service_settings(rnd.settings, endpoint)
        self.endpoint = endpoint  # the service in use: the configured one, or where it redirected
        if index == 0:
            self.memory = rnd.memory
        else:
            self.memory = rnd.memory.setdefault("services", {}).setdefault(endpoint, {})
            for key in ("published", "harvested"):
                if not isinstance(self.memory.get(key), dict):
                    self.memory[key] = {}
        self.client = None
        self.reachable = False
        self.found: Optional[List[dict]] = None  # this tick's opened affiliates (None: not reachable)
        self.listed: List = []
        self.current: Dict[str, object] = {}  # affiliate ID -> ServerAffiliate, as the Watch stream tells it
        self.stream = None
        self.thread = None
        self.lock = threading.Lock()
        self.first = threading.Event()
        self.watch_error: Optional[str] = None

    def log(self, line: str) -> None:
        self.rnd.log(line)

    def close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.cancel()
            except Exception:  # pylint: disable=broad-except  # cancelling must never fail a tick
                pass
        if self.thread is not None:
            self.thread.join(timeout=2.0)
            self.thread = None
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # pylint: disable=broad-except  # closing must never fail a tick
                pass
            self.client = None

    def connect(self, cluster_id: str, now: float):
        """Hello when due (hello_due), following redirects as Talos's client does (at most MAX_REDIRECTS hops, never back
        to a service already asked; the redirected connection keeps the TLS mode and CA file, the certificate is checked
        against the new host; logged when where it leads changes); otherwise connect to where the last Hello led.
        Returns the Hello's observed address (None when not asked this tick: the kept one stands)."""
        if not hello_due(self.memory, now):
            target = self.memory.get("redirected_to") or self.configured
            self.endpoint = target
            self.client = self.rnd.client_factory(dict(self.settings, endpoint=target, server_name="")
                                                  if target != self.configured else self.settings)
            return None
        settings = self.settings
        self.endpoint = self.configured
        self.client = self.rnd.client_factory(settings)
        hello = self.client.hello(cluster_id)
        asked = [self.configured]
        while hello.redirect:
            target = str(hello.redirect).strip()
            if target in asked:
                self.log("discovery service %s redirects back to %s: staying with %s" % (asked[-1], target, asked[-1]))
                break
            if len(asked) > MAX_REDIRECTS:
                self.log("discovery service %s redirects to %s after %d redirects: staying with %s"
                         % (asked[-1], target, MAX_REDIRECTS, asked[-1]))
                break
            try:
                service_target(target, settings["insecure"])
            except DiscoverySettingsError:
                self.log("discovery service %s redirects to %r, which is not host:port: staying with %s" % (asked[-1], target, asked[-1]))
                break
            settings = dict(settings, endpoint=target, server_name="")
            self.close()
            self.endpoint = target  # an unreachable redirect target is named as such
            self.client = self.rnd.client_factory(settings)
            asked.append(target)
            hello = self.client.hello(cluster_id)
        redirected = asked[-1] if len(asked) > 1 else None
        if redirected != self.memory.get("redirected_to") or "redirected_to" not in self.memory:
            if redirected:
                self.log("discovery service %s redirects to %s: using it (set kubespan_discovery_endpoint to it to skip the "
                         "redirect)" % (self.configured, redirected))
            elif "redirected_to" in self.memory:
                self.log("discovery service %s answers without a redirect" % self.configured)
            self.memory["redirected_to"] = redirected
        self.memory["hello_at"] = now
        return hello

    def adopt(self, entry: dict):
        """Use the resident watcher's connection facts instead of a Hello: the service it reached (after redirects) and
        the address that service sees. Returns a Hello-like result (no request is made here)."""
        from .discovery_grpc import HelloResult
        target = str(entry.get("endpoint") or self.configured)
        self.endpoint = target
        self.client = self.rnd.client_factory(dict(self.settings, endpoint=target, server_name="")
                                              if target != self.configured else self.settings)
        client_ip = entry.get("client_ip")
        return HelloResult(client_ip if isinstance(client_ip, str) else None, None)

    def snapshot(self, cluster_id: str, hold: float) -> List:
        """The cluster's affiliates: the first event of a Watch stream held for ``hold`` seconds (0: List only), read by a
        thread that keeps ``current`` up to date and wakes the round on each change. List is the fallback when the
        stream fails or its snapshot is late."""
        if hold > 0 and getattr(self.client, "watch", None) is not None:
            from .discovery_grpc import DiscoveryRPCError
            try:
                self.stream = self.client.watch(cluster_id, timeout=hold)
                self.thread = threading.Thread(target=self._read_stream, args=(self.stream,), daemon=True,
                                               name="kubespan-watch")
                self.thread.start()
            except (DiscoveryRPCError, ValueError) as exc:
                self.watch_error = str(exc)
                self.stream = None
            if self.stream is not None and self.first.wait(float(self.settings.get("timeout") or RPC_TIMEOUT)):
                with self.lock:
                    if self.watch_error is None or self.current:
                        listed = list(self.current.values())
                        self.memory.pop("watch_error", None)
                        return listed
            if self.stream is not None:
                self.stream.cancel()
                self.stream = None
            error = self.watch_error or "no snapshot within %.0f s" % float(self.settings.get("timeout") or RPC_TIMEOUT)
            if error != self.memory.get("watch_error"):
                self.log("discovery service %s: Watch failed (%s): using List" % (self.endpoint, error))
            self.memory["watch_error"] = error[:MAX_REASON_CHARS]
        return self.client.list(cluster_id)

    def _read_stream(self, stream) -> None:
        from ..core.discovery_affiliates import apply_watch_event
        try:
            count = 0
            for event in stream:
                with self.lock:
                    self.current = apply_watch_event(self.current, event.snapshot, event.deleted, event.affiliates)
                    if len(self.current) > MAX_AFFILIATES:  # a hostile service: keep the first by ID, as List does
                        self.current = {k: self.current[k] for k in sorted(self.current)[:MAX_AFFILIATES]}
                count += 1
                if event.snapshot:
                    self.first.set()
                else:
                    self.rnd.changed.set()
        except Exception as exc:  # pylint: disable=broad-except  # a stream error only ends the Watch; List stays
            with self.lock:
                self.watch_error = str(exc)[:MAX_REASON_CHARS]
        finally:
            self.first.set()

    def watched(self) -> List:
        with self.lock:
            return list(self.current.values())

    def warn_unreachable(self, exc) -> None:
        self.log("discovery service %s unavailable (%s): keeping the inventory peers and the affiliates discovered last"
                 % (self.endpoint, exc))
        self.memory["last_error"] = str(exc)[:500]
        self.reachable = False
        self.found = None
        self.close()


class DiscoveryRound:
    """One agent tick's discovery work. ``sync()`` before the data plane is re-applied, ``poll()`` at each sample (the
    affiliates the Watch streams brought since), ``harvest()`` after sampling.

    ``state``: the desired state (cluster ID and secret, discovery settings, inventory peers, local affiliate).
    ``update_peers(peers)`` is called (by the agent, under the node lock) when the merged peer set differs.
    ``watch_seconds``: how long the Watch streams are held (the agent's sampling window; 0: List, no stream).
    With several services (kubespan_discovery_endpoints), each gets its own client; their affiliates are merged
    (merge_discovered), and a service that does not answer stands in with what it listed last, so stopping any one
    of them loses no peer.
    """

    def __init__(self, state_dir: str, state: dict, log: Callable[[str], None], now_fn: Callable[[], float],
                 client_factory: Callable = make_client, hostname: Optional[str] = None, watch_seconds: float = 0.0,
                 watcher: Optional[Dict[str, dict]] = None):
        self.state_dir = state_dir
        self.watcher = watcher  # the resident watcher's entries when it is current (discovery_watch.current_watcher)
        self.state = state
        self.log = log
        self.now_fn = now_fn
        self.client_factory = client_factory
        self.settings = normalize_settings(state.get("discovery"))
        self.hostname = hostname or socket.gethostname()
        self.key = None
        self.watch_seconds = float(watch_seconds)
        self.changed = threading.Event()
        self.memory, problem = load_memory(state_dir)
        if problem:
            log(problem)
        services = self.memory.get("services")
        if isinstance(services, dict):  # forget services no longer configured
            self.memory["services"] = {k: v for k, v in services.items() if k in self.settings["endpoints"][1:] and isinstance(v, dict)}
        self.services = [_Service(self, i, ep) for i, ep in enumerate(self.settings["endpoints"])]
        if len(self.services) < 2:
            self.memory.pop("services", None)
            self.memory.pop("found", None)  # a stand-in list is kept only with several services
        self.reachable = False

    @property
    def endpoint(self) -> str:
        return self.services[0].endpoint if self.services else ""

    @property
    def client(self):
        """The first reachable service's client (harvest and tests)."""
        for svc in self.services:
            if svc.reachable and svc.client is not None:
                return svc.client
        return None

    def _log_reasons(self, reasons: List[str]) -> None:
        """Reasons (dropped affiliates, skipped endpoints) are logged when they change, not at every tick; at most
        MAX_REASONS lines, then one line counting the rest (a hostile service cannot flood the journal)."""
        reasons = bound_reasons(reasons)
        if reasons != self.memory.get("reasons"):
            for reason in reasons:
                self.log("discovery: %s" % reason)
        self.memory["reasons"] = reasons

    def close(self) -> None:
        for svc in self.services:
            svc.close()

    def sync(self, update_peers: Callable[[List[dict]], None]) -> bool:
        """Hello (when due), Watch snapshot (List as fallback), AffiliateUpdate when due, merge, for every service.
        Returns True when the peer set changed (update_peers was called)."""
        state = self.state
        errors = _errors()
        from ..core.discovery_crypto import key_from_secret
        cluster_id = state["cluster_id"]
        local = state.get("local_affiliate") or None
        node_id = (local or {}).get("node_id") or ""
        settings = state.get("settings") or {}
        now = self.now_fn()
        try:
            self.key = key_from_secret(state["cluster_secret"])
        except errors as exc:
            for svc in self.services:
                svc.warn_unreachable(exc)
            save_memory(self.state_dir, self.memory)
            return False
        list_reasons: List[str] = []
        mode = "watcher" if self.watcher else "own"
        if mode != self.memory.get("tick_mode"):
            self.log("discovery: %s" % ("the resident watcher (kubespan-watch) holds every service's stream: this tick opens no "
                                        "Watch or List and says no Hello" if self.watcher else
                                        "no current resident watcher: this tick says Hello when due and opens its own Watch or List"))
        self.memory["tick_mode"] = mode
        for svc in self.services:
            try:
                if self.watcher:
                    hello = svc.adopt(self.watcher[svc.configured])
                    listed = self_listing(self.watcher[svc.configured], node_id)
                else:
                    hello = svc.connect(cluster_id, now)
                    listed = svc.snapshot(cluster_id, self.watch_seconds)
            except errors as exc:
                svc.warn_unreachable(exc)
                continue
            if getattr(listed, "truncated", False) or len(listed) > MAX_AFFILIATES:
                listed = sorted(listed, key=lambda a: a.id)[:MAX_AFFILIATES]
                list_reasons.append("the service lists more than %d affiliates (the limit of a cluster): only the first "
                                    "%d were read (%s)" % (MAX_AFFILIATES, MAX_AFFILIATES, svc.endpoint))
            if hello is not None:
                public_ep = public_endpoint(hello.client_ip, int(settings.get("listen_port") or LISTEN_PORT), state.get("subnet"))
                if public_ep != svc.memory.get("public_endpoint") or "public_endpoint" not in svc.memory:
                    self.log("discovery: the service %s sees this node at %s" % (svc.endpoint, hello.client_ip or "(not reported)"))
                svc.memory["public_endpoint"] = public_ep
            svc.listed = listed
            svc.reachable = True
            svc.memory.pop("last_error", None)
        reachable = [svc for svc in self.services if svc.reachable]
        if not reachable:
            self.reachable = False
            save_memory(self.state_dir, self.memory)
            return False
        public_eps = []
        for svc in self.services:
            ep = svc.memory.get("public_endpoint")
            if ep and ep not in public_eps:
                public_eps.append(ep)
        if local and node_id:
            for svc in reachable:
                self._publish(svc, cluster_id, node_id, local, public_eps, svc.listed, now)
        else:
            self.log("discovery: this node's own affiliate is not in the desired state: re-run the playbook to publish it")
        self.reachable = True
        self.memory["last_success"] = now
        if self.watcher:
            # the watcher merges and applies on every event: the tick keeps the affiliates it merged last
            keep_merged(self.state_dir, self.memory)
            save_memory(self.state_dir, self.memory)
            return False
        return self._merge(update_peers, list_reasons)

    def merge_views(self, views: Dict[str, List], update_peers: Callable[[List[dict]], None]) -> bool:
        """Merge what the resident watcher's streams hold (configured endpoint -> ServerAffiliates, each bounded by
        MAX_AFFILIATES), exactly as poll() merges the sampling window's streams; a service without a view stands in
        with what it listed last (several services). Returns True when the peer set changed (update_peers called)."""
        for svc in self.services:
            if svc.configured in views:
                svc.listed = list(views[svc.configured])[:MAX_AFFILIATES]
                svc.reachable = True
        if not any(svc.reachable for svc in self.services):
            return False
        self.reachable = True
        return self._merge(update_peers, [])

    def poll(self, update_peers: Callable[[List[dict]], None]) -> bool:
        """Apply what the Watch streams brought since the last merge (new, changed or deleted affiliates). Returns True
        when the peer set changed. Cheap when nothing arrived (no lock, no I/O)."""
        if not self.changed.is_set():
            return False
        self.changed.clear()
        if not self.reachable:
            return False
        for svc in self.services:
            if svc.reachable and svc.stream is not None:
                svc.listed = svc.watched()
        return self._merge(update_peers, [])

    def watching(self) -> bool:
        """Whether a Watch stream is still open (its thread alive)."""
        return any(svc.thread is not None and svc.thread.is_alive() for svc in self.services)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when a Watch stream brought a change (True then)."""
        return self.changed.wait(max(0.0, seconds))

    def _merge(self, update_peers: Callable[[List[dict]], None], list_reasons: List[str]) -> bool:
        state = self.state
        local = state.get("local_affiliate") or None
        ident_key = local.get("public_key") if local else ""
        node_id = (local or {}).get("node_id") or ""
        settings = state.get("settings") or {}
        open_reasons = list(list_reasons)
        lists: List[Optional[List[dict]]] = []
        several = len(self.services) > 1
        for svc in self.services:
            if svc.reachable:
                found, why = open_affiliates(self.key, svc.listed, local_node_id=node_id)
                open_reasons += why
                svc.found = found
                if several:
                    svc.memory["found"] = found
                lists.append(found)
            elif several and isinstance(svc.memory.get("found"), list):
                # a service that does not answer stands in with what it listed last: stopping one loses no peer
                lists.append([a for a in svc.memory["found"][:MAX_AFFILIATES] if isinstance(a, dict)])
        found = merge_discovered(lists)
        from ..core.peers import DEFAULT_ALLOWED_PEER_NETWORKS
        allowed = settings.get("allowed_peer_networks")
        never = host_never_routed(str(settings.get("interface") or LINK_NAME), [endpoint_literal(s.endpoint) for s in self.services])
        peers, new_last, merge_reasons = plan_peers(state.get("inventory_peers") or [], found, self.memory.get("affiliates"),
                                                    ident_key, state.get("address") or "", state["subnet"], local,
                                                    (local or {}).get("name"),
                                                    list(DEFAULT_ALLOWED_PEER_NETWORKS) if allowed is None else allowed, never,
                                                    settings.get("peer_endpoint_filters"))
        self._log_reasons(open_reasons + merge_reasons)
        old_names = {a.get("node_id"): a.get("name") for a in self.memory.get("affiliates") or []}
        new_names = {a.get("node_id"): a.get("name") for a in new_last}
        changes = (["new affiliate %s (%s)" % (new_names[nid], nid) for nid in sorted(set(new_names) - set(old_names))]
                   + ["affiliate %s (%s) is gone" % (old_names[nid], nid) for nid in sorted(set(old_names) - set(new_names))])
        for line in bound_reasons(changes):
            self.log("discovery: %s" % line)
        self.memory["affiliates"] = new_last
        save_memory(self.state_dir, self.memory)
        if same_peers(peers, state.get("peers") or []):
            return False
        update_peers(peers)
        self.state = dict(state, peers=peers)
        return True

    def _publish(self, svc: _Service, cluster_id: str, node_id: str, local: dict, public_eps: List[str], listed: List,
                 now: float) -> None:
        """AffiliateUpdate of this node's affiliate on one service when due. A failure is logged (once per distinct error)
        and does not stop the tick: the affiliates listed are merged all the same, and the next tick tries again."""
        from ..core.discovery_affiliates import affiliate_message
        aff = publishable_affiliate(local, public_eps, load_announce_inputs(self.state_dir))
        digest = affiliate_digest(svc.endpoint, cluster_id, aff)
        fields = {"hostname": self.hostname, "operating_system": "kubespan.mesh",
                  "machine_type": self.settings["machine_type"], "api_server_port": self.settings["api_server_port"]}
        memory = svc.memory
        try:
            plain = affiliate_message(aff, **fields)[0].encode()
            data, blobs = seal_affiliate(self.key, aff, **fields)
            present = stored_is_current(self.key, listed, node_id, plain, blobs)
            why = publish_due(memory.get("published"), digest, now, self.settings["ttl"], present)
            if not why:
                return
            svc.client.update(cluster_id, node_id, data, blobs, ttl=self.settings["ttl"])
        except _errors() as exc:
            error = str(exc)[:MAX_REASON_CHARS]
            if error != memory.get("publish_error"):
                self.log("discovery: this node's affiliate could not be published (%s): the affiliates listed are "
                         "merged anyway; the next tick tries again (%s)" % (error, svc.endpoint))
            memory["publish_error"] = error
            return
        memory.pop("publish_error", None)
        memory["published"] = {"digest": digest, "at": now, "endpoints": aff["endpoints"]}
        self.log("discovery: published this node's affiliate (%s; %d endpoints) on %s" % (why, len(aff["endpoints"]), svc.endpoint))

    def harvest(self, statuses: Dict[str, object], peers: List[dict]) -> None:
        """Publish the endpoints WireGuard observed for up peers (kubespan_harvest_extra_endpoints), on every service."""
        if not self.settings["harvest_extra_endpoints"] or not self.reachable:
            return
        now = self.now_fn()
        local_node = (self.state.get("local_affiliate") or {}).get("node_id") or ""
        known = {p.get("node_id") for p in peers}
        for svc in self.services:
            if not svc.reachable or svc.client is None:
                continue
            harvested = svc.memory.setdefault("harvested", {})
            refreshed = 0
            for node_id, endpoint in harvest_plan(statuses, peers, harvested, now, self.settings["ttl"], local_node):
                try:
                    svc.client.update(self.state["cluster_id"], node_id, None, seal_endpoints(self.key, [endpoint]), ttl=self.settings["ttl"])
                except _errors() as exc:
                    self.log("discovery: harvested endpoint %s of %s not published on %s: %s" % (endpoint, node_id, svc.endpoint, exc))
                    break
                if harvested.get(node_id, {}).get("endpoint") != endpoint:
                    self.log("discovery: published harvested endpoint %s for %s on %s" % (endpoint, node_id, svc.endpoint))
                else:
                    refreshed += 1
                harvested[node_id] = {"endpoint": endpoint, "at": now}
            if refreshed:  # one line per tick: every AffiliateUpdate of the node is in its journal with its reason
                self.log("discovery: refreshed the harvested endpoints of %d peers on %s (TTL/2)" % (refreshed, svc.endpoint))
            for node_id in [n for n in harvested if n not in known]:
                del harvested[node_id]
        if self.watcher:
            keep_merged(self.state_dir, self.memory)
        save_memory(self.state_dir, self.memory)
