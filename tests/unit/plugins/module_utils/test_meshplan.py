# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The reconcile's pure plans (core/meshplan.py): link, device and data plane from the host's view given as data.
No Netlink, no device, no nft: every input is a literal, every output is compared exactly."""

from __future__ import annotations

import base64

from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import (
    DataPlaneConfig,
    desired_nft,
    desired_routes,
    desired_rules,
    fail_closed_routes,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet
from ansible_collections.kubespan.mesh.plugins.module_utils.core.meshplan import (
    bypass_up_peers,
    desired_device,
    plan_dataplane,
    plan_device_step,
    plan_link,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState


def key(n):
    return base64.b64encode(bytes([n]) * 32).decode()


PSK = key(200)
NOW = 1_000_000.0
SUBNET = "fdc8:aa3:1ef2:1f02::/64"
ADDR = "fdc8:aa3:1ef2:1f02:aaaa::1/64"
CFG = DataPlaneConfig().validate()
PEERS = [
    {"public_key": key(2), "name": "n2", "allowed_ips": ["fdc8:aa3:1ef2:1f02:2::/128", "10.0.2.0/24"], "endpoints": ["192.0.2.2:51820"]},
    {"public_key": key(3), "name": "n3", "allowed_ips": ["fdc8:aa3:1ef2:1f02:3::/128", "10.0.5.0/24"], "endpoints": ["192.0.2.3:51820"]},
]
ENDPOINTS = {p["public_key"]: p["endpoints"] for p in PEERS}


def want(via=None):
    return desired_device(key(1), 51820, 0x20, 25, PSK, PEERS, ENDPOINTS, via)


def device_as_applied(d):
    dev = DeviceState(private_key=d.private_key, public_key=key(101), listen_port=d.listen_port, fwmark=d.fwmark)
    for p in d.peers:
        dev.peers[p.public_key] = PeerState(public_key=p.public_key, endpoint=p.endpoints[0] if p.endpoints else None,
                                            allowed_ips=sorted(p.allowed_ips), persistent_keepalive=25, preshared_key=PSK)
    return dev


# ----------------------------------------------------------------------------------------------- link


def test_missing_link_gets_mtu_address_and_up():
    ops, changes = plan_link("kubespan", None, ADDR, 1420)
    assert ops == [("mtu", None), ("add", ADDR), ("up", None)]
    assert changes == ["MTU -> 1420", "add address %s" % ADDR, "set kubespan up"]


def test_link_in_shape_needs_nothing():
    assert plan_link("kubespan", {"addresses": [ADDR], "mtu": 1420, "up": True}, ADDR, 1420) == ([], [])


def test_link_drift_replaces_only_what_differs():
    link = {"addresses": ["fdc8:aa3:1ef2:1f02:bbbb::1/64"], "mtu": 1380, "up": False}
    ops, changes = plan_link("ks0", link, ADDR, 1420)
    assert ops == [("mtu", None), ("add", ADDR), ("del", "fdc8:aa3:1ef2:1f02:bbbb::1/64"), ("up", None)]
    assert changes[2] == "remove address fdc8:aa3:1ef2:1f02:bbbb::1/64" and changes[3] == "set ks0 up"


# ----------------------------------------------------------------------------------------------- device


def test_desired_device_moves_a_relayed_peers_ranges_to_its_relay():
    direct = want()
    assert [p.allowed_ips for p in direct.peers] == [PEERS[0]["allowed_ips"], PEERS[1]["allowed_ips"]]
    relayed = want(via={key(3): key(2)})
    by_key = {p.public_key: sorted(p.allowed_ips) for p in relayed.peers}
    assert by_key[key(3)] == [] and set(PEERS[1]["allowed_ips"]) <= set(by_key[key(2)])
    assert all(p.preshared_key == PSK and p.persistent_keepalive == 25 for p in relayed.peers)


def test_new_device_is_created_with_its_whole_configuration_and_a_port_warning():
    plan = plan_device_step("kernel", "kubespan", want(), None, None, False, ADDR, 1420, {}, key(101), NOW, port_in_use=True)
    assert plan.create and plan.changes[0] == "create kernel WireGuard interface kubespan"
    assert plan.update.private_key == key(1) and len(plan.update.peers) == 2
    assert plan.link_ops == [("mtu", None), ("add", ADDR), ("up", None)]
    assert len(plan.warnings) == 1 and "UDP port 51820 is already held" in plan.warnings[0]
    assert PSK not in plan.before + plan.after and key(1) not in plan.before + plan.after


def test_device_in_shape_plans_nothing():
    d = want()
    link = {"addresses": [ADDR], "mtu": 1420, "up": True, "kind": "wireguard"}
    plan = plan_device_step("kernel", "kubespan", d, link, device_as_applied(d), True, ADDR, 1420, {}, key(101), NOW)
    assert not plan.create and plan.changes == [] and plan.link_ops == [] and plan.warnings == []
    assert plan.update.is_empty()


def test_device_drift_plans_the_peer_change_only():
    d = want()
    current = device_as_applied(d)
    del current.peers[key(3)]
    link = {"addresses": [ADDR], "mtu": 1420, "up": True}
    plan = plan_device_step("userspace", "kubespan", d, link, current, True, ADDR, 1420, {key(3): "n3"}, key(101), NOW)
    assert not plan.create and plan.link_ops == []
    assert [p.public_key for p in plan.update.peers] == [key(3)] and any("n3" in c for c in plan.changes)


# ----------------------------------------------------------------------------------------------- data plane


def test_bypass_up_peers_adds_the_peers_relayed_through_an_up_relay():
    assert bypass_up_peers(True, [key(2)], {key(3): key(2), key(4): key(9)}) == sorted([key(2), key(3)])
    assert bypass_up_peers(False, [key(2)], {key(3): key(2)}) == [key(2)]
    assert bypass_up_peers(True, None, None) is None


def test_empty_host_gets_every_route_rule_and_the_table():
    plan = plan_dataplane(CFG, PEERS, SUBNET, False, None, None, [], [], None)
    assert plan.del_routes == [] and plan.del_rules == []
    assert sorted(map(str, plan.add_routes)) == sorted(map(str, desired_routes(CFG) + fail_closed_routes(CFG, SUBNET)))
    assert sorted(map(str, plan.add_rules)) == sorted(map(str, desired_rules(CFG)))
    assert plan.nft_changed and plan.changes[-1] == "create nftables table inet kubespan (2 routed prefixes)"
    assert "[Routing]" in plan.before and "10.0.2.0/24" in plan.after


def test_converged_host_plans_nothing_and_bypass_shrinks_the_routed_set():
    routes = desired_routes(CFG) + fail_closed_routes(CFG, SUBNET)
    table = desired_nft(IPSet(["10.0.2.0/24", "10.0.5.0/24"]), CFG, None)
    plan = plan_dataplane(CFG, PEERS, SUBNET, False, None, None, routes, desired_rules(CFG), table)
    assert (plan.add_routes, plan.del_routes, plan.add_rules, plan.del_rules, plan.nft_changed, plan.changes) == ([], [], [], [], False, [])
    # with bypass only the up peer's network stays forced into KubeSpan: the table changes, the routes do not
    bypass = plan_dataplane(CFG, PEERS, SUBNET, True, [key(2)], None, routes, desired_rules(CFG), table)
    assert bypass.nft_changed and bypass.changes == ["update nftables table inet kubespan (1 routed prefixes)"]
    assert "10.0.5.0/24" not in bypass.after.split("[Routing]")[1]
