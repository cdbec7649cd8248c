# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Host-side reconcile steps shared by the Ansible modules and the node agent.

These functions do I/O through the adapters (netlink, WireGuard transports, state files) and call the
pure planners. They never return or log the private key or the cluster secret.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from typing import List, Optional

from ..base.errors import KubeSpanError
from ..core import settings as model
from ..core.addressing import first_physical_link, node_address
from ..core.endpoints import announce_inputs, endpoint_problem, endpoints_from_inputs, filter_peer_endpoints
from ..core.peers import build_peer_set
from ..core.rpfilter import CONF, rp_filter_plan
from ..core.wgtypes import WireGuardError
from ..host import layout
from ..host.identity import Identity, load_identity, new_identity, save_identity
from ..host.netlink import Netlink, endpoint_candidates
from ..host.netlink import host_never_routed as netlink_never_routed
from ..host.nft import apply_batch, list_table, nft_available
from ..host.ports import udp_port_in_use
from ..host.statefile import StateFileError, ensure_dir, read_json, state_lock, write_json
from ..host.systemd import WIREGUARD_GO_UNIT
from .nodestate import STATE_VERSION, NodeState, load_state, state_path

DEFAULT_STATE_DIR = model.STATE_DIR
STATE_FILE = layout.STATE
PEER_KEYS = ("name", "node_id", "public_key", "address", "endpoints", "allowed_ips", "addresses", "additional_addresses",
             "exclude_advertised_networks")


class ReconcileError(KubeSpanError):
    """The node cannot be brought to the desired state; the message says why and what to do."""


@dataclass
class Settings:
    """The module's and the agent's view of the settings; every default comes from the settings model (settings.py)."""
    interface: str = model.LINK_NAME
    mtu: int = model.MTU
    listen_port: int = model.LISTEN_PORT
    fwmark: int = model.WIREGUARD_MARK
    persistent_keepalive: int = model.PERSISTENT_KEEPALIVE
    implementation: str = model.IMPLEMENTATION
    state_dir: str = model.STATE_DIR
    address_source: str = model.ADDRESS_SOURCE
    route_table: int = model.ROUTE_TABLE
    rule_priority: int = model.RULE_PRIORITY
    force_mark: int = model.FORCE_MARK
    mark_mask: int = model.MARK_MASK
    nft_table: str = model.NFT_TABLE
    allow_down_peer_bypass: bool = model.ALLOW_DOWN_PEER_BYPASS
    firewall_backend: str = model.FIREWALL_BACKEND
    firewalld_zone: str = model.FIREWALLD_ZONE
    allowed_peer_networks: List[str] = field(default_factory=lambda: model.default("kubespan_allowed_peer_networks"))
    peer_endpoint_filters: Optional[List[str]] = model.PEER_ENDPOINT_FILTERS  # Talos filters.peerEndpoints; None: no filtering
    relay: bool = model.RELAY  # this node forwards mesh traffic from kubespan to kubespan (relay.py)
    relays: List[str] = field(default_factory=list)  # public keys of the peers marked as relays

    def dataplane(self):
        from ..core.dataplane import DataPlaneConfig
        try:
            return DataPlaneConfig(mtu=int(self.mtu), link=self.interface, route_table=int(self.route_table), route_metric=1,
                                   rule_priority=int(self.rule_priority), wireguard_mark=int(self.fwmark), force_mark=int(self.force_mark),
                                   mark_mask=int(self.mark_mask), nft_table=self.nft_table).validate()
        except ValueError as exc:
            raise ReconcileError(str(exc))

    def validate(self) -> None:
        """ReconcileError listing every bad value, with the rules and messages of the role's early check
        (settingscheck.py). Module arguments were checked by the role already; this also guards a
        hand-edited desired state file read by the agent."""
        from ..core.settingscheck import settings_errors
        errors = settings_errors({var: getattr(self, name) for name, var in ROLE_VARIABLES.items()})
        if errors:
            raise ReconcileError("invalid KubeSpan settings (module arguments or the desired state file): %s; re-run the "
                                 "kubespan.mesh playbook to rewrite the state" % "; ".join(errors))


# Settings field -> the role variable settingscheck knows it by (its messages name the variable), from the model
ROLE_VARIABLES = model.option_variables(Settings.__dataclass_fields__)
ROLE_VARIABLES["address_source"] = "kubespan_address_source"


# ----------------------------------------------------------------------------------------------- identity

