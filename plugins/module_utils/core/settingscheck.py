# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Check a host's KubeSpan role variables before anything is changed. Pure.

The modules refuse bad values with the same rules and messages (engine.Settings calls ``settings_errors``),
but only when they run, after earlier tasks may already have changed the host. The role calls ``settings_errors`` (through the ``kubespan.mesh.settings_errors``
filter) in its first task, so a bad CIDR, port, MTU or firewall backend stops the run on every host
before the first change, with a message naming the variable, the value and the fix.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import List, Optional

from . import dataplane, discovery_settings
from . import settings as model
from .endpoints import parse_filter
from .wgtypes import parse_endpoint

MIN_MTU = model.MIN_MTU
IMPLEMENTATIONS = model.IMPLEMENTATIONS
# Paths end up unquoted in unit files: systemd would split them at white space and expand "%" specifiers.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+\-/@:,=]*$")
UNIT_PATH_RULE = ("must be an absolute path of letters, digits and ._+-/@:,= (no spaces, no '%', no '//', no trailing "
                  "'/'), since it is written unquoted into systemd units")
# DataPlaneConfig field -> the role variable that sets it (the data plane's own rules, named for the user)
DATAPLANE_VARIABLES = {
    "mtu": "kubespan_mtu",
    "link": "kubespan_interface",
    "route_table": "kubespan_route_table",
    "rule_priority": "kubespan_rule_priority",
    "wireguard_mark": "kubespan_fwmark",
    "force_mark": "kubespan_force_mark",
    "mark_mask": "kubespan_mark_mask",
    "nft_table": "kubespan_nft_table",
}
# Role variables that become paths in the agent's systemd units (agentfiles.AgentOptions)
UNIT_PATH_VARIABLES = ("kubespan_state_dir", "kubespan_lib_dir", "kubespan_agent_metrics_file")
REGENERATE_SECRETS = ("regenerate them with: ansible-playbook kubespan.mesh.gen_secrets -e kubespan_secrets_file=<your secrets "
                      "file> -e kubespan_secrets_force=true (this re-keys the cluster: re-run every node), then ansible-vault "
                      "encrypt it")


def _int(errors: List[str], settings: dict, name: str, low: int, high: int, hint: str) -> None:
    if name not in settings:
        return
    value = settings[name]
    try:
        number = int(str(value).strip(), 0)
        ok = not isinstance(value, bool) and low <= number <= high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        errors.append("%s=%s: %s" % (name, value, hint))


def unit_path_problem(value) -> bool:
    """True when ``value`` may not stand unquoted in a systemd unit as a path (agentfiles.AgentOptions uses it too)."""
    return (not isinstance(value, str) or not _SAFE_PATH.match(value) or "//" in value
            or (value.endswith("/") and value != "/"))


def _number(value):
    try:
        return None if isinstance(value, bool) else int(str(value).strip(), 0)
    except (TypeError, ValueError):
        return None


def _dataplane(errors: List[str], settings: dict, checked: int) -> None:
    """Every value the data plane would refuse (dataplane.DataPlaneConfig.validate, the very rules the module and
    the agent apply) is refused here, named by its role variable, so the role stops before the first change.
    Runs only when the single-value checks above found nothing (``checked`` errors before them)."""
    names = [var for var in DATAPLANE_VARIABLES.values() if var in settings]
    if not names or any(error.startswith(tuple(names)) for error in errors[checked:]):
        return
    values = {}
    for field, var in DATAPLANE_VARIABLES.items():
        if var in settings:
            values[field] = settings[var] if field in ("link", "nft_table") else _number(settings[var])
    try:
        dataplane.DataPlaneConfig(**values).validate()
    except dataplane.DataPlaneValueError as exc:
        named = [DATAPLANE_VARIABLES[f] for f in exc.fields if f in DATAPLANE_VARIABLES]
        shown = ", ".join("%s=%s" % (var, settings.get(var, "(default)")) for var in named) or "the data plane settings"
        errors.append("%s: %s: %s" % (shown, exc, _DATAPLANE_FIX.get(exc.fields[0] if exc.fields else "", "fix the value")))


