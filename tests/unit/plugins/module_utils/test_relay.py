# -*- coding: utf-8 -*-
"""Relaying through a member (relay.py): which peer goes through which relay, and when back; the relay's data plane."""

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agent import render_metrics
from ansible_collections.kubespan.mesh.plugins.module_utils.core import relay
from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import (
    FORWARD_CHAIN,
    DataPlaneConfig,
    desired_nft,
    diff_nft,
    render_nft,
)
from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus, statuses_from_json, statuses_to_json
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine

R1, R2, B, T = "R1=", "R2=", "B=", "T="


def st(state, label="", **kw):
    return PeerStatus(label=label or state, state=state, **kw)


def run(statuses, times, relays=(R1,), eligible=(B,), after=relay.RELAY_AFTER):
    events = []
    for now in times:  # seconds after a unix time (0 means "never" in a status)
        events += relay.decide(statuses, relays, eligible, 1000.0 + now, after)
    return events


def test_a_down_peer_is_relayed_after_the_bounded_time_through_the_up_relay():
    statuses = {R1: st("up", "r1"), B: st("down", "b")}
    run(statuses, [100.0, 105.0, 115.0])
    assert statuses[B].via == "" and statuses[B].down_since == 1100.0  # 15 s: not yet
    events = run(statuses, [120.0])
    assert statuses[B].via == R1 and statuses[B].relayed_since == 1120.0
    assert any("through relay r1" in e and "keeps probing" in e for e in events)
    assert relay.via_map(statuses) == {B: R1}


def test_unknown_counts_as_no_direct_path_so_cycling_does_not_reset_the_clock():
    statuses = {R1: st("up"), B: st("unknown")}
    run(statuses, [0.0, 10.0])
    statuses[B].state = "down"
    run(statuses, [20.0])
    assert statuses[B].via == R1


def test_no_relay_up_no_relaying_and_relays_are_never_relayed():
    statuses = {R1: st("down"), B: st("down")}
    run(statuses, [0.0, 60.0])
    assert statuses[B].via == ""
    statuses = {R1: st("down"), R2: st("up"), B: st("up")}
    run(statuses, [0.0, 60.0], relays=(R1, R2), eligible=(R1, R2, B))
    assert statuses[R1].via == ""  # a relay keeps its own entry even when another relay is up


def test_a_peer_that_is_not_an_inventory_member_is_never_relayed():
    statuses = {R1: st("up"), T: st("down")}
    run(statuses, [0.0, 60.0], eligible=(B,))
    assert statuses[T].via == ""


def test_up_or_stalled_decide_the_direct_path():
    statuses = {R1: st("up"), B: st("up", stalled=True)}
    run(statuses, [0.0, 30.0])
    assert statuses[B].via == R1  # a stalled path is no path
    statuses = {R1: st("up", stalled=True), B: st("down")}
    run(statuses, [0.0, 30.0])
    assert statuses[B].via == ""  # nor is a stalled relay


def test_back_to_direct_only_on_a_handshake_newer_than_the_move():
    statuses = {R1: st("up"), B: st("down", last_handshake=1050.0)}
    run(statuses, [100.0, 120.0])
    assert statuses[B].via == R1
    statuses[B].state = "up"  # Talos's rule may still call it up from the old handshake: not enough
    run(statuses, [125.0])
    assert statuses[B].via == R1
    statuses[B].last_handshake = 1126.0  # the direct entry completed a handshake
    events = run(statuses, [130.0])
    assert statuses[B].via == "" and statuses[B].down_since == 0.0
    assert any("moves back from relay" in e for e in events)


def test_failover_to_the_other_relay_and_back_to_direct_when_none_is_up():
    statuses = {R1: st("up"), R2: st("up"), B: st("down")}
    run(statuses, [0.0, 20.0], relays=(R2, R1))
    assert statuses[B].via == R1  # the lowest key: both ends pick the same relay
    statuses[R1].state = "down"
    events = run(statuses, [25.0], relays=(R1, R2))
    assert statuses[B].via == R2 and any("now through relay" in e for e in events)
    statuses[R1].state = "up"
    run(statuses, [30.0], relays=(R1, R2))
    assert statuses[B].via == R1  # not sticky: both ends converge on the same one
    statuses[R1].state = statuses[R2].state = "down"
    run(statuses, [35.0], relays=(R1, R2))
    assert statuses[B].via == ""


def test_move_allowed_ips():
    peers = [(R1, ["fd00::1/128"]), (B, ["fd00::2/128", "10.244.2.0/24"]), (T, ["fd00::3/128"])]
    moved = relay.move_allowed_ips(peers, {B: R1})
    assert moved == {R1: ["fd00::1/128", "fd00::2/128", "10.244.2.0/24"], B: [], T: ["fd00::3/128"]}
    assert peers[1][1] == ["fd00::2/128", "10.244.2.0/24"]  # the input is not changed
    # a relay that is not a peer, a peer naming itself, a relay that is relayed itself: ignored
    assert relay.move_allowed_ips(peers, {B: "X=", T: T}) == dict((k, list(v)) for k, v in peers)
    assert relay.move_allowed_ips(peers, {B: T, T: R1})[B] == ["fd00::2/128", "10.244.2.0/24"]


