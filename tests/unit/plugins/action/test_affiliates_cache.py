# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The controller-side affiliates cache writer."""

from __future__ import annotations

import json
import os
import stat

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.kubespan.mesh.plugins.action.affiliates_cache import write_cache

B = {"name": "node2", "public_key": "B"}
A = {"name": "node1", "public_key": "A"}


def test_writes_sorted_0600_in_0700_then_only_on_change(tmp_path):
    path = tmp_path / "cache" / "affiliates.json"
    assert write_cache(str(path), [B, A]) is True
    assert [a["name"] for a in json.loads(path.read_text())] == ["node1", "node2"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert write_cache(str(path), [A, B]) is False
    assert write_cache(str(path), [A]) is True
    assert [a["name"] for a in json.loads(path.read_text())] == ["node1"]
    assert [p.name for p in path.parent.iterdir()] == ["affiliates.json"]  # no temporary file left


@pytest.mark.parametrize("bad", [None, "x", [{"public_key": "A"}], [1]])
def test_bad_affiliates_are_named(tmp_path, bad):
    with pytest.raises(AnsibleActionFail, match="affiliates"):
        write_cache(str(tmp_path / "a.json"), bad)


def test_unwritable_directory_names_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AnsibleActionFail, match="kubespan_controller_cache_dir"):
        write_cache(str(blocker / "sub" / "a.json"), [A])