_DATAPLANE_FIX = {
    "mtu": "use the underlay MTU minus 80, e.g. 1420 for 1500",
    "link": "choose another interface name (Talos: kubespan)",
    "route_table": "choose a free table number (Talos: 180)",
    "rule_priority": "use 1-%d, below the main table's rule 32766 (Talos: 32500)" % dataplane.MAX_RULE_PRIORITY,
    "wireguard_mark": "use marks inside kubespan_mark_mask that differ from each other (Talos: fwmark 0x20, force 0x40, mask 0x60)",
    "force_mark": "use marks inside kubespan_mark_mask that differ from each other (Talos: fwmark 0x20, force 0x40, mask 0x60)",
    "mark_mask": "use a mask that covers both marks (Talos: 0x60)",
    "nft_table": "use a letter, then letters, digits, '_', '.' or '-' (default: kubespan)",
}


# discovery option key -> the role variable that sets it (the settings model's ``discovery.*`` options)
DISCOVERY_VARIABLES = {s.options[0].partition(".")[2]: s.variable for s in model.SETTINGS
                       if s.variable and s.options and s.options[0].startswith("discovery.")}
_TRUE = ("true", "yes", "on", "1", "y", "t")
_FALSE = ("false", "no", "off", "0", "n", "f")


def _boolean(value):
    """An Ansible boolean (what the module's ``type: bool`` accepts), None when ``value`` is none."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int, float)) else None
    return True if text in _TRUE else False if text in _FALSE else None


def _discovery(errors: List[str], settings: dict, checked: int) -> None:
    """Every discovery value the node agent would refuse (discovery_settings.normalize, the very rules the module and
    the agent apply) is refused here, before the first change. Runs only when the single-value checks found nothing
    wrong with a discovery variable."""
    names = [var for var in DISCOVERY_VARIABLES.values() if var in settings]
    if not names or any(error.startswith(tuple(names)) for error in errors[checked:]):
        return
    raw = {}
    for key, var in DISCOVERY_VARIABLES.items():
        if var in settings:
            kind = model.BY_VARIABLE[var].kind
            raw[key] = _boolean(settings[var]) if kind == "bool" else _number(settings[var]) if kind == "int" else settings[var]
    try:
        discovery_settings.normalize(raw)
    except discovery_settings.DiscoverySettingsError as exc:
        errors.append(str(exc))


def _list(errors: List[str], settings: dict, name: str) -> list:
    value = settings.get(name)
    if value is None:
        return []
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        errors.append("%s=%r: must be a list (YAML: one item per line, '- 10.244.1.0/24')" % (name, value))
        return []
    return list(value)


def _allowed_peer_networks(errors: List[str], settings: dict) -> None:
    """kubespan_allowed_peer_networks: a list of CIDRs bounding what discovered peers may claim (docs/security.md)."""
    name = "kubespan_allowed_peer_networks"
    for item in _list(errors, settings, name):
        try:
            ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            errors.append("%s: %r is not a network in CIDR form: list the networks discovered peers may claim, e.g. "
                          "'- 10.0.0.0/8' or '- 203.0.113.7/32' for a Talos node with a public node address" % (name, item))


# ----------------------------------------------------------------------------------------- cluster secrets
def cluster_secret_problem(secret) -> Optional[str]:
    """What is wrong with a cluster secret (standard base64 of 32 bytes), None when it is fine. Never the value."""
    if secret is None or (isinstance(secret, str) and not secret.strip()):
        return "kubespan_cluster_secret is not set"
    if not isinstance(secret, str):
        return "kubespan_cluster_secret is a %s, not a base64 string (value hidden)" % type(secret).__name__
    try:
        raw = base64.b64decode(secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "kubespan_cluster_secret is not valid base64 (%d characters, value hidden)" % len(secret.strip())
    if len(raw) != 32:
        return "kubespan_cluster_secret decodes to %d bytes, 32 needed (value hidden)" % len(raw)
    return None


def cluster_secret_errors(settings: dict) -> List[str]:
    """The problems of kubespan_cluster_id and kubespan_cluster_secret when ``settings`` has them; a bad (not missing)
    secret's message says how to regenerate it. No message contains the secret."""
    errors = []
    if "kubespan_cluster_secret" in settings:
        problem = cluster_secret_problem(settings["kubespan_cluster_secret"])
        if problem:
            errors.append(problem if problem.endswith("not set") else "%s: %s" % (problem, REGENERATE_SECRETS))
    if "kubespan_cluster_id" in settings:
        cluster_id = settings["kubespan_cluster_id"]
        if not isinstance(cluster_id, str) or not cluster_id.strip():
            errors.append("kubespan_cluster_id is not set")
        elif len(cluster_id.strip()) > 256 or any(ord(c) < 33 or ord(c) > 126 for c in cluster_id.strip()):
            errors.append("kubespan_cluster_id must be 1-256 printable ASCII characters without spaces (value hidden)")
    return errors


