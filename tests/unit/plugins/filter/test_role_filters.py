"""Unit tests of the role's filters kubespan.mesh.all_settled and kubespan.mesh.affiliates_named (the Jinja loops
and dict(zip) membership tests they replaced in roles/kubespan/tasks/main.yml)."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.filter.affiliates_named import FilterModule as NamedModule
from ansible_collections.kubespan.mesh.plugins.filter.affiliates_named import affiliates_named
from ansible_collections.kubespan.mesh.plugins.filter.all_settled import FilterModule as SettledModule
from ansible_collections.kubespan.mesh.plugins.filter.all_settled import all_settled


def test_filters_are_registered():
    assert NamedModule().filters() == {"affiliates_named": affiliates_named}
    assert SettledModule().filters() == {"all_settled": all_settled}


def _aff(*names):
    return [{"name": n, "public_key": "k-" + n} for n in names]


def test_named_keeps_input_order_and_only_the_named():
    entries = _aff("n3", "n1", "gone", "n2")
    assert [e["name"] for e in affiliates_named(entries, ["n1", "n2", "n3"])] == ["n3", "n1", "n2"]
    assert affiliates_named(entries, []) == []
    assert affiliates_named([], ["n1"]) == []


def test_named_exclude_drops_the_named():
    entries = _aff("n3", "n1", "gone", "n2")
    assert [e["name"] for e in affiliates_named(entries, ("n1", "n2"), exclude=True)] == ["n3", "gone"]
    assert [e["name"] for e in affiliates_named(entries, iter(["gone"]), exclude=True)] == ["n3", "n1", "n2"]


def test_named_is_the_role_s_cache_merge():
    """The expression of 'Keep the cluster's affiliates on the controller': this run's affiliates plus the cached ones
    of group hosts that were not in this run (the cached copy of a host of this run is replaced, not doubled)."""
    run = _aff("n1", "n2")
    run[0]["public_key"] = "new-n1"
    cached = _aff("n1", "n3", "removed-from-group")
    group = ["n1", "n2", "n3"]
    merged = run + affiliates_named(affiliates_named(cached, group), (e["name"] for e in run), exclude=True)
    assert [(e["name"], e["public_key"]) for e in merged] == [("n1", "new-n1"), ("n2", "k-n2"), ("n3", "k-n3")]


def test_named_is_linear():
    entries = _aff(*["h%d" % i for i in range(20000)])
    names = ["h%d" % i for i in range(0, 20000, 2)]
    assert len(affiliates_named(entries, names)) == 10000


@pytest.mark.parametrize("entries, names, message", [
    ("n1", ["n1"], "expects a list of affiliates, got str"),
    ({"name": "n1"}, ["n1"], "expects a list of affiliates, got dict"),
    ([{"name": "n1"}, "junk"], ["n1"], "affiliate 1 is not a dictionary with a name"),
    ([{"public_key": "x"}], ["n1"], "affiliate 0 is not a dictionary with a name"),
    ([], "n1", "expects a list of host names, got str"),
    ([], None, "expects a list of host names, got NoneType"),
])
def test_named_refuses_bad_input(entries, names, message):
    with pytest.raises(AnsibleFilterError, match=message):
        affiliates_named(entries, names)


def _hv(**hosts):
    return dict(hosts)


def test_settled_when_every_enabled_host_settled():
    hv = _hv(a={"kubespan_mesh_result": {"settled": True}}, b={"kubespan_mesh_result": {"settled": True}})
    assert all_settled(["a", "b"], hv) is True


@pytest.mark.parametrize("b", [
    {"kubespan_mesh_result": {"settled": False}},
    {"kubespan_mesh_result": {"skipped": True}},   # round 1 skipped: no settled key
    {},                                            # no result registered (the host failed)
    {"kubespan_mesh_result": "garbage"},
])
def test_not_settled_when_an_enabled_host_did_not_settle(b):
    hv = _hv(a={"kubespan_mesh_result": {"settled": True}}, b=b)
    assert all_settled(["a", "b"], hv) is False
    assert all_settled(["a"], hv) is True           # only the listed hosts count


def test_disabled_hosts_are_ignored_and_the_default_applies():
    hv = _hv(a={"kubespan_mesh_result": {"settled": True}}, off={"kubespan_enabled": "no"}, unset={})
    assert all_settled(["a", "off"], hv) is True
    assert all_settled(["a", "off", "unset"], hv) is False                      # the default: enabled
    assert all_settled(["a", "off", "unset"], hv, default_enabled=False) is True  # a play-wide kubespan_enabled: false
    assert all_settled(["a", "off"], _hv(a=hv["a"], off={"kubespan_enabled": "true"})) is False
    assert all_settled([], {}) is True


def test_settled_takes_ansible_truthy_strings():
    hv = _hv(a={"kubespan_mesh_result": {"settled": "yes"}}, b={"kubespan_enabled": "False", "kubespan_mesh_result": {}})
    assert all_settled(["a", "b"], hv) is True


@pytest.mark.parametrize("hosts, hostvars, message", [
    ("node1", {}, "expects a list of host names"),
    (["a"], ["a"], "expects hostvars"),
    (["a"], {"a": {"kubespan_enabled": ["x"]}}, "kubespan_enabled of a is not a boolean"),
])
def test_settled_refuses_bad_input(hosts, hostvars, message):
    with pytest.raises(AnsibleFilterError, match=message):
        all_settled(hosts, hostvars)
