# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark-only connection: every host answers instantly with a canned module result.

Used by bench/controller.py to time the CONTROLLER side of playbooks/site.yml on a large inventory: inventory
and variable handling, templating (the hostvars collection of every affiliate), action plugins, module
packaging and argument serialization, result processing, callbacks. Nothing runs on any host.

Module calls arrive pipelined (the AnsiballZ wrapper on stdin, whose trailer names the module and holds its
JSON arguments); the answers have the shape and size of the real modules' results on an idempotent run:
identity returns this host's public data (derived from its ansible_host), mesh returns one peer entry per
affiliate it was given, and in the role's round 1 (identity and settle given) also the identity and whether
the controller's cached affiliates are current for this host (``settled``, see _mesh); setup returns the
facts stored in $KUBESPAN_BENCH_FACTS (a real fact set) or the distribution subset. Shell commands (temporary directories, `echo ~`) get the output Ansible
expects. With KUBESPAN_BENCH_INVOCATION=echo (bench/controller.py sets it unless --no-invocation) every answer
also carries ``invocation.module_args``, as AnsibleModule adds it: the n-sized ``peers`` and ``members`` of the
mesh module come back in its result and in the registered variable.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re

from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: benchfake
short_description: canned module results, nothing executed (kubespan.mesh controller benchmark)
description:
  - Answers every module call with a canned result so that only the controller's own work is measured.
author: kubespan.mesh contributors
options:
  remote_addr:
    description: the host's address; the synthetic identity is derived from it
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
extends_documentation_fragment:
  - connection_pipelining