def settings_errors(settings: dict) -> List[str]:
    """Every problem of the given role variables (names as in roles/kubespan/defaults), [] when fine."""
    errors: List[str] = cluster_secret_errors(settings)
    checked = len(errors)
    for rule in model.int_rules():  # the model's ranges
        _int(errors, settings, rule.variable, rule.low, rule.high, rule.hint)
    for rule in model.SETTINGS:  # the model's choices
        value = settings.get(rule.variable) if rule.variable else None
        if rule.choices and value is not None and value not in rule.choices:
            errors.append("%s=%r: use one of %s" % (rule.variable, value, ", ".join(rule.choices)))
    for name in ("kubespan_filters_endpoints", "kubespan_filters_peer_endpoints"):
        for item in _list(errors, settings, name):
            try:
                parse_filter(item)
            except ValueError as exc:
                errors.append("%s: %s" % (name, exc))
    for name in ("kubespan_kubernetes_networks", "kubespan_service_networks", "kubespan_filters_exclude_advertised_networks"):
        for item in _list(errors, settings, name):
            try:
                ipaddress.ip_network(str(item).strip(), strict=False)
            except ValueError as exc:
                errors.append("%s: %r is not a network in CIDR form (e.g. 10.244.1.0/24): %s" % (name, item, exc))
    for item in _list(errors, settings, "kubespan_extra_announced_endpoints"):
        try:
            parse_endpoint(str(item))
        except ValueError as exc:
            errors.append("kubespan_extra_announced_endpoints: %r is not ip:port or [ipv6]:port (%s)" % (item, exc))
    _allowed_peer_networks(errors, settings)
    for rule in model.SETTINGS:  # the model's booleans (kubespan_relay: below, with what it does)
        if rule.kind == "bool" and rule.variable in settings and rule.variable != "kubespan_relay" \
                and settings[rule.variable] is not None and _boolean(settings[rule.variable]) is None:
            errors.append("%s=%r: must be true or false" % (rule.variable, settings[rule.variable]))
    relay = settings.get("kubespan_relay")
    if relay is not None and not isinstance(relay, bool) and str(relay).strip().lower() not in ("true", "false", "yes", "no", "1", "0"):
        errors.append("kubespan_relay=%r: must be true or false (true makes this member forward mesh traffic for peers that "
                      "cannot reach each other)" % (relay,))
    interface = settings.get("kubespan_interface")
    if interface is not None and (not isinstance(interface, str) or not dataplane.IFNAME.match(interface)):
        errors.append("kubespan_interface=%r: an interface name of %s" % (interface, dataplane.IFNAME_RULE))
    for name in UNIT_PATH_VARIABLES:
        if name in settings and unit_path_problem(settings[name]):
            errors.append("%s=%r: %s" % (name, settings[name], UNIT_PATH_RULE))
    _dataplane(errors, settings, checked)
    _discovery(errors, settings, checked)
    return errors