def ensure_identity(state_dir: str, cluster_id: str, address_source: str = "auto", check_mode: bool = False,
                    listen_port: int = model.LISTEN_PORT, interface: str = model.LINK_NAME, endpoint_filters=None, extra_endpoints=(),
                    advertised_networks=(), exclude_advertised_networks=(), kubernetes_networks=()):
    """Load or create this node's identity and compute its address and endpoints.

    ``kubernetes_networks``: the host's pod (and service) CIDRs, advertised or not. As Talos's
    NodeAddressFilterNoK8s, addresses inside them (a CNI bridge's 10.244.N.1) are neither node addresses
    nor endpoints: they belong to the pod network, which is routed to the node only when advertised.

    Returns (identity, facts, changed). ``facts`` never contains the private key. In check mode a
    missing identity is reported as ``would_create`` with no key material invented.
    """
    ident = load_identity(state_dir)
    created = ident is None
    with Netlink() as nl:
        physical = first_physical_link(nl.links())
        host_addrs = nl.node_addresses(exclude_ifname=interface)
    if created:
        if check_mode:
            return None, {"would_create": True, "state_dir": state_dir}, True
        ident = new_identity()
    address, subnet, source = node_address(cluster_id, ident.node_id, physical, address_source)
    addr = str(address)
    # As Talos (establishIdentity at every boot): the address is recomputed from the current first physical MAC at
    # each run; the identity file keeps the keys, so a node whose first NIC changed gets a new address, same key.
    previous = ident.address.split("/")[0] if ident.address and ident.subnet == str(subnet) else ""
    changed = created
    if ident.address.split("/")[0] != addr or ident.subnet != str(subnet):
        changed = True
        ident.address = "%s/128" % addr
        ident.subnet = str(subnet)
    if changed and not check_mode:
        save_identity(state_dir, ident, node_file=created)
    not_node = [str(subnet)] + [str(ipaddress.ip_network(str(n).strip(), strict=False)) for n in kubernetes_networks or ()]
    node_ips = endpoint_candidates(host_addrs, not_node)
    inputs = announce_inputs([a for _n, a in host_addrs], not_node, endpoint_filters, int(listen_port), extra_endpoints)
    endpoints = endpoints_from_inputs(inputs)
    if not check_mode:
        from ..discovery.discovery_agent import save_announce_inputs
        save_announce_inputs(state_dir, inputs)
    additional = [str(ipaddress.ip_network(str(n).strip(), strict=False)) for n in advertised_networks or ()]
    excluded = [str(ipaddress.ip_network(str(n).strip(), strict=False)) for n in exclude_advertised_networks or ()]
    facts = {
        "public_key": ident.public_key,
        "node_id": ident.node_id,
        "address": addr,
        "subnet": str(subnet),
        "address_source": source,
        "endpoints": endpoints,
        "addresses": node_ips + [addr],
        "additional_addresses": additional,
        "exclude_advertised_networks": excluded,
        "created": created,
        "state_dir": state_dir,
    }
    if previous and previous != addr:
        facts["previous_address"] = previous
    return ident, facts, changed


def address_change_message(old: str, new: str, source: str) -> str:
    """The log line of a KubeSpan address that moved (a node's first physical NIC changed)."""
    return ("KubeSpan address changed from %s to %s (recomputed from %s, as Talos does at every boot; the key is kept): "
            "peers that learn this node from discovery follow at once, inventory peers at the next playbook run"
            % (old, new, source))


def refresh_address(state_dir: str, log, lock_timeout: float = 20.0, node: Optional[NodeState] = None) -> bool:
    """The node agent's address check (each tick, so also right after boot): recompute the KubeSpan address from the
    current first physical MAC (Settings.address_source); when it moved, update the identity file and the desired
    state (address, this node's own affiliate) under the node lock and log it. The interface gets the new address
    when the state is re-applied (the old one is removed as stale); the fail-closed routes depend on the cluster's
    prefix, not on this address, so they stay. Returns True when it changed. ``node``: the tick's NodeState."""
    node = node or NodeState(state_dir)
    state = node.state()
    if not state or state.get("disabled") or not state.get("cluster_id"):
        return False
    source_setting = str((state.get("settings") or {}).get("address_source") or "auto")
    ident = node.identity()
    if ident is None or not ident.address:
        return False
    with Netlink() as nl:
        physical = first_physical_link(nl.links())
    try:
        address, subnet, source = node_address(state["cluster_id"], ident.node_id, physical, source_setting)
    except ValueError as exc:
        log("KubeSpan address not recomputed: %s" % exc)
        return False
    new, old = str(address), ident.address.split("/")[0]
    if new == old or ident.subnet != str(subnet):
        return False
    with state_lock(state_dir, timeout=lock_timeout):
        # a copy: the cached identity keeps the file's content if the save fails (the re-apply then uses the old address)
        moved = replace(ident, address="%s/128" % new)
        try:
            save_identity(state_dir, moved, node_file=False)
        finally:
            node.forget_identity()
        state = dict(node.state() or state)  # under the lock: read again if a playbook run rewrote it (NodeState)
        state["address"] = moved.address
        local = state.get("local_affiliate")
        if isinstance(local, dict):
            local = dict(local, address=new)
            local["addresses"] = [new if a == old else a for a in local.get("addresses") or []]
            state["local_affiliate"] = local
        node.write_state(state)
    log(address_change_message(old, new, source))
    return True


