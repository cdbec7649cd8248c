# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The controller-side affiliates cache: writer, reader (the cached_affiliates filter), validation of entries."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.kubespan.mesh.plugins.action.affiliates_cache import read_cache, write_cache
from ansible_collections.kubespan.mesh.plugins.filter.cached_affiliates import FilterModule


def aff(name, n, **extra):
    entry = {"name": name, "node_id": "Node%d" % n, "public_key": base64.b64encode(bytes([n]) * 32).decode(),
             "address": "fd7a:115c:a1e0:ab12::%x" % n, "endpoints": ["10.0.0.%d:51820" % n], "addresses": ["10.0.0.%d" % n],
             "additional_addresses": [], "exclude_advertised_networks": []}
    entry.update(extra)
    return entry


A = aff("node1", 1)
B = aff("node2", 2)
# what issue 15 item 7 describes: a host left out by --limit whose kubespan_affiliate has a bad public key
BAD_KEY = aff("node3", 3, public_key="not-a-key")
BAD = [BAD_KEY, aff("node4", 4, public_key=base64.b64encode(b"\x04" * 31).decode()), aff("node5", 5, node_id="no/good"),
       aff("node6", 6, address="10.0.0.6"), aff("node7", 7, address="2001:db8::7"), aff("node8", 8, endpoints=["10.0.0.8"]),
       aff("node9", 9, endpoints="10.0.0.9:51820"), {"public_key": A["public_key"]}, 1, None,
       # observed endpoints (issue 16 item 2) are checked as well: a list of at most 4 usable ip:port endpoints
       aff("node10", 10, observed_endpoints="203.0.113.1:51820"), aff("node11", 11, observed_endpoints=["127.0.0.1:51820"]),
       aff("node12", 12, observed_endpoints=["203.0.113.%d:51820" % i for i in range(5)]),
       aff("node13", 13, observed_endpoints=["[fd7a:115c:a1e0:ab12::1]:51820"]), aff("node14", 14, observed_endpoints=["x"])]


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


@pytest.mark.parametrize("bad", [None, "x", {"name": "a"}])
def test_affiliates_must_be_a_list(tmp_path, bad):
    with pytest.raises(AnsibleActionFail, match="affiliates"):
        write_cache(str(tmp_path / "a.json"), bad)


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.get("name", "noname") if isinstance(b, dict) else repr(b))
def test_a_bad_entry_never_enters_the_cache(tmp_path, bad):
    path = tmp_path / "a.json"
    warnings = []
    assert write_cache(str(path), [A, bad, B], warnings) is True
    assert json.loads(path.read_text()) == [A, B]
    assert len(warnings) == 1 and str(path) in warnings[0]
    name = bad.get("name") if isinstance(bad, dict) else None
    assert ("host %s" % name if name else "host #1") in warnings[0], warnings


def test_a_bad_cached_entry_is_named_and_ignored_then_rewritten_clean(tmp_path):
    """The old writer stored anything; a full run then failed on every host with no word of the cache."""
    path = tmp_path / "affiliates.json"
    path.write_text(json.dumps([A, BAD_KEY, B]))
    warnings = []
    assert read_cache(str(path), warnings) == [A, B]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and "node3" in warnings[0] and "public_key" in warnings[0]
    # the role's write task gets this run's affiliates plus the cache's valid ones: the file is clean again
    assert write_cache(str(path), [A] + read_cache(str(path), []), []) is True
    assert json.loads(path.read_text()) == [A, B]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"a": 1}', b"[]" + b" " * 10, json.dumps([A, A]).encode()])
def test_a_bad_cache_file_never_raises(tmp_path, content):
    path = tmp_path / "a.json"
    path.write_bytes(content)
    warnings = []
    entries = read_cache(str(path), warnings)
    assert entries in ([], [A])
    assert all(str(path) in w for w in warnings)


def test_missing_cache_is_empty(tmp_path):
    warnings = []
    assert read_cache(str(tmp_path / "none.json"), warnings) == [] and warnings == []


def test_the_filter_returns_the_valid_entries(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([BAD_KEY, A]))
    assert FilterModule().filters()["cached_affiliates"](str(path)) == [A]


def test_unwritable_directory_names_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AnsibleActionFail, match="kubespan_controller_cache_dir"):
        write_cache(str(blocker / "sub" / "a.json"), [A])


def test_observed_endpoints_are_cached_when_usable(tmp_path):
    path = tmp_path / "a.json"
    good = aff("node3", 3, observed_endpoints=["203.0.113.7:51820", "[2001:db8::7]:51820"])
    warnings = []
    assert write_cache(str(path), [A, good], warnings) is True
    assert warnings == [] and json.loads(path.read_text()) == [A, good]
