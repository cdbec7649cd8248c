# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""kubespan.mesh.mesh's request and result mapping, through AnsibleModule as a task runs it: the module parses the
request and hands it to module_utils/meshrun.run (replaced here by a recorder, so no host is touched), and turns the
result into Ansible's return (meshrun.finish: compact result, peer count, observed). The steps inside meshrun.run
are covered by the molecule scenarios and the kernel test."""

from __future__ import annotations

import ast
import base64
import inspect
import io
import json
import textwrap
from contextlib import redirect_stdout

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.discovery.discovery_agent import default_settings
from ansible_collections.kubespan.mesh.plugins.module_utils.modules import meshrun
from ansible_collections.kubespan.mesh.plugins.modules import mesh

SECRET = base64.b64encode(bytes(range(32))).decode()
PEERS = [{"name": "n%d" % i, "public_key": base64.b64encode(bytes([i]) * 32).decode(), "address": "fd00::%d" % i}
         for i in range(1, 4)]


def call(monkeypatch, args, result=None, error=None, check=False):
    """(the request meshrun.run got, what Ansible received)."""
    from ansible.module_utils.testing import patch_module_args
    seen = {}

    def fake_run(p, check_mode, diff, warn):
        seen.update(p=dict(p), check_mode=check_mode, diff=diff, warn_owner=getattr(warn, "__self__", None))
        warn("a warning from the run")
        if error is not None:
            raise error
        return dict(result or {"changed": False, "changes": [], "peers": list(PEERS), "implementation": "userspace"})

    monkeypatch.setattr(mesh, "run", fake_run)
    out = io.StringIO()
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=True)), redirect_stdout(out), \
            pytest.raises(SystemExit):
        mesh.main()
    return seen, json.loads(out.getvalue())


def test_main_is_thin():
    source = textwrap.dedent(inspect.getsource(mesh.main))
    assert len(source.splitlines()) <= 40
    calls = {n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id
             for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)}
    assert calls <= {"AnsibleModule", "run_guarded", "run", "exit_json", "finish"}, calls


def test_request_reaches_the_run_with_the_discovery_dict_and_the_result_comes_back(monkeypatch):
    seen, out = call(monkeypatch, {"cluster_id": "c", "cluster_secret": SECRET, "peers": PEERS,
                                   "discovery": {"enabled": True, "endpoints": ["10.0.0.5:3000"], "insecure": True}},
                     check=True)
    assert seen["check_mode"] is True and seen["diff"] is True
    disc = seen["p"]["discovery"]
    assert disc["enabled"] is True and disc["endpoints"] == ["10.0.0.5:3000"] and disc["insecure"] is True
    # unset suboptions are None in the request: the agent's defaults fill them, written once there
    assert disc["machine_type"] is None and disc["api_server_port"] is None
    assert meshrun.discovery_request(seen["p"])["machine_type"] == default_settings()["machine_type"]
    assert out["peers"] == PEERS and out["peer_count"] == 3
    # module.warn: in the result's warnings, or shown at once when a display is already set up in this process
    assert seen["warn_owner"] is not None
    assert SECRET not in json.dumps(out)


def test_compact_result_turns_the_n_sized_parts_into_counts(monkeypatch):
    _seen, out = call(monkeypatch, {"cluster_id": "c", "cluster_secret": SECRET, "peers": PEERS,
                                    "members": ["n1", "n2", "n3"], "compact_result": True})
    assert "peers" not in out and out["peer_count"] == 3
    args = out["invocation"]["module_args"]
    assert args["peers"] == "3 affiliates" and args["members"] == "3 hosts"
    assert args["cluster_secret"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_an_expected_error_fails_the_task_with_its_message(monkeypatch):
    _seen, out = call(monkeypatch, {"cluster_id": "c", "cluster_secret": SECRET},
                      error=meshrun.ReconcileError("kubespan_mtu=70000: use 1280-65535"))
    assert out["failed"] is True and out["msg"] == "kubespan_mtu=70000: use 1280-65535"


def test_required_values_are_checked_before_the_run(monkeypatch):
    seen, out = call(monkeypatch, {"peers": PEERS})
    assert out["failed"] is True and "cluster_id" in out["msg"] and not seen


def test_a_bad_discovery_value_names_the_setting():
    with pytest.raises(meshrun.ReconcileError, match="kubespan_machine_type"):
        meshrun.discovery_request({"discovery": {"machine_type": "master"}})


def test_discovery_unset_is_off():
    assert meshrun.discovery_request({})["enabled"] is False
    assert meshrun.discovery_request({"discovery": None})["endpoints"] == []


def test_finish_reports_observed_only_without_discovery(monkeypatch):
    monkeypatch.setattr(meshrun, "report_observed", lambda state_dir, peers: ["seen"])
    base = {"state": "present", "report_observed": True, "peers": [], "state_dir": "/x"}
    assert meshrun.finish(dict(base, discovery=None), {"peers": []})["observed"] == ["seen"]
    assert "observed" not in meshrun.finish(dict(base, discovery={"enabled": True}), {"peers": []})
    assert "observed" not in meshrun.finish(dict(base, discovery=None), {"failed": True})
