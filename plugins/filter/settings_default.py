# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.settings_default: the settings model's default of one role variable."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.module_utils.core import settings as model

DOCUMENTATION = r"""
name: settings_default
short_description: The KubeSpan settings model's default of one role variable
version_added: 0.1.0
description:
  - Returns the default the settings model (plugins/module_utils/core/settings.py) holds for a role variable, e.g. for
    another host's variable that may be unset (C(hostvars[host].kubespan_relay | default('kubespan_relay' | kubespan.mesh.settings_default))).
options:
  _input:
    description: A model-held role variable name, e.g. V(kubespan_mtu).
    type: str
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: The model's default MTU
  ansible.builtin.debug:
    msg: "{{ 'kubespan_mtu' | kubespan.mesh.settings_default }}"
"""

RETURN = r"""
_value:
  description: The default (a copy).
  type: raw
"""


def _default(variable):
    if variable not in model.BY_VARIABLE:
        raise AnsibleFilterError("settings_default: %r is no setting of the settings model (one of %s)"
                                 % (variable, ", ".join(model.VARIABLES)))
    return model.default(variable)


class FilterModule:
    def filters(self):
        return {"settings_default": _default}
