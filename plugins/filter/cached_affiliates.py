# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.cached_affiliates: the valid affiliates of the controller's cache file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

from ansible_collections.kubespan.mesh.plugins.action.affiliates_cache import read_cache

DOCUMENTATION = r"""
name: cached_affiliates
short_description: Read the controller's affiliates cache, ignoring bad entries
version_added: 0.1.0
description:
  - Reads the affiliates cache file that M(kubespan.mesh.affiliates_cache) writes and returns its entries that
    M(kubespan.mesh.mesh) would accept as peers (a 32-byte base64 public key, a base62 node ID, a KubeSpan address
    in C(fd00::/8), valid endpoints and networks).
  - A missing file gives an empty list. A bad entry (or an unreadable, oversized or malformed file) is ignored with a
    warning naming the file and the host; the next write of the cache leaves it out.
options:
  _input:
    description: The cache file, an absolute path on the controller (C(~) is expanded).
    type: path
    required: true
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Load the cluster's affiliates cached on the controller by the last run
  ansible.builtin.set_fact:
    cached: "{{ '~/.cache/kubespan-mesh/affiliates.json' | kubespan.mesh.cached_affiliates }}"
"""

RETURN = r"""
_value:
  description: The valid affiliates of the file, in file order; empty when it does not exist.
  type: list
  elements: dict
"""


def _cached_affiliates(path):
    if not isinstance(path, str) or not path:
        raise AnsibleFilterError("cached_affiliates expects the path of the affiliates cache file, got %s" % type(path).__name__)
    warnings = []
    entries = read_cache(path, warnings)
    display = Display()
    for message in warnings:
        display.warning(message)
    return entries


class FilterModule:
    def filters(self):
        return {"cached_affiliates": _cached_affiliates}
