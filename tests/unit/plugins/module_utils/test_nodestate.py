# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The node's state loaded once (reconcile/nodestate.py): file reads and writes counted per path during one agent
tick (a fake device, the reconcile replaced by a recorder) and during a module run's planning, and the safety case:
a file another writer changes during the tick is read again (never a stale desired state under the lock)."""

from __future__ import annotations

import base64
import collections
import ipaddress
import json
import os

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agent
from ansible_collections.kubespan.mesh.plugins.module_utils.core.addressing import node_address
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState
from ansible_collections.kubespan.mesh.plugins.module_utils.host import layout, statefile
from ansible_collections.kubespan.mesh.plugins.module_utils.host.identity import new_identity, save_identity
from ansible_collections.kubespan.mesh.plugins.module_utils.modules import meshrun
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.nodestate import NodeState

CLUSTER = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
SECRET = base64.b64encode(bytes(range(32))).decode()
NOW = 1_700_000_000.0


class Files:
    """Reads (statefile's open) and writes (statefile.atomic_write) per file name of the state directory."""

    def __init__(self, monkeypatch, state_dir):
        self.reads, self.writes = collections.Counter(), collections.Counter()
        real_open, real_write = open, statefile.atomic_write

        def counting_open(path, *args, **kwargs):
            if os.path.dirname(str(path)) == state_dir:
                self.reads[os.path.basename(str(path))] += 1
            return real_open(path, *args, **kwargs)

        def counting_write(path, data, *args, **kwargs):
            if os.path.dirname(str(path)) == state_dir:
                self.writes[os.path.basename(str(path))] += 1
            return real_write(path, data, *args, **kwargs)

        monkeypatch.setattr(statefile, "open", counting_open, raising=False)
        monkeypatch.setattr(statefile, "atomic_write", counting_write)


def make_node(tmp_path, bypass=True):
    """A state dir as a playbook run leaves it: identity, desired state with one peer, the agent's statuses."""
    state_dir = str(tmp_path)
    me, peer = new_identity(), new_identity()
    addr, subnet, _src = node_address(CLUSTER, me.node_id, None, "auto")
    me.address, me.subnet = "%s/128" % addr, str(subnet)
    save_identity(state_dir, me)
    paddr = node_address(CLUSTER, peer.node_id, None, "auto")[0]
    state = {"version": 1, "settings": {"interface": "kstest", "implementation": "kernel", "state_dir": state_dir,
                                        "allow_down_peer_bypass": bypass},
             "cluster_id": CLUSTER, "cluster_secret": SECRET, "address": me.address, "subnet": me.subnet, "members": ["n1", "n2"],
             "peers": [{"name": "n2", "public_key": peer.public_key, "address": str(paddr), "endpoints": ["192.0.2.2:51820"],
                        "allowed_ips": ["%s/128" % paddr, "10.0.2.0/24"], "version": 1}]}
    statefile.write_json(layout.path(state_dir, layout.STATE), state)
    statefile.write_json(layout.path(state_dir, layout.STATUSES), {"version": 1, "peers": {}})
    return state_dir, me, peer, state


def fake_host(monkeypatch, me, peer, on_first_read=None):
    """The tick's host replaced: the address check finds the same address, the device answers with the peer up,
    the reconcile records what it was given (the desired state's peers, the routed set's up peers)."""
    calls = []

    def reconcile(settings, ident, cluster_id, secret, peers, members=None, **kw):
        calls.append({"peers": [p["name"] for p in peers], "up_peers": kw.get("up_peers"), "via": kw.get("via")})
        return engine.MeshResult(implementation="kernel", peers=[{k: p[k] for k in engine.PEER_KEYS if k in p} for p in peers])

    class Device:
        reads = 0

        def __init__(self, *_a):
            pass

        def read(self):
            Device.reads += 1
            if Device.reads == 1 and on_first_read:
                on_first_read()
            dev = DeviceState(private_key=me.private_key, public_key=me.public_key, listen_port=51820, fwmark=0x20)
            dev.peers[peer.public_key] = PeerState(public_key=peer.public_key, endpoint="192.0.2.2:51820", allowed_ips=[],
                                                   persistent_keepalive=25, preshared_key=SECRET, last_handshake=NOW - 10,
                                                   rx_bytes=100, tx_bytes=100)
            return dev

        def apply(self, update):
            pass

        def close(self):
            pass

    class Netlink:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def links(self):
            return []

    monkeypatch.setattr(engine, "reconcile_mesh", reconcile)
    monkeypatch.setattr(engine, "Netlink", Netlink)
    monkeypatch.setattr(agent, "open_device", Device)
    return calls


def tick(state_dir, tmp_path):
    logs = []
    rc = agent.run_tick(state_dir, logs.append, now_fn=lambda: NOW, sleep_fn=lambda _s: None,
                        metrics_file=str(tmp_path / "metrics" / "kubespan.prom"))
    return rc, logs


def test_a_tick_reads_each_state_file_once_and_writes_the_statuses_at_the_end(tmp_path, monkeypatch):
    state_dir, me, peer, _state = make_node(tmp_path, bypass=False)
    calls = fake_host(monkeypatch, me, peer)
    files = Files(monkeypatch, state_dir)
    rc, logs = tick(state_dir, tmp_path)
    assert rc == 0, logs
    print("tick reads %s, writes %s, reconciles %d" % (dict(files.reads), dict(files.writes), len(calls)))
    assert files.reads == {layout.STATE: 1, layout.STATUSES: 1, layout.KUBESPAN_IDENTITY: 1, layout.NODE_IDENTITY: 1}
    assert files.writes == {layout.STATUSES: 1}
    assert len(calls) == 1 and calls[0]["via"] == {}
    assert json.loads((tmp_path / layout.STATUSES).read_text())["peers"][peer.public_key]["state"] == "up"


def test_with_bypass_the_mid_tick_statuses_write_is_the_only_extra_write(tmp_path, monkeypatch):
    state_dir, me, peer, _state = make_node(tmp_path, bypass=True)
    calls = fake_host(monkeypatch, me, peer)
    files = Files(monkeypatch, state_dir)
    rc, logs = tick(state_dir, tmp_path)
    assert rc == 0, logs
    print("tick reads %s, writes %s, reconciles %d" % (dict(files.reads), dict(files.writes), len(calls)))
    # the bypass set changed (the peer came up): the statuses are written under the lock, then re-applied
    assert [c["up_peers"] for c in calls] == [[], [peer.public_key]]
    assert files.reads == {layout.STATE: 1, layout.STATUSES: 1, layout.KUBESPAN_IDENTITY: 1, layout.NODE_IDENTITY: 1}
    assert files.writes == {layout.STATUSES: 2}


def test_a_desired_state_rewritten_during_the_tick_is_read_again(tmp_path, monkeypatch):
    """The safety case (positive control of the counts above): a playbook run rewrites state.json while the tick
    samples; the tick's next re-apply under the lock uses the new peers, as the re-reads under the lock did."""
    state_dir, me, peer, state = make_node(tmp_path, bypass=True)

    def playbook_run():
        other = dict(state, peers=[dict(state["peers"][0], name="n2-renamed")])
        statefile.write_json(layout.path(state_dir, layout.STATE), other)

    calls = fake_host(monkeypatch, me, peer, on_first_read=playbook_run)
    files = Files(monkeypatch, state_dir)
    rc, logs = tick(state_dir, tmp_path)
    assert rc == 0, logs
    print("tick reads %s, writes %s" % (dict(files.reads), dict(files.writes)))
    assert [c["peers"] for c in calls] == [["n2"], ["n2-renamed"]]
    assert files.reads[layout.STATE] == 2


def test_node_state_reads_once_rereads_on_change_and_reports_corruption_as_before(tmp_path, monkeypatch):
    state_dir, _me, _peer, state = make_node(tmp_path)
    files = Files(monkeypatch, state_dir)
    node = NodeState(state_dir)
    assert node.state() is node.state() and files.reads[layout.STATE] == 1
    statefile.write_json(layout.path(state_dir, layout.STATE), dict(state, members=["n1"]))
    assert node.state()["members"] == ["n1"] and files.reads[layout.STATE] == 2
    (tmp_path / layout.STATE).write_text("{not json")
    with pytest.raises(statefile.StateFileError) as err:
        node.state()
    assert str(err.value).startswith(layout.path(state_dir, layout.STATE)) and node.state_or_empty() == {}
    (tmp_path / layout.STATUSES).write_text('{"version": 7}')
    statuses, problem = node.statuses()
    assert statuses == {} and "starting with fresh peer statuses" in problem
    assert agent.load_statuses(state_dir) == (statuses, problem)
    node.set_statuses({})
    assert files.writes[layout.STATUSES] == 0
    node.commit()
    node.commit()
    assert files.writes[layout.STATUSES] == 1


def test_a_module_run_plans_with_each_state_file_read_once_and_writes_the_state_once(tmp_path, monkeypatch):
    state_dir, me, peer, state = make_node(tmp_path, bypass=True)
    calls = fake_host(monkeypatch, me, peer)
    monkeypatch.setattr(meshrun, "reconcile_mesh", engine.reconcile_mesh)  # the recorder
    monkeypatch.setattr(meshrun, "host_never_routed", lambda *_a: [])
    monkeypatch.setattr(meshrun, "reconcile_host_firewall", lambda *_a: None, raising=False)
    files = Files(monkeypatch, state_dir)
    paddr = state["peers"][0]["address"]
    affiliates = [{"name": "n1", "public_key": me.public_key, "address": me.address.split("/")[0], "endpoints": ["192.0.2.1:51820"],
                   "addresses": ["192.0.2.1"]},
                  {"name": "n2", "public_key": peer.public_key, "address": paddr, "endpoints": ["192.0.2.2:51820"],
                   "addresses": ["192.0.2.2"], "additional_addresses": ["10.0.2.0/24"]}]
    p = {"state": "present", "cluster_id": CLUSTER, "cluster_secret": SECRET, "peers": affiliates, "members": ["n1", "n2"],
         "local_name": "n1", "state_dir": state_dir, "interface": "kstest", "implementation": "kernel", "allow_down_peer_bypass": True}
    result = meshrun.run(p, check_mode=False, diff=False, warn=lambda _w: None)
    print("run reads %s, writes %s, result changes %s" % (dict(files.reads), dict(files.writes), result["changes"]))
    assert files.reads == {layout.STATE: 1, layout.STATUSES: 1, layout.KUBESPAN_IDENTITY: 1, layout.NODE_IDENTITY: 1}
    assert files.writes == {layout.STATE: 1}
    assert calls[0]["up_peers"] == [] and calls[0]["via"] == {}
    assert json.loads((tmp_path / layout.STATE).read_text())["peers"][0]["public_key"] == peer.public_key
    assert ipaddress.ip_address(paddr)
