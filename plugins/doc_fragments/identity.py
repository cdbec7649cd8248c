# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    """The identity options: the top-level options of kubespan.mesh.identity (DOCUMENTATION) and the suboptions of
    kubespan.mesh.mesh's O(identity) (MESH), both from one argument spec (module_utils/requirements.identity_option_spec).
    ansible-test wants each fragment a plain string, so the text is here twice; tests/unit/plugins/test_doc_fragments.py
    fails when the two differ (other than the option paths) or differ from the argument spec."""

    DOCUMENTATION = r"""
options:
  address_source:
    description:
      - Where the 64-bit interface identifier of the node's address comes from.
      - V(auto) uses the first physical Ethernet NIC's MAC (EUI-64, as Talos) and falls back to the node ID.
      - V(mac) requires a physical NIC; V(node-id) always uses the node ID.
      - As Talos, the address is recomputed from the current first physical MAC at each run (the node agent does
        it at each tick too, so after a boot); the key is kept. A change is warned, naming both addresses.
    type: str
    choices: [auto, mac, node-id]
    default: auto
  endpoint_filters:
    description:
      - Talos's C(machine.network.kubespan.filters.endpoints), in list order; C(!cidr) removes; addresses
        that match no positive filter are not announced. Unset (null) announces every address; an explicitly
        empty list announces none of them (as Talos; O(extra_endpoints) are still announced).
    type: list
    elements: str
  extra_endpoints:
    description: Extra announced endpoints (C(ip:port), C([ipv6]:port)), e.g. inbound NAT mappings, appended after the node's own.
    type: list
    elements: str
    default: []
  advertised_networks:
    description: Networks this node routes for the cluster (its pod CIDRs when advertising Kubernetes networks).
    type: list
    elements: str
    default: []
  exclude_advertised_networks:
    description: Networks removed from what this node's peers route to it (Talos's filters.excludeAdvertisedNetworks).
    type: list
    elements: str
    default: []
  kubernetes_networks:
    description:
      - This host's pod (and service) CIDRs, whether advertised or not.
      - As Talos's C(NodeAddressFilterNoK8s), addresses inside them are neither node addresses nor endpoints.
    type: list
    elements: str
    default: []
  requirements:
    description:
      - Before anything else, check that what these groups need is installed on the node, without importing
        it or calling a package manager; V(base) is PyNaCl, pyroute2, C(nft), C(ip) and C(wg), V(userspace)
        is C(wireguard-go), V(discovery) is gRPC and cryptography for the discovery client.
      - When something is missing, nothing else is done and RV(missing_requirements) lists it, so the caller
        can install packages and call the module again. The C(kubespan.mesh.kubespan) role uses this to skip
        fact gathering and the package manager on a routine run.
    type: list
    elements: str
    choices: [base, userspace, discovery]
    default: []
"""

    MESH = r"""options:
  identity:
    description:
      - Ensure the node identity in this same call, as M(kubespan.mesh.identity) does with these options, and return
        it (RV(identity), RV(affiliate)). Needed by O(settle).
      - When something of O(identity.requirements) is missing, nothing else is done and RV(missing_requirements)
        lists it.
    type: dict
    suboptions:

      address_source:
        description:
          - Where the 64-bit interface identifier of the node's address comes from.
          - V(auto) uses the first physical Ethernet NIC's MAC (EUI-64, as Talos) and falls back to the node ID.
          - V(mac) requires a physical NIC; V(node-id) always uses the node ID.
          - As Talos, the address is recomputed from the current first physical MAC at each run (the node agent does
            it at each tick too, so after a boot); the key is kept. A change is warned, naming both addresses.
        type: str
        choices: [auto, mac, node-id]
        default: auto
      endpoint_filters:
        description:
          - Talos's C(machine.network.kubespan.filters.endpoints), in list order; C(!cidr) removes; addresses
            that match no positive filter are not announced. Unset (null) announces every address; an explicitly
            empty list announces none of them (as Talos; O(identity.extra_endpoints) are still announced).
        type: list
        elements: str
      extra_endpoints:
        description: Extra announced endpoints (C(ip:port), C([ipv6]:port)), e.g. inbound NAT mappings, appended after the node's own.
        type: list
        elements: str
        default: []
      advertised_networks:
        description: Networks this node routes for the cluster (its pod CIDRs when advertising Kubernetes networks).
        type: list
        elements: str
        default: []
      exclude_advertised_networks:
        description: Networks removed from what this node's peers route to it (Talos's filters.excludeAdvertisedNetworks).
        type: list
        elements: str
        default: []
      kubernetes_networks:
        description:
          - This host's pod (and service) CIDRs, whether advertised or not.
          - As Talos's C(NodeAddressFilterNoK8s), addresses inside them are neither node addresses nor endpoints.
        type: list
        elements: str
        default: []
      requirements:
        description:
          - Before anything else, check that what these groups need is installed on the node, without importing
            it or calling a package manager; V(base) is PyNaCl, pyroute2, C(nft), C(ip) and C(wg), V(userspace)
            is C(wireguard-go), V(discovery) is gRPC and cryptography for the discovery client.
          - When something is missing, nothing else is done and RV(missing_requirements) lists it, so the caller
            can install packages and call the module again. The C(kubespan.mesh.kubespan) role uses this to skip
            fact gathering and the package manager on a routine run.
        type: list
        elements: str
        choices: [base, userspace, discovery]
        default: []
"""
