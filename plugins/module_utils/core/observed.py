# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Observed endpoints without discovery (issue 16 item 2): what the nodes' WireGuard sees of each other, handed out
as extra candidates by the playbook run.

With discovery, a node behind a NAT learns its public mapping from the service's Hello and the others harvest it
(``harvest_extra_endpoints``). Without discovery the inventory knows only the node's own addresses, so two nodes
behind two NATs never learn each other's mapping. But a public member does see it: WireGuard roams to where an
authenticated packet came from, so its endpoint for a NAT'd peer is that peer's mapping.

- Node side (``observed_report``, the mesh module's ``observed`` result): for each peer that is up, the endpoint
  WireGuard uses for it when that is none of the endpoints the peer itself announced (a NAT's mapping, or a port
  forward). Bounded: at most MAX_REPORT entries, in public-key order.
- Controller side (``merge_observed``): the reports of the play's hosts become each affiliate's
  ``observed_endpoints``. Nothing a node reports is trusted blindly: a report counts only for a peer that is in the
  affiliates and is not the reporter itself; its endpoint must parse as ``ip:port`` and pass
  ``endpoints.endpoint_problem`` (no loopback, multicast, broadcast, unspecified or link-local address, nothing
  inside the cluster's KubeSpan prefix); at most MAX_REPORT entries per reporter are read; one reporter counts once
  per endpoint; a peer gets at most MAX_OBSERVED of them, the most reported first. A lying member can therefore
  add at most MAX_OBSERVED useless candidates to a peer (a candidate is only ever tried: WireGuard authenticates
  every handshake, so a wrong endpoint costs a short dwell, never traffic to the wrong node).
- The mesh module appends a peer's observed endpoints after its own (``with_observed``). The node agent tries a
  never-up peer's candidates backwards, so the observed mapping comes first, as the discovery-observed one does.

No Ansible imports (node-side code, Python 3.8).
"""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Mapping, Sequence

from .endpoints import endpoint_problem
from .wgtypes import normalize_endpoint, parse_endpoint

MAX_REPORT = 64  # observations one node reports, and the controller reads from one node
MAX_OBSERVED = 4  # observed endpoints handed out per peer
MAX_ENDPOINTS = 64  # peers.MAX_ENDPOINTS: a peer's own and observed endpoints together


def observed_report(records: Sequence[Mapping], announced: Mapping[str, Sequence[str]], limit: int = MAX_REPORT) -> List[Dict]:
    """``[{"public_key", "endpoint"}]`` from status records (agent.status_records: ``id``, ``state``, ``endpoint``)
    for the peers that are up on an endpoint that is not among ``announced[public_key]`` (the peer's own endpoints).
    Peers not in ``announced`` are skipped. At most ``limit`` entries, in public-key order."""
    out = []
    for record in sorted(records, key=lambda r: str(r.get("id"))):
        key = record.get("id")
        if record.get("state") != "up" or key not in announced or not record.get("endpoint"):
            continue
        try:
            endpoint = normalize_endpoint(str(record["endpoint"]))
        except ValueError:
            continue
        own = set()
        for text in announced[key] or ():
            try:
                own.add(normalize_endpoint(str(text)))
            except ValueError:
                continue
        if endpoint in own:
            continue
        out.append({"public_key": key, "endpoint": endpoint})
        if len(out) >= limit:
            break
    return out


def endpoint_refusal(endpoint, subnet=None):
    """None when ``endpoint`` (text) may be handed out as a candidate, else why not."""
    if not isinstance(endpoint, str) or len(endpoint) > 64:
        return "not an endpoint"
    try:
        host, _port = parse_endpoint(endpoint)
    except ValueError:
        return "not an ip:port endpoint"
    return endpoint_problem(host, None, subnet)


def _subnet(affiliate: Mapping):
    try:
        return ipaddress.IPv6Network("%s/64" % str(affiliate.get("address") or "").partition("/")[0], strict=False)
    except ValueError:
        return None


def merge_observed(affiliates: Sequence[Mapping], reports: Mapping[str, object], warnings: List[str] = None) -> List[Dict]:
    """Copies of ``affiliates`` (dicts with ``name``, ``public_key``, ``endpoints``) with ``observed_endpoints`` set
    from ``reports``: reporter host name -> its mesh result's ``observed`` list (anything else is ignored). See the
    module doc for what is refused. ``warnings`` gets one line per reporter whose report had refused entries."""
    by_key = {}
    for aff in affiliates:
        if isinstance(aff, Mapping) and isinstance(aff.get("public_key"), str):
            by_key.setdefault(aff["public_key"], aff)
    votes = {}  # public key -> endpoint -> set of reporters
    for reporter in sorted(reports):
        entries = reports[reporter]
        if not isinstance(entries, list):
            continue
        own_keys = {k for k, a in by_key.items() if a.get("name") == reporter}
        refused = 0
        for entry in entries[:MAX_REPORT]:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            target = by_key.get(key) if isinstance(key, str) else None
            if target is None or key in own_keys:
                refused += 1
                continue
            endpoint = entry.get("endpoint")
            if endpoint_refusal(endpoint, _subnet(target)) is not None:
                refused += 1
                continue
            endpoint = normalize_endpoint(endpoint)
            votes.setdefault(key, {}).setdefault(endpoint, set()).add(reporter)
        refused += max(0, len(entries) - MAX_REPORT)
        if refused and warnings is not None:
            warnings.append("host %s reported %d observed endpoints that were ignored (unknown peer, itself, not a usable "
                            "endpoint, or more than %d)" % (reporter, refused, MAX_REPORT))
    out = []
    for aff in affiliates:
        if not isinstance(aff, Mapping):
            continue
        new = dict(aff)
        own = set()
        for text in aff.get("endpoints") or ():
            try:
                own.add(normalize_endpoint(str(text)))
            except ValueError:
                continue
        found = votes.get(aff.get("public_key"), {}) if by_key.get(aff.get("public_key")) is aff else {}
        ranked = sorted((ep for ep in found if ep not in own), key=lambda ep: (-len(found[ep]), ep))
        new["observed_endpoints"] = ranked[:MAX_OBSERVED]
        out.append(new)
    return out


def with_observed(peers: Sequence[Mapping]) -> List[Dict]:
    """The mesh module's peers with each one's ``observed_endpoints`` appended to its ``endpoints`` (new ones only,
    refused ones skipped, at most MAX_OBSERVED, the total at most MAX_ENDPOINTS); the key itself is dropped."""
    out = []
    for peer in peers:
        new = dict(peer)
        extra = new.pop("observed_endpoints", None) or []
        endpoints = list(new.get("endpoints") or [])
        for ep in extra[:MAX_OBSERVED]:
            if len(endpoints) >= MAX_ENDPOINTS:
                break
            if endpoint_refusal(ep) is None and ep not in endpoints:
                endpoints.append(ep)
        new["endpoints"] = endpoints
        out.append(new)
    return out
