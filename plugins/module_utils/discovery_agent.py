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
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .discovery_affiliates import SOURCE_DISCOVERY, discovered_only, merge_affiliates, open_affiliates, seal_affiliate, seal_endpoints
from .endpoints import endpoint_problem, endpoints_from_inputs
from .peers import PeerError, build_peer_set
from .statefile import StateFileError, read_json, write_json
from .wgtypes import format_endpoint, normalize_endpoint, parse_endpoint

DISCOVERY_FILE = "discovery.json"
ANNOUNCE_FILE = "announce.json"  # the inputs of the announced endpoints (engine.ensure_identity), read at each tick
DISCOVERY_VERSION = 1
DEFAULT_TTL = 1800.0  # Talos: 30 min, refreshed at TTL/2
RPC_TIMEOUT = 5.0  # per call: a dead service must not stall the agent's tick
MAX_REDIRECTS = 3  # Hello redirects followed per tick (Talos's client follows them; a loop or a chain stops here)
# Bounds against a hostile or broken service (docs/discovery.md, "Abuse"): the affiliates read from one List
# (Talos's per-cluster limit; discovery_grpc decodes no more), the reasons logged one by one per tick (the rest
# are counted in one line) and kept in discovery.json, and the length of each kept reason.
MAX_AFFILIATES = 1024
MAX_REASONS = 20
MAX_REASON_CHARS = 300
AFFILIATE_KEYS = ("name", "node_id", "public_key", "address", "endpoints", "addresses", "additional_addresses",
                  "exclude_advertised_networks")


class DiscoverySettingsError(ValueError):
    """Discovery settings are invalid; the message names the setting."""


def default_settings() -> dict:
    return {"enabled": False, "endpoint": "", "insecure": False, "ca_file": "", "server_name": "",
            "harvest_extra_endpoints": False, "ttl": DEFAULT_TTL, "timeout": RPC_TIMEOUT}


def normalize_settings(raw: Optional[dict]) -> dict:
    """Discovery settings as persisted in the desired state; DiscoverySettingsError on bad values."""
    out = default_settings()
    for key, value in (raw or {}).items():
        if key in out and value is not None:
            out[key] = value
    out["enabled"] = bool(out["enabled"])
    out["insecure"] = bool(out["insecure"])
    out["harvest_extra_endpoints"] = bool(out["harvest_extra_endpoints"])
    out["endpoint"] = str(out["endpoint"] or "").strip()
    out["ca_file"] = str(out["ca_file"] or "")
    out["server_name"] = str(out["server_name"] or "")
    try:
        out["ttl"] = float(out["ttl"])
        out["timeout"] = float(out["timeout"])
    except (TypeError, ValueError):
        raise DiscoverySettingsError("discovery ttl and timeout must be numbers")
    if not 0 < out["ttl"] <= 1800:
        raise DiscoverySettingsError("discovery ttl %s must be > 0 and <= 1800 seconds (the service's limit)" % out["ttl"])
    if not 0 < out["timeout"] <= 60:
        raise DiscoverySettingsError("discovery timeout %s must be > 0 and <= 60 seconds" % out["timeout"])
    if out["enabled"]:
        if not out["endpoint"]:
            raise DiscoverySettingsError("kubespan_discovery_endpoint is required when kubespan_discovery_enabled is true "
                                         "(e.g. https://discovery.example.com:443 or 10.0.0.5:3000 with kubespan_discovery_insecure)")
        target, tls = service_target(out["endpoint"], out["insecure"])
        if not tls and out["ca_file"]:
            raise DiscoverySettingsError("kubespan_discovery_ca_file is set but the connection to %s is plaintext "
                                         "(kubespan_discovery_insecure or an http:// endpoint)" % target)
    return out


