# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.affiliates_named: the affiliates whose name is one of the given hosts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: affiliates_named
short_description: Keep the affiliates whose name is one of the given hosts
version_added: 0.1.0
description:
  - Returns the entries of a list of affiliates (dictionaries with a C(name), as M(kubespan.mesh.affiliates_cache)
    keeps them and P(kubespan.mesh.cached_affiliates#filter) reads them) whose C(name) is in O(names), in input order.
  - With O(exclude=true), the entries whose name is B(not) in O(names).
  - Linear in the sizes of both lists (a set lookup per entry), where C(selectattr('name', 'in', list)) is quadratic.
options:
  _input:
    description: The affiliates.
    type: list
    elements: dict
    required: true
  names:
    description: The host names to keep (or to drop with O(exclude=true)).
    type: list
    elements: str
    required: true
  exclude:
    description: Drop the named entries instead of keeping them.
    type: bool
    default: false
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: The cached affiliates of the hosts of this play
  ansible.builtin.set_fact:
    kubespan_cached_affiliates: "{{ cached | kubespan.mesh.affiliates_named(ansible_play_hosts) }}"
"""

RETURN = r"""
_value:
  description: The kept entries, in input order.
  type: list
  elements: dict
"""


def _names(names, what):
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, Iterable):
        raise AnsibleFilterError("%s expects a list of host names, got %s" % (what, type(names).__name__))
    return set(str(n) for n in names)


def _entries(entries, what):
    if isinstance(entries, (str, bytes, Mapping)) or not isinstance(entries, (list, tuple)):
        raise AnsibleFilterError("%s expects a list of affiliates, got %s" % (what, type(entries).__name__))
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise AnsibleFilterError("%s: affiliate %d is not a dictionary with a name" % (what, index))
    return entries


def affiliates_named(entries, names, exclude=False):
    wanted = _names(names, "affiliates_named")
    return [e for e in _entries(entries, "affiliates_named") if (e["name"] in wanted) != bool(exclude)]


class FilterModule:
    def filters(self):
        return {"affiliates_named": affiliates_named}
