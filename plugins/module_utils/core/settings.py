# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The settings model: every KubeSpan setting's default, type, range or choices, Talos key and cross-field rule,
written once. Pure, standard library only (it is the lowest file the others take their defaults from).

A setting has a role variable (``kubespan_mtu``), the module options it arrives in (``mtu`` of
``kubespan.mesh.mesh``; ``agent.interval`` is the ``interval`` key of the ``agent`` dict option), and a default.
Who uses the model (docs/architecture.md, "One setting's path"):

- the role passes only what the user set (``| default(omit)``); its early check (settingscheck.settings_errors,
  filter ``kubespan.mesh.settings_errors``) checks those with the ranges and rules below and the data plane's own
  validation (dataplane.DataPlaneConfig, the cross-field rules); tasks that read a setting read the effective value
  from the filter ``kubespan.mesh.settings`` (``effective`` below);
- the modules declare the options without a default and call ``fill_options`` on their parameters;
- engine.Settings, dataplane.DataPlaneConfig and agentfiles.AgentOptions take their defaults from the constants here,
  so the node agent (which reads the desired state the module wrote) sees the same values.

The constants are the one place a default is written; tests/unit/plugins/module_utils/test_settings_model.py greps
plugins/, roles/ and playbooks/ for a second one.
"""

from __future__ import annotations

import copy
from collections import namedtuple
from typing import Dict, Iterable, List, Optional

# ------------------------------------------------------------------------------------------------ defaults
LINK_NAME = "kubespan"                 # Talos's link name
MTU = 1420                             # machine.network.kubespan.mtu
MIN_MTU = 1280                         # IPv6's minimum (WireGuard over IPv6)
MAX_MTU = 65535
LISTEN_PORT = 51820                    # Talos's constants.KubeSpanDefaultPort
WIREGUARD_MARK = 0x20                  # Talos's constants.KubeSpanDefaultFirewallMark
FORCE_MARK = 0x40                      # constants.KubeSpanDefaultForceFirewallMark
MARK_MASK = 0x60                       # constants.KubeSpanDefaultFwMarkMask
PERSISTENT_KEEPALIVE = 25              # seconds (Talos's peer keepalive)
IMPLEMENTATION = "auto"
IMPLEMENTATIONS = ("auto", "kernel", "userspace")
ADDRESS_SOURCE = "auto"
ADDRESS_SOURCES = ("auto", "mac", "node-id")
STATE_DIR = "/var/lib/kubespan"
LIB_DIR = "/usr/lib/kubespan"
COMMAND_PATH = "/usr/local/sbin/kubespan"
AGENT_INTERVAL = 30                    # seconds between agent ticks
MIN_AGENT_INTERVAL = 5
MAX_AGENT_INTERVAL = 86400
METRICS_FILE = ""                      # "": <state_dir>/metrics.prom (agentfiles.render_files)
ROUTE_TABLE = 180                      # Talos's constants.KubeSpanDefaultRoutingTable
RULE_PRIORITY = 32500                  # Talos's policy rule priority
MAX_RULE_PRIORITY = 32765              # below the main table's rule (32766)
NFT_TABLE = "kubespan"
FIREWALL_BACKEND = "auto"
FIREWALL_BACKENDS = ("auto", "nftables", "firewalld", "ufw", "none")
FIREWALLD_ZONE = ""                    # "": firewalld's default zone
ALLOW_DOWN_PEER_BYPASS = False         # machine.network.kubespan.allowDownPeerBypass
RELAY = False
PEER_ENDPOINT_FILTERS = None           # machine.network.kubespan.filters.peerEndpoints; None: dial every endpoint
# What discovered peers may claim (docs/security.md): the private ranges, CGNAT and the ULAs
ALLOWED_PEER_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
# Discovery (Talos's cluster.discovery with the service registry; rules in core/discovery_settings.py)
DISCOVERY_ENABLED = False              # cluster.discovery.enabled
DISCOVERY_ENDPOINT = ""                # "": none (Talos's own default is TALOS_DISCOVERY_ENDPOINT)
DISCOVERY_ENDPOINTS = ()               # several services at once (Talos >= 1.14)
DISCOVERY_INSECURE = False
DISCOVERY_CA_FILE = ""                 # "": the system roots
DISCOVERY_SERVER_NAME = ""             # "": the endpoint's host
HARVEST_EXTRA_ENDPOINTS = False        # machine.network.kubespan.harvestExtraEndpoints
MACHINE_TYPE = "worker"                # machine.type
MACHINE_TYPES = ("controlplane", "worker", "init")
API_SERVER_PORT = 6443                 # cluster.controlPlane.localAPIServerPort
MAX_DISCOVERY_SERVICES = 8             # discovery endpoints at once (Talos 1.14 runs one client per endpoint)
TALOS_DISCOVERY_ENDPOINT = "https://discovery.talos.dev/"  # Talos's public service (its default endpoint)
U32 = 0xFFFFFFFF
MARK_HINT = "a 32-bit firewall mark (Talos: fwmark 0x20, force 0x40, mask 0x60)"

# ------------------------------------------------------------------------------------------------ the table
# variable: role variable; options: module option paths it fills ("agent.interval": key of the dict option agent);
# kind: int | str | path | bool | list; low/high: inclusive range of an int; choices; hint: the fix named when a
# value is out of range; talos: the Talos machine-config key (or "" when Talos has none).
Setting = namedtuple("Setting", "variable options default kind low high choices hint talos")


def _s(variable, options, default, kind, low=None, high=None, choices=(), hint="", talos=""):
    return Setting(variable, tuple(options), default, kind, low, high, tuple(choices), hint, talos)


SETTINGS = (
    _s("kubespan_interface", ("interface",), LINK_NAME, "str", talos="(the link is named kubespan)"),
    _s("kubespan_mtu", ("mtu",), MTU, "int", MIN_MTU, MAX_MTU,
       hint="the MTU must be %d-%d (WireGuard over IPv6 needs %d; use the underlay MTU minus 80, e.g. %d for 1500)"
       % (MIN_MTU, MAX_MTU, MIN_MTU, MTU), talos="machine.network.kubespan.mtu"),
    _s("kubespan_listen_port", ("listen_port",), LISTEN_PORT, "int", 1, 65535, hint="the UDP port must be 1-65535"),
    _s("kubespan_fwmark", ("fwmark",), WIREGUARD_MARK, "int", 1, U32, hint=MARK_HINT),
    _s("kubespan_persistent_keepalive", ("persistent_keepalive",), PERSISTENT_KEEPALIVE, "int", 0, 65535,
       hint="seconds, 0-65535 (0 turns keepalives off)"),
    _s("kubespan_wireguard_implementation", ("implementation",), IMPLEMENTATION, "str", choices=IMPLEMENTATIONS),
    _s("kubespan_address_source", (), ADDRESS_SOURCE, "str", choices=ADDRESS_SOURCES),
    _s("kubespan_state_dir", ("state_dir",), STATE_DIR, "path"),
    _s("kubespan_lib_dir", ("agent.lib_dir",), LIB_DIR, "path"),
    _s("kubespan_agent_interval", ("agent.interval",), AGENT_INTERVAL, "int", MIN_AGENT_INTERVAL, MAX_AGENT_INTERVAL,
       hint="seconds between agent ticks, %d-%d" % (MIN_AGENT_INTERVAL, MAX_AGENT_INTERVAL)),
    _s("kubespan_agent_metrics_file", ("agent.metrics_file",), METRICS_FILE, "path"),
    _s(None, ("agent.command_path",), COMMAND_PATH, "path"),
    _s("kubespan_route_table", ("route_table",), ROUTE_TABLE, "int", 1, U32 - 1,
       hint="a routing table number, 1-%d (Talos: %d)" % (U32 - 1, ROUTE_TABLE)),
    _s("kubespan_rule_priority", ("rule_priority",), RULE_PRIORITY, "int", 1, MAX_RULE_PRIORITY,
       hint="a policy rule priority, 1-%d, below the main table's rule 32766 (Talos: %d)" % (MAX_RULE_PRIORITY, RULE_PRIORITY)),
    _s("kubespan_force_mark", ("force_mark",), FORCE_MARK, "int", 1, U32, hint=MARK_HINT),
    _s("kubespan_mark_mask", ("mark_mask",), MARK_MASK, "int", 1, U32, hint=MARK_HINT),
    _s("kubespan_nft_table", ("nft_table",), NFT_TABLE, "str"),
    _s("kubespan_firewall_backend", ("firewall_backend",), FIREWALL_BACKEND, "str", choices=FIREWALL_BACKENDS),
    _s("kubespan_firewalld_zone", ("firewalld_zone",), FIREWALLD_ZONE, "str"),
    _s("kubespan_allow_down_peer_bypass", ("allow_down_peer_bypass",), ALLOW_DOWN_PEER_BYPASS, "bool",
       talos="machine.network.kubespan.allowDownPeerBypass"),
    _s("kubespan_relay", ("relay",), RELAY, "bool"),
    _s("kubespan_filters_peer_endpoints", ("peer_endpoint_filters",), PEER_ENDPOINT_FILTERS, "list",
       talos="machine.network.kubespan.filters.peerEndpoints"),
    _s("kubespan_allowed_peer_networks", ("allowed_peer_networks",), list(ALLOWED_PEER_NETWORKS), "list"),
    # discovery (the dict option ``discovery`` of kubespan.mesh.mesh; the node agent keeps it in the desired state)
    _s("kubespan_discovery_enabled", ("discovery.enabled",), DISCOVERY_ENABLED, "bool",
       talos="cluster.discovery.enabled (+ registries.service)"),
    _s("kubespan_discovery_endpoint", ("discovery.endpoint",), DISCOVERY_ENDPOINT, "str",
       hint="https://host[:port]/ or host:port (TLS), http://host:port/ or host:port with kubespan_discovery_insecure "
       "(plaintext); Talos's public service is %s" % TALOS_DISCOVERY_ENDPOINT,
       talos="cluster.discovery.registries.service.endpoint"),
    _s("kubespan_discovery_endpoints", ("discovery.endpoints",), list(DISCOVERY_ENDPOINTS), "list",
       hint="a list of at most %d endpoints, each as kubespan_discovery_endpoint" % MAX_DISCOVERY_SERVICES,
       talos="cluster.discovery.registries.service.endpoint, one per service (Talos >= 1.14)"),
    _s("kubespan_discovery_insecure", ("discovery.insecure",), DISCOVERY_INSECURE, "bool"),
    _s("kubespan_discovery_ca_file", ("discovery.ca_file",), DISCOVERY_CA_FILE, "path"),
    _s("kubespan_discovery_server_name", ("discovery.server_name",), DISCOVERY_SERVER_NAME, "str"),
    _s("kubespan_harvest_extra_endpoints", ("discovery.harvest_extra_endpoints",), HARVEST_EXTRA_ENDPOINTS, "bool",
       talos="machine.network.kubespan.harvestExtraEndpoints"),
    _s("kubespan_machine_type", ("discovery.machine_type",), MACHINE_TYPE, "str", choices=MACHINE_TYPES,
       talos="machine.type"),
    _s("kubespan_api_server_port", ("discovery.api_server_port",), API_SERVER_PORT, "int", 1, 65535,
       hint="the Kubernetes API server's TCP port, 1-65535 (Talos: %d)" % API_SERVER_PORT,
       talos="cluster.controlPlane.localAPIServerPort"),
)

# Rules across settings: enforced by dataplane.DataPlaneConfig.validate, which the early check (settingscheck) runs
# on the user's values merged with these defaults, so a value the data plane refuses never reaches a host.
CROSS_FIELD_RULES = (
    (("kubespan_fwmark", "kubespan_mark_mask"), "the WireGuard mark has no bits outside the mark mask"),
    (("kubespan_force_mark", "kubespan_mark_mask"), "the force mark has no bits outside the mark mask"),
    (("kubespan_fwmark", "kubespan_force_mark"), "the WireGuard mark and the force mark differ"),
    (("kubespan_route_table",), "the routing table is none of 0, 253 (default), 254 (main), 255 (local)"),
)
# Rules across the discovery settings: enforced by discovery_settings.normalize, which the node agent
# (discovery_agent.normalize_settings), the module and the early check all run.
DISCOVERY_RULES = (
    (("kubespan_discovery_enabled", "kubespan_discovery_endpoint", "kubespan_discovery_endpoints"),
     "discovery enabled needs an endpoint; a non-empty endpoints list replaces the single endpoint"),
    (("kubespan_discovery_endpoint", "kubespan_discovery_endpoints", "kubespan_discovery_insecure"),
     "each endpoint is https://host[:port]/, http://host[:port]/ or host:port (TLS unless insecure)"),
    (("kubespan_discovery_ca_file", "kubespan_discovery_insecure", "kubespan_discovery_endpoint"),
     "a CA file only with TLS: not with kubespan_discovery_insecure nor an http:// endpoint"),
)

BY_VARIABLE: Dict[str, Setting] = {s.variable: s for s in SETTINGS if s.variable}
# module option path -> setting
BY_OPTION: Dict[str, Setting] = {o: s for s in SETTINGS for o in s.options}
VARIABLES = tuple(BY_VARIABLE)


def default(variable: str):
    """The default of a role variable (a fresh copy: lists may be changed by the caller)."""
    return copy.deepcopy(BY_VARIABLE[variable].default)


def discovery_defaults() -> dict:
    """The ``discovery`` option's keys -> the model's defaults (copies), in the model's order."""
    return {path.partition(".")[2]: copy.deepcopy(s.default) for path, s in BY_OPTION.items() if path.startswith("discovery.")}


