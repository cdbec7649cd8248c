# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
name: agent_bundle
short_description: The KubeSpan node agent's code, as a base64 zipapp built from this collection
version_added: "0.1.0"
description:
  - Builds the node agent's zipapp from this collection's C(plugins/module_utils) on the controller and returns
    it base64-encoded, for the O(kubespan.mesh.mesh#module:agent.bundle) option of M(kubespan.mesh.mesh), which
    installs it on the node in the same call that reconciles the mesh.
  - The archive is deterministic (sorted entries, fixed timestamps and modes), so the same collection always gives
    the same bytes and a node rewrites its copy only when the collection changed.
  - Built once per controller process and source state (the sources' names, sizes and modification times).
author:
  - kubespan.mesh contributors (!UNKNOWN)
options: {}
"""

EXAMPLES = r"""
- name: Reconcile the mesh and install the node agent
  kubespan.mesh.mesh:
    cluster_id: "{{ kubespan_cluster_id }}"
    cluster_secret: "{{ kubespan_cluster_secret }}"
    peers: "{{ my_affiliates }}"
    agent:
      bundle: "{{ lookup('kubespan.mesh.agent_bundle') }}"
"""

RETURN = r"""
_raw:
  description: One element, the zipapp encoded in standard base64.
  type: list
  elements: str
"""

import base64
import os

from ansible.plugins.lookup import LookupBase

from ansible_collections.kubespan.mesh.plugins.module_utils.host import bundle

_CACHE = {}


def _sources_key(src):
    """(path, mtime, size) of every ``*.py`` below ``src`` (the layers' subpackages included)."""
    paths = sorted(os.path.join(d, n) for d, _dirs, names in os.walk(src) for n in names if n.endswith(".py"))
    return tuple((os.path.relpath(p, src), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
        key = (src, _sources_key(src))
        if key not in _CACHE:
            data, _digest = bundle.build_from_dir(src)
            _CACHE.clear()
            _CACHE[key] = base64.b64encode(data).decode("ascii")
        return [_CACHE[key]]