def service_target(endpoint: str, insecure: bool) -> Tuple[str, bool]:
    """(host:port, TLS) of a Talos-style service endpoint, as DiscoveryClient reads it; DiscoverySettingsError if unusable."""
    text = str(endpoint).strip()
    if "://" not in text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DiscoverySettingsError("kubespan_discovery_endpoint %r: expected https://host[:port]/, http://host:port/ or "
                                         "host:port" % endpoint)
    from .discovery_grpc import parse_service_endpoint
    try:
        return parse_service_endpoint(text, insecure)
    except ValueError as exc:
        raise DiscoverySettingsError("kubespan_discovery_endpoint: %s" % exc)


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
    if announce is not None:
        try:
            observed = [parse_endpoint(public_ep)[0]] if public_ep else []
            aff["endpoints"] = endpoints_from_inputs(announce, observed)
            return aff
        except (KeyError, TypeError, ValueError):
            pass  # unusable announce data: the inventory's endpoints, as below
    endpoints = []
    for ep in list(aff.get("endpoints") or []) + ([public_ep] if public_ep else []):
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
    from .discovery_crypto import DiscoveryCryptoError, open_data
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
               never_routed: Iterable[str] = ()) -> Tuple[List[dict], List[dict], List[str]]:
    """The peer set from the inventory's peers and the discovered affiliates: (peer specs, new last_discovered, reasons).

    ``discovered`` None: the service was not asked or not reachable, ``last_discovered`` stands in (an outage
    never removes peers). A merge that would fail (a clash the merge rules let through) falls back to the
    inventory's peers alone, with the reason. ``allowed_networks`` (kubespan_allowed_peer_networks; None: no
    bound) and ``never_routed`` (engine.host_never_routed) bound the discovered claims (merge_affiliates);
    ``never_routed`` is also given to no peer at all (build_peer_set's local addresses).
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
        return peers, list(last_discovered or []), reasons + ["discovered affiliates not used: %s" % exc] + warnings
    return peers, discovered_only(merged), reasons + warnings


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
    from .discovery_crypto import DiscoveryCryptoError
    from .discovery_grpc import DiscoveryRPCError
    return (DiscoveryRPCError, DiscoveryCryptoError, OSError, ValueError)


def delete_affiliate(settings: dict, cluster_id: str, node_id: str, client_factory: Callable = make_client) -> Optional[str]:
    """AffiliateDelete of this node (KubeSpan or discovery disabled). Returns a warning, or None when done."""
    if not settings.get("endpoint") or not node_id:
        return None
    try:
        client = client_factory(settings)
        try:
            client.delete(cluster_id, node_id)
        finally:
            client.close()
    except _errors() as exc:
        return ("could not remove this node's affiliate from the discovery service %s (%s): the other nodes drop it "
                "when it expires (at most %d s)" % (settings.get("endpoint"), exc, int(settings.get("ttl") or DEFAULT_TTL)))
    return None


class DiscoveryRound:
    """One agent tick's discovery work. ``sync()`` before the data plane is re-applied, ``harvest()`` after sampling.

    ``state``: the desired state (cluster ID and secret, discovery settings, inventory peers, local affiliate).
    ``update_peers(peers)`` is called (by the agent, under the node lock) when the merged peer set differs.
    """

    def __init__(self, state_dir: str, state: dict, log: Callable[[str], None], now_fn: Callable[[], float],
                 client_factory: Callable = make_client, hostname: Optional[str] = None):
        self.state_dir = state_dir
        self.state = state
        self.log = log
        self.now_fn = now_fn
        self.client_factory = client_factory
        self.settings = normalize_settings(state.get("discovery"))
        self.hostname = hostname or socket.gethostname()
        self.client = None
        self.key = None
        self.memory, problem = load_memory(state_dir)
        if problem:
            log(problem)
        self.reachable = False
        self.endpoint = self.settings["endpoint"]  # the service in use: the configured one, or where it redirected

    # helpers
    def _hello(self, cluster_id: str):
        """Connect and say Hello, following the service's redirects as Talos's client does (at most MAX_REDIRECTS
        hops, never back to a service already asked). The redirected connection keeps the TLS mode and CA file;
        the certificate is checked against the new host. Logged when where it leads changes, not at every tick."""
        settings = self.settings
        self.endpoint = settings["endpoint"]
        self.client = self.client_factory(settings)
        hello = self.client.hello(cluster_id)
        asked = [settings["endpoint"]]
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
            self.client = self.client_factory(settings)
            asked.append(target)
            hello = self.client.hello(cluster_id)
        redirected = asked[-1] if len(asked) > 1 else None
        if redirected != self.memory.get("redirected_to"):
            if redirected:
                self.log("discovery service %s redirects to %s: using it (set kubespan_discovery_endpoint to it to skip the "
                         "redirect)" % (self.settings["endpoint"], redirected))
            else:
                self.log("discovery service %s answers without a redirect" % self.settings["endpoint"])
            self.memory["redirected_to"] = redirected
        return hello

    def _warn_unreachable(self, exc) -> None:
        kept = len(self.memory.get("affiliates") or [])
        self.log("discovery service %s unavailable (%s): keeping the inventory peers and the %d affiliates discovered last"
                 % (self.endpoint, exc, kept))
        self.memory["last_error"] = str(exc)[:500]

    def _log_reasons(self, reasons: List[str]) -> None:
        """Reasons (dropped affiliates, skipped endpoints) are logged when they change, not at every tick; at most
        MAX_REASONS lines, then one line counting the rest (a hostile service cannot flood the journal)."""
        reasons = bound_reasons(reasons)
        if reasons != self.memory.get("reasons"):
            for reason in reasons:
                self.log("discovery: %s" % reason)
        self.memory["reasons"] = reasons

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # pylint: disable=broad-except  # closing must never fail a tick
                pass
            self.client = None

    def sync(self, update_peers: Callable[[List[dict]], None]) -> bool:
        """Hello, List, AffiliateUpdate when due, merge. Returns True when the peer set changed (update_peers was called)."""
        state = self.state
        errors = _errors()
        from .discovery_crypto import key_from_secret
        cluster_id = state["cluster_id"]
        local = state.get("local_affiliate") or None
        ident_key = local.get("public_key") if local else ""
        node_id = (local or {}).get("node_id") or ""
        settings = state.get("settings") or {}
        now = self.now_fn()
        try:
            self.key = key_from_secret(state["cluster_secret"])
            hello = self._hello(cluster_id)
            listed = self.client.list(cluster_id)
        except errors as exc:
            self._warn_unreachable(exc)
            self.reachable = False
            self.close()
            save_memory(self.state_dir, self.memory)
            return False
        list_reasons = []
        if getattr(listed, "truncated", False) or len(listed) > MAX_AFFILIATES:
            listed = list(listed)[:MAX_AFFILIATES]
            list_reasons.append("the service lists more than %d affiliates (the limit of a cluster): only the first %d were read"
                                % (MAX_AFFILIATES, MAX_AFFILIATES))
        public_ep = public_endpoint(hello.client_ip, int(settings.get("listen_port") or 51820), state.get("subnet"))
        if public_ep != self.memory.get("public_endpoint") or "public_endpoint" not in self.memory:
            self.log("discovery: the service sees this node at %s" % (hello.client_ip or "(not reported)"))
        self.memory["public_endpoint"] = public_ep
        if local and node_id:
            self._publish(cluster_id, node_id, local, public_ep, listed, now)
        else:
            self.log("discovery: this node's own affiliate is not in the desired state: re-run the playbook to publish it")
        found, open_reasons = open_affiliates(self.key, listed, local_node_id=node_id)
        open_reasons = list_reasons + open_reasons
        self.reachable = True
        self.memory.pop("last_error", None)
        self.memory["last_success"] = now
        from .engine import host_never_routed
        from .peers import DEFAULT_ALLOWED_PEER_NETWORKS
        allowed = settings.get("allowed_peer_networks")
        never = host_never_routed(str(settings.get("interface") or "kubespan"), self.endpoint)
        peers, new_last, merge_reasons = plan_peers(state.get("inventory_peers") or [], found, self.memory.get("affiliates"),
                                                    ident_key, state.get("address") or "", state["subnet"], local,
                                                    (local or {}).get("name"),
                                                    list(DEFAULT_ALLOWED_PEER_NETWORKS) if allowed is None else allowed, never)
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
        return True

    def _publish(self, cluster_id: str, node_id: str, local: dict, public_ep: Optional[str], listed: List, now: float) -> None:
        """AffiliateUpdate of this node's affiliate when due. A failure is logged (once per distinct error) and does not
        stop the tick: the affiliates listed are merged all the same, and the next tick tries again."""
        from .discovery_affiliates import affiliate_message
        aff = publishable_affiliate(local, public_ep, load_announce_inputs(self.state_dir))
        digest = affiliate_digest(self.endpoint, cluster_id, aff)
        fields = {"hostname": self.hostname, "operating_system": "kubespan.mesh"}
        try:
            plain = affiliate_message(aff, **fields)[0].encode()
            data, blobs = seal_affiliate(self.key, aff, **fields)
            present = stored_is_current(self.key, listed, node_id, plain, blobs)
            why = publish_due(self.memory.get("published"), digest, now, self.settings["ttl"], present)
            if not why:
                return
            self.client.update(cluster_id, node_id, data, blobs, ttl=self.settings["ttl"])
        except _errors() as exc:
            error = str(exc)[:MAX_REASON_CHARS]
            if error != self.memory.get("publish_error"):
                self.log("discovery: this node's affiliate could not be published (%s): the affiliates listed are merged "
                         "anyway; the next tick tries again" % error)
            self.memory["publish_error"] = error
            return
        self.memory.pop("publish_error", None)
        self.memory["published"] = {"digest": digest, "at": now, "endpoints": aff["endpoints"]}
        self.log("discovery: published this node's affiliate (%s; %d endpoints)" % (why, len(aff["endpoints"])))

    def harvest(self, statuses: Dict[str, object], peers: List[dict]) -> None:
        """Publish the endpoints WireGuard observed for up peers (kubespan_harvest_extra_endpoints)."""
        if not self.settings["harvest_extra_endpoints"] or not self.reachable or self.client is None:
            return
        now = self.now_fn()
        local_node = (self.state.get("local_affiliate") or {}).get("node_id") or ""
        harvested = self.memory.setdefault("harvested", {})
        for node_id, endpoint in harvest_plan(statuses, peers, harvested, now, self.settings["ttl"], local_node):
            try:
                self.client.update(self.state["cluster_id"], node_id, None, seal_endpoints(self.key, [endpoint]), ttl=self.settings["ttl"])
            except _errors() as exc:
                self.log("discovery: harvested endpoint %s of %s not published: %s" % (endpoint, node_id, exc))
                break
            if harvested.get(node_id, {}).get("endpoint") != endpoint:
                self.log("discovery: published harvested endpoint %s for %s" % (endpoint, node_id))
            harvested[node_id] = {"endpoint": endpoint, "at": now}
        known = {p.get("node_id") for p in peers}
        for node_id in [n for n in harvested if n not in known]:
            del harvested[node_id]
        save_memory(self.state_dir, self.memory)
