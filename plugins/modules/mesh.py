#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mesh
short_description: Reconcile a node's KubeSpan WireGuard interface and peers
version_added: "0.1.0"
description:
  - Brings the node's KubeSpan WireGuard interface to the desired state, the way Talos's KubeSpan
    controllers do, from the cluster's affiliates (usually collected from the inventory by the
    C(kubespan.mesh.kubespan) role).
  - Creates the interface with kernel WireGuard over netlink when the kernel has it, else runs userspace
    C(wireguard-go) through the C(kubespan-wireguard-go.service) unit; sets the private key (read from
    the node's identity file, never passed in), listen port, fwmark, the node's ULA as /64, the MTU, and one
    peer per affiliate with the cluster secret as preshared key and persistent keepalive. A peer's
    AllowedIPs are built as Talos builds them (its KubeSpan address, its node addresses as hosts, its
    advertised networks, minus its excluded networks; a claim that overlaps an earlier peer is cut with a
    warning).
  - Sets up the data plane as Talos does (routing table O(route_table), C(fwmark) rules at
    O(rule_priority), the C(inet) nftables table O(nft_table)) and opens the listen port in the host
    firewall (O(firewall_backend)).
  - Only differences are applied, peer by peer, so unchanged peers keep their handshakes and endpoints; an
    endpoint WireGuard learned from authenticated traffic is not overwritten while the peer is up.
  - With O(members), hosts of the cluster group that are not in O(peers) (for example outside a
    C(--limit)) keep their last known configuration, and peers whose host left the group are removed.
  - Persists the desired state in O(state_dir)/state.json (mode 0600) for the node agent, which
    re-applies it at boot and after drift.
  - The KubeSpan settings (O(interface), O(mtu), O(listen_port), the marks, O(route_table), O(rule_priority), the paths,
    the agent's interval and others) have no default here; when unset each takes the default of the collection's
    settings model (C(plugins/module_utils/core/settings.py); the C(kubespan.mesh.kubespan) role's README lists them with
    their Talos keys), the same for the module, the role's early check and the node agent.
author:
  - kubespan.mesh contributors (!UNKNOWN)
requirements:
  - python3-pyroute2 and python3-nacl on the node
  - the wireguard-go package when the kernel has no WireGuard module
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the interface and peers without private or preshared keys.
  idempotent:
    support: full
    details:
      - A second run with the same peers sends nothing to the device. An endpoint that WireGuard learned from
        authenticated traffic (roaming, NAT) or that the node agent chose is kept while it is a candidate.
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kubespan.mesh.attributes
  - kubespan.mesh.attributes.NODE_GROUP
  - kubespan.mesh.identity.MESH
options:
  state:
    description:
      - V(present) builds or reconciles the mesh.
      - V(absent) removes the interface (stopping wireguard-go), the routes, rules, nftables table and the
        firewall openings this module added, and marks the persisted desired state disabled so the node agent
        leaves the node alone. The identity and the last known peers are kept (Talos keeps the identity when
        KubeSpan is disabled), so a later V(present) run, even with C(--limit), restores the same node.
    type: str
    choices: [present, absent]
    default: present
  cluster_id:
    description: The cluster ID, the same on every node. Required with O(state=present).
    type: str
  cluster_secret:
    description:
      - The 32-byte cluster secret (standard base64), used as the WireGuard preshared key of every peer.
      - Required with O(state=present).
    type: str
  peers:
    description:
      - The cluster's affiliates as returned by M(kubespan.mesh.identity) (one entry per host); this node's
        own entry is skipped.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Inventory name of the host; the peer's label.
        type: str
        required: true
      public_key:
        description: The host's WireGuard public key.
        type: str
        required: true
      address:
        description: The host's KubeSpan IPv6 address.
        type: str
        required: true
      node_id:
        description: The host's node ID.
        type: str
      endpoints:
        description: Endpoint candidates, C(ip:port) or C([ipv6]:port), in order of preference.
        type: list
        elements: str
        default: []
      addresses:
        description: The host's routed node addresses (routed to it through KubeSpan as hosts).
        type: list
        elements: str
        default: []
      additional_addresses:
        description: Networks the host advertises (pod CIDRs).
        type: list
        elements: str
        default: []
      exclude_advertised_networks:
        description: Networks not to route to the host.
        type: list
        elements: str
        default: []
      observed_endpoints:
        description:
          - Extra endpoint candidates for this peer that other nodes observed (RV(observed) of their call, merged by
            the controller); appended after O(peers[].endpoints), at most 4, each checked as the others are.
        type: list
        elements: str
        default: []
  members:
    description:
      - Every host name of the cluster group. Members missing from O(peers) keep their last known entry;
        last known peers that are no longer members are removed. Omit to treat O(peers) as the whole cluster.
    type: list
    elements: str
  local_name:
    description: This host's inventory name (so its own entry is recognized).
    type: str
  interface:
    description:
      - Name of the WireGuard interface.
      - Default V(kubespan), from the settings model (core/settings.py).
    type: str
  mtu:
    description:
      - MTU of the interface; at least 1280 (underlay MTU minus 80).
      - Default V(1420), from the settings model (core/settings.py).
    type: int
  listen_port:
    description:
      - UDP port WireGuard listens on.
      - Default V(51820), from the settings model (core/settings.py).
    type: int
  fwmark:
    description:
      - Firewall mark WireGuard puts on its own packets (Talos uses 0x20).
      - Default V(0x20), from the settings model (core/settings.py).
    type: int
  persistent_keepalive:
    description:
      - Persistent keepalive interval in seconds for every peer.
      - Default V(25), from the settings model (core/settings.py).
    type: int
  implementation:
    description:
      - V(kernel) for the kernel module over netlink, V(userspace) for wireguard-go, V(auto) to pick kernel when available.
      - Default V(auto), from the settings model (core/settings.py).
    type: str
    choices: [auto, kernel, userspace]
  state_dir:
    description:
      - Directory with the identity and the persisted desired state.
      - Default V(/var/lib/kubespan), from the settings model (core/settings.py).
    type: path
  allow_down_peer_bypass:
    description:
      - V(false) (Talos's default) keeps every peer's networks forced into KubeSpan, so traffic to a down
        peer is dropped by WireGuard instead of leaving in the clear.
      - V(true) forces only the networks of peers that are up (as the node agent last saw them), so traffic
        to a down peer takes the normal routes until it is back.
      - Default V(false), from the settings model (core/settings.py).
    type: bool
  relay:
    description:
      - V(true) makes this node a relay, which forwards mesh traffic from the interface back into the interface
        and nothing else (an nftables forward chain in the mesh's table and per-interface forwarding sysctls,
        restored when turned off). Peers that cannot reach each other directly route through it.
      - A relay is a cluster member and sees the inner packets it forwards (docs/security.md).
      - Default V(false), from the settings model (core/settings.py).
    type: bool
  relay_members:
    description:
      - Inventory names of the members marked as relays (C(kubespan_relay)); the peers among O(peers) with these
        names are used as relays by this node's agent when a peer has no direct path.
    type: list
    elements: str
    default: []
  route_table:
    description:
      - Routing table holding the default routes through the interface.
      - Default V(180), from the settings model (core/settings.py).
    type: int
  rule_priority:
    description:
      - Priority of the C(fwmark force/mask lookup table) policy rules (IPv4 and IPv6).
      - Default V(32500), from the settings model (core/settings.py).
    type: int
  force_mark:
    description:
      - Firewall mark that forces a packet into KubeSpan (Talos 0x40).
      - Default V(0x40), from the settings model (core/settings.py).
    type: int
  mark_mask:
    description:
      - Mask of the KubeSpan marks (Talos 0x60).
      - Default V(0x60), from the settings model (core/settings.py).
    type: int
  nft_table:
    description:
      - Name of the C(inet) nftables table that marks traffic to the peers' networks and clamps the TCP MSS.
      - Default V(kubespan), from the settings model (core/settings.py).
    type: str
  firewall_backend:
    description:
      - How the listen port is opened inbound and the interface trusted.
      - V(nftables) adds two commented rules to every host input chain with policy drop (none when no chain drops).
      - V(firewalld) opens the port in O(firewalld_zone) and puts the interface in the C(trusted) zone, runtime and permanent.
      - V(ufw) adds C(allow <port>/udp) and C(allow in on <interface>) rules with the comment C(kubespan.mesh).
      - V(auto) picks firewalld when its unit is active, else ufw when it is enabled, else nftables when C(nft) exists.
      - V(none) leaves the host firewall alone.
      - Only what this module added is ever removed (also with O(state=absent), whatever the backend).
      - Default V(auto), from the settings model (core/settings.py).
    type: str
    choices: [auto, nftables, firewalld, ufw, none]
  firewalld_zone:
    description:
      - firewalld zone that gets the listen port; empty for the default zone.
      - Default V(""), from the settings model (core/settings.py).
    type: str
  discovery:
    description:
      - Talos's C(cluster.discovery) with the service registry. The node agent publishes this node's affiliate (sealed
        with the cluster secret) on each service and adds the peers the inventory does not know.
      - Unset, or O(discovery.enabled) false, the inventory alone forms the mesh. A suboption that is not set takes
        the settings model's default (plugins/module_utils/core/settings.py); the C(kubespan.mesh.kubespan) role passes its
        C(kubespan_discovery_*), C(kubespan_harvest_extra_endpoints), C(kubespan_machine_type) and
        C(kubespan_api_server_port) variables here.
    type: dict
    suboptions:
      enabled:
        description:
          - Use a Talos-compatible discovery service (cluster.discovery.enabled with the service registry) besides
            the inventory. The node agent publishes this node's affiliate (sealed with the cluster secret), lists the
            cluster at every tick and adds the peers the inventory does not know; this run also keeps the peers the
            agent discovered last.
          - Turning it off removes this node's affiliate from the service (AffiliateDelete) and drops the discovered peers.
          - Default V(false), from the settings model (core/settings.py).
        type: bool
      endpoint:
        description:
          - The discovery service (cluster.discovery.registries.service.endpoint), C(https://host[:port]/) or
            C(host:port) (TLS), C(http://host:port/) or C(host:port) with O(discovery.insecure) (plaintext).
          - Required with O(discovery.enabled) unless O(discovery.endpoints) is given.
          - Default V(""), from the settings model (core/settings.py).
        type: str
      endpoints:
        description:
          - Several discovery services at once (Talos 1.14 and later), in the forms of O(discovery.endpoint). Each gets
            its own client; the affiliates they list are merged and this node publishes on each. When not empty, it
            replaces O(discovery.endpoint).
          - Default V([]), from the settings model (core/settings.py).
        type: list
        elements: str
      insecure:
        description:
          - Speak plaintext gRPC to the service (a private network only).
          - Default V(false), from the settings model (core/settings.py).
        type: bool
      ca_file:
        description:
          - PEM file on the node with the CA certificates that sign the service's certificate; empty for the system roots.
          - Default V(""), from the settings model (core/settings.py).
        type: path
      server_name:
        description:
          - Name to check in the service's certificate instead of the endpoint's host.
          - Default V(""), from the settings model (core/settings.py).
        type: str
      harvest_extra_endpoints:
        description:
          - Publish, for each peer that is up, the endpoint WireGuard observed for it (Talos's
            C(harvestExtraEndpoints)), so the other nodes learn an address that peer cannot see itself (a NAT's).
          - Default V(false), from the settings model (core/settings.py).
        type: bool
      machine_type:
        description:
          - Talos's machine type of this node, published in its affiliate (C(talosctl get members) shows it).
          - Default V(worker), from the settings model (core/settings.py).
        type: str
        choices: [controlplane, worker, init]
      api_server_port:
        description:
          - The Kubernetes API server port published with a control-plane O(discovery.machine_type) (Talos's
            ControlPlane.api_server_port); not published for workers.
          - Default V(6443), from the settings model (core/settings.py).
        type: int
  peer_endpoint_filters:
    description:
      - Talos's C(machine.network.kubespan.filters.peerEndpoints) - CIDRs in the syntax of endpoint filters
        (C(cidr), C(!cidr), in order) that filter the endpoints of OTHER peers this node dials. Unset, no filtering;
        an empty list dials none (the peers may still dial this node).
      - Default unset (V(null)), from the settings model (core/settings.py).
    type: list
    elements: str
  address_source:
    description:
      - As M(kubespan.mesh.identity)'s O(kubespan.mesh.identity#module:address_source); kept in the desired state so
        that the node agent recomputes the address from the current first physical MAC at each tick (after a boot).
        Unset, the one of O(identity) (or C(auto)).
    type: str
    choices: [auto, mac, node-id]
  allowed_peer_networks:
    description:
      - Networks (CIDRs) discovered peers may claim; their other claims are trimmed with a warning (the inventory's pod
        networks are always allowed). Also kept in the desired state for the node agent.
      - This host's addresses, its default gateways and the discovery service's address (when the endpoint is an IP
        literal) are never routed into the mesh, whoever claims them.
      - Default V(10.0.0.0/8), V(172.16.0.0/12), V(192.168.0.0/16), V(100.64.0.0/10), V(fc00::/7), from the settings model (core/settings.py).
    type: list
    elements: str
  settle:
    description:
      - O(peers) is the controller's cache of the cluster's affiliates from an earlier run, not fresh data. The mesh
        is reconciled only when this host's own fresh affiliate (O(identity) is required) is its cached entry and
        the peer set built from O(peers) is exactly the one the host already has, with the same O(members); then
        RV(settled) is true. Otherwise nothing from O(peers) is applied and RV(settled) is false, so the caller
        exchanges fresh affiliates and calls again. The C(kubespan.mesh.kubespan) role uses this to make a routine
        run one remote call per host. Always false with O(discovery.enabled).
    type: bool
    default: false
  report_observed:
    description:
      - Return RV(observed), what this node's WireGuard sees of its peers, for the controller to hand out as extra
        candidates (the C(kubespan.mesh.kubespan) role's C(kubespan_inventory_observed_endpoints)). Only without
        discovery (with it, O(discovery.harvest_extra_endpoints) does this through the service).
    type: bool
    default: false
  compact_result:
    description:
      - Return RV(peer_count) instead of the RV(peers) list, and echo O(peers) and O(members) as counts in the
        result's C(invocation). Every host's result otherwise holds the whole cluster, so the controller keeps
        n^2 peer entries for a play of n hosts (10.7 GB and 33 min were measured for 1,000 hosts, mostly the cost of
        forking workers from that much memory). The C(kubespan.mesh.kubespan) role sets it; read the peers with
        M(kubespan.mesh.peer_status_info) or C(kubespan get peerstatuses) on the node.
    type: bool
    default: false
  agent:
    description:
      - Install and enable the node agent in the same call, before the mesh is reconciled (its units must
        exist by then). The agent's code (a zipapp of the collection's module_utils) in O(agent.lib_dir), the
        C(kubespan) command, and the units C(kubespan-wireguard-go.service), C(kubespan-agent.service) (sandboxed)
        and C(kubespan-agent.timer). Only files whose content or mode differ are written (atomically), and
        systemd is reloaded only when a unit changed. After the reconcile, C(kubespan-wireguard-go.service)
        is enabled at boot exactly when the userspace data path is in use, and the timer is enabled and started.
      - With discovery on, also C(kubespan-watch.service), the resident discovery watcher (enabled, started,
        restarted when the agent's files changed); with discovery off it is stopped, disabled and removed.
      - Omit to leave the agent alone (for example an ad hoc call of this module).
    type: dict
    suboptions:
      bundle:
        description:
          - The agent's code, a base64 zipapp; pass C(lookup('kubespan.mesh.agent_bundle')), which builds it from
            this collection's module_utils on the controller.
        type: str
        required: true
      lib_dir:
        description:
          - Directory of the agent's code on the node.
          - Default V(/usr/lib/kubespan), from the settings model (core/settings.py).
        type: path
      interval:
        description:
          - Seconds between two agent ticks (the timer's C(OnUnitActiveSec)).
          - Default V(30), from the settings model (core/settings.py).
        type: int
      metrics_file:
        description:
          - The agent's Prometheus text file; empty for C(metrics.prom) in O(state_dir).
          - Default V(""), from the settings model (core/settings.py).
        type: path
      command_path:
        description:
          - Where the C(kubespan) command is installed.
          - Default V(/usr/local/sbin/kubespan), from the settings model (core/settings.py).
        type: path
"""

EXAMPLES = r"""
- name: Build the mesh from every host of the kubespan group
  kubespan.mesh.mesh:
    cluster_id: "{{ kubespan_cluster_id }}"
    cluster_secret: "{{ kubespan_cluster_secret }}"
    peers: "{{ groups['kubespan'] | map('extract', hostvars, 'kubespan_affiliate') | select('defined') | list }}"
    members: "{{ groups['kubespan'] }}"
    local_name: "{{ inventory_hostname }}"

- name: Same, with a smaller MTU for a 1400-byte underlay and userspace WireGuard
  kubespan.mesh.mesh:
    cluster_id: "{{ kubespan_cluster_id }}"
    cluster_secret: "{{ kubespan_cluster_secret }}"
    peers: "{{ my_affiliates }}"
    mtu: 1320
    implementation: userspace

- name: Reconcile and install the node agent in the same call (what the kubespan.mesh.kubespan role does)
  kubespan.mesh.mesh:
    cluster_id: "{{ kubespan_cluster_id }}"
    cluster_secret: "{{ kubespan_cluster_secret }}"
    peers: "{{ my_affiliates }}"
    agent:
      bundle: "{{ lookup('kubespan.mesh.agent_bundle') }}"
      interval: 30
"""

RETURN = r"""
implementation:
  description: The WireGuard data path in use.
  returned: success
  type: str
  sample: userspace
settled:
  description: With O(settle), whether the cache was current and the mesh reconciled (see O(settle)).
  returned: when O(settle) is true
  type: bool
settle_reason:
  description: With O(settle), why the cache was not used (empty when RV(settled)).
  returned: when O(settle) is true
  type: str
  sample: this host's affiliate changed (endpoints)
identity:
  description: The node's public identity, as M(kubespan.mesh.identity) returns it.
  returned: when O(identity) is given and nothing is missing
  type: dict
affiliate:
  description: This host's affiliate as the other hosts get it in O(peers) (no key material but the public key).
  returned: when O(identity) is given and nothing is missing
  type: dict
missing_requirements:
  description: As M(kubespan.mesh.identity)'s; when not empty nothing else was done.
  returned: when O(identity) is given
  type: dict
agent_changes:
  description: What was (or in check mode would be) changed in the node agent's files and units, one line each.
  returned: when O(agent) is given
  type: list
  elements: str
  sample: ["update /etc/systemd/system/kubespan-agent.timer", "systemctl enable --now kubespan-agent.timer"]
firewall_backend:
  description: The host firewall the port was opened in (V(none) when nothing manages it or it was turned off).
  returned: when O(state=present)
  type: str
  sample: nftables
changes:
  description: What was (or in check mode would be) changed, one line each.
  returned: success
  type: list
  elements: str
  sample: ["add peer node2 THtfKtfNnzJs1nMQKs5IXqK0DFXmM//0WMY+NnaZrhU=", "set kubespan up"]
observed:
  description:
    - With O(report_observed) and without discovery, for each peer that the node agent last saw up, the endpoint
      WireGuard uses for it when that is none of the endpoints the peer announced (O(peers[].endpoints)), that is a NAT's
      mapping seen from here. At most 64 entries; empty when the node has no statuses yet.
  returned: when O(report_observed) is true and O(discovery.enabled) is false
  type: list
  elements: dict
  sample: [{"public_key": "THtfKtfNnzJs1nMQKs5IXqK0DFXmM//0WMY+NnaZrhU=", "endpoint": "203.0.113.7:51820"}]
peer_count:
  description: How many peers this node has.
  returned: success
  type: int
  sample: 2
peers:
  description: The desired peers of this node (no key material but public keys).
  returned: success, unless O(compact_result)
  type: list
  elements: dict
  contains:
    name:
      description: Inventory name (label).
      type: str
    public_key:
      description: WireGuard public key (the peer ID).
      type: str
    address:
      description: KubeSpan address.
      type: str
    endpoints:
      description: Endpoint candidates.
      type: list
      elements: str
    allowed_ips:
      description: AllowedIPs of the peer.
      type: list
      elements: str
    node_id:
      description: Node ID.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubespan.mesh.plugins.module_utils.core.settings import FIREWALL_BACKENDS, IMPLEMENTATIONS, MACHINE_TYPES
from ansible_collections.kubespan.mesh.plugins.module_utils.host.requirements import identity_option_spec
from ansible_collections.kubespan.mesh.plugins.module_utils.modules.common import run_guarded
from ansible_collections.kubespan.mesh.plugins.module_utils.modules.meshrun import finish, run


def _strings():
    return dict(type="list", elements="str", default=[])


ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    cluster_id=dict(type="str"),
    cluster_secret=dict(type="str", no_log=True),
    peers=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        public_key=dict(type="str", required=True),
        address=dict(type="str", required=True),
        node_id=dict(type="str"),
        endpoints=_strings(),
        addresses=_strings(),
        additional_addresses=_strings(),
        exclude_advertised_networks=_strings(),
        observed_endpoints=_strings(),
    )),
    members=dict(type="list", elements="str"),
    local_name=dict(type="str"),
    interface=dict(type="str"),
    mtu=dict(type="int"),
    listen_port=dict(type="int"),
    fwmark=dict(type="int"),
    persistent_keepalive=dict(type="int", no_log=False),
    implementation=dict(type="str", choices=list(IMPLEMENTATIONS)),
    state_dir=dict(type="path"),
    allow_down_peer_bypass=dict(type="bool"),
    relay=dict(type="bool"),
    relay_members=_strings(),
    route_table=dict(type="int"),
    rule_priority=dict(type="int"),
    force_mark=dict(type="int"),
    mark_mask=dict(type="int"),
    nft_table=dict(type="str"),
    firewall_backend=dict(type="str", choices=list(FIREWALL_BACKENDS)),
    firewalld_zone=dict(type="str"),
    # unset suboptions: the settings model's defaults (fill_options; discovery_settings.normalize ignores None)
    discovery=dict(type="dict", options=dict(
        enabled=dict(type="bool"),
        endpoint=dict(type="str"),
        endpoints=dict(type="list", elements="str"),
        insecure=dict(type="bool"),
        ca_file=dict(type="path"),
        server_name=dict(type="str"),
        harvest_extra_endpoints=dict(type="bool"),
        machine_type=dict(type="str", choices=list(MACHINE_TYPES)),
        api_server_port=dict(type="int"),
    )),
    peer_endpoint_filters=dict(type="list", elements="str"),
    address_source=dict(type="str", choices=["auto", "mac", "node-id"]),
    allowed_peer_networks=dict(type="list", elements="str"),
    identity=dict(type="dict", options=identity_option_spec()),
    settle=dict(type="bool", default=False),
    report_observed=dict(type="bool", default=False),
    compact_result=dict(type="bool", default=False),
    agent=dict(type="dict", options=dict(
        bundle=dict(type="str", required=True, no_log=True),
        lib_dir=dict(type="path"),
        interval=dict(type="int"),
        metrics_file=dict(type="path"),
        command_path=dict(type="path"),
    )),
)


def main():
    """Parse the request, run it (module_utils/modules/meshrun.py), return the result."""
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "present", ("cluster_id", "cluster_secret")), ("settle", True, ("identity", "local_name"))],
        supports_check_mode=True,
    )
    params = module.params
    result = run_guarded(module, lambda: run(params, module.check_mode, module._diff, module.warn))
    module.exit_json(**finish(params, result))


if __name__ == "__main__":
    main()
