# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Issue 16 item 2: what the nodes observe of each other, handed out as extra candidates without discovery."""

from __future__ import annotations

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.observed import MAX_OBSERVED, MAX_REPORT, merge_observed, observed_report, with_observed

KA, KB, KP = "A" * 43 + "=", "B" * 43 + "=", "P" * 43 + "="
# dn-a and dn-b behind two NATs announce only their LAN; dn-pub is public
AFFS = [{"name": "dn-a", "public_key": KA, "address": "fd7a::a", "endpoints": ["10.89.161.21:51820"]},
        {"name": "dn-b", "public_key": KB, "address": "fd7a::b", "endpoints": ["10.89.162.22:51820"]},
        {"name": "dn-pub", "public_key": KP, "address": "fd7a::c", "endpoints": ["10.89.160.11:51820", "10.89.160.99:51820"]}]


def rec(key, state, endpoint):
    return {"id": key, "state": state, "endpoint": endpoint}


def test_a_public_node_reports_the_nat_mappings_of_its_up_peers_only():
    announced = {a["public_key"]: a["endpoints"] for a in AFFS}
    records = [rec(KA, "up", "10.89.160.251:51820"), rec(KB, "unknown", "10.89.160.252:51820")]
    assert observed_report(records, announced) == [{"public_key": KA, "endpoint": "10.89.160.251:51820"}]
    # an endpoint the peer announced itself is nothing new; a peer not in the desired set is skipped; junk skipped
    records = [rec(KA, "up", "10.89.161.21:51820"), rec("Z" * 43 + "=", "up", "1.2.3.4:5"), rec(KB, "up", "junk")]
    assert observed_report(records, announced) == []


def test_a_report_is_bounded():
    many = {"K%03d" % i: [] for i in range(200)}
    records = [rec(k, "up", "203.0.113.1:%d" % (i + 1)) for i, k in enumerate(sorted(many))]
    assert len(observed_report(records, many)) == MAX_REPORT


def test_the_mappings_dn_pub_sees_become_candidates_of_dn_a_and_dn_b():
    reports = {"dn-pub": [{"public_key": KA, "endpoint": "10.89.160.251:51820"},
                          {"public_key": KB, "endpoint": "10.89.160.252:51820"}]}
    out = merge_observed(AFFS, reports)
    assert [a["observed_endpoints"] for a in out] == [["10.89.160.251:51820"], ["10.89.160.252:51820"], []]
    assert [a["endpoints"] for a in out] == [a["endpoints"] for a in AFFS]  # the own endpoints are untouched
    assert all("observed_endpoints" not in a for a in AFFS)  # copies


@pytest.mark.parametrize("entry", [
    {"public_key": KP, "endpoint": "203.0.113.9:51820"},  # about itself
    {"public_key": "Z" * 43 + "=", "endpoint": "203.0.113.9:51820"},  # no such peer
    {"public_key": KA, "endpoint": "127.0.0.1:51820"},
    {"public_key": KA, "endpoint": "224.0.0.1:51820"},
    {"public_key": KA, "endpoint": "255.255.255.255:51820"},
    {"public_key": KA, "endpoint": "0.0.0.0:51820"},
    {"public_key": KA, "endpoint": "169.254.1.1:51820"},
    {"public_key": KA, "endpoint": "[fe80::1]:51820"},
    {"public_key": KA, "endpoint": "[fd7a::9]:51820"},  # inside the cluster's KubeSpan prefix
    {"public_key": KA, "endpoint": "10.89.160.251"},  # no port
    {"public_key": KA, "endpoint": "x" * 200},
    {"public_key": KA, "endpoint": 5},
    {"public_key": 5, "endpoint": "203.0.113.9:51820"},
    "junk",
], ids=repr)
def test_a_report_is_not_trusted_blindly(entry):
    warnings = []
    out = merge_observed(AFFS, {"dn-pub": [entry]}, warnings)
    assert [a["observed_endpoints"] for a in out] == [[], [], []]
    assert len(warnings) == 1 and "host dn-pub" in warnings[0]


def test_a_report_that_is_no_list_is_ignored():
    assert [a["observed_endpoints"] for a in merge_observed(AFFS, {"dn-pub": "junk", "dn-b": None})] == [[], [], []]


def test_one_vote_per_reporter_most_reported_first_at_most_max_observed():
    liar = [{"public_key": KA, "endpoint": "203.0.113.%d:51820" % i} for i in range(1, 10)]
    reports = {"dn-b": liar + liar, "dn-pub": [{"public_key": KA, "endpoint": "203.0.113.9:51820"}]}
    got = merge_observed(AFFS, reports)[0]["observed_endpoints"]
    assert len(got) == MAX_OBSERVED and got[0] == "203.0.113.9:51820"  # two reporters beat one, however often it says it


def test_entries_beyond_the_report_bound_are_not_read():
    reports = {"dn-pub": [{"public_key": KB, "endpoint": "203.0.113.1:51820"}] * MAX_REPORT
               + [{"public_key": KA, "endpoint": "203.0.113.2:51820"}]}
    warnings = []
    out = merge_observed(AFFS, reports, warnings)
    assert out[0]["observed_endpoints"] == [] and out[1]["observed_endpoints"] == ["203.0.113.1:51820"]
    assert len(warnings) == 1


def test_the_mesh_module_appends_them_after_the_own_endpoints():
    peers = [dict(AFFS[0], observed_endpoints=["10.89.160.251:51820", "127.0.0.1:51820", "10.89.161.21:51820"]), AFFS[1]]
    out = with_observed(peers)
    assert out[0]["endpoints"] == ["10.89.161.21:51820", "10.89.160.251:51820"]
    assert out[1]["endpoints"] == AFFS[1]["endpoints"]
    assert all("observed_endpoints" not in p for p in out)


def test_the_agent_tries_the_observed_mapping_of_a_never_up_peer_first():
    from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus, rank_candidates
    endpoints = with_observed([dict(AFFS[0], observed_endpoints=["10.89.160.251:51820"])])[0]["endpoints"]
    assert rank_candidates(PeerStatus(), endpoints)[0] == "10.89.160.251:51820"
