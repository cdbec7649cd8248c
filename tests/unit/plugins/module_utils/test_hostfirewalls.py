"""ufw and firewalld planning: open what is missing, never remove what the admin added."""

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.firewall import COMMENT, parse_ufw_added, plan_firewalld, plan_ufw

# Real output of `ufw show added` (ufw 0.36.2, Debian 12) with our rules and one of the admin's.
UFW_OURS = """Added user rules (see 'ufw status' for running firewall):
ufw allow 51820/udp comment 'kubespan.mesh'
ufw allow in on kubespan comment 'kubespan.mesh'
ufw allow 22/tcp
"""


def test_parse_ufw_added():
    assert parse_ufw_added(UFW_OURS) == [("allow 51820/udp", COMMENT), ("allow in on kubespan", COMMENT), ("allow 22/tcp", "")]
    assert parse_ufw_added("Added user rules (see 'ufw status' for running firewall):\n(None)\n") == []


def test_ufw_opens_missing_rules_with_our_comment():
    cmds, changes = plan_ufw(parse_ufw_added("ufw allow 22/tcp\n"), 51820, "kubespan")
    assert cmds == [["allow", "51820/udp", "comment", COMMENT], ["allow", "in", "on", "kubespan", "comment", COMMENT]]
    assert len(changes) == 2


def test_ufw_second_run_changes_nothing():
    assert plan_ufw(parse_ufw_added(UFW_OURS), 51820, "kubespan") == ([], [])


def test_ufw_admin_rule_is_used_and_never_removed():
    added = parse_ufw_added("ufw allow 51820/udp\n")
    cmds = plan_ufw(added, 51820, "kubespan")[0]
    assert cmds == [["allow", "in", "on", "kubespan", "comment", COMMENT]]
    assert plan_ufw(added, 51820, "kubespan", enabled=False) == ([], [])


def test_ufw_port_change_and_disable_remove_only_ours():
    cmds = plan_ufw(parse_ufw_added(UFW_OURS), 51821, "kubespan")[0]
    assert cmds == [["delete", "allow", "51820/udp"], ["allow", "51821/udp", "comment", COMMENT]]
    cmds = plan_ufw(parse_ufw_added(UFW_OURS), 51820, "kubespan", enabled=False)[0]
    assert cmds == [["delete", "allow", "51820/udp"], ["delete", "allow", "in", "on", "kubespan"]]


NOTHING = {"port": (False, False), "interface_zone": ("", "")}
ALL = {"port": (True, True), "interface_zone": ("trusted", "trusted")}
OWNED = {"port": "public 51820/udp", "interface": "trusted kubespan"}


def test_firewalld_opens_runtime_and_permanent_and_owns_it():
    cmds, changes, warnings, owned = plan_firewalld("public", 51820, "kubespan", NOTHING, {})
    assert cmds == [["--zone=public", "--add-port=51820/udp"], ["--permanent", "--zone=public", "--add-port=51820/udp"],
                    ["--zone=trusted", "--add-interface=kubespan"], ["--permanent", "--zone=trusted", "--add-interface=kubespan"]]
    assert owned == OWNED and warnings == [] and len(changes) == 2


def test_firewalld_second_run_changes_nothing_and_keeps_ownership():
    assert plan_firewalld("public", 51820, "kubespan", ALL, OWNED) == ([], [], [], OWNED)


def test_firewalld_admin_port_is_not_owned_so_never_removed():
    cmds, _c, _w, owned = plan_firewalld("public", 51820, "kubespan", ALL, {})
    assert cmds == [] and owned == {}
    cmds, _c, _w, owned = plan_firewalld("public", 51820, "kubespan", ALL, owned, enabled=False)
    assert cmds == [] and owned == {}


def test_firewalld_runtime_lost_after_reload_is_restored():
    have = {"port": (False, True), "interface_zone": ("", "trusted")}
    cmds, _c, _w, owned = plan_firewalld("public", 51820, "kubespan", have, OWNED)
    assert cmds == [["--zone=public", "--add-port=51820/udp"], ["--zone=trusted", "--add-interface=kubespan"]]
    assert owned == OWNED


def test_firewalld_disable_removes_only_owned():
    cmds, changes, _w, owned = plan_firewalld("public", 51820, "kubespan", ALL, OWNED, enabled=False)
    assert ["--permanent", "--zone=public", "--remove-port=51820/udp"] in cmds
    assert ["--permanent", "--zone=trusted", "--remove-interface=kubespan"] in cmds
    assert len(cmds) == 4 and owned == {}


def test_firewalld_zone_or_port_change_moves_the_opening():
    have = {"port": (False, False), "interface_zone": ("trusted", "trusted")}
    cmds, _c, _w, owned = plan_firewalld("internal", 51821, "kubespan", have, OWNED)
    assert cmds[:2] == [["--zone=public", "--remove-port=51820/udp"], ["--permanent", "--zone=public", "--remove-port=51820/udp"]]
    assert ["--permanent", "--zone=internal", "--add-port=51821/udp"] in cmds
    assert owned == {"port": "internal 51821/udp", "interface": "trusted kubespan"}


@pytest.mark.parametrize("zones", [("work", "work"), ("", "work")])
def test_firewalld_interface_in_admin_zone_is_respected_with_a_warning(zones):
    have = {"port": (True, True), "interface_zone": zones}
    cmds, _c, warnings, owned = plan_firewalld("public", 51820, "kubespan", have, {})
    assert cmds == [] and "port" not in owned and "interface" not in owned
    assert len(warnings) == 1 and "zone work" in warnings[0]
