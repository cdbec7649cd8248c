# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""One call of the ``kubespan.mesh.mesh`` module, without Ansible: the request (the module's parameters) in, the
result dict out. The module parses the request, calls :func:`run` and hands the result to ``exit_json``.

Steps of a ``state=present`` call, in order: check the cluster values and settings (nothing is changed before);
ensure the identity (with ``identity``); compute the peers from the request; stop when the controller's cache is not
current (with ``settle``); install the node agent's files (with ``agent``); merge the peers discovered last (with
discovery) or leave the discovery service (without); reconcile the mesh under the node lock; report."""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from ..agent.agent import status_records
from ..agent.agentfiles import AgentOptions, decode_bundle, enable_units, install
from ..core.cluster import validate_cluster_id, validate_cluster_secret
from ..core.observed import observed_report, with_observed
from ..core.settings import fill_options
from ..core.settle import affiliate_of
from ..core.settle import check as settle_check
from ..discovery.discovery_agent import (
    DiscoverySettingsError,
    agent_warning,
    delete_affiliate,
    last_discovered,
    local_affiliate,
    normalize_settings,
    plan_peers,
    strip_affiliate,
)
from ..host.identity import Identity
from ..host.requirements import missing
from ..host.statefile import state_lock
from ..reconcile.engine import (
    ReconcileError,
    Settings,
    address_change_message,
    compute_peers,
    ensure_identity,
    host_never_routed,
    persist_state,
    reconcile_host_firewall,
    reconcile_mesh,
    teardown_mesh,
)
from ..reconcile.nodestate import NodeState

Warn = Callable[[str], None]


def discovery_request(p: dict) -> dict:
    """The ``discovery`` option as the agent keeps it (discovery_agent.normalize_settings: its defaults fill what is
    unset); ReconcileError naming the setting when a value is bad."""
    try:
        return normalize_settings(p.get("discovery") or {})
    except DiscoverySettingsError as exc:
        raise ReconcileError(str(exc))


def settings_request(p: dict) -> Settings:
    """engine.Settings of the request: the options that are set, the model's defaults for the rest; validated."""
    names = ("interface", "mtu", "listen_port", "fwmark", "persistent_keepalive", "implementation", "state_dir",
             "allow_down_peer_bypass", "route_table", "rule_priority", "force_mark", "mark_mask", "nft_table",
             "firewall_backend", "firewalld_zone", "allowed_peer_networks", "relay")
    values = {name: p[name] for name in names if p.get(name) is not None}
    source = p.get("address_source") or (p.get("identity") or {}).get("address_source")
    if source:
        values["address_source"] = source  # else engine.Settings' default (the settings model's)
    settings = Settings(peer_endpoint_filters=p.get("peer_endpoint_filters"), **values)
    settings.validate()
    return settings


def _old_state(state_dir: str) -> dict:
    return NodeState(state_dir).state_or_empty()


def leave_discovery(old: dict, changes: List[str], check_mode: bool, warn: Warn) -> None:
    """AffiliateDelete of this node when the last run published it and it must not be published any more."""
    disc = old.get("discovery") or {}
    node_id = (old.get("local_affiliate") or {}).get("node_id")
    if old.get("disabled") or not disc.get("enabled") or not node_id:
        return
    changes.append("remove this node's affiliate %s from the discovery service %s" % (node_id, disc.get("endpoint")))
    if not check_mode:
        try:
            warning = delete_affiliate(normalize_settings(disc), old.get("cluster_id", ""), node_id)
        except DiscoverySettingsError as exc:
            warning = "discovery settings of the last run are unusable (%s): the affiliate expires by itself" % exc
        if warning:
            warn(warning)


def teardown(p: dict, check_mode: bool, warn: Warn) -> dict:
    """``state=absent``: leave the discovery service, then remove the interface, data plane and firewall openings."""
    settings = Settings(**{name: p[name] for name in ("interface", "state_dir", "route_table", "rule_priority", "nft_table",
                                                      "listen_port") if p.get(name) is not None})
    with state_lock(settings.state_dir):
        changes: List[str] = []
        leave_discovery(_old_state(settings.state_dir), changes, check_mode, warn)
        res = teardown_mesh(settings, check_mode=check_mode)
    return dict(changed=res.changed or bool(changes), changes=changes + res.changes, peers=[], implementation="")


