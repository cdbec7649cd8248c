# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.settings_variables: the names of the role variables the settings model holds."""

from __future__ import annotations

from ansible_collections.kubespan.mesh.plugins.module_utils.core import settings as model

DOCUMENTATION = r"""
name: settings_variables
short_description: The names of the role variables the KubeSpan settings model holds
version_added: 0.1.0
description:
  - Returns the role variables whose default the settings model (plugins/module_utils/core/settings.py) holds; the role
    finds which of them the user set with C(query('ansible.builtin.varnames', ...)).
  - The input is ignored.
options:
  _input:
    description: Ignored (use V(none)).
    type: raw
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: The names of the model-held role variables
  ansible.builtin.debug:
    msg: "{{ none | kubespan.mesh.settings_variables }}"
"""

RETURN = r"""
_value:
  description: The role variable names, in the model's order.
  type: list
  elements: str
"""


def _variables(_ignored=None):
    return list(model.VARIABLES)


class FilterModule:
    def filters(self):
        return {"settings_variables": _variables}
