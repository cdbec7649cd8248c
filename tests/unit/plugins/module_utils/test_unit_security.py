# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Least privilege of the systemd units (docs/security.md#least-privilege): the sandbox and resource directives of
the rendered agent, wireguard-go and discovery service units, and their `systemd-analyze security` exposure
against tests/unit-security-ceilings.txt (offline analysis of the rendered files; skipped without
systemd-analyze >= 250 on the test host). The molecule scenarios check the same ceilings on installed units."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import jinja2
import pytest
import yaml

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agentfiles
from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agentfiles import AGENT_SERVICE, WIREGUARD_GO_UNIT, AgentOptions, render_files
from ansible_collections.kubespan.mesh.plugins.module_utils.host import bundle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ROLE = os.path.join(ROOT, "roles", "discovery_service")
DISCOVERY_UNIT = "kubespan-discovery.service"


def directives(text):
    """The unit's directives as (key, value) pairs in order (comments and section headers left out)."""
    return [tuple(line.split("=", 1)) for line in text.splitlines() if "=" in line and not line.startswith(("#", "["))]


def values(text, key):
    return [v for k, v in directives(text) if k == key]


def node_units(**kw):
    o = AgentOptions(bundle=bundle.build_from_dir(os.path.dirname(os.path.dirname(agentfiles.__file__)))[0], **kw)
    return {os.path.basename(p): data.decode() for p, data, _mode in render_files(o) if p.endswith((".service", ".timer"))}


def discovery_unit(**overrides):
    """The role's unit template rendered with its defaults (Ansible's filters it uses, with their meaning)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")), undefined=jinja2.StrictUndefined)
    env.filters.update(quote=shlex.quote, dirname=os.path.dirname, regex_replace=lambda v, pat, rep: re.sub(pat, rep, v),
                       bool=lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("yes", "on", "true", "1"))
    variables = {}
    for name in ("defaults", "vars"):
        with open(os.path.join(ROLE, name, "main.yml")) as handle:
            variables.update(yaml.safe_load(handle))
    variables.update(ansible_managed="managed", **overrides)
    return env.get_template(DISCOVERY_UNIT + ".j2").render(**variables)


def ceilings():
    with open(os.path.join(ROOT, "tests", "unit-security-ceilings.txt")) as handle:
        rows = [line.split() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    return {row[0]: float(row[1]) for row in rows}


def test_wireguard_go_is_sandboxed():
    unit = node_units()[WIREGUARD_GO_UNIT]
    d = dict(directives(unit))
    assert d["CapabilityBoundingSet"] == "CAP_NET_ADMIN" and d["AmbientCapabilities"] == ""
    assert d["NoNewPrivileges"] == "yes" and d["DevicePolicy"] == "closed"
    assert values(unit, "DeviceAllow") == ["/dev/net/tun rw"]
    assert "PrivateDevices" not in d  # it would hide /dev/net/tun
    # Read-only system; the only writable place is the UAPI socket directory, kept across restarts (the agent
    # and `wg` find the socket there; other userspace WireGuard interfaces may have theirs there too).
    assert d["ProtectSystem"] == "strict" and "ReadWritePaths" not in d
    assert d["RuntimeDirectory"] == "wireguard" and d["RuntimeDirectoryPreserve"] == "yes"
    assert values(unit, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert d["RestrictAddressFamilies"] == "AF_UNIX AF_NETLINK AF_INET AF_INET6"
    assert d["SystemCallArchitectures"] == "native" and d["MemoryDenyWriteExecute"] == "yes"
    assert "User" not in d  # root: the agent (root without CAP_DAC_OVERRIDE) must open the 0700 socket
    assert d["ExecStart"] == "/usr/bin/wireguard-go -f kubespan"


def test_agent_keeps_its_sandbox():
    d = dict(directives(node_units()[AGENT_SERVICE]))
    assert d["CapabilityBoundingSet"] == "CAP_NET_ADMIN" and d["ProtectSystem"] == "strict"
    assert d["PrivateDevices"] == "yes" and d["PrivateMounts"] == "yes" and d["IPAddressDeny"] == "any"


def test_discovery_service_runs_as_its_own_user_without_capabilities():
    unit = discovery_unit()
    d = dict(directives(unit))
    assert d["User"] == d["Group"] == "kubespan-discovery"
    assert d["CapabilityBoundingSet"] == "" and d["AmbientCapabilities"] == ""
    assert d["StateDirectory"] == "kubespan-discovery" and d["StateDirectoryMode"] == "0700"
    assert "ReadWritePaths" not in d and d["ProtectSystem"] == "strict" and d["NoNewPrivileges"] == "yes"
    assert values(unit, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert "--state-file /var/lib/kubespan-discovery/state.json" in d["ExecStart"]


def test_discovery_service_variants():
    low = dict(directives(discovery_unit(discovery_service_port=443)))
    assert low["CapabilityBoundingSet"] == low["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert "StateDirectory" not in dict(directives(discovery_unit(discovery_service_state_file="")))
    nested = dict(directives(discovery_unit(discovery_service_state_file="/var/lib/ks/disc/state.json")))
    assert nested["StateDirectory"] == "ks/disc"
    tls = dict(directives(discovery_unit(discovery_service_tls_cert_file="c.pem", discovery_service_tls_key_file="k.pem")))
    assert "--tls-key /etc/kubespan-discovery/tls.key" in tls["ExecStart"] and tls["User"] == "kubespan-discovery"


def all_service_units():
    units = {name: text for name, text in node_units().items() if name.endswith(".service")}
    units[DISCOVERY_UNIT] = discovery_unit()
    units[agentfiles.WATCH_SERVICE] = node_units(discovery_endpoint="10.0.0.5:3000")[agentfiles.WATCH_SERVICE]  # discovery on only
    return units


@pytest.mark.parametrize("name", sorted(all_service_units()))
def test_every_service_is_bounded(name):
    d = dict(directives(all_service_units()[name]))
    for key in ("MemoryMax", "TasksMax", "TimeoutStartSec"):
        assert d.get(key), "%s lacks %s=" % (name, key)


def offline_analyze():
    exe = shutil.which("systemd-analyze")
    if not exe:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"systemd (\d+)", version)
    return exe if match and int(match.group(1)) >= 250 else None


@pytest.mark.parametrize("name", sorted(all_service_units()))
def test_exposure_score_within_ceiling(tmp_path, name):
    # not a skip: a machine without it would silently drop the ceiling check (scripts/setup.sh installs systemd)
    assert offline_analyze(), "needs systemd-analyze >= 250 (security --offline=yes): apt-get install systemd"
    limits = ceilings()
    assert name in limits, "add %s to tests/unit-security-ceilings.txt" % name
    path = tmp_path / name
    path.write_text(all_service_units()[name])
    res = subprocess.run([offline_analyze(), "security", "--offline=yes", "--no-pager", str(path)],
                         capture_output=True, text=True, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert match, res.stdout + res.stderr
    score = float(match.group(1))
    print("systemd-analyze security %s: %.1f (ceiling %.1f)" % (name, score, limits[name]))
    assert score <= limits[name], "%s: exposure %.1f above its ceiling %.1f:\n%s" % (name, score, limits[name], res.stdout)