def effective(user: Optional[dict]) -> dict:
    """Every model-held role variable -> its value: the user's when given (``user`` holds only what the user set),
    else the model's default. Other keys of ``user`` are ignored."""
    user = user or {}
    return {name: copy.deepcopy(user[name]) if name in user else default(name) for name in VARIABLES}


def fill_options(params: dict, options: Optional[Iterable[str]] = None) -> dict:
    """Fill the module options the caller left unset (None) with the model's defaults, in place; returns ``params``.

    Only options present in ``params`` are filled (a module declares the ones it has); a nested option
    (``agent.lib_dir``) only when its dict option is given. ``options``: limit to these paths."""
    for path, setting in BY_OPTION.items():
        if options is not None and path not in options:
            continue
        holder, _dot, key = path.rpartition(".")
        target = params.get(holder) if holder else params
        if isinstance(target, dict) and key in target and target[key] is None:
            target[key] = copy.deepcopy(setting.default)
    return params


def option_variables(names: Iterable[str]) -> Dict[str, str]:
    """Top-level module option -> role variable, for the given option names that are model-held."""
    return {name: BY_OPTION[name].variable for name in names if name in BY_OPTION and BY_OPTION[name].variable}


def int_rules() -> List[Setting]:
    """The settings that are integers with a range, in the model's order."""
    return [s for s in SETTINGS if s.kind == "int" and s.variable]
