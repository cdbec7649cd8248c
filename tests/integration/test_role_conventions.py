"""Controller-side checks of the collection's Ansible conventions (issue 19 item 5), with real ansible-playbook runs:

- meta/runtime.yml's action group kubespan.mesh.node: module_defaults set state_dir once for its modules;
- the role's tags select its phases (--list-tasks; the molecule default scenario runs two of them on real nodes).
"""

import os
import re
import sys

from test_controller import CID, SECRET, playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE = os.path.join(ROOT, "playbooks", "site.yml")
LOCAL = "kubespan:\n  hosts:\n    a:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: %s\n" % sys.executable


def _play(tmp_path, tasks, module_defaults):
    text = ("- hosts: kubespan\n  gather_facts: false\n" + module_defaults + "  tasks:\n" + tasks)
    path = tmp_path / "play.yml"
    path.write_text(text)
    return playbook(tmp_path, str(path), inventory=LOCAL)


DEFAULTS = "  module_defaults:\n    group/kubespan.mesh.node:\n      state_dir: %s\n"
TASKS = """    - name: Statuses
      kubespan.mesh.peer_status_info:
      ignore_errors: true
    - name: Identity
      kubespan.mesh.identity:
        cluster_id: %s
        address_source: node-id
      check_mode: true
      diff: true
""" % CID


def test_module_defaults_set_state_dir_once_for_the_node_group(tmp_path):
    state = tmp_path / "group-state"
    rc, out = _play(tmp_path, TASKS, DEFAULTS % state)
    assert rc == 0, out[-3000:]
    # peer_status_info and identity both used the group's state_dir (and not their own default /var/lib/kubespan)
    assert "no desired state in %s yet" % state in out, out[-3000:]
    assert "identity: would be generated in %s" % state in out, out[-3000:]
    assert "/var/lib/kubespan" not in out
    assert not state.exists()  # check mode: nothing written


def test_without_module_defaults_the_modules_use_their_own_default(tmp_path):
    """The positive control of the test above: the same play without module_defaults names /var/lib/kubespan."""
    rc, out = _play(tmp_path, TASKS, "")
    assert rc == 0, out[-3000:]
    assert "/var/lib/kubespan" in out


def _listed(tmp_path, *args):
    inv = LOCAL + "    kubespan_cluster_id: %s\n    kubespan_cluster_secret: %s\n" % (CID, SECRET)
    rc, out = playbook(tmp_path, SITE, "--list-tasks", *args, inventory=inv)
    assert rc == 0, out[-3000:]
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\s+kubespan.mesh.kubespan : (.+?)\tTAGS: \[(.*)\]$", out, re.M)}


def test_tags_select_the_role_phases(tmp_path):
    everything = _listed(tmp_path)
    mesh_task = "Reconcile the WireGuard mesh{{ ' if the cached affiliates are current' if kubespan_settle else '' }}"
    assert mesh_task in everything and "Install the missing node packages, then ensure the identity" in everything

    identity = _listed(tmp_path, "--tags", "identity")
    assert "Ensure the node identity" in identity
    assert "Check that this host has valid cluster secrets" in identity          # validate: always
    assert mesh_task not in identity and "Install the missing node packages, then ensure the identity" not in identity

    packages = _listed(tmp_path, "--tags", "packages")
    assert {"Ensure the node identity", "Install the missing node packages, then ensure the identity"} <= set(packages)
    assert mesh_task not in packages

    mesh = _listed(tmp_path, "--tags", "mesh")
    assert {mesh_task, "Ensure the node identity", "Keep the cluster's affiliates on the controller for the next run",
            "Write the discovery CA"} <= set(mesh)
    assert "Remove the mesh when KubeSpan is disabled (the identity is kept)" not in mesh

    disable = _listed(tmp_path, "--tags", "disable")
    assert "Remove the mesh when KubeSpan is disabled (the identity is kept)" in disable and mesh_task not in disable

    skip = _listed(tmp_path, "--skip-tags", "packages,validate")
    assert "Install the missing node packages, then ensure the identity" not in skip
    assert "Check that this host has valid cluster secrets" not in skip
    assert mesh_task in skip and "Ensure the node identity" in skip