# ----------------------------------------------------------------------------------------------- device

def kernel_available() -> bool:
    from ..host.wg_kernel import kernel_wireguard_available
    return kernel_wireguard_available()


def resolve_implementation(setting: str) -> str:
    if setting in ("kernel", "userspace"):
        return setting
    if kernel_available():
        return "kernel"
    if shutil.which("wireguard-go") or os.path.exists("/usr/bin/wireguard-go"):
        return "userspace"
    raise ReconcileError("this kernel has no WireGuard module and wireguard-go is not installed: install the "
                         "wireguard-go package or a kernel with WireGuard (set kubespan_wireguard_implementation)")


def open_device(impl: str, ifname: str):
    if impl == "kernel":
        from ..host.wg_kernel import KernelWireGuard
        return KernelWireGuard(ifname)
    from ..host.wg_uapi import UapiWireGuard
    return UapiWireGuard(ifname)


def ensure_userspace_device(ifname: str, timeout: float = 15.0) -> bool:
    """Start wireguard-go (through its systemd unit: the wg_uapi adapter) and wait for the UAPI socket. True if started."""
    from ..host.wg_uapi import ensure_running
    try:
        return ensure_running(ifname, timeout, WIREGUARD_GO_UNIT)
    except WireGuardError as exc:
        raise ReconcileError(str(exc))


# ----------------------------------------------------------------------------------------------- mesh

@dataclass
class MeshResult:
    changed: bool = False
    changes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    implementation: str = ""
    firewall_backend: str = ""
    peers: List[dict] = field(default_factory=list)
    before: str = ""
    after: str = ""


def host_never_routed(interface: str = model.LINK_NAME, discovery_endpoint: str = "") -> List[str]:
    """netlink.host_never_routed plus the discovery service's address when ``discovery_endpoint`` names it as an
    IP literal (a host name is not resolved: DNS is not trusted to decide routing)."""
    # lazy: the discovery code is imported only by the runs and ticks that use discovery (agent tick cost)
    from ..discovery.discovery_agent import endpoint_literal
    return netlink_never_routed(interface, [endpoint_literal(discovery_endpoint)] if discovery_endpoint else [])


def usable_endpoints(peers: List[dict], own_address: str, subnet: str, warnings: Optional[List[str]] = None) -> dict:
    """public key -> the endpoints of each peer that endpoint_problem accepts (this node's own KubeSpan address and
    the cluster's prefix refused too); each refusal is appended to ``warnings`` (at most 16 lines, then a count)."""
    result, refused = {}, 0
    net = ipaddress.IPv6Network(subnet) if subnet else None
    own = None
    if own_address:
        ip = ipaddress.ip_address(own_address.split("/", 1)[0])
        own = {(ip.version, int(ip))}
    for peer in peers:
        kept = []
        for ep in peer.get("endpoints") or []:
            host = ep.rpartition(":")[0].strip("[]")
            why = endpoint_problem(host, own, net)
            if why is None:
                kept.append(ep)
                continue
            refused += 1
            if warnings is not None and refused <= 16:
                warnings.append("peer %s: endpoint %s refused (%s)" % (peer.get("name"), ep, why))
        result[peer["public_key"]] = kept
    if warnings is not None and refused > 16:
        warnings.append("%d more peer endpoints refused (not listed)" % (refused - 16))
    return result


def compute_peers(ident: Identity, state_dir: str, affiliates, members, local_name=None, never_routed=(),
                  node: Optional[NodeState] = None):
    """Peer specs for this node from fresh affiliates, the member list and the last-known state.
    ``never_routed``: host_never_routed(): no peer is given any of these addresses. ``node``: the run's NodeState."""
    subnet = ipaddress.IPv6Network(ident.subnet)
    # a corrupt state file only loses the --limit memory; it is rewritten by the run
    last_known = (node or NodeState(state_dir)).state_or_empty().get("peers", [])
    own = [a for a in affiliates if a.get("public_key") == ident.public_key or (local_name and a.get("name") == local_name)]
    local_addresses = [x for a in own for x in a.get("addresses") or []] + list(never_routed)
    local_networks = [x for a in own for x in a.get("additional_addresses") or []]
    return build_peer_set(ident.public_key, ident.address, subnet, affiliates, members, last_known, local_name,
                          local_addresses, local_networks)


