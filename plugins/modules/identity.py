#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: identity
short_description: Ensure a node's KubeSpan WireGuard identity and cluster address
version_added: "0.1.0"
description:
  - On first run, generates the node's WireGuard key pair (clamped Curve25519, the format of C(wg genkey))
    and a node ID (base62 of 32 random bytes) on the node itself, and persists them under O(state_dir) in
    Talos's file format (C(kubespan-identity.yaml), C(node-identity.yaml)), written atomically with mode
    0600 in a 0700 directory. Later runs keep them.
  - Derives the cluster's KubeSpan IPv6 ULA /64 from the cluster ID exactly as Talos does, and the node
    address from the EUI-64 of the first physical NIC's MAC. On hosts without a physical NIC (containers)
    the interface identifier is derived from the persisted node ID; RV(identity.address_source) says which.
  - Returns the public data (public key, address, subnet, node ID, endpoint candidates). The private key
    never leaves the node.
author:
  - kubespan.mesh contributors (!UNKNOWN)
requirements:
  - python3-nacl (PyNaCl) and python3-pyroute2 on the node
attributes:
  check_mode:
    support: full
    details: A missing identity is reported as would be created; nothing is written.
  diff_mode:
    support: full
    details:
      - When an identity is created (or its address moves to a new cluster subnet), the diff shows the public
        identity before and after (public key, node ID, address, subnet). In check mode a missing identity shows
        as C(would be generated). The private key is never part of any result or diff.
  idempotent:
    support: full
    details: The key pair, node ID and address are generated once and kept while the cluster ID is unchanged.
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubespan.mesh.attributes
  - kubespan.mesh.attributes.NODE_GROUP
  - kubespan.mesh.identity
options:
  cluster_id:
    description:
      - The cluster ID (same on every node), from which the ULA prefix is derived.
      - Generate it with the C(kubespan.mesh.gen_secrets) playbook.
    type: str
    required: true
  state_dir:
    description:
      - Directory holding the identity files.
      - Default V(/var/lib/kubespan), from the settings model (core/settings.py).
    type: path
  listen_port:
    description:
      - WireGuard port announced with each endpoint address.
      - Default V(51820), from the settings model (core/settings.py).
    type: int
  interface:
    description:
      - The KubeSpan interface, whose own addresses are never announced as endpoints.
      - Default V(kubespan), from the settings model (core/settings.py).
    type: str
"""

EXAMPLES = r"""
- name: Ensure the KubeSpan identity
  kubespan.mesh.identity:
    cluster_id: "{{ kubespan_cluster_id }}"
  register: ks_identity

- name: Show the node's KubeSpan address
  ansible.builtin.debug:
    msg: "{{ ks_identity.identity.address }} ({{ ks_identity.identity.address_source }})"
"""

RETURN = r"""
missing_requirements:
  description:
    - For each group of O(requirements) with something missing, what is missing. Empty when nothing is; when not
      empty, no identity was read or created (RV(identity) is absent).
  returned: success
  type: dict
  sample: {"base": ["python module nacl", "command nft"]}
identity:
  description: The node's public identity. Absent in check mode when the identity does not exist yet.
  returned: success
  type: dict
  contains:
    public_key:
      description: WireGuard public key, standard base64.
      type: str
      sample: NzW8oeIH5rJyY5lefD9WRoHWWRr/Q6DwsDjMX+xKjT4=
    node_id:
      description: Node ID, base62 of 32 random bytes.
      type: str
      sample: 2VfX3nu67ZtZPl57IdJrU87BMjVWkSBJiL9ulP9TCnF
    address:
      description: The node's KubeSpan IPv6 address (no prefix length).
      type: str
      sample: fd7f:175a:b97c:5602:2c1a:b6ff:fe53:8169
    subnet:
      description: The cluster's KubeSpan ULA /64.
      type: str
      sample: fd7f:175a:b97c:5602::/64
    address_source:
      description: >-
        C(mac:<link>) for EUI-64 of that physical NIC, C(node-id) for the container fallback.
      type: str
      sample: mac:eth0
    previous_address:
      description: The address before this run, when it moved (the first physical NIC changed).
      type: str
      returned: when the address changed
    addresses:
      description: >-
        The node's addresses as Talos announces them (links up, global scope, no pod or service network,
        no loopback or link-local; IPv4 before IPv6, numerically), its KubeSpan address last.
      type: list
      elements: str
    additional_addresses:
      description: The networks the node advertises (normalized).
      type: list
      elements: str
    exclude_advertised_networks:
      description: The networks peers must not route to this node (normalized).
      type: list
      elements: str
    endpoints:
      description: Announced endpoints in Talos's order (filtered addresses with the listen port, then extra endpoints).
      type: list
      elements: str
      sample: ["10.0.0.5:51820", "[2001:db8::5]:51820"]
    created:
      description: Whether the key pair and node ID were generated by this run.
      type: bool
    state_dir:
      description: Where the identity is stored.
      type: str
would_create:
  description: In check mode, true when a new identity would be generated.
  returned: check mode
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubespan.mesh.plugins.module_utils.core.cluster import validate_cluster_id
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settings import fill_options
from ansible_collections.kubespan.mesh.plugins.module_utils.host.requirements import identity_option_spec, missing
from ansible_collections.kubespan.mesh.plugins.module_utils.modules.common import run_guarded
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import address_change_message, ensure_identity


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cluster_id=dict(type="str", required=True),
            state_dir=dict(type="path"),
            listen_port=dict(type="int"),
            interface=dict(type="str"),
            **identity_option_spec()
        ),
        supports_check_mode=True,
    )
    fill_options(module.params)  # the settings model fills what the caller left unset

    def work():
        cluster_id = validate_cluster_id(module.params["cluster_id"])
        gaps = missing(module.params["requirements"])
        if gaps:
            return dict(changed=False, missing_requirements=gaps)
        _ident, facts, changed = ensure_identity(
            module.params["state_dir"], cluster_id, module.params["address_source"], module.check_mode,
            module.params["listen_port"], module.params["interface"], module.params["endpoint_filters"],
            module.params["extra_endpoints"], module.params["advertised_networks"], module.params["exclude_advertised_networks"],
            module.params["kubernetes_networks"])
        if facts.get("would_create"):
            out = dict(changed=True, would_create=True, missing_requirements={})
            if module._diff:
                out["diff"] = dict(before="", after="identity: would be generated in %s\n" % module.params["state_dir"])
            return out
        out = dict(changed=changed, identity=facts, missing_requirements={})
        if facts.get("previous_address"):
            module.warn(address_change_message(facts["previous_address"], facts["address"], facts["address_source"]))
        if module._diff and changed:
            after = "".join("%s: %s\n" % (k, facts[k]) for k in ("public_key", "node_id", "address", "subnet"))
            before = "" if facts.get("created") else "(address or subnet before this run differs)\n"
            out["diff"] = dict(before=before, after=after)
        return out

    module.exit_json(**run_guarded(module, work))


if __name__ == "__main__":
    main()
