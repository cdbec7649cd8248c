#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: affiliates_cache
short_description: Keep the cluster's public affiliates in a cache file on the controller
version_added: "0.1.0"
description:
  - Writes the affiliates (public keys, node IDs, KubeSpan addresses, endpoints, networks; never key material) to a
    file on the controller, sorted by name, atomically (temporary file, fsync, rename), mode 0600 in a 0700 directory,
    and only when the content differs.
  - The C(kubespan.mesh.kubespan) role reads the file on its next run and passes it to M(kubespan.mesh.mesh) with
    O(kubespan.mesh.mesh#module:settle=true), so a run in which nothing changed is one remote call per host.
  - Runs entirely on the controller (an action plugin; nothing is executed on a host) and never reports a change,
    since no managed node is changed.
author:
  - kubespan.mesh contributors (!UNKNOWN)
attributes:
  check_mode:
    support: full
    details: Writes nothing in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubespan.mesh.attributes
options:
  path:
    description: The cache file, an absolute path on the controller (C(~) is expanded).
    type: path
    required: true
  affiliates:
    description: The affiliates, as M(kubespan.mesh.mesh) takes them in O(kubespan.mesh.mesh#module:peers).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Keep the cluster's affiliates on the controller for the next run
  kubespan.mesh.affiliates_cache:
    path: "~/.cache/kubespan-mesh/affiliates.json"
    affiliates: "{{ kubespan_all_affiliates }}"
  run_once: true
"""

RETURN = r"""
written:
  description: Whether the file was (re)written; false when it already held these affiliates, and in check mode.
  returned: always
  type: bool
path:
  description: The cache file.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True),
                                              affiliates=dict(type="list", elements="dict", required=True)),
                           supports_check_mode=True)
    module.fail_json(msg="kubespan.mesh.affiliates_cache runs on the controller through its action plugin; "
                         "it cannot run as a module on a host")


if __name__ == "__main__":
    main()
