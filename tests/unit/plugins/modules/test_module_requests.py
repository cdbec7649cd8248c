# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Request and result mapping of the modules that need no root: kubespan.mesh.cluster_secrets and
kubespan.mesh.identity, run through AnsibleModule as a task runs them (arguments in, JSON result out):
check mode, diff, idempotence, the error text (names the file and line, never a secret)."""

from __future__ import annotations

import io
import json
import os
import stat
from contextlib import redirect_stdout

import pytest

from ansible_collections.kubespan.mesh.plugins.modules import cluster_secrets, identity

CLUSTER_ID = "cLuSTer-Id_for-the-module-tests-0123456789abcd="


def run(module, args, check=False, diff=False):
    """The module's result dict, as Ansible receives it (exit_json or fail_json: 'failed' set)."""
    from ansible.module_utils.testing import patch_module_args
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


def test_cluster_secrets_creates_once_reports_the_id_and_never_the_secret(tmp_path):
    path = str(tmp_path / "sub" / "secrets.yml")
    dry = run(cluster_secrets, {"path": path}, check=True)
    assert dry["changed"] is True and not os.path.exists(path)
    first = run(cluster_secrets, {"path": path})
    assert first["changed"] is True and first["encrypted"] is False and first["cluster_id"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        text = handle.read()
    secret = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("kubespan_cluster_secret")][0]
    assert secret not in json.dumps(first)
    again = run(cluster_secrets, {"path": path})
    assert (again["changed"], again["cluster_id"], again["path"]) == (False, first["cluster_id"], path)
    assert secret not in json.dumps(again)


def test_cluster_secrets_names_the_file_and_line_of_a_bad_secret_and_hides_it(tmp_path):
    path = tmp_path / "secrets.yml"
    path.write_text("# comment\nkubespan_cluster_id: %s\nkubespan_cluster_secret: too-short-secret-value\n" % CLUSTER_ID)
    result = run(cluster_secrets, {"path": str(path)})
    assert result["failed"] is True
    assert "%s line 3" % path in result["msg"] and "gen_secrets" in result["msg"]
    assert "too-short-secret-value" not in json.dumps(result)
    vault = tmp_path / "vault.yml"
    vault.write_text("$ANSIBLE_VAULT;1.1;AES256\n3132\n")
    result = run(cluster_secrets, {"path": str(vault)})
    assert (result["changed"], result["encrypted"], result["cluster_id"], result["path"]) == (False, True, "", str(vault))


def test_identity_check_mode_diff_create_and_idempotence(tmp_path):
    state = str(tmp_path / "state")
    args = {"cluster_id": CLUSTER_ID, "state_dir": state, "address_source": "node-id"}
    dry = run(identity, args, check=True, diff=True)
    assert dry["changed"] is True and dry["would_create"] is True and "would be generated" in dry["diff"]["after"]
    assert not os.path.exists(os.path.join(state, "kubespan-identity.yaml"))
    first = run(identity, args, diff=True)
    facts = first["identity"]
    assert first["changed"] is True and facts["created"] is True and facts["public_key"] in first["diff"]["after"]
    assert facts["address"].startswith("fd") and facts["node_id"] and facts["subnet"].endswith("/64")
    with open(os.path.join(state, "kubespan-identity.yaml")) as handle:
        private = [line.split(":", 1)[1].strip() for line in handle if line.startswith("privateKey")][0]
    assert private not in json.dumps(first), "the private key never leaves the node"
    again = run(identity, args, diff=True)
    assert again["changed"] is False and "diff" not in again and again["identity"]["public_key"] == facts["public_key"]
    assert private not in json.dumps(again)


def test_identity_refuses_a_bad_cluster_id_before_any_file(tmp_path):
    state = str(tmp_path / "state")
    result = run(identity, {"cluster_id": "not a cluster id", "state_dir": state})
    assert result["failed"] is True and "cluster" in result["msg"].lower()
    assert not os.path.exists(state)


def test_identity_argument_spec_refuses_an_unknown_choice(tmp_path):
    result = run(identity, {"cluster_id": CLUSTER_ID, "state_dir": str(tmp_path), "address_source": "dhcp"})
    assert result["failed"] is True and "address_source" in result["msg"] and "dhcp" in result["msg"]


def test_peer_status_info_before_the_first_run_names_the_fix_and_never_the_key(tmp_path):
    from ansible_collections.kubespan.mesh.plugins.modules import peer_status_info
    state = str(tmp_path / "state")
    empty = run(peer_status_info, {"state_dir": state}, check=True)
    assert empty["failed"] is True and state in empty["msg"] and "run the kubespan.mesh playbook first" in empty["msg"]
    run(identity, {"cluster_id": CLUSTER_ID, "state_dir": state, "address_source": "node-id"})
    info = run(peer_status_info, {"state_dir": state})
    assert info["failed"] is True and "desired state" in info["msg"]
    with open(os.path.join(state, "kubespan-identity.yaml")) as handle:
        private = [line.split(":", 1)[1].strip() for line in handle if line.startswith("privateKey")][0]
    assert private not in json.dumps(info)


def test_affiliates_cache_as_a_module_on_a_host_refuses_with_the_reason(tmp_path):
    from ansible_collections.kubespan.mesh.plugins.modules import affiliates_cache
    result = run(affiliates_cache, {"path": str(tmp_path / "a.json"), "affiliates": []})
    assert result["failed"] is True and "action plugin" in result["msg"]
    assert not (tmp_path / "a.json").exists()