def _identity(p: dict, cluster_id: str, settings: Settings, check_mode: bool, warn: Warn) -> Tuple[dict, Optional[Identity]]:
    """With ``identity``: (the result's head, the identity ensured); a head to return at once has ``stop``. The
    identity (its private key) is never put into the head, which becomes the module's result."""
    i = p["identity"]
    settle = dict(settled=False) if p.get("settle") else {}
    gaps = missing(i["requirements"])
    if gaps:
        return dict(stop=True, changed=False, missing_requirements=gaps, changes=[], peers=[], implementation="",
                    **(dict(settle, settle_reason="missing requirements") if settle else {})), None
    ident, facts, id_changed = ensure_identity(
        settings.state_dir, cluster_id, i["address_source"], check_mode, settings.listen_port, settings.interface,
        i["endpoint_filters"], i["extra_endpoints"], i["advertised_networks"], i["exclude_advertised_networks"],
        i["kubernetes_networks"])
    if facts.get("would_create"):
        return dict(stop=True, changed=True, would_create=True, missing_requirements={}, peers=[], implementation="",
                    changes=["create identity and mesh (identity does not exist yet)"],
                    **(dict(settle, settle_reason="no identity yet") if settle else {})), None
    head = dict(identity=facts, affiliate=affiliate_of(p.get("local_name") or "", facts), missing_requirements={})
    if facts.get("previous_address"):
        warn(address_change_message(facts["previous_address"], facts["address"], facts["address_source"]))
    if id_changed:
        head["identity_changed"] = True
    return head, ident


def present(p: dict, check_mode: bool, diff: bool, warn: Warn) -> dict:
    """``state=present``: the steps of the module docstring."""
    cluster_id = validate_cluster_id(p["cluster_id"])
    secret = validate_cluster_secret(p["cluster_secret"])
    settings = settings_request(p)
    discovery = discovery_request(p)
    state_dir = settings.state_dir
    head, ensured = {}, None
    if p.get("identity") is not None:
        head, ensured = _identity(p, cluster_id, settings, check_mode, warn)
        if head.pop("stop", False):
            return head
    # the run's files, each read once (NodeState); the identity ensured above is not read back (in check mode it may
    # hold an address not written: the file's is used, as before)
    node = NodeState(state_dir)
    ident = ensured if ensured is not None and not check_mode else node.identity()
    if ident is None:
        if check_mode:
            return dict(changed=True, changes=["create identity and mesh (identity does not exist yet)"], peers=[], implementation="")
        raise ReconcileError("no identity in %s: run kubespan.mesh.identity first" % state_dir)
    relay_names = set(p.get("relay_members") or [])
    settings.relays = sorted({a["public_key"] for a in p["peers"] if a["name"] in relay_names and a["name"] != p.get("local_name")
                              and a["public_key"] != ident.public_key})
    agent = None
    with state_lock(state_dir):
        never: List[str] = []
        for endpoint in (discovery["endpoints"] if discovery["enabled"] else [""]):
            never += [a for a in host_never_routed(settings.interface, endpoint) if a not in never]
        peers, warnings = compute_peers(ident, state_dir, with_observed(p["peers"]), p.get("members"), p.get("local_name"), never, node)
        if p.get("settle"):
            settled, reason = (False, "discovery is on") if discovery["enabled"] else settle_check(
                p["peers"], head["affiliate"], peers, node.state_or_empty() or None, p.get("members"))
            head.update(settled=settled, settle_reason=reason)
            if not settled:
                return dict(head, changed=bool(head.pop("identity_changed", False)), changes=[], peers=[], implementation="")
        if p.get("agent"):
            a = p["agent"]
            agent = install(AgentOptions(bundle=decode_bundle(a["bundle"]), lib_dir=a["lib_dir"], state_dir=state_dir,
                                         interface=settings.interface, interval=a["interval"], metrics_file=a["metrics_file"],
                                         discovery_endpoint=", ".join(discovery["endpoints"]) if discovery["enabled"] else None,
                                         command_path=a["command_path"]), check_mode=check_mode)
        extra = None
        leaving: List[str] = []
        if discovery["enabled"]:
            # the inventory's peers and this node's own affiliate are what the agent merges with the service's
            # affiliates; this run keeps the peers the agent discovered last (their affiliates, re-checked)
            local = local_affiliate(p["peers"], ident.public_key, p.get("local_name"))
            extra = {"discovery": discovery, "inventory_peers": [strip_affiliate(x) for x in peers], "local_affiliate": local}
            found = last_discovered(state_dir)
            if found:
                peers, _kept, reasons = plan_peers(peers, found, None, ident.public_key, ident.address, ident.subnet, local,
                                                   p.get("local_name"), settings.allowed_peer_networks, never)
                warnings = warnings + reasons
            problem = agent_warning(state_dir)
            if problem:
                warnings.append(problem)
            if local is None:
                warnings.append("this host's own affiliate is not among the peers (local_name %r): it is not published to "
                                "the discovery service" % p.get("local_name"))
        else:
            leave_discovery(node.state_or_empty(), leaving, check_mode, warn)
        # the agent's last statuses give the routed set (with bypass) and the relayed peers, as its tick has them
        res = reconcile_mesh(settings, ident, cluster_id, secret, peers, p.get("members"), check_mode=check_mode, persist=False,
                             up_peers=node.up_peers() if settings.allow_down_peer_bypass else None, via=node.via())
        if not check_mode:  # in check mode the reconcile's sequence stops after the data plane, this step too
            reconcile_host_firewall(settings, True, check_mode, res)  # ufw/firewalld: playbook runs only
        persist_state(settings, res.implementation, ident, cluster_id, secret, p.get("members"), extra, check_mode, res, node)
        res.changed = bool(res.changes)
        if leaving:
            res.changes = leaving + res.changes
            res.changed = True
    for w in warnings + res.warnings:
        warn(w)
    out = dict(head, changed=res.changed or bool(head.pop("identity_changed", False)), changes=res.changes, peers=res.peers,
               implementation=res.implementation, firewall_backend=res.firewall_backend)
    diffs = []
    if diff and res.changed:
        diffs.append(dict(before=res.before, after=res.after,
                          before_header="%s (before)" % settings.interface, after_header="%s (after)" % settings.interface))
    if agent is not None:
        out["agent_changes"] = agent.changes + enable_units(res.implementation == "userspace", check_mode,
                                                            watcher=bool(discovery["enabled"]), restart_watcher=bool(agent.changes))
        out["changed"] = out["changed"] or bool(out["agent_changes"])
        diffs.extend(agent.diffs)
    if diff and diffs:
        out["diff"] = diffs if len(diffs) > 1 else diffs[0]
    return out


