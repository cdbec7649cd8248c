# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The one-call re-run: when is the controller's cached view of the cluster current?"""

from __future__ import annotations

import copy

from ansible_collections.kubespan.mesh.plugins.module_utils.core.settle import affiliate_of, check

FACTS = {"public_key": "A" * 43 + "=", "node_id": "n1", "address": "fd00::1", "subnet": "fd00::/64", "address_source": "mac:eth0",
         "endpoints": ["10.0.0.1:51820"], "addresses": ["10.0.0.1", "fd00::1"], "additional_addresses": [],
         "exclude_advertised_networks": [], "created": False, "state_dir": "/var/lib/kubespan"}
OWN = affiliate_of("node1", FACTS)
OTHER = {"name": "node2", "node_id": "n2", "public_key": "B" * 43 + "=", "address": "fd00::2", "endpoints": ["10.0.0.2:51820"],
         "addresses": ["10.0.0.2", "fd00::2"], "additional_addresses": [], "exclude_advertised_networks": []}
SPEC = {"name": "node2", "public_key": "B" * 43 + "=", "address": "fd00::2", "endpoints": ["10.0.0.2:51820"],
        "addresses": ["10.0.0.2", "fd00::2"], "allowed_ips": ["10.0.0.2/32", "fd00::2/128"], "node_id": "n2"}
STATE = {"members": ["node1", "node2"], "peers": [dict(SPEC, version=4)]}


def test_affiliate_of_takes_only_public_fields():
    assert OWN == {"name": "node1", "node_id": "n1", "public_key": FACTS["public_key"], "address": "fd00::1",
                   "endpoints": ["10.0.0.1:51820"], "addresses": ["10.0.0.1", "fd00::1"], "additional_addresses": [],
                   "exclude_advertised_networks": []}


def test_settled_when_everything_matches_versions_ignored():
    assert check([OTHER, OWN], OWN, [SPEC], STATE, ["node2", "node1"]) == (True, "")


def test_own_entry_missing_or_changed():
    assert check([OTHER], OWN, [SPEC], STATE, ["node1", "node2"]) == (False, "this host is not in the controller's cache")
    moved = dict(OWN, endpoints=["10.0.0.9:51820"])
    ok, why = check([OTHER, moved], OWN, [SPEC], STATE, ["node1", "node2"])
    assert not ok and why == "this host's affiliate changed (endpoints)"
    # a list given as None in the cache equals an empty list
    assert check([OTHER, dict(OWN, additional_addresses=None)], OWN, [SPEC], STATE, ["node1", "node2"])[0]


def test_state_missing_disabled_members_or_peers_differ():
    cached = [OTHER, OWN]
    assert check(cached, OWN, [SPEC], None, ["node1", "node2"]) == (False, "no desired state on this host yet")
    assert not check(cached, OWN, [SPEC], dict(STATE, disabled=True), ["node1", "node2"])[0]
    assert check(cached, OWN, [SPEC], STATE, ["node1", "node2", "node3"]) == (False, "the members of the cluster group changed")
    other_spec = copy.deepcopy(SPEC)
    other_spec["allowed_ips"].append("10.244.2.0/24")
    assert check(cached, OWN, [other_spec], STATE, ["node1", "node2"]) == (
        False, "the peers built from the cache differ from this host's")
    assert not check(cached, OWN, [], STATE, ["node1", "node2"])[0]
    # members not given: not compared
    assert check(cached, OWN, [SPEC], STATE, None) == (True, "")