def reconcile_mesh(settings: Settings, ident: Identity, cluster_id: str, cluster_secret: str, peers: List[dict],
                   members: Optional[List[str]] = None, check_mode: bool = False, persist: bool = True,
                   now: Optional[float] = None, up_peers: Optional[List[str]] = None,
                   extra_state: Optional[dict] = None, via: Optional[dict] = None) -> MeshResult:
    """Bring the WireGuard interface, its address and MTU, its peers, the policy routing, the nftables table and the
    openings in the host's nftables input chains to the desired state; with ``persist`` write the desired state.

    The steps, each planned purely (core/meshplan.py, from the host's view read just before) and then applied
    through the adapters: link and device; data plane (routes, rules, nftables table), then the relay's and the
    rp_filter sysctls; the nftables openings. In check mode the plan stops after the data plane (the sysctls and
    the openings are not previewed). The slow ufw/firewalld CLIs are not a step of this sequence: the playbook run
    calls :func:`reconcile_host_firewall` itself, the agent's tick never does.

    ``up_peers`` (public keys) matters only with allow_down_peer_bypass; None reads the node agent's last statuses.
    ``extra_state``: more keys of the persisted desired state (discovery settings, the inventory's peers and this
    node's own affiliate, which the node agent's discovery client uses). ``via``: peer public key -> relay public
    key for the relayed peers (relay.py); None reads the node agent's last statuses."""
    from ..core import meshplan
    settings.validate()
    peers = filter_peer_endpoints(peers, settings.peer_endpoint_filters)
    now = time.time() if now is None else now
    result = MeshResult()
    impl = resolve_implementation(settings.implementation)
    result.implementation = impl
    if via is None:
        via = agent_via(settings.state_dir)
    if settings.allow_down_peer_bypass and up_peers is None:
        up_peers = agent_up_peers(settings.state_dir)

    endpoints = usable_endpoints(peers, ident.address, ident.subnet, result.warnings)
    desired = meshplan.desired_device(ident.private_key, settings.listen_port, settings.fwmark, settings.persistent_keepalive,
                                      cluster_secret, peers, endpoints, via)
    _device_step(settings, impl, ident, desired, {p["public_key"]: p["name"] for p in peers}, now, check_mode, result)
    if _dataplane_step(settings, ident, peers, meshplan.bypass_up_peers(settings.allow_down_peer_bypass, up_peers, via),
                       check_mode, result):
        _reconcile_relay_sysctls(settings, check_mode, result)
        _reconcile_rp_filter(settings, check_mode, result)
        reconcile_openings(settings, True, check_mode, result)

    result.peers = [{k: p[k] for k in PEER_KEYS if k in p} for p in peers]
    if persist:
        persist_state(settings, impl, ident, cluster_id, cluster_secret, members, extra_state, check_mode, result)
    result.changed = bool(result.changes)
    return result


def _device_view(nl, impl: str, ifname: str):
    """The host's view of the device step: (link as netlink reports it or None, device as read or None, whether the
    device exists). A wireguard-go whose socket does not answer counts as missing (restarted by the apply)."""
    link = nl.link(ifname)
    if link is not None and impl == "kernel" and link.get("kind") not in (None, "wireguard"):
        raise ReconcileError("interface %s exists but is a %s link, not WireGuard: rename or remove it, or set "
                             "kubespan_interface" % (ifname, link.get("kind")))
    current = None
    device_exists = link is not None
    if device_exists and impl == "userspace":
        from ..host.wg_uapi import UapiWireGuard
        device_exists = UapiWireGuard(ifname).exists()
    if device_exists:
        dev = open_device(impl, ifname)
        try:
            current = dev.read()
        except WireGuardError:
            if impl == "kernel":
                raise
            current = None  # wireguard-go died: restart below
            device_exists = False
        finally:
            dev.close()
    return link, current, device_exists


def _device_step(settings: Settings, impl: str, ident: Identity, desired, labels: dict, now: float, check_mode: bool,
                 result: MeshResult) -> None:
    """Link and device: read the view, plan (meshplan.plan_device_step), apply through the adapters."""
    from ..core.meshplan import plan_device_step
    ifname = settings.interface
    address = "%s/64" % ident.address.split("/")[0]
    with Netlink() as nl:
        link, current, device_exists = _device_view(nl, impl, ifname)
        plan = plan_device_step(impl, ifname, desired, link, current, device_exists, address, int(settings.mtu), labels,
                                ident.public_key, now, port_in_use=not device_exists and udp_port_in_use(int(settings.listen_port)))
        result.before, result.after = plan.before, plan.after
        result.changes.extend(plan.changes)
        result.warnings.extend(plan.warnings)
        if check_mode or not plan.changes:
            return
        if plan.create:
            if impl == "kernel":
                from ..host.wg_kernel import create_link
                create_link(ifname)
            else:
                ensure_userspace_device(ifname)
        dev = open_device(impl, ifname)
        try:
            dev.apply(plan.update)
        finally:
            dev.close()
        idx = nl.link_index(ifname)
        if idx is None:
            raise ReconcileError("interface %s vanished while it was being configured" % ifname)
        for op, arg in plan.link_ops:
            if op == "mtu":
                nl.set_mtu(idx, int(settings.mtu))
            elif op == "add":
                nl.add_address(idx, arg)
            elif op == "del":
                nl.del_address(idx, arg)
            elif op == "up":
                nl.set_up(idx)


