#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_secrets
short_description: Generate a KubeSpan cluster ID and cluster secret into a vars file
version_added: "0.1.0"
description:
  - Generates the cluster ID (URL-safe base64 of 32 random bytes) and the 32-byte cluster secret (standard
    base64), like C(talosctl gen secrets), and writes them as the variables C(kubespan_cluster_id) and
    C(kubespan_cluster_secret) into a YAML vars file (mode 0600, written atomically).
  - Run it once, on the controller (usually through the C(kubespan.mesh.gen_secrets) playbook), then
    encrypt the file with C(ansible-vault encrypt). An existing file is validated and never overwritten
    unless O(force=true).
author:
  - kubespan.mesh contributors (!UNKNOWN)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details: No diff is returned on purpose; its content would be the cluster secret.
  idempotent:
    support: full
    details: An existing file is validated and kept (unless O(force=true), which always writes new secrets).
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubespan.mesh.attributes
options:
  path:
    description: The vars file to write, for example C(group_vars/kubespan/secrets.yml).
    type: path
    required: true
  force:
    description:
      - Replace an existing file with new secrets. This re-keys the cluster; every node must then be re-run.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Generate the cluster secrets once
  kubespan.mesh.cluster_secrets:
    path: "{{ inventory_dir }}/group_vars/kubespan/secrets.yml"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The vars file.
  returned: success
  type: str
  sample: group_vars/kubespan/secrets.yml
cluster_id:
  description: The cluster ID (not secret; it names the cluster and its ULA prefix).
  returned: success
  type: str
  sample: 8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=
encrypted:
  description: Whether the existing file is ansible-vault encrypted (then it is left as it is).
  returned: success
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubespan.mesh.plugins.module_utils.core.cluster import (
    generate_cluster_id,
    generate_cluster_secret,
    secrets_document,
    validate_cluster_id,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import REGENERATE_SECRETS, cluster_secret_problem
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import holds_part_of, secret_pieces
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import atomic_write, parse_flat_yaml, read_text
from ansible_collections.kubespan.mesh.plugins.module_utils.modules.common import run_guarded


def _where(path, text, key):
    """'path line N' of the line that sets ``key`` ('path' when no line does)."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.strip().partition(":")[0].strip() == key:
            return "%s line %d" % (path, lineno)
    return path


def check_existing(path, text, values):
    """ValueError naming the file, the line and what is wrong with an existing secrets file; never a value."""
    secret = values.get("kubespan_cluster_secret")
    problem = cluster_secret_problem(secret)
    if problem:
        raise ValueError("%s: %s: %s" % (_where(path, text, "kubespan_cluster_secret"), problem,
                                         REGENERATE_SECRETS.replace("<your secrets file>", path)))
    try:
        validate_cluster_id(values.get("kubespan_cluster_id"))
    except ValueError as exc:
        raise ValueError("%s: %s" % (_where(path, text, "kubespan_cluster_id"), str(exc).split(":", 1)[0]))
    cluster_id = values["kubespan_cluster_id"]
    secret = secret.strip()
    # the cluster ID is returned: a file whose ID holds part of the secret (a pasting mistake) is refused
    if holds_part_of(cluster_id, secret_pieces(secret)):
        raise ValueError("%s: kubespan_cluster_id holds part of kubespan_cluster_secret (value hidden): %s"
                         % (_where(path, text, "kubespan_cluster_id"), REGENERATE_SECRETS.replace("<your secrets file>", path)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]

    def work():
        text = read_text(path)
        if text is not None and not module.params["force"]:
            if text.startswith("$ANSIBLE_VAULT"):
                return dict(changed=False, path=path, encrypted=True, cluster_id="")
            values = parse_flat_yaml(text, path)
            check_existing(path, text, values)
            return dict(changed=False, path=path, encrypted=False, cluster_id=values["kubespan_cluster_id"])
        cluster_id = generate_cluster_id()
        if not module.check_mode:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700)
            atomic_write(path, secrets_document(cluster_id, generate_cluster_secret()).encode("ascii"), 0o600)
        return dict(changed=True, path=path, encrypted=False, cluster_id=cluster_id)

    module.exit_json(**run_guarded(module, work))


if __name__ == "__main__":
    main()
