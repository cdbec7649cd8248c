# -*- coding: utf-8 -*-
"""Reverse-path filtering (issue 16 item 5): which rp_filter sysctls the mesh sets, recorded and restored."""

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.rpfilter import effective, rp_filter_plan
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine


def P(name):
    return "net/ipv4/conf/%s/rp_filter" % name


@pytest.mark.parametrize("all_value,own,want", [
    ("0", "0", []),                             # nothing filters: nothing to do
    ("0", "1", [(P("kubespan"), "0")]),          # the link copied a strict default: only the link
    ("0", "2", [(P("kubespan"), "0")]),          # loose drops too (the link has no IPv4 address)
])
def test_all_off_touches_only_the_link(all_value, own, want):
    values = {"all": all_value, "default": own, "lo": "0", "eth0": "1", "kubespan": own}
    assert rp_filter_plan("kubespan", values) == want


def test_all_strict_lowers_all_and_keeps_every_other_interface_effective_value():
    values = {"all": "1", "default": "1", "lo": "0", "eth0": "0", "eth1": "2", "pod0": "1", "kubespan": "1"}
    want = rp_filter_plan("kubespan", values)
    assert want == [(P("eth0"), "1"), (P("lo"), "1"), (P("all"), "0"), (P("kubespan"), "0")]
    after = dict(values)
    after.update({path.split("/")[3]: value for path, value in want})
    for name in ("lo", "eth0", "eth1", "pod0"):
        assert effective(after["all"], after[name]) == effective(values["all"], values[name]), name
    assert effective(after["all"], after["default"]) == 1  # interfaces created later: as strict as before
    assert effective(after["all"], after["kubespan"]) == 0
    assert rp_filter_plan("kubespan", after) == []  # a second run (or agent tick) changes nothing


def test_all_loose_raises_strict_interfaces_to_loose_as_the_kernel_computed_them():
    values = {"all": "2", "default": "0", "eth0": "1", "kubespan": "0"}
    want = rp_filter_plan("kubespan", values)
    assert want == [(P("default"), "2"), (P("eth0"), "2"), (P("all"), "0")]  # max(2, 1) was 2: loose


def test_link_not_created_yet_counts_with_default():
    assert rp_filter_plan("kubespan", {"all": "0", "default": "1"}) == [(P("kubespan"), "0")]
    assert rp_filter_plan("kubespan", {"all": "0", "default": "0"}) == []


@pytest.mark.parametrize("garbage", [None, "", "x", "-1", "999"])
def test_unreadable_values_are_left_alone(garbage):
    assert rp_filter_plan("kubespan", {"all": garbage, "kubespan": "1"}) == []
    assert rp_filter_plan("kubespan", {"all": "1", "eth0": garbage, "kubespan": "0"}) == [(P("all"), "0")]


def _sysroot(tmp_path, values):
    root = tmp_path / "sys"
    for name, value in values.items():
        (root / P(name)).parent.mkdir(parents=True, exist_ok=True)
        (root / P(name)).write_text(value + "\n")
    return root


def _read(root, names):
    return {name: (root / P(name)).read_text().strip() for name in names}


def test_engine_sets_records_is_idempotent_and_disable_restores(tmp_path, monkeypatch):
    before = {"all": "1", "default": "1", "lo": "0", "eth0": "0", "kubespan": "1"}
    root = _sysroot(tmp_path, before)
    monkeypatch.setattr(engine, "SYSCTL_ROOT", str(root))
    settings = engine.Settings(state_dir=str(tmp_path / "state"))
    record = tmp_path / "state" / engine.RPFILTER_FILE

    check = engine.MeshResult()
    engine._reconcile_rp_filter(settings, True, check)
    assert "sysctl net.ipv4.conf.all.rp_filter=0 (was 1; rp_filter)" in check.changes
    assert _read(root, before) == before and not record.exists()  # check mode writes nothing

    result = engine.MeshResult()
    engine._reconcile_rp_filter(settings, False, result)
    assert result.changes == check.changes == [
        "sysctl net.ipv4.conf.eth0.rp_filter=1 (was 0; rp_filter)", "sysctl net.ipv4.conf.lo.rp_filter=1 (was 0; rp_filter)",
        "sysctl net.ipv4.conf.all.rp_filter=0 (was 1; rp_filter)", "sysctl net.ipv4.conf.kubespan.rp_filter=0 (was 1; rp_filter)"]
    assert _read(root, before) == {"all": "0", "default": "1", "lo": "1", "eth0": "1", "kubespan": "0"}
    assert record.exists()

    again = engine.MeshResult()
    engine._reconcile_rp_filter(settings, False, again)
    assert again.changes == []

    # the link re-created (wireguard-go restarted) copies default (1) again: only the link is set back
    (root / P("kubespan")).write_text("1\n")
    tick = engine.MeshResult()
    engine._reconcile_rp_filter(settings, False, tick)
    assert tick.changes == ["sysctl net.ipv4.conf.kubespan.rp_filter=0 (was 1; rp_filter)"]
    assert engine._sysctl_record(str(record))[P("kubespan")] == "1"  # the first value is kept

    # disable: the link is gone (teardown deleted it), every other value goes back, the record goes
    (root / P("kubespan")).unlink()
    (root / P("kubespan")).parent.rmdir()
    off = engine.MeshResult()
    engine._restore_sysctls(str(record), engine._sysctl_record(str(record)), "KubeSpan disabled", False, off)
    assert off.changes[0] == "sysctl net.ipv4.conf.all.rp_filter=1 (restored: KubeSpan disabled)"  # first: nothing dips
    assert _read(root, ["all", "default", "lo", "eth0"]) == {"all": "1", "default": "1", "lo": "0", "eth0": "0"}
    assert not record.exists()


def test_engine_check_mode_before_the_link_exists(tmp_path, monkeypatch):
    root = _sysroot(tmp_path, {"all": "0", "default": "1", "eth0": "1"})
    monkeypatch.setattr(engine, "SYSCTL_ROOT", str(root))
    result = engine.MeshResult()
    engine._reconcile_rp_filter(engine.Settings(state_dir=str(tmp_path / "state")), True, result)
    assert result.changes == ["sysctl net.ipv4.conf.kubespan.rp_filter=0 (when kubespan exists; rp_filter)"]


def test_engine_without_ipv4_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "SYSCTL_ROOT", str(tmp_path / "none"))
    result = engine.MeshResult()
    engine._reconcile_rp_filter(engine.Settings(state_dir=str(tmp_path / "state")), False, result)
    assert result.changes == []
