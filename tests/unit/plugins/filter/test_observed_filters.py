# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The role's filters for observed endpoints (issue 16 item 2): reading the round-1 reports from hostvars."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.filter.observed_candidates import FilterModule as CandidatesModule
from ansible_collections.kubespan.mesh.plugins.filter.observed_candidates import observed_candidates
from ansible_collections.kubespan.mesh.plugins.filter.observed_changed import FilterModule as ChangedModule
from ansible_collections.kubespan.mesh.plugins.filter.observed_changed import observed_changed

KA, KP = "A" * 43 + "=", "P" * 43 + "="
AFFS = [{"name": "a", "public_key": KA, "address": "fd7a::a", "endpoints": ["10.0.1.2:51820"]},
        {"name": "p", "public_key": KP, "address": "fd7a::c", "endpoints": ["198.51.100.1:51820"]}]
HOSTVARS = {"p": {"kubespan_mesh_result": {"observed": [{"public_key": KA, "endpoint": "203.0.113.5:51820"}]}},
            "a": {"kubespan_mesh_result": {"skipped": True}}, "x": {}}


def test_registered_and_reads_the_reports_of_the_given_hosts():
    assert CandidatesModule().filters()["observed_candidates"] is observed_candidates
    assert ChangedModule().filters()["observed_changed"] is observed_changed
    out = observed_candidates(AFFS, HOSTVARS, ["a", "p", "x"])
    assert [a["observed_endpoints"] for a in out] == [["203.0.113.5:51820"], []]
    assert [a["observed_endpoints"] for a in observed_candidates(AFFS, HOSTVARS, ["a"])] == [[], []]  # p not in the play
    assert [a["observed_endpoints"] for a in observed_candidates(AFFS, HOSTVARS, ["p"], enabled=False)] == [[], []]


@pytest.mark.parametrize("args", [("x", HOSTVARS, []), (AFFS, [], []), (AFFS, HOSTVARS, "p")])
def test_bad_arguments(args):
    with pytest.raises(AnsibleFilterError):
        observed_candidates(*args)


def test_changed_compares_with_the_cached_entries():
    new = observed_candidates(AFFS, HOSTVARS, ["p"])
    assert observed_changed(new, AFFS) is True  # the cache had none
    assert observed_changed(new, new) is False
    assert observed_changed(observed_candidates(AFFS, HOSTVARS, []), AFFS) is False  # [] equals a missing key
    with pytest.raises(AnsibleFilterError):
        observed_changed(new, None)
