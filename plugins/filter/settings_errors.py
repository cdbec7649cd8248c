# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.settings_errors: the problems of a host's KubeSpan role variables."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors

DOCUMENTATION = r"""
name: settings_errors
short_description: List the problems of a host's KubeSpan role variables
version_added: 0.1.0
description:
  - Checks the KubeSpan role variables of one host (MTU, ports, marks, routing numbers, endpoint filters,
    networks in CIDR form, extra announced endpoints, the firewall backend) with the same rules as the
    modules, so the role can stop before it changes anything.
  - Also checks C(kubespan_cluster_id) and C(kubespan_cluster_secret) when they are given (not set, not base64,
    the wrong number of bytes); these messages say how to regenerate the secrets and never contain the secret.
  - Returns one message per problem, naming the variable, the value (never a secret) and the fix; an empty list when fine.
options:
  _input:
    description: A dictionary of role variables (names as in the role's defaults, e.g. C(kubespan_mtu)).
    type: dict
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Stop before any change when a variable is wrong
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    problems: "{{ {'kubespan_mtu': kubespan_mtu, 'kubespan_kubernetes_networks': kubespan_kubernetes_networks} | kubespan.mesh.settings_errors }}"
"""

RETURN = r"""
_value:
  description: One message per problem; empty when every value is valid.
  type: list
  elements: str
"""


def _settings_errors(settings):
    if not isinstance(settings, dict):
        raise AnsibleFilterError("settings_errors expects a dictionary of role variables, got %s" % type(settings).__name__)
    return settings_errors(dict(settings))


class FilterModule:
    def filters(self):
        return {"settings_errors": _settings_errors}
