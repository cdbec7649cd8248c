# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.observed_changed: whether the observed endpoints handed out differ from the cached ones."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: observed_changed
short_description: Whether any affiliate's observed endpoints differ from its cached entry's
version_added: 0.1.0
description:
  - True when an affiliate of the input has C(observed_endpoints) (see P(kubespan.mesh.observed_candidates#filter))
    other than its entry of O(cached) (the same name); a missing key is an empty list. The role then runs the
    second mesh round although every host settled, so the new candidates reach the nodes in this run.
  - Linear in the affiliates.
options:
  _input:
    description: This run's affiliates.
    type: list
    elements: dict
    required: true
  cached:
    description: The affiliates the first round used (the controller's cache).
    type: list
    elements: dict
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Is a second round needed for new observed endpoints?
  ansible.builtin.debug:
    msg: "{{ kubespan_all_affiliates | kubespan.mesh.observed_changed(kubespan_cached_affiliates) }}"
"""

RETURN = r"""
_value:
  description: True when some affiliate's observed endpoints changed.
  type: bool
"""


def observed_changed(affiliates, cached):
    if not isinstance(affiliates, list) or not isinstance(cached, list):
        raise AnsibleFilterError("observed_changed expects two lists of affiliates")
    old = {a.get("name"): list(a.get("observed_endpoints") or []) for a in cached if isinstance(a, Mapping)}
    return any(list(a.get("observed_endpoints") or []) != old.get(a.get("name"), []) for a in affiliates if isinstance(a, Mapping))


class FilterModule:
    def filters(self):
        return {"observed_changed": observed_changed}
