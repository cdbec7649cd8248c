# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    """Attributes that ansible.builtin.action_common_attributes does not describe."""

    # Use together with ansible.builtin.action_common_attributes (check_mode, diff_mode, platform).
    DOCUMENTATION = r"""
attributes:
  idempotent:
    description:
      - When run twice with the same arguments and an unchanged target, the second run reports no change
        and changes nothing.
"""

    # The modules of meta/runtime.yml's action group "node" (module_defaults: group/kubespan.mesh.node).
    NODE_GROUP = r"""
attributes:
  action_group:
    description: Use C(group/kubespan.mesh.node) in C(module_defaults) to set O(state_dir) once for every module of the group.
    support: full
    membership:
      - kubespan.mesh.node
"""
