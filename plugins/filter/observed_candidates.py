# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.observed_candidates: without discovery, hand out what the
nodes' WireGuard observed of each other (a NAT's mapping) as extra endpoint candidates (module_utils/core/observed.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.kubespan.mesh.plugins.module_utils.core.observed import merge_observed

DOCUMENTATION = r"""
name: observed_candidates
short_description: Add what the play's hosts observed of each other to the affiliates as extra endpoint candidates
version_added: 0.1.0
description:
  - Each host's first mesh round (M(kubespan.mesh.mesh) with O(kubespan.mesh.mesh#module:report_observed=true),
    registered as C(kubespan_mesh_result)) returns C(observed), the endpoints its WireGuard uses for the peers that are
    up when those are not among the peers' own endpoints (a NAT's mapping). This filter sets each affiliate's
    C(observed_endpoints) from those reports, which the mesh module appends to the peer's candidates.
  - A report is not trusted blindly. An entry counts only for a peer in the input that is not the reporter itself,
    with an C(ip:port) endpoint that is no loopback, multicast, broadcast, unspecified or link-local address and not
    inside the cluster's KubeSpan prefix; at most 64 entries per host are read, a host counts once per endpoint, and a
    peer gets at most 4, the most reported first. A host whose report had ignored entries is named in a warning.
  - With O(enabled=false) every affiliate gets an empty C(observed_endpoints) (the feature turned off).
options:
  _input:
    description: The affiliates (C(kubespan_affiliate) of the hosts).
    type: list
    elements: dict
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
  hosts:
    description: The hosts whose reports are read, usually C(ansible_play_hosts).
    type: list
    elements: str
    required: true
  enabled:
    description: Whether to hand out observed endpoints at all.
    type: bool
    default: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Hand out observed endpoints
  ansible.builtin.set_fact:
    kubespan_all_affiliates: "{{ kubespan_all_affiliates | kubespan.mesh.observed_candidates(hostvars, ansible_play_hosts) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: Copies of the affiliates, each with C(observed_endpoints) (a list of C(ip:port), possibly empty).
  type: list
  elements: dict
"""

_display = Display()


def observed_candidates(affiliates, hostvars, hosts, enabled=True):
    if not isinstance(affiliates, list):
        raise AnsibleFilterError("observed_candidates expects a list of affiliates, got %s" % type(affiliates).__name__)
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("observed_candidates expects hostvars, got %s" % type(hostvars).__name__)
    if isinstance(hosts, (str, bytes, Mapping)) or not isinstance(hosts, Iterable):
        raise AnsibleFilterError("observed_candidates expects a list of host names, got %s" % type(hosts).__name__)
    reports = {}
    if enabled:
        for host in hosts:
            result = (hostvars.get(host) or {}).get("kubespan_mesh_result")
            if isinstance(result, Mapping) and isinstance(result.get("observed"), list):
                reports[str(host)] = result["observed"]
    warnings = []
    out = merge_observed(affiliates, reports, warnings)
    for line in warnings:
        _display.warning(line)
    return out


class FilterModule:
    def filters(self):
        return {"observed_candidates": observed_candidates}