def _dataplane_step(settings: Settings, ident: Identity, peers: List[dict], up: Optional[List[str]], check_mode: bool,
                    result: MeshResult) -> bool:
    """Policy routing (table, rules) and the nftables table that forces the peers' networks into KubeSpan: read the
    view, plan (meshplan.plan_dataplane), apply. False in check mode (the sequence stops here)."""
    from ..core.dataplane import MAIN_TABLE, nft_batch, owned_main_routes
    from ..core.meshplan import plan_dataplane
    cfg = settings.dataplane()
    forward = relay_forward_families(settings) if settings.relay else None
    with Netlink() as nl:
        cur_routes = nl.routes(cfg.route_table) + owned_main_routes(nl.routes(MAIN_TABLE), cfg)
        cur_rules = nl.rules(cfg.rule_priority, cfg.route_table)
        cur_nft = list_table(cfg.nft_table)
        plan = plan_dataplane(cfg, peers, ident.subnet, settings.allow_down_peer_bypass, up, forward, cur_routes, cur_rules, cur_nft)
        result.changes.extend(plan.changes)
        result.before += plan.before
        result.after += plan.after
        if check_mode:
            return False
        for r in plan.del_routes:
            nl.del_route(r)
        for r in plan.add_routes:
            nl.add_route(r, replace=True)
        for r in plan.del_rules:
            nl.del_rule(r)
        for r in plan.add_rules:
            nl.add_rule(r)
    if plan.nft_changed:
        apply_batch(nft_batch(plan.want_nft), "update table inet %s" % cfg.nft_table)
    return True


def persist_state(settings: Settings, impl: str, ident: Identity, cluster_id: str, cluster_secret: str,
                  members: Optional[List[str]], extra_state: Optional[dict], check_mode: bool, result: MeshResult,
                  node: Optional[NodeState] = None) -> None:
    """Write the desired state (result.peers, the settings with the implementation the run chose) when it differs.
    ``node``: the run's NodeState (the last state it read is compared, the new one recorded)."""
    node = node or NodeState(settings.state_dir)
    persisted = asdict(settings)
    persisted["implementation"] = impl  # the agent keeps the data path the run chose
    state = {
        "version": STATE_VERSION,
        "settings": persisted,
        "cluster_id": cluster_id,
        "cluster_secret": cluster_secret,
        "address": ident.address,
        "subnet": ident.subnet,
        "members": list(members) if members is not None else None,
        "peers": result.peers,
    }
    for key, value in (extra_state or {}).items():
        if key not in state:
            state[key] = value
    try:
        old = node.state()
    except StateFileError:
        old = None
    _version_peers(state["peers"], (old or {}).get("peers") or [])
    if old != state:
        result.changes.append("update desired state in %s" % state_path(settings.state_dir))
        if not check_mode:
            ensure_dir(settings.state_dir)
            node.write_state(state)


def _version_peers(peers: List[dict], old_peers: List[dict]) -> None:
    """Give each peer spec a resource version as Talos does: kept while the spec is unchanged, +1 on change."""
    old = {p.get("public_key"): p for p in old_peers if isinstance(p, dict)}
    for peer in peers:
        prev = old.get(peer["public_key"])
        if prev is None:
            peer["version"] = 1
            continue
        same = {k: v for k, v in prev.items() if k != "version"} == peer
        version = prev.get("version") if isinstance(prev.get("version"), int) else 0
        peer["version"] = version if same and version else version + 1


def replace_state_peers(state_dir: str, peers: List[dict], node: Optional[NodeState] = None) -> List[dict]:
    """Replace the peers of the persisted desired state (the node agent's discovery client; hold the node lock).

    The peers keep their resource versions when unchanged. Returns the peers as written."""
    node = node or NodeState(state_dir)
    state = node.state()
    if state is None:
        raise ReconcileError("no desired state in %s yet: run the kubespan.mesh playbook first" % state_path(state_dir))
    new = [{k: p[k] for k in PEER_KEYS if k in p} for p in peers]
    _version_peers(new, state.get("peers") or [])
    node.write_state(dict(state, peers=new))
    return new


def settings_from_state(state: dict) -> Settings:
    """The Settings a playbook run persisted (keys of other versions are ignored)."""
    raw = state.get("settings") if isinstance(state, dict) else None
    if not isinstance(raw, dict):
        raise ReconcileError("the desired state file has no settings mapping (got %s): re-run the kubespan.mesh playbook "
                             "to rewrite it" % type(raw).__name__)
    return Settings(**{k: v for k, v in raw.items() if k in Settings.__dataclass_fields__})


