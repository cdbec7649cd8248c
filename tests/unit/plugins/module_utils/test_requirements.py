# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The identity module's requirement probe."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.host import requirements
from ansible_collections.kubespan.mesh.plugins.module_utils.host.requirements import missing


def test_nothing_missing_with_everything_present():
    assert missing(["base", "userspace", "discovery"], lambda _n: True, lambda _n: True) == {}


def test_names_what_is_missing_per_group():
    have_py = {"pyroute2", "grpc"}
    have_cmd = {"ip", "wg"}
    gaps = missing(["base", "userspace", "discovery"], have_py.__contains__, have_cmd.__contains__)
    assert gaps == {"base": ["python module nacl", "command nft"], "userspace": ["command wireguard-go"],
                    "discovery": ["python module cryptography"]}
    assert missing(["base"], have_py.__contains__, have_cmd.__contains__) == {"base": ["python module nacl", "command nft"]}
    assert missing([], have_py.__contains__, have_cmd.__contains__) == {}


def test_unknown_group_is_named():
    with pytest.raises(ValueError, match="'kernel'"):
        missing(["kernel"])


def test_real_probes(tmp_path, monkeypatch):
    # the real finders: the standard library is there, a made-up module is not; a command is found on PATH
    assert requirements._has_python("json") and not requirements._has_python("kubespan_no_such_module")
    assert not requirements._has_python("")
    tool = tmp_path / "kubespan-test-tool"
    tool.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not requirements._has_command("kubespan-test-tool")  # not executable yet
    os.chmod(tool, stat.S_IRWXU)
    assert requirements._has_command("kubespan-test-tool")
    assert requirements._has_command("sh")  # /bin is searched even when PATH lacks it