def run(p: dict, check_mode: bool, diff: bool, warn: Warn) -> dict:
    """The module's result for the request ``p`` (its parameters); the project's errors propagate to the caller.
    Options left unset are filled in place from the settings model first (``finish`` reads them too)."""
    fill_options(p)
    if p.get("state") == "absent":
        return teardown(p, check_mode, warn)
    return present(p, check_mode, diff, warn)


def report_observed(state_dir: str, peers: Optional[list]) -> list:
    """observed.observed_report of this node's statuses; [] when there are none yet (never fails the call)."""
    try:
        records = status_records(state_dir)
    except Exception:  # pylint: disable=broad-except  # no state, statuses or device yet: nothing observed
        return []
    announced = {}
    for peer in peers or []:
        if isinstance(peer.get("public_key"), str):
            announced[peer["public_key"]] = list(peer.get("endpoints") or [])
    return observed_report(records, announced)


def finish(p: dict, result: dict) -> dict:
    """The result as Ansible returns it: RV(observed) when asked, RV(peer_count), and with ``compact_result`` the peer
    list and the n-sized arguments in the echo turned into counts (a constant-size result)."""
    discovery_on = bool((p.get("discovery") or {}).get("enabled"))
    if p.get("report_observed") and not discovery_on and p.get("state") != "absent" and not result.get("failed"):
        result["observed"] = report_observed(p.get("state_dir") or Settings().state_dir, p["peers"])
    result["peer_count"] = len(result.get("peers") or [])
    if p.get("compact_result"):
        result.pop("peers", None)
        args = dict(p, peers="%d affiliates" % len(p.get("peers") or []))
        if p.get("members") is not None:
            args["members"] = "%d hosts" % len(p["members"])
        result["invocation"] = {"module_args": args}
    return result