"""

_MODULE = re.compile(r"^ansible_module='([^']*)',$", re.M)
_PARAMS = re.compile(r"^params=(.*),$", re.M)
_TMP = re.compile(r"echo (ansible-tmp-[^=\s]+)=")
_FACTS = None
_MASKED = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
_AFFILIATE_KEYS = ("name", "node_id", "public_key", "address", "endpoints", "addresses", "additional_addresses",
                   "exclude_advertised_networks")


def _facts(full):
    global _FACTS
    if _FACTS is None:
        path = os.environ.get("KUBESPAN_BENCH_FACTS")
        _FACTS = {}
        if path and os.path.exists(path):
            with open(path) as f:
                _FACTS = json.load(f)
    base = {"ansible_distribution": "Debian", "ansible_os_family": "Debian", "ansible_distribution_major_version": "12",
            "ansible_distribution_release": "bookworm", "ansible_pkg_mgr": "apt", "ansible_service_mgr": "systemd"}
    return dict(_FACTS, **base) if full else base


def _identity(addr):
    digest = hashlib.sha256(addr.encode()).digest()
    parts = [int(x) for x in addr.split(".")] if addr.count(".") == 3 else [10, 0, 0, digest[0]]
    index = (parts[1] << 16) | (parts[2] << 8) | parts[3]
    return {
        "node_id": base64.b32encode(digest).decode().rstrip("=").replace("=", ""),
        "public_key": base64.b64encode(digest).decode(),
        "address": "fd7f:175a:b97c:5602:%x:%x:%x:%x/128" % (digest[1], digest[2], index >> 16, index & 0xFFFF),
        "endpoints": ["%s:51820" % addr, "[2001:db8:1::%x:%x]:51820" % (index >> 16, index & 0xFFFF)],
        "addresses": [addr, "2001:db8:1::%x:%x" % (index >> 16, index & 0xFFFF)],
        "additional_addresses": [],
        "exclude_advertised_networks": [],
    }


def _affiliate(name, identity):
    return dict({"name": name}, **{k: identity[k] for k in _AFFILIATE_KEYS[1:]})


def _mesh(params, addr):
    """The mesh module on an idempotent host whose state holds the peers of the last run (see settle.py).

    With ``identity`` (round 1) the result carries the identity and the affiliate, as the module's do; with
    ``settle`` the host reports settled when its own entry among the given (cached) affiliates is its current
    affiliate and every given affiliate is a member of the group (the fake has no state.json: a host whose
    cache entry is current is taken to hold the peers built from it, as on a routine re-run). An unsettled
    host applies nothing and returns no peers, like the real module.
    """
    local = params.get("local_name")
    given = params.get("peers") or []
    head = {}
    if params.get("identity") is not None:
        identity = _identity(addr)
        head = {"identity": identity, "affiliate": _affiliate(local, identity), "missing_requirements": {}}
    if params.get("settle"):
        members = set(params.get("members") or [])
        mine = [a for a in given if a.get("name") == local]
        if len(mine) != 1 or {k: mine[0].get(k) for k in _AFFILIATE_KEYS} != head["affiliate"]:
            reason = "this host is not in the controller's cache" if not mine else "this host's affiliate changed"
        elif any(a.get("name") not in members for a in given):
            reason = "the members of the cluster group changed"
        else:
            reason = ""
        head.update(settled=not reason, settle_reason=reason)
        if reason:
            return dict(head, changed=False, changes=[], peers=[], implementation="")
    peers = []
    if os.environ.get("KUBESPAN_BENCH_MESH_PEERS") == "none":  # what-if: a mesh module that does not return its peer list
        given = []
    for aff in given:
        if aff.get("name") == local:
            continue
        peer = dict(aff, version=1)
        peer["allowed_ips"] = sorted(aff.get("addresses") or []) + [aff.get("address", "")]
        peers.append(peer)
    return dict(head, changed=False, changes=[], peers=peers, implementation="userspace", firewall_backend="nftables",
                agent_changes=[])


def _echo(args):
    """The module's arguments as AnsibleModule returns them (``invocation.module_args``: every result, and so
    every registered variable, holds them), the no_log options of the mesh module masked."""
    out = {k: v for k, v in args.items() if not k.startswith("_ansible_")}
    if "cluster_secret" in out:
        out["cluster_secret"] = _MASKED
    if isinstance(out.get("agent"), dict) and "bundle" in out["agent"]:
        out["agent"] = dict(out["agent"], bundle=_MASKED)
    if out.get("compact_result"):  # the mesh module echoes its n-sized arguments as counts
        out["peers"] = "%d affiliates" % len(out.get("peers") or [])
        if out.get("members") is not None:
            out["members"] = "%d hosts" % len(out["members"])
    return out


class Connection(ConnectionBase):
    transport = "benchfake"
    has_pipelining = True

    def _connect(self):
        self._connected = True
        return self

    def _answer(self, module, params):
        addr = self.get_option("remote_addr")
        if module in ("setup", "ansible.builtin.setup", "ansible.legacy.setup"):
            subset = params.get("gather_subset") or ["all"]
            return {"changed": False, "ansible_facts": _facts("all" in subset)}
        if module.endswith("identity"):
            return {"changed": False, "identity": _identity(addr), "missing_requirements": {}}
        if module.endswith("mesh"):
            result = _mesh(params, addr)
            result["peer_count"] = len(result.get("peers") or [])
            if params.get("compact_result"):  # as the module does: a count instead of the list
                del result["peers"]
            return result
        if module.endswith("stat"):
            return {"changed": False, "stat": {"exists": False}}
        return {"changed": False}

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if in_data:
            text = in_data.decode("utf-8", "replace")
            module = _MODULE.search(text)
            params = _PARAMS.search(text)
            args = json.loads(ast.literal_eval(params.group(1))) if params else {}
            args = args.get("ANSIBLE_MODULE_ARGS", args)  # the wrapper's params: {"ANSIBLE_MODULE_ARGS": {...}}
            answer = self._answer(module.group(1) if module else "", args)
            if os.environ.get("KUBESPAN_BENCH_INVOCATION") == "echo":
                answer["invocation"] = {"module_args": _echo(args)}
            return 0, json.dumps(answer).encode(), b""
        tmp = _TMP.search(cmd)
        if tmp:
            return 0, ("%s=/tmp/benchfake/%s\n" % (tmp.group(1), tmp.group(1))).encode(), b""
        if "echo ~" in cmd:
            return 0, b"/root\n", b""
        return 0, b"", b""

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)

    def close(self):
        self._connected = False