def agent_via(state_dir: str) -> dict:
    """Peer public key -> relay public key, as the node agent last decided ({} when it has not run yet)."""
    return NodeState(state_dir).via()


def agent_up_peers(state_dir: str) -> List[str]:
    """Public keys of the peers the node agent last saw up (empty when it has not run yet)."""
    return NodeState(state_dir).up_peers()


# ----------------------------------------------------------------------------------------------- relay

RELAY_FILE = layout.RELAY
SYSCTL_ROOT = "/proc/sys"


def _sysctl_read(path: str) -> Optional[str]:
    try:
        with open(os.path.join(SYSCTL_ROOT, path)) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _sysctl_write(path: str, value: str) -> None:
    try:
        with open(os.path.join(SYSCTL_ROOT, path), "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise ReconcileError("cannot set %s=%s (%s): KubeSpan needs write access to the network sysctls (a container "
                             "needs its own network namespace with /proc/sys writable)" % (path.replace("/", "."), value, exc.strerror))


def relay_forward_families(settings: Settings) -> List[int]:
    """The IP families whose forwarding from the link only the relay turns on (the host forwards nothing of that family
    otherwise): the forward chain drops what arrives on the link for any other interface in those families."""
    return [fam for fam, path in ((4, "net/ipv4/ip_forward"), (6, "net/ipv6/conf/all/forwarding")) if _sysctl_read(path) != "1"]


def relay_sysctls(interface: str, ipv6_all_forwarding: Optional[str], force_forwarding_exists: bool) -> List[tuple]:
    """(sysctl path, value) a relay sets, on the link only: IPv4 forwarding from it and no ICMP redirects (a relay sends
    packets back out of the link they came in on); IPv6 forwarding from it with force_forwarding (Linux 6.17) unless
    the host forwards IPv6 anyway. ReconcileError when IPv6 cannot be forwarded per interface."""
    want = [("net/ipv4/conf/%s/forwarding" % interface, "1"), ("net/ipv4/conf/%s/send_redirects" % interface, "0")]
    if ipv6_all_forwarding != "1":
        if not force_forwarding_exists:
            raise ReconcileError("kubespan_relay: this kernel has no per-interface IPv6 forwarding (net.ipv6.conf.%s."
                                 "force_forwarding, Linux 6.17+) and net.ipv6.conf.all.forwarding is off: the role does not "
                                 "turn on IPv6 forwarding for every interface; use a newer kernel on the relay, set "
                                 "net.ipv6.conf.all.forwarding=1 yourself, or set kubespan_relay: false" % interface)
        want.append(("net/ipv6/conf/%s/force_forwarding" % interface, "1"))
    return want


def _reconcile_relay_sysctls(settings: Settings, check_mode: bool, result: MeshResult) -> None:
    """A relay's per-interface sysctls; their values before the first change are kept in relay.json so that turning the
    relay off (or disabling KubeSpan) restores them."""
    path = os.path.join(settings.state_dir, RELAY_FILE)
    saved = _sysctl_record(path)
    if not settings.relay:
        _restore_sysctls(path, saved, "no longer a relay", check_mode, result)
        return
    if not os.path.isdir(os.path.join(SYSCTL_ROOT, "net/ipv4/conf", settings.interface)):
        if check_mode:
            result.changes.append("turn on forwarding from %s to %s (relay)" % (settings.interface, settings.interface))
            return
        raise ReconcileError("interface %s has no sysctls in %s: cannot configure the relay" % (settings.interface, SYSCTL_ROOT))
    want = relay_sysctls(settings.interface, _sysctl_read("net/ipv6/conf/all/forwarding"),
                         os.path.exists(os.path.join(SYSCTL_ROOT, "net/ipv6/conf", settings.interface, "force_forwarding")))
    _set_sysctls(settings.state_dir, path, saved, want, "relay", check_mode, result)


def _sysctl_record(path: str) -> dict:
    """The sysctl values a record file (relay.json, rpfilter.json) kept from before our first change ({} if none)."""
    try:
        saved = (read_json(path) or {}).get("sysctls") or {}
    except (StateFileError, AttributeError):
        saved = {}
    return saved if isinstance(saved, dict) else {}


def _set_sysctls(state_dir: str, path: str, saved: dict, want: List[tuple], label: str, check_mode: bool,
                 result: MeshResult) -> None:
    """Write the (sysctl path, value) pairs that differ, in order; first record each one's value before our first change."""
    todo = [(key, value, _sysctl_read(key)) for key, value in want]
    todo = [(key, value, old) for key, value, old in todo if old != value]
    if not todo:
        return
    result.changes.extend("sysctl %s=%s (was %s; %s)" % (key.replace("/", "."), value, old, label) for key, value, old in todo)
    if check_mode:
        return
    record = dict(saved)
    for key, _value, old in todo:
        if key not in record and old is not None:
            record[key] = old
    if record != saved:
        ensure_dir(state_dir)
        write_json(path, {"sysctls": record})
    for key, value, _old in todo:
        _sysctl_write(key, value)


def _restore_sysctls(path: str, saved: dict, reason: str, check_mode: bool, result: MeshResult) -> None:
    """Write back the recorded values (those whose sysctl still exists and differs) and remove the record."""
    if not saved and not os.path.exists(path):
        return
    for key in sorted(saved, key=lambda k: (not k.endswith("/all/rp_filter"), k)):  # "all" back first: nothing dips
        value = str(saved[key])
        if not key.startswith("net/") or ".." in key:
            continue  # a hand-edited record names nothing else
        have = _sysctl_read(key)
        if have is not None and have != value:
            result.changes.append("sysctl %s=%s (restored: %s)" % (key.replace("/", "."), value, reason))
            if not check_mode:
                _sysctl_write(key, value)
    if not check_mode:
        os.unlink(path)
    result.changes.append("remove %s" % path)


# ---------------------------------------------------------------------------------------- rp_filter

RPFILTER_FILE = layout.RPFILTER


def _reconcile_rp_filter(settings: Settings, check_mode: bool, result: MeshResult) -> None:
    """Let decrypted IPv4 packets past the reverse-path filter on the link (rpfilter.py says why and how); the values
    before the first change are kept in rpfilter.json so that disabling KubeSpan restores them."""
    try:
        names = os.listdir(os.path.join(SYSCTL_ROOT, CONF))
    except OSError:
        return  # no IPv4: nothing to filter
    values = {name: _sysctl_read("%s/%s/rp_filter" % (CONF, name)) for name in names}
    want = rp_filter_plan(settings.interface, values)
    if settings.interface not in values:  # not created yet (check mode): it will copy "default"
        result.changes.extend("sysctl %s=%s (when %s exists; rp_filter)" % (key.replace("/", "."), value, settings.interface)
                              for key, value in want if key.split("/")[3] == settings.interface)
        want = [(key, value) for key, value in want if key.split("/")[3] != settings.interface]
    path = os.path.join(settings.state_dir, RPFILTER_FILE)
    _set_sysctls(settings.state_dir, path, _sysctl_record(path), want, "rp_filter", check_mode, result)


FIREWALL_FILE = layout.FIREWALL


def reconcile_openings(settings: Settings, enabled: bool, check_mode: bool, result: MeshResult) -> None:
    """Open the listen port and trust the interface in the host's nftables input chains with policy drop (cheap: every
    reconcile, the agent's too); ``enabled`` False removes them. Sets result.firewall_backend (the backend in use)."""
    from ..core.firewall import plan_openings
    from ..host.hostfw import FirewallError, detect_backend
    from ..host.nft import list_ruleset
    port, ifname = int(settings.listen_port), settings.interface
    nft_present = nft_available()
    try:
        backend = detect_backend(settings.firewall_backend, nft_present) if enabled else "none"
        result.firewall_backend = backend
        if nft_present and (backend == "nftables" or not enabled):
            commands, changes = plan_openings(list_ruleset(), port, ifname, settings.nft_table, backend == "nftables")
            result.changes.extend(changes)
            if commands and not check_mode:
                apply_batch({"nftables": commands}, "open UDP %s in the host firewall" % port)
    except FirewallError as exc:
        raise ReconcileError("host firewall (%s): %s" % (settings.firewall_backend, exc))


def reconcile_host_firewall(settings: Settings, enabled: bool, check_mode: bool, result: MeshResult) -> None:
    """The same openings in ufw or firewalld, made persistent by them: their CLIs take seconds, so only playbook runs
    (and disabling) call this step, after :func:`reconcile_openings` (whose result.firewall_backend it uses); the
    agent's tick never does. ``enabled`` False removes what we added from every backend, whichever is in use."""
    from ..core.firewall import parse_ufw_added, plan_firewalld, plan_ufw
    from ..host.hostfw import FirewallError, firewalld_apply, firewalld_default_zone, firewalld_running, firewalld_state, ufw_added, ufw_apply
    port, ifname = int(settings.listen_port), settings.interface
    backend = result.firewall_backend if enabled else "none"
    try:
        if backend == "ufw" or (not enabled and shutil.which("ufw")):
            commands, changes = plan_ufw(parse_ufw_added(ufw_added()), port, ifname, backend == "ufw")
            result.changes.extend(changes)
            if commands and not check_mode:
                ufw_apply(commands)
        owned_path = layout.path(settings.state_dir, FIREWALL_FILE)
        owned = (read_json(owned_path) or {}).get("firewalld", {}) if os.path.exists(owned_path) else {}
        if backend == "firewalld" or (not enabled and owned and firewalld_running()):
            zone = settings.firewalld_zone or firewalld_default_zone()
            have = firewalld_state(zone, port, ifname)
            commands, changes, warnings, new_owned = plan_firewalld(zone, port, ifname, have, owned, backend == "firewalld")
            result.changes.extend(changes)
            result.warnings.extend(warnings)
            if not check_mode:
                firewalld_apply(commands)
                if new_owned != owned:
                    ensure_dir(settings.state_dir)
                    write_json(owned_path, {"firewalld": new_owned})
    except FirewallError as exc:
        raise ReconcileError("host firewall (%s): %s" % (settings.firewall_backend, exc))


def teardown_mesh(settings: Settings, check_mode: bool = False) -> MeshResult:
    """Remove the interface and the desired state; keep the identity (as Talos does when disabled)."""
    result = MeshResult()
    ifname = settings.interface
    with Netlink() as nl:
        link = nl.link(ifname)
        if link is not None:
            result.changes.append("remove interface %s" % ifname)
            if not check_mode:
                if link.get("kind") == "wireguard":
                    nl.delete_link(link["index"])
                else:
                    from ..host.wg_uapi import stop
                    stop(WIREGUARD_GO_UNIT)
                    if nl.link_index(ifname) is not None:
                        nl.delete_link(link["index"])
    from ..core.dataplane import MAIN_TABLE, nft_delete_batch, owned_main_routes, render_rule
    cfg = settings.dataplane()
    with Netlink() as nl:
        for rule in nl.rules(cfg.rule_priority, cfg.route_table):
            result.changes.append("remove rule %s" % render_rule(rule))
            if not check_mode:
                nl.del_rule(rule)
        for route in nl.routes(cfg.route_table) + owned_main_routes(nl.routes(MAIN_TABLE), cfg):
            result.changes.append("remove route to %s from table %s" % (route["dst"], route["table"]))
            if not check_mode:
                nl.del_route(route)
    if nft_available():  # without nft on the host there is no table or opening of ours to remove
        if list_table(cfg.nft_table) is not None:
            result.changes.append("remove nftables table inet %s" % cfg.nft_table)
            if not check_mode:
                apply_batch(nft_delete_batch(cfg.nft_table), "delete table inet %s" % cfg.nft_table)
    reconcile_openings(settings, False, check_mode, result)
    reconcile_host_firewall(settings, False, check_mode, result)
    rp_path = os.path.join(settings.state_dir, RPFILTER_FILE)
    _restore_sysctls(rp_path, _sysctl_record(rp_path), "KubeSpan disabled", check_mode, result)
    for name in layout.RUNTIME_FILES:
        stale = os.path.join(settings.state_dir, name)
        if os.path.exists(stale):
            result.changes.append("remove %s" % stale)
            if not check_mode:
                os.unlink(stale)
    # The desired state is kept, marked disabled: the agent leaves the node alone, and the peers stay
    # known, so re-enabling with --limit restores the same mesh. The identity is kept too (as Talos).
    try:
        state = load_state(settings.state_dir)
    except StateFileError:
        state = None
    if state is not None and not state.get("disabled"):
        result.changes.append("mark the desired state in %s disabled (identity and peers kept)" % state_path(settings.state_dir))
        if not check_mode:
            state["disabled"] = True
            write_json(state_path(settings.state_dir), state)
    result.changed = bool(result.changes)
    return result


def reapply_from_state(state_dir: str = DEFAULT_STATE_DIR, check_mode: bool = False, up_peers: Optional[List[str]] = None,
                       via: Optional[dict] = None, node: Optional[NodeState] = None) -> MeshResult:
    """Re-apply the desired state the last playbook run persisted (node agent, boot). ``node``: the tick's NodeState
    (the desired state, the identity and the statuses for the routed and relayed sets come from it); None reads them."""
    node = node or NodeState(state_dir)
    state = node.state()
    if state is None:
        raise ReconcileError("no desired state in %s yet: run the kubespan.mesh playbook first" % state_path(state_dir))
    if state.get("disabled"):
        return MeshResult()  # KubeSpan is disabled on this node: nothing to re-apply
    ident = node.identity()
    if ident is None:
        raise ReconcileError("no identity in %s: run the kubespan.mesh playbook first" % state_dir)
    settings = settings_from_state(state)
    if via is None:
        via = node.via()
    if up_peers is None and settings.allow_down_peer_bypass:
        up_peers = node.up_peers()
    peers = [dict(p) for p in state.get("peers", [])]
    return reconcile_mesh(settings, ident, state["cluster_id"], state["cluster_secret"], peers,
                          state.get("members"), check_mode=check_mode, persist=False, up_peers=up_peers, via=via)
