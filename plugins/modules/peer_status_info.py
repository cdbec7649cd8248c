#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: peer_status_info
short_description: Report a node's KubeSpan peer statuses, like talosctl get kubespanpeerstatuses
version_added: "0.1.0"
description:
  - Returns the node's KubeSpan identity (public data only) and one status per peer, with Talos's fields
    and state rules (unknown, up, down), from the node agent's memory of endpoint changes merged with a
    live read of the WireGuard device.
  - Changes nothing on the node.
author:
  - kubespan.mesh contributors (!UNKNOWN)
requirements:
  - the kubespan.mesh.kubespan role applied on the node (python3-nacl, python3-pyroute2)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: N/A
    details: Reads only; never reports a change.
  idempotent:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubespan.mesh.attributes
  - kubespan.mesh.attributes.NODE_GROUP
options:
  state_dir:
    description:
      - Directory with the identity, the desired state and the agent's statuses.
      - Default V(/var/lib/kubespan), from the settings model (core/settings.py).
    type: path
"""

EXAMPLES = r"""
- name: Read the peer statuses of every node
  kubespan.mesh.peer_status_info:
  register: ks_status

- name: Fail when a peer is not up
  ansible.builtin.assert:
    that: ks_status.peers | rejectattr('state', 'equalto', 'up') | list | length == 0
"""

RETURN = r"""
identity:
  description: The node's public identity.
  returned: success
  type: dict
  contains:
    public_key:
      description: WireGuard public key.
      type: str
    address:
      description: KubeSpan address with prefix length.
      type: str
    subnet:
      description: The cluster's KubeSpan /64.
      type: str
    node_id:
      description: Node ID.
      type: str
peers:
  description: One status per desired peer, sorted by public key.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: The peer's public key.
      type: str
    label:
      description: The peer's inventory name.
      type: str
    endpoint:
      description: The endpoint WireGuard uses now.
      type: str
    state:
      description: unknown, up or down, as Talos computes it.
      type: str
    receiveBytes:
      description: Bytes received from the peer.
      type: int
    transmitBytes:
      description: Bytes sent to the peer.
      type: int
    lastHandshakeTime:
      description: Unix time of the last handshake, 0 when never.
      type: float
    secondsSinceHandshake:
      description: Seconds since the last handshake, null when never.
      type: float
    lastUsedEndpoint:
      description: The endpoint the agent set last.
      type: str
    lastEndpointChange:
      description: Unix time of the agent's last endpoint change.
      type: float
    endpointChanges:
      description: How many times the agent changed the endpoint.
      type: int
    natPath:
      description:
        - True when the endpoint in use is not one of the peer's own node addresses (from its affiliate); the path
          goes through an address translation, a NAT or a port forward, that WireGuard or the discovery service
          observed. False when it is one of them, null when there is no endpoint or the peer announced no addresses.
      type: bool
"""

import ipaddress

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agent import status_records
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settings import fill_options
from ansible_collections.kubespan.mesh.plugins.module_utils.host.identity import load_identity
from ansible_collections.kubespan.mesh.plugins.module_utils.modules.common import run_guarded
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import load_state


def _host(endpoint):
    """The IP address of an ip:port or [ip6]:port endpoint, or None."""
    host = str(endpoint or "").rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _node_ips(spec):
    ips = set()
    for text in spec.get("addresses") or []:
        try:
            ips.add(ipaddress.ip_interface(str(text)).ip)
        except ValueError:
            continue
    return ips


def nat_paths(records, specs):
    """Add natPath to each record: whether its endpoint is not one of the peer's node addresses (None: unknown)."""
    by_key = {s.get("public_key"): s for s in specs if isinstance(s, dict)}
    for record in records:
        ips = _node_ips(by_key.get(record["id"]) or {})
        endpoint = _host(record.get("endpoint"))
        record["natPath"] = None if endpoint is None or not ips else endpoint not in ips
    return records


def main():
    module = AnsibleModule(
        argument_spec=dict(state_dir=dict(type="path")),
        supports_check_mode=True,
    )
    fill_options(module.params)  # the settings model fills what the caller left unset

    def work():
        ident = load_identity(module.params["state_dir"])
        identity = {}
        if ident is not None:
            identity = {"public_key": ident.public_key, "address": ident.address, "subnet": ident.subnet, "node_id": ident.node_id}
        records = status_records(module.params["state_dir"])
        return dict(changed=False, identity=identity, peers=nat_paths(records, (load_state(module.params["state_dir"]) or {}).get("peers") or []))

    module.exit_json(**run_guarded(module, work))


if __name__ == "__main__":
    main()
