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
