# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.all_settled: whether every host of the play found the controller's cache current."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

DOCUMENTATION = r"""
name: all_settled
short_description: Whether every KubeSpan host of the play found the cached affiliates current
version_added: 0.1.0
description:
  - The role's first mesh round (M(kubespan.mesh.mesh) with O(kubespan.mesh.mesh#module:settle=true)) registers
    C(kubespan_mesh_result) on every host; its C(settled) is true when the controller's cached affiliates were
    current for that host. This filter is true when every host of the input list that has KubeSpan enabled settled,
    so the role can skip the second round.
  - A host with KubeSpan disabled (C(kubespan_enabled) false) needs no round and is ignored. A host without a
    registered result (it failed, or round 1 was skipped) has not settled.
  - One pass over the hosts, reading two variables of each (linear in the hosts; the role calls it once per play).
options:
  _input:
    description: The hosts to check, usually C(ansible_play_hosts).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable (or any mapping of host name to its variables).
    type: dict
    required: true
  default_enabled:
    description: C(kubespan_enabled) of a host that does not set it (the role default, as hostvars lack role defaults).
    type: bool
    default: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Decide whether the second mesh round is needed
  ansible.builtin.set_fact:
    kubespan_all_settled: "{{ ansible_play_hosts | kubespan.mesh.all_settled(hostvars, kubespan_enabled) }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: True when every host with KubeSpan enabled registered a settled first round (true for no such host).
  type: bool
"""


def _truth(value, what):
    try:
        return boolean(value, strict=True)
    except TypeError as exc:
        raise AnsibleFilterError("all_settled: %s is not a boolean: %s" % (what, exc))


def all_settled(hosts, hostvars, default_enabled=True):
    if isinstance(hosts, (str, bytes, Mapping)) or not isinstance(hosts, Iterable):
        raise AnsibleFilterError("all_settled expects a list of host names (ansible_play_hosts), got %s" % type(hosts).__name__)
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("all_settled expects hostvars (a mapping of host name to variables), got %s" % type(hostvars).__name__)
    for host in hosts:
        host_vars = hostvars.get(host) or {}
        if not _truth(host_vars.get("kubespan_enabled", default_enabled), "kubespan_enabled of %s" % host):
            continue
        result = host_vars.get("kubespan_mesh_result")
        if not isinstance(result, Mapping) or not _truth(result.get("settled", False), "kubespan_mesh_result.settled of %s" % host):
            return False
    return True


class FilterModule:
    def filters(self):
        return {"all_settled": all_settled}