def test_statuses_round_trip_the_relay_fields():
    statuses = {B: st("down", via=R1, down_since=1.5, relayed_since=2.5)}
    back = statuses_from_json(statuses_to_json(statuses))
    assert back[B].via == R1 and back[B].down_since == 1.5 and back[B].relayed_since == 2.5
    with pytest.raises(ValueError, match="via"):
        statuses_from_json({"version": 1, "peers": {B: {"via": 3}}})


def test_metrics_name_the_relay():
    statuses = {R1: st("up", "r1"), B: st("down", "b", via=R1)}
    lines = render_metrics(statuses, 100.0, repairs=0).splitlines()
    assert 'kubespan_peer_relayed{peer="B=",label="b",via="r1"} 1' in lines
    assert 'kubespan_peer_relayed{peer="R1=",label="r1",via=""} 0' in lines


def test_forward_chain_only_on_a_relay_kubespan_to_kubespan_only():
    routed = IPSet()
    routed.add("10.244.2.0/24")
    cfg = DataPlaneConfig().validate()
    plain = desired_nft(routed, cfg)
    assert FORWARD_CHAIN not in render_nft(plain)
    text = render_nft(desired_nft(routed, cfg, [4, 6]))
    assert 'chain kubespan_forward { type filter hook forward priority 0; policy accept; }' in text
    forward = text.split("chain kubespan_forward", 1)[1].splitlines()[1:]
    assert [line.strip() for line in forward] == [
        "meta iifname == kubespan meta oifname == kubespan accept",
        "meta nfproto == ipv4 meta iifname == kubespan drop",
        "meta nfproto == ipv6 meta iifname == kubespan drop",
    ]
    # a host that forwards both families already: only the accept (nothing of its own forwarding is taken away)
    assert "drop" not in render_nft(desired_nft(routed, cfg, []))
    assert diff_nft(desired_nft(routed, cfg, [6]), plain).changed


def test_relay_sysctls_per_interface_and_no_global_ipv6_forwarding():
    assert engine.relay_sysctls("kubespan", "0", True) == [
        ("net/ipv4/conf/kubespan/forwarding", "1"), ("net/ipv4/conf/kubespan/send_redirects", "0"),
        ("net/ipv6/conf/kubespan/force_forwarding", "1")]
    assert engine.relay_sysctls("kubespan", "1", False)[-1][0] == "net/ipv4/conf/kubespan/send_redirects"
    with pytest.raises(engine.ReconcileError, match="force_forwarding.*kubespan_relay: false"):
        engine.relay_sysctls("kubespan", "0", False)


def test_relay_sysctls_are_recorded_and_restored(tmp_path, monkeypatch):
    root = tmp_path / "sys"
    for rel, value in (("net/ipv4/conf/kubespan/forwarding", "0"), ("net/ipv4/conf/kubespan/send_redirects", "1"),
                       ("net/ipv6/conf/kubespan/force_forwarding", "0"), ("net/ipv6/conf/all/forwarding", "0"),
                       ("net/ipv4/ip_forward", "0")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(value + "\n")
    monkeypatch.setattr(engine, "SYSCTL_ROOT", str(root))
    settings = engine.Settings(state_dir=str(tmp_path / "state"), relay=True)
    assert engine.relay_forward_families(settings) == [4, 6]
    result = engine.MeshResult()
    engine._reconcile_relay_sysctls(settings, False, result)
    assert len(result.changes) == 3
    assert (root / "net/ipv6/conf/kubespan/force_forwarding").read_text() == "1"
    assert (tmp_path / "state" / engine.RELAY_FILE).exists()
    again = engine.MeshResult()
    engine._reconcile_relay_sysctls(settings, False, again)
    assert again.changes == []  # idempotent
    settings.relay = False
    off = engine.MeshResult()
    engine._reconcile_relay_sysctls(settings, False, off)
    assert (root / "net/ipv4/conf/kubespan/forwarding").read_text() == "0"
    assert (root / "net/ipv4/conf/kubespan/send_redirects").read_text() == "1"
    assert (root / "net/ipv6/conf/kubespan/force_forwarding").read_text() == "0"
    assert not (tmp_path / "state" / engine.RELAY_FILE).exists()


@pytest.mark.parametrize("value,ok", [(True, True), (False, True), ("yes", True), ("maybe", False), (2, False)])
def test_kubespan_relay_is_a_bool(value, ok):
    errors = settings_errors({"kubespan_relay": value})
    assert (errors == []) is ok
    if not ok:
        assert "kubespan_relay" in errors[0]
