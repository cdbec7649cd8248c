# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.settings: the effective KubeSpan settings of a host, from the settings model (module_utils/core/settings.py).
The role passes only what the user set and reads the effective values from here."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.module_utils.core import settings as model

DOCUMENTATION = r"""
name: settings
short_description: The effective KubeSpan settings of a host, from the settings model
version_added: 0.1.0
description:
  - Takes the model-held role variables the user set (role, group or host variables, extra vars) and returns every
    model-held role variable with its effective value, the user's when set, else the settings model's default.
  - The model (plugins/module_utils/core/settings.py) is the one place each default is written; the modules and the node
    agent fill unset values from the same model.
  - Other keys of the input are ignored; the values are not checked (see P(kubespan.mesh.settings_errors#filter)).
options:
  _input:
    description: "The model-held role variables that are set, e.g. C({'kubespan_mtu': 1380})."
    type: dict
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Show the MTU this host gets
  ansible.builtin.debug:
    msg: "{{ ({'kubespan_listen_port': 51821} | kubespan.mesh.settings).kubespan_mtu }}"
"""

RETURN = r"""
_value:
  description: Every model-held role variable and its effective value.
  type: dict
"""


def _settings(user):
    if not isinstance(user, dict):
        raise AnsibleFilterError("settings expects a dictionary of role variables, got %s" % type(user).__name__)
    return model.effective(dict(user))


class FilterModule:
    def filters(self):
        return {"settings": _settings}
