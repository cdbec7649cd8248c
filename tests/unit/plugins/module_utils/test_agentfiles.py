# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The node agent's files: bundle determinism, unit rendering, install idempotence, unit-state planning."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agentfiles
from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agentfiles import (
    AGENT_TIMER,
    FAILCLOSED_SERVICE,
    WIREGUARD_GO_UNIT,
    AgentFilesError,
    AgentOptions,
    decode_bundle,
    install,
    parse_show,
    plan_units,
    render_files,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.host import bundle

SRC = os.path.dirname(os.path.dirname(agentfiles.__file__))  # plugins/module_utils, above the layers


class Recorder:
    """Stands in for systemctl, which cannot run without systemd as PID 1 (the molecule scenarios run the real one)."""

    def __init__(self, returncode=0, stdout=""):
        self.calls, self.returncode, self.stdout = [], returncode, stdout

    def __call__(self, *args):
        self.calls.append(args)
        return subprocess.CompletedProcess(args, self.returncode, self.stdout)


def opts(tmp_path, **kw):
    base = dict(bundle=bundle.build_from_dir(SRC)[0], lib_dir=str(tmp_path / "lib"), state_dir=str(tmp_path / "state"),
                command_path=str(tmp_path / "sbin" / "kubespan"), unit_dir=str(tmp_path / "units"))
    base.update(kw)
    return AgentOptions(**base)


def test_bundle_is_deterministic_and_runs(tmp_path):
    one, digest1 = bundle.build_from_dir(SRC)
    two, digest2 = bundle.build_from_dir(SRC)
    assert one == two and digest1 == digest2
    names = zipfile.ZipFile(io.BytesIO(one)).namelist()
    assert names[0] == "kubespan_mesh/__init__.py" and names[-1] == "__main__.py"
    assert "kubespan_mesh/agent/cli.py" in names and "kubespan_mesh/agent/agentfiles.py" in names
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(one)
    res = subprocess.run([sys.executable, str(pyz), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "agent" in res.stdout


def test_bundle_changes_with_a_source(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\n")
    first = bundle.build_from_dir(str(tmp_path))
    (tmp_path / "b.py").write_text("x = 2\n")
    second = bundle.build_from_dir(str(tmp_path))
    assert first[0] != second[0] and first[1] != second[1]


def test_render_defaults_and_metrics_dir(tmp_path):
    o = opts(tmp_path)
    files = {os.path.basename(p): data.decode(errors="replace") for p, data, _mode in render_files(o)}
    service = files["kubespan-agent.service"]
    state = str(tmp_path / "state")
    assert "ExecStart=%s agent --metrics-file %s/metrics.prom" % (o.command_path, state) in service
    assert "ExecStartPre" not in service and service.count("ReadWritePaths=") == 1
    assert "IPAddressDeny=any" in service and "CapabilityBoundingSet=CAP_NET_ADMIN" in service
    assert "OnUnitActiveSec=30\n" in files["kubespan-agent.timer"]
    assert "ExecStart=/usr/bin/wireguard-go -f kubespan\n" in files[WIREGUARD_GO_UNIT]
    assert "state_dir=%r" % state in files["kubespan"] and files["kubespan"].startswith("#!/usr/bin/python3\n")
    custom = opts(tmp_path, metrics_file="/var/lib/node_exporter/ks.prom", interval=7, discovery_endpoint="disc.example:443",
                  interface="ks0")
    other = {os.path.basename(p): data.decode(errors="replace") for p, data, _mode in render_files(custom)}
    service = other["kubespan-agent.service"]
    assert "ExecStartPre=+/bin/mkdir -p -m 0755 /var/lib/node_exporter\n" in service
    assert "ReadWritePaths=/var/lib/node_exporter\n" in service
    assert "IPAddressDeny" not in service.replace("# No IPAddressDeny", "")
    assert "OnUnitActiveSec=7\n" in other["kubespan-agent.timer"]
    assert "-f ks0\n" in other[WIREGUARD_GO_UNIT]


@pytest.mark.parametrize("field,value,needle", [
    ("lib_dir", "relative/dir", "lib_dir"),
    ("state_dir", "/var/lib/kube span", "state_dir"),
    ("metrics_file", "/var/lib/%h/m.prom", "metrics_file"),
    ("lib_dir", "/usr/lib/kubespan/", "trailing"),
    ("interval", 0, "interval 0"),
    ("interval", True, "interval True"),
    ("interface", "a-very-long-interface-name", "interface"),
    ("bundle", b"not a zip", "bundle"),
])
def test_bad_options_name_the_value(tmp_path, field, value, needle):
    with pytest.raises(AgentFilesError, match=needle):
        render_files(opts(tmp_path, **{field: value}))


def test_decode_bundle():
    assert decode_bundle(base64.b64encode(b"PK\x03\x04").decode()) == b"PK\x03\x04"
    with pytest.raises(AgentFilesError, match="base64"):
        decode_bundle("not base64!")


def test_install_writes_then_is_idempotent(tmp_path):
    o = opts(tmp_path)
    run = Recorder()
    check = install(o, check_mode=True, run=run)
    assert len(check.changes) == 7 and check.units_changed and run.calls == []
    assert not (tmp_path / "units").exists()
    first = install(o, check_mode=False, run=run)
    assert [c.split()[0] for c in first.changes] == ["install"] * 7
    assert run.calls == [("daemon-reload",)]
    assert oct(os.stat(o.command_path).st_mode & 0o777) == "0o755"
    assert oct(os.stat(o.lib_dir + "/kubespan-agent.pyz").st_mode & 0o777) == "0o644"
    again = install(o, check_mode=False, run=run)
    assert again.changes == [] and not again.units_changed and run.calls == [("daemon-reload",)]
    # a new bundle is not a unit change: no reload
    new = opts(tmp_path, bundle=bundle.build([("x.py", b"")]))
    res = install(new, check_mode=False, run=run)
    assert res.changes == ["update %s/kubespan-agent.pyz" % o.lib_dir] and not res.units_changed
    assert "sha256" in res.diffs[0]["after"] and len(run.calls) == 1
    # a changed mode alone is repaired; a changed interval rewrites the timer and reloads
    os.chmod(o.command_path, 0o777)
    res = install(new, check_mode=False, run=run)
    assert res.changes == ["update %s (mode 0755)" % o.command_path]
    res = install(opts(tmp_path, bundle=new.bundle, interval=60), check_mode=False, run=run)
    assert res.changes == ["update %s/%s" % (o.unit_dir, AGENT_TIMER)] and run.calls[-1] == ("daemon-reload",)
    assert "OnUnitActiveSec=30" in res.diffs[0]["before"] and "OnUnitActiveSec=60" in res.diffs[0]["after"]


def test_failed_reload_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="daemon-reload failed: boom"):
        install(opts(tmp_path), check_mode=False, run=Recorder(returncode=1, stdout="boom"))


SHOW = """Id=kubespan-wireguard-go.service
UnitFileState=enabled
ActiveState=active

Id=kubespan-agent.timer
UnitFileState=enabled
ActiveState=active

Id=kubespan-failclosed.service
UnitFileState=enabled
ActiveState=active
"""


def test_parse_show_and_plan_units():
    states = parse_show(SHOW)
    assert states[AGENT_TIMER]["ActiveState"] == "active"
    assert plan_units(states, userspace=True) == []
    assert plan_units(states, userspace=False) == [("disable", WIREGUARD_GO_UNIT)]
    fresh = parse_show("Id=kubespan-wireguard-go.service\nUnitFileState=\nActiveState=inactive\n\n"
                       "Id=kubespan-agent.timer\nUnitFileState=disabled\nActiveState=inactive\n")
    assert plan_units(fresh, userspace=True) == [("enable", WIREGUARD_GO_UNIT), ("enable", FAILCLOSED_SERVICE),
                                                 ("enable", "--now", AGENT_TIMER)]
    assert plan_units(fresh, userspace=False) == [("enable", FAILCLOSED_SERVICE), ("enable", "--now", AGENT_TIMER)]
    stopped = parse_show(SHOW.replace("ActiveState=active\n", "ActiveState=inactive\n", 2))
    assert plan_units(stopped, userspace=True) == [("enable", "--now", AGENT_TIMER)]


def test_enable_units_check_mode_makes_no_call():
    run = Recorder(stdout=SHOW.replace("UnitFileState=enabled\nActiveState=active\n\nId=kubespan-agent.timer",
                                       "UnitFileState=disabled\nActiveState=inactive\n\nId=kubespan-agent.timer"))
    assert agentfiles.enable_units(userspace=True, check_mode=True, run=run) == [
        "systemctl enable %s" % WIREGUARD_GO_UNIT]
    assert len(run.calls) == 1 and run.calls[0][0] == "show"
    assert agentfiles.enable_units(userspace=True, check_mode=False, run=run) == [
        "systemctl enable %s" % WIREGUARD_GO_UNIT]
    assert run.calls[-1] == ("enable", WIREGUARD_GO_UNIT)


def test_failclosed_unit_runs_early_and_is_enabled(tmp_path):
    """The fail-closed unit starts before the network, without the default dependencies, from the command."""
    o = opts(tmp_path)
    files = {os.path.basename(p): data.decode(errors="replace") for p, data, _mode in render_files(o)}
    unit = files[FAILCLOSED_SERVICE]
    for line in ("DefaultDependencies=no", "After=local-fs.target systemd-modules-load.service", "Wants=network-pre.target",
                 "Type=oneshot", "ExecStart=%s failclosed" % o.command_path, "WantedBy=sysinit.target"):
        assert line + "\n" in unit
    assert "Before=network-pre.target " in unit and "Requires=" not in unit
    assert plan_units(parse_show(SHOW.replace("failclosed.service\nUnitFileState=enabled", "failclosed.service\nUnitFileState=disabled")),
                      userspace=True) == [("enable", FAILCLOSED_SERVICE)]


def test_networkd_is_told_to_keep_the_mesh_rules_and_routes(tmp_path):
    """systemd-networkd removes foreign rules and routes when it starts (found by tests/vm: a boot leak after the
    fail-closed unit had run); the drop-in beside the unit directory keeps them."""
    o = opts(tmp_path)
    install(o, check_mode=False, run=Recorder())
    path = tmp_path / "networkd.conf.d" / "kubespan.conf"
    lines = path.read_text().splitlines()
    assert "[Network]" in lines and "ManageForeignRoutingPolicyRules=no" in lines and "ManageForeignRoutes=no" in lines
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
