"""The role's early check: every bad value named with the variable, nothing flagged on the defaults."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agentfiles import AgentOptions
from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import DataPlaneConfig
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import DISCOVERY_VARIABLES, settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery.discovery_agent import DiscoverySettingsError, normalize_settings
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import ROLE_VARIABLES, ReconcileError, Settings

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


# Issue 14 item 2: values the early check let through and the mesh module refused only after the WireGuard device,
# address and peers were applied. Each is now refused first, named by its role variable, with the fix.
@pytest.mark.parametrize("changes,needles", [
    ({"kubespan_rule_priority": 40000}, ["kubespan_rule_priority=40000", "32766"]),
    ({"kubespan_route_table": 254}, ["kubespan_route_table=254", "reserved", "Talos: 180"]),
    ({"kubespan_fwmark": 0x100}, ["kubespan_fwmark=256", "outside the mark mask", "kubespan_mark_mask"]),
    ({"kubespan_force_mark": 32}, ["kubespan_force_mark=32", "must differ"]),
    ({"kubespan_interface": "ks:0"}, ["kubespan_interface='ks:0'", "letters, digits"]),
    ({"kubespan_mark_mask": 0x20}, ["kubespan_force_mark", "kubespan_mark_mask=32", "outside the mark mask"]),
    ({"kubespan_state_dir": "/var/lib/kube span"}, ["kubespan_state_dir", "unquoted into systemd units"]),
    ({"kubespan_lib_dir": "relative/dir"}, ["kubespan_lib_dir", "absolute path"]),
    ({"kubespan_agent_metrics_file": "/var/lib/kubespan/%i.prom"}, ["kubespan_agent_metrics_file", "'%'"]),
])
def test_values_later_steps_refuse_are_refused_early(changes, needles):
    errors = settings_errors(dict(DEFAULTS, **changes))
    assert len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0], errors


# The discovery settings (in the settings model since session 9): what the node agent refuses
# (discovery_settings.normalize, run by discovery_agent.normalize_settings) is refused first, named with the fix.
_ON = {"kubespan_discovery_enabled": True}


@pytest.mark.parametrize("changes,needles", [
    (dict(_ON), ["kubespan_discovery_endpoint is required", "kubespan_discovery_endpoints", "https://discovery.talos.dev/"]),
    (dict(_ON, kubespan_discovery_endpoint="discovery.example.com"), ["kubespan_discovery_endpoint 'discovery.example.com'",
                                                                      "https://host[:port]/"]),
    (dict(_ON, kubespan_discovery_endpoint="ftp://x/"), ["kubespan_discovery_endpoint", "'ftp://x/'", "https://host[:port]/"]),
    (dict(_ON, kubespan_discovery_endpoints=["10.0.0.5:3000", "host:0"]), ["kubespan_discovery_endpoints item 'host:0'"]),
    (dict(_ON, kubespan_discovery_endpoints=["10.0.0.%d:3000" % i for i in range(9)]),
     ["kubespan_discovery_endpoints lists 9 services: at most 8"]),
    ({"kubespan_discovery_endpoints": "10.0.0.5:3000"}, ["kubespan_discovery_endpoints must be a list", "one item per line"]),
    (dict(_ON, kubespan_discovery_endpoint="http://10.0.0.5:3000", kubespan_discovery_ca_file="/etc/ca.pem"),
     ["kubespan_discovery_ca_file is set", "plaintext", "unset one of them"]),
    (dict(_ON, kubespan_discovery_endpoint="10.0.0.5:3000", kubespan_discovery_insecure="yes",
          kubespan_discovery_ca_file="/etc/ca.pem"), ["kubespan_discovery_ca_file is set", "plaintext"]),
    ({"kubespan_discovery_enabled": "maybe"}, ["kubespan_discovery_enabled='maybe'", "true or false"]),
    ({"kubespan_harvest_extra_endpoints": "sometimes"}, ["kubespan_harvest_extra_endpoints='sometimes'", "true or false"]),
    ({"kubespan_machine_type": "master"}, ["kubespan_machine_type='master'", "controlplane, worker, init"]),
    ({"kubespan_api_server_port": 0}, ["kubespan_api_server_port=0", "1-65535", "Talos: 6443"]),
    ({"kubespan_api_server_port": "https"}, ["kubespan_api_server_port=https", "1-65535"]),
])
def test_bad_discovery_values_are_refused_early_as_the_agent_refuses_them(changes, needles):
    errors = settings_errors(dict(DEFAULTS, **changes))
    assert len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0], errors
    # the node agent refuses the same values (those the module's option types let through: "maybe" is no bool)
    discovery = {key: changes[var] for key, var in DISCOVERY_VARIABLES.items() if var in changes}
    typed = all(not isinstance(value, str) or key not in ("enabled", "insecure", "harvest_extra_endpoints", "api_server_port")
                for key, value in discovery.items())
    if typed:
        with pytest.raises(DiscoverySettingsError):
            normalize_settings(discovery)


@pytest.mark.parametrize("changes", [
    {"kubespan_discovery_enabled": False, "kubespan_discovery_endpoint": ""},  # off: nothing needed
    {"kubespan_discovery_enabled": "false"},  # -e kubespan_discovery_enabled=false is a string
    dict(_ON, kubespan_discovery_endpoint="https://discovery.talos.dev/"),
    dict(_ON, kubespan_discovery_endpoint="10.0.0.5:3000", kubespan_discovery_insecure="true"),
    dict(_ON, kubespan_discovery_endpoints=["10.0.0.5:3000", "[2001:db8::5]:3000"], kubespan_discovery_ca_file="/etc/ca.pem",
         kubespan_discovery_server_name="disc.example", kubespan_machine_type="controlplane", kubespan_api_server_port="6444",
         kubespan_harvest_extra_endpoints=True),
])
def test_good_discovery_values_pass(changes):
    assert settings_errors(dict(DEFAULTS, **changes)) == []


_DATAPLANE_FIELDS = {"mtu": "kubespan_mtu", "link": "kubespan_interface", "route_table": "kubespan_route_table",
                     "rule_priority": "kubespan_rule_priority", "wireguard_mark": "kubespan_fwmark",
                     "force_mark": "kubespan_force_mark", "mark_mask": "kubespan_mark_mask", "nft_table": "kubespan_nft_table"}
_SPECIAL_NUMBERS = [0, 1, 32, 64, 96, 180, 253, 254, 255, 1280, 1420, 32500, 32765, 32766, 0xFFFFFFFF, 0x100000000]
_numbers = st.one_of(st.integers(min_value=-2, max_value=2 ** 33), st.sampled_from(_SPECIAL_NUMBERS))
_names = st.one_of(st.sampled_from(["kubespan", "ks:0", "a/b", "x y", "", "wg0", "k" * 15, "k" * 16, "kube+span", "ks.1-2_3"]),
                   st.text(max_size=17))


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional={"mtu": _numbers, "link": _names, "route_table": _numbers,
                                           "rule_priority": _numbers, "wireguard_mark": _numbers, "force_mark": _numbers,
                                           "mark_mask": _numbers, "nft_table": _names}))
def test_whatever_the_data_plane_refuses_the_early_check_refuses(values):
    """Property: the data plane (module and agent) never refuses a value the role's early check let through."""
    try:
        DataPlaneConfig(**values).validate()
        refused = False
    except ValueError:
        refused = True
    errors = settings_errors({_DATAPLANE_FIELDS[k]: v for k, v in values.items()})
    if refused:
        assert errors, values


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={"interface": _names, "state_dir": st.text(max_size=12),
                                           "lib_dir": st.sampled_from(["/usr/lib/kubespan", "/a b", "/a//b", "/a/", "a"]),
                                           "metrics_file": st.text(max_size=12), "interval": _numbers}))
def test_whatever_the_agent_files_refuse_the_early_check_refuses(values):
    """Property: the agent's unit files (agentfiles.AgentOptions) never refuse what the early check let through."""
    try:
        AgentOptions(bundle=b"PK", **dict({"metrics_file": "/var/lib/kubespan/metrics.prom"}, **values)).validate()
        refused = False
    except ValueError:
        refused = True
    names = {"interface": "kubespan_interface", "state_dir": "kubespan_state_dir", "lib_dir": "kubespan_lib_dir",
             "metrics_file": "kubespan_agent_metrics_file", "interval": "kubespan_agent_interval"}
    errors = settings_errors({names[k]: v for k, v in values.items()})
    if refused:
        assert errors, values


@pytest.mark.parametrize("raw, named", [
    ({"enabled": True, "endpoints": ["disc.example:443", "bad"]}, "kubespan_discovery_endpoints item 'bad'"),
    ({"enabled": True, "endpoint": "bad"}, "kubespan_discovery_endpoint 'bad'"),
])
def test_a_bad_discovery_endpoint_is_blamed_on_the_variable_it_came_from(raw, named):
    with pytest.raises(DiscoverySettingsError) as err:
        normalize_settings(raw)
    assert str(err.value).startswith(named)
