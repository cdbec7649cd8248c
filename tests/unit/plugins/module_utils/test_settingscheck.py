"""The role's early check: every bad value named with the variable, nothing flagged on the defaults."""

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.engine import ROLE_VARIABLES, ReconcileError, Settings
from ansible_collections.kubespan.mesh.plugins.module_utils.settingscheck import settings_errors

DEFAULTS = {
    "kubespan_mtu": "1420", "kubespan_listen_port": 51820, "kubespan_persistent_keepalive": 25, "kubespan_route_table": 180,
    "kubespan_rule_priority": 32500, "kubespan_fwmark": 32, "kubespan_force_mark": 64, "kubespan_mark_mask": 96,
    "kubespan_agent_interval": 30, "kubespan_firewall_backend": "auto", "kubespan_interface": "kubespan",
    "kubespan_filters_endpoints": ["10.0.0.0/8", "!10.1.0.0/16", "2001:db8::1"], "kubespan_kubernetes_networks": ["10.244.1.0/24", "fd00:10:244:1::/64"],
    "kubespan_filters_exclude_advertised_networks": [], "kubespan_extra_announced_endpoints": ["203.0.113.7:51999", "[2001:db8::7]:443"],
}


def test_defaults_are_fine():
    assert settings_errors(DEFAULTS) == []
    assert settings_errors({}) == []


@pytest.mark.parametrize("name,value,needle", [
    ("kubespan_mtu", 1200, "1280"),
    ("kubespan_mtu", "big", "1280"),
    ("kubespan_listen_port", 70000, "1-65535"),
    ("kubespan_listen_port", 0, "1-65535"),
    ("kubespan_firewall_backend", "iptables", "auto, nftables, firewalld, ufw, none"),
    ("kubespan_interface", "a-very-long-interface-name", "1-15"),
    ("kubespan_filters_endpoints", ["10.0.0.0/33"], "10.0.0.0/33"),
    ("kubespan_filters_endpoints", "10.0.0.0/8", "must be a list"),
    ("kubespan_kubernetes_networks", ["10.244.1.0/24", "10.244.300.0/24"], "10.244.300.0/24"),
    ("kubespan_filters_exclude_advertised_networks", ["not-a-cidr"], "not-a-cidr"),
    ("kubespan_extra_announced_endpoints", ["203.0.113.7"], "203.0.113.7"),
    ("kubespan_extra_announced_endpoints", ["203.0.113.7:99999"], "port"),
    ("kubespan_agent_interval", 1, "5-86400"),
    ("kubespan_fwmark", 0, "32-bit"),
    ("kubespan_wireguard_implementation", "boringtun", "auto, kernel, userspace"),
])
def test_bad_value_is_named(name, value, needle):
    errors = settings_errors(dict(DEFAULTS, **{name: value}))
    assert len(errors) == 1, errors
    assert name in errors[0] and needle in errors[0]


def test_all_problems_reported_at_once():
    errors = settings_errors(dict(DEFAULTS, kubespan_mtu=100, kubespan_listen_port=-1, kubespan_kubernetes_networks=["x"]))
    assert len(errors) == 3


def test_modules_apply_the_same_rules_and_messages():
    # engine.Settings (the mesh module, the agent reading the desired state) checks through settings_errors
    Settings().validate()
    assert set(ROLE_VARIABLES) <= set(Settings.__dataclass_fields__)
    for field, value, needle in [("mtu", 1000, "kubespan_mtu=1000: the MTU must be 1280-65535"),
                                 ("fwmark", 0, "kubespan_fwmark=0: a 32-bit firewall mark"),
                                 ("listen_port", 65536, "kubespan_listen_port=65536"),
                                 ("implementation", "boringtun", "kubespan_wireguard_implementation='boringtun'"),
                                 ("firewall_backend", "pf", "kubespan_firewall_backend='pf'"),
                                 ("interface", 5, "kubespan_interface=5"),
                                 ("route_table", 0, "kubespan_route_table=0")]:
        with pytest.raises(ReconcileError) as info:
            Settings(**{field: value}).validate()
        assert needle in str(info.value), info.value
    # every problem at once
    with pytest.raises(ReconcileError) as info:
        Settings(mtu=1, listen_port=0).validate()
    assert "kubespan_mtu" in str(info.value) and "kubespan_listen_port" in str(info.value)
