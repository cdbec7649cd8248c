"""The node agent's discovery client: settings, what to publish and when, harvesting, merging into the peer set, and
whole rounds against the real discovery service (in-process gRPC server on 127.0.0.1) with the real client."""

import base64
import json
import logging
import os
import stat

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agent, cli
from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_affiliates import seal_affiliate
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_agent as dag
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import write_json
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import STATE_VERSION, load_state, state_path

grpc = pytest.importorskip("grpc")
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_grpc as dg  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_server as ds  # noqa: E402

SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
SUBNET = "fd7f:175a:b97c:5602::/64"
CLUSTER = "unit-cluster"


def pub(n):
    return base64.b64encode(bytes([n]) * 32).decode()


def aff(n, **extra):
    base = {"name": "n%d" % n, "node_id": "Node%dId" % n, "public_key": pub(n), "address": "fd7f:175a:b97c:5602::%d" % n,
            "endpoints": ["10.0.0.%d:51820" % n], "addresses": ["10.0.0.%d" % n, "fd7f:175a:b97c:5602::%d" % n]}
    base.update(extra)
    return base


# --- settings --------------------------------------------------------------------------------------


def test_settings_defaults_and_validation():
    assert dag.normalize_settings(None) == dag.default_settings()
    assert dag.normalize_settings(None)["enabled"] is False
    ok = dag.normalize_settings({"enabled": True, "endpoint": "10.0.0.5:3000", "insecure": True, "unknown": 1})
    assert ok["endpoint"] == "10.0.0.5:3000" and "unknown" not in ok
    assert dag.normalize_settings({"enabled": True, "endpoint": "https://discovery.example.com/"})["insecure"] is False
    with pytest.raises(dag.DiscoverySettingsError, match="kubespan_discovery_endpoint is required"):
        dag.normalize_settings({"enabled": True})
    with pytest.raises(dag.DiscoverySettingsError, match="expected"):
        dag.normalize_settings({"enabled": True, "endpoint": "discovery.example.com"})
    with pytest.raises(dag.DiscoverySettingsError, match="expected"):
        dag.normalize_settings({"enabled": True, "endpoint": "ftp://x/"})
    with pytest.raises(dag.DiscoverySettingsError, match="ca_file"):
        dag.normalize_settings({"enabled": True, "endpoint": "10.0.0.5:3000", "insecure": True, "ca_file": "/ca.pem"})
    with pytest.raises(dag.DiscoverySettingsError, match="ttl"):
        dag.normalize_settings({"ttl": 3600})
    with pytest.raises(dag.DiscoverySettingsError, match="numbers"):
        dag.normalize_settings({"timeout": "soon"})
    # disabled settings are not checked for an endpoint
    assert dag.normalize_settings({"enabled": False, "endpoint": ""})["enabled"] is False


def test_service_target_forms():
    assert dag.service_target("https://discovery.talos.dev/", False) == ("discovery.talos.dev:443", True)
    assert dag.service_target("http://10.0.0.5:3000", False) == ("10.0.0.5:3000", False)
    assert dag.service_target("10.0.0.5:3000", True) == ("10.0.0.5:3000", False)
    assert dag.service_target("[2001:db8::5]:3000", False) == ("[2001:db8::5]:3000", True)


# --- what this node publishes ----------------------------------------------------------------------


def test_public_endpoint_from_hello():
    assert dag.public_endpoint("203.0.113.7", 51820) == "203.0.113.7:51820"
    assert dag.public_endpoint("2001:db8::7", 51821) == "[2001:db8::7]:51821"
    assert dag.public_endpoint("::ffff:203.0.113.7", 51820) == "203.0.113.7:51820"
    for useless in (None, "", "127.0.0.1", "::1", "fe80::1", "0.0.0.0", "not-an-ip", "224.0.0.1"):
        assert dag.public_endpoint(useless, 51820) is None
    # the service reached through the mesh sees our ULA: no underlay endpoint
    assert dag.public_endpoint("fd7f:175a:b97c:5602::9", 51820, SUBNET) is None
    assert dag.public_endpoint("fd00::9", 51820, SUBNET) == "[fd00::9]:51820"


def test_publishable_affiliate_appends_the_public_endpoint_once():
    local = dict(aff(1), allowed_ips=["x"], version=3)
    got = dag.publishable_affiliate(local, "203.0.113.7:51820")
    assert got["endpoints"] == ["10.0.0.1:51820", "203.0.113.7:51820"]
    assert "allowed_ips" not in got and "version" not in got
    assert dag.publishable_affiliate(local, "10.0.0.1:51820")["endpoints"] == ["10.0.0.1:51820"]
    assert dag.publishable_affiliate(local, None)["endpoints"] == ["10.0.0.1:51820"]


def test_publishable_affiliate_places_the_public_address_as_talos_does():
    local = aff(1, endpoints=["10.0.0.1:51820", "198.51.100.9:4000"])
    inputs = {"version": 1, "addresses": ["10.0.0.1/24", "fd7f:175a:b97c:5602::1/128"], "exclude": [SUBNET],
              "filters": ["0.0.0.0/0", "!192.0.2.0/24"], "port": 51820, "extra_endpoints": ["198.51.100.9:4000"]}
    # after the node's addresses, before the extra endpoints (not appended last)
    assert dag.publishable_affiliate(local, "203.0.113.7:51820", inputs)["endpoints"] == [
        "10.0.0.1:51820", "203.0.113.7:51820", "198.51.100.9:4000"]
    # the endpoint filters apply to it
    assert dag.publishable_affiliate(local, "192.0.2.7:51820", inputs)["endpoints"] == ["10.0.0.1:51820", "198.51.100.9:4000"]
    # unusable announce data: the inventory's endpoints with the public one appended, as without it
    assert dag.publishable_affiliate(local, "203.0.113.7:51820", {"version": 1})["endpoints"] == [
        "10.0.0.1:51820", "198.51.100.9:4000", "203.0.113.7:51820"]


def test_announce_inputs_file(tmp_path):
    d = str(tmp_path)
    assert dag.load_announce_inputs(d) is None
    inputs = {"version": 1, "addresses": ["10.0.0.1"], "exclude": [], "filters": [], "port": 51820, "extra_endpoints": []}
    dag.save_announce_inputs(d, inputs)
    path = dag.announce_path(d)
    assert dag.load_announce_inputs(d) == inputs and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = os.stat(path).st_mtime_ns
    dag.save_announce_inputs(d, dict(inputs))  # unchanged: not rewritten
    assert os.stat(path).st_mtime_ns == before
    with open(path, "w") as f:
        f.write("{broken")
    assert dag.load_announce_inputs(d) is None
    dag.save_announce_inputs(d, inputs)  # a corrupt file is replaced
    assert dag.load_announce_inputs(d) == inputs


def test_local_affiliate_by_key_or_name():
    affs = [aff(2), aff(1, allowed_ips=["fd7f::1/128"])]
    assert dag.local_affiliate(affs, pub(1), None) == aff(1)
    assert dag.local_affiliate(affs, pub(1), "n1") == aff(1)
    # a name match with another key is not this node
    assert dag.local_affiliate([aff(2, name="n1")], pub(1), "n1") is None
    assert dag.local_affiliate([], pub(1), "n1") is None


def test_publish_due_rules():
    digest = "d1"
    assert dag.publish_due(None, digest, 100.0, 1800) == "first publication"
    last = {"digest": digest, "at": 100.0}
    assert dag.publish_due(last, digest, 100.0 + 899, 1800) is None
    assert dag.publish_due(last, digest, 100.0 + 900, 1800) == "refresh (TTL/2)"
    assert dag.publish_due(last, "d2", 101.0, 1800) == "affiliate changed"
    assert dag.publish_due(last, digest, 50.0, 1800) == "refresh (TTL/2)"  # the clock went back
    assert "restarted" in dag.publish_due(last, digest, 101.0, 1800, present=False)
    assert dag.affiliate_digest("t", "c", aff(1)) == dag.affiliate_digest("t", "c", dict(reversed(list(aff(1).items()))))
    assert dag.affiliate_digest("t", "c", aff(1)) != dag.affiliate_digest("t2", "c", aff(1))


def test_harvest_plan_only_up_peers_with_an_observed_endpoint():
    peers = [aff(2), aff(3), aff(4, node_id=""), aff(5)]
    statuses = {pub(2): PeerStatus(state="up", endpoint="198.51.100.2:40000"),
                pub(3): PeerStatus(state="down", endpoint="198.51.100.3:51820"),
                pub(4): PeerStatus(state="up", endpoint="198.51.100.4:51820"),  # no node ID: nothing to publish for
                pub(5): PeerStatus(state="up", endpoint=""),
                pub(9): PeerStatus(state="up", endpoint="198.51.100.9:51820")}  # not a peer any more
    assert dag.harvest_plan(statuses, peers, {}, 1000.0, 1800) == [("Node2Id", "198.51.100.2:40000")]
    done = {"Node2Id": {"endpoint": "198.51.100.2:40000", "at": 1000.0}}
    assert dag.harvest_plan(statuses, peers, done, 1899.0, 1800) == []
    assert dag.harvest_plan(statuses, peers, done, 1900.0, 1800) == [("Node2Id", "198.51.100.2:40000")]
    moved = {pub(2): PeerStatus(state="up", endpoint="198.51.100.2:40001")}
    assert dag.harvest_plan(moved, peers, done, 1001.0, 1800) == [("Node2Id", "198.51.100.2:40001")]
    assert dag.harvest_plan(statuses, peers, {}, 1000.0, 1800, local_node_id="Node2Id") == []


# --- merging into the peer set ---------------------------------------------------------------------


def _plan(inventory, discovered, last=None):
    return dag.plan_peers(inventory, discovered, last, pub(1), "fd7f:175a:b97c:5602::1/128", SUBNET, aff(1), "n1")


def test_discovered_node_becomes_a_peer_and_inventory_nodes_gain_endpoints():
    found = [dict(aff(3), source="discovery"), dict(aff(2, endpoints=["203.0.113.2:51820"]), source="discovery")]
    peers, last, reasons = _plan([aff(2)], found)
    assert reasons == []
    by_name = {p["name"]: p for p in peers}
    assert sorted(by_name) == ["n2", "n3"]
    assert by_name["n2"]["endpoints"] == ["10.0.0.2:51820", "203.0.113.2:51820"]
    assert "10.0.0.3/32" in by_name["n3"]["allowed_ips"]
    assert [a["name"] for a in last] == ["n3"]


def test_unreachable_service_keeps_the_last_discovered_peers():
    last = [dict(aff(3), source="discovery")]
    peers, kept, reasons = _plan([aff(2)], None, last)
    assert sorted(p["name"] for p in peers) == ["n2", "n3"]
    assert kept == last
    assert any("unavailable" in r for r in reasons)


def test_hijack_attempts_are_trimmed_with_a_reason_and_never_routed_twice():
    # issue 17: an overlapping claim is trimmed in Talos's node-ID order and the peer kept; a stolen key is dropped
    thief = dict(aff(3, addresses=["10.0.0.2"]), source="discovery")  # claims n2's node address (Node2Id sorts first)
    own = dict(aff(4, addresses=["10.0.0.1"]), source="discovery")  # claims this node's address
    stolen_key = dict(aff(5, public_key=pub(2)), source="discovery")
    peers, last, reasons = _plan([aff(2)], [thief, own, stolen_key])
    assert [p["name"] for p in peers] == ["n2", "n3", "n4"]
    assert [a["name"] for a in last] == ["n3", "n4"]
    assert len([r for r in reasons if "dropped" in r]) == 1 and any("n3 (" in r and "held by peer n2" in r for r in reasons)
    assert any("n4 (" in r and "this node's own addresses 10.0.0.1/32" in r for r in reasons)
    assert [p["allowed_ips"] for p in peers].count(["fd7f:175a:b97c:5602::3/128"]) == 1
    assert sum(p["allowed_ips"].count("10.0.0.2/32") for p in peers) == 1 and "10.0.0.2/32" in peers[0]["allowed_ips"]
    assert not any("10.0.0.1/32" in p["allowed_ips"] for p in peers)


def test_name_and_address_clashes_among_discovered_nodes():
    # a discovered node named like this node is never a peer; of two discovered nodes with one KubeSpan address
    # (cloned MACs), both are meshed and the first in node-ID order keeps the address (issue 17)
    peers, _last, reasons = _plan([aff(2)], [dict(aff(6, name="n1"), source="discovery")])
    assert [p["name"] for p in peers] == ["n2"]
    same = [dict(aff(6), source="discovery"), dict(aff(7, address=aff(6)["address"]), source="discovery")]
    peers, last, reasons = _plan([aff(2)], same)
    assert [p["name"] for p in peers] == ["n2", "n6", "n7"] and any("n7" in r and "same KubeSpan address" in r for r in reasons)
    assert aff(6)["address"] + "/128" in peers[1]["allowed_ips"] and aff(6)["address"] + "/128" not in peers[2]["allowed_ips"]


def test_same_peers_ignores_versions():
    assert dag.same_peers([dict(aff(2), version=1)], [dict(aff(2), version=7)])
    assert not dag.same_peers([aff(2)], [aff(3)])


# --- memory file -----------------------------------------------------------------------------------


def test_memory_file_round_trip_mode_and_corruption(tmp_path):
    d = str(tmp_path)
    assert dag.load_memory(d) == ({}, None)
    dag.save_memory(d, {"affiliates": [dict(aff(3), source="discovery")], "published": {"digest": "x", "at": 1.0}})
    assert stat.S_IMODE(os.stat(dag.discovery_path(d)).st_mode) == 0o600
    assert [a["name"] for a in dag.last_discovered(d)] == ["n3"]
    with open(dag.discovery_path(d), "w") as f:
        f.write("{nope")
    memory, problem = dag.load_memory(d)
    assert memory == {} and "discovery.json" in problem and dag.last_discovered(d) == []
    with open(dag.discovery_path(d), "w") as f:
        json.dump({"version": 99}, f)
    assert "unknown format" in dag.load_memory(d)[1]


# --- whole rounds against the real service -----------------------------------------------------------


@pytest.fixture
def service():
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000))
    server = dg.DiscoveryServer(svc, listen="127.0.0.1:0", max_workers=16, logger=logging.getLogger("test"))
    port = server.start()
    yield server, "127.0.0.1:%d" % port
    server.stop()


def node_state(n, endpoint, inventory=(), harvest=False):
    me = aff(n)
    return {"version": STATE_VERSION, "settings": {"listen_port": 51820, "state_dir": "/nonexistent"}, "cluster_id": CLUSTER,
            "cluster_secret": SECRET, "address": me["address"] + "/128", "subnet": SUBNET, "members": None,
            "peers": [dict(a, allowed_ips=[a["address"] + "/128"]) for a in inventory], "inventory_peers": list(inventory),
            "local_affiliate": me,
            "discovery": {"enabled": True, "endpoint": endpoint, "insecure": True, "harvest_extra_endpoints": harvest}}


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def run_round(tmp_path, name, state, clock, logs):
    d = str(tmp_path / name)
    os.makedirs(d, exist_ok=True)
    changed = []
    rnd = dag.DiscoveryRound(d, state, logs.append, clock, hostname=name)
    try:
        rnd.sync(changed.append)
    finally:
        rnd.close()
    return rnd, changed


def test_two_nodes_find_each_other_through_the_service(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    a = node_state(1, target)
    b = node_state(2, target)
    rnd_a, changed_a = run_round(tmp_path, "a", a, clock, logs)
    assert rnd_a.reachable and changed_a == []  # alone in the cluster
    assert any("published this node's affiliate (first publication" in line for line in logs)
    # the service saw 127.0.0.1: no endpoint candidate from Hello
    assert dag.load_memory(str(tmp_path / "a"))[0]["public_endpoint"] is None
    _rnd_b, changed_b = run_round(tmp_path, "b", b, clock, logs)
    assert len(changed_b) == 1 and [p["name"] for p in changed_b[0]] == ["n1"]
    assert changed_b[0][0]["endpoints"] == ["10.0.0.1:51820"]
    assert "10.0.0.1/32" in changed_b[0][0]["allowed_ips"]
    assert any("new affiliate n1" in line for line in logs)
    # a, again: finds b; nothing to publish (unchanged, within TTL/2, still on the service)
    logs.clear()
    _rnd, changed_a = run_round(tmp_path, "a", a, clock, logs)
    assert [p["name"] for p in changed_a[0]] == ["n2"]
    assert not any("published" in line for line in logs)
    # once the peers are in the desired state, a round changes nothing
    a["peers"] = changed_a[0]
    assert run_round(tmp_path, "a", a, clock, logs)[1] == []
    # half the TTL later it refreshes
    clock.t += 900
    logs.clear()
    run_round(tmp_path, "a", a, clock, logs)
    assert any("refresh (TTL/2)" in line for line in logs)


def test_published_endpoints_follow_the_kept_announce_inputs(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    d = tmp_path / "a"
    d.mkdir()
    # the filters put 10.9.0.1 first; the published endpoints come from these inputs, not from the entry in the
    # desired state (the same inputs made both; here the entry is left stale to tell them apart)
    dag.save_announce_inputs(str(d), {"version": 1, "addresses": ["10.0.0.1", "10.9.0.1"], "exclude": [], "port": 51820,
                                      "filters": ["10.9.0.0/16", "10.0.0.0/8"], "extra_endpoints": ["198.51.100.1:4000"]})
    a = node_state(1, target)
    a["local_affiliate"] = dict(a["local_affiliate"], endpoints=["10.0.0.1:51820"])
    run_round(tmp_path, "a", a, clock, logs)
    _rnd, changed_b = run_round(tmp_path, "b", node_state(2, target), clock, logs)
    assert changed_b[0][0]["endpoints"] == ["10.9.0.1:51820", "10.0.0.1:51820", "198.51.100.1:4000"]


def test_service_restart_without_state_makes_nodes_re_register(tmp_path, service):
    server, target = service
    clock, logs = Clock(), []
    a = node_state(1, target)
    run_round(tmp_path, "a", a, clock, logs)
    server.service.state = ds.DiscoveryState()  # what a restart without a state file leaves
    logs.clear()
    run_round(tmp_path, "a", a, clock, logs)
    assert any("does not have it" in line for line in logs)
    assert [a.id for a in server.service.state.list(CLUSTER)] == ["Node1Id"]


def test_unreachable_service_changes_nothing_and_warns(tmp_path):
    clock, logs = Clock(), []
    d = tmp_path / "b"
    d.mkdir()
    dag.save_memory(str(d), {"affiliates": [dict(aff(1), source="discovery")]})
    b = node_state(2, "127.0.0.1:1")
    rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    assert changed == [] and not rnd.reachable
    assert any("unavailable" in line and "keeping" in line for line in logs)
    memory = dag.load_memory(str(d))[0]
    assert [a["name"] for a in memory["affiliates"]] == ["n1"] and memory["last_error"]
    assert "could not reach the discovery service" in dag.agent_warning(str(d)) and "the 1 affiliates" in dag.agent_warning(str(d))
    assert dag.agent_warning(str(tmp_path / "never")) is None


def test_forged_affiliate_on_the_service_is_dropped_with_a_logged_reason(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    with dg.DiscoveryClient(target, insecure=True) as client:
        # sealed with another secret, and one replayed under another node's ID
        data, eps = seal_affiliate(bytes(range(32)), aff(3))
        client.update(CLUSTER, "Node3Id", data, eps)
        from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_crypto import key_from_secret
        data, eps = seal_affiliate(key_from_secret(SECRET), aff(4, addresses=["10.0.0.2"]))
        client.update(CLUSTER, "Node4Id", data, eps)
    b = node_state(2, target)
    _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    # issue 17: Node4Id (sealed with the cluster secret) is meshed without this node's address 10.0.0.2
    assert [[p["name"] for p in c] for c in changed] == [["n4"]] and "10.0.0.2/32" not in changed[0][0]["allowed_ips"]
    assert any("Node3Id dropped" in line for line in logs)
    assert any("n4 (" in line and "this node's own addresses 10.0.0.2/32" in line for line in logs)
    # the same reasons are not logged again at the next tick
    logs.clear()
    run_round(tmp_path, "b", b, clock, logs)
    assert not any("dropped" in line for line in logs)


def test_deleted_affiliate_leaves_the_peer_set(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    a, b = node_state(1, target), node_state(2, target)
    run_round(tmp_path, "a", a, clock, logs)
    _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    b["peers"] = changed[0]
    assert dag.delete_affiliate(dag.normalize_settings(a["discovery"]), CLUSTER, "Node1Id") is None
    logs.clear()
    _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    assert changed == [[]]
    assert any("affiliate n1 (Node1Id) is gone" in line for line in logs)
    # a service that cannot be reached: a warning naming the expiry
    warning = dag.delete_affiliate(dag.normalize_settings(dict(a["discovery"], endpoint="127.0.0.1:1", timeout=1)), CLUSTER, "Node1Id")
    assert "expires" in warning


def test_harvested_endpoints_are_published_for_the_peer(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    a, b = node_state(1, target), node_state(2, target, harvest=True)
    run_round(tmp_path, "a", a, clock, logs)
    d = str(tmp_path / "b")
    os.makedirs(d)
    rnd = dag.DiscoveryRound(d, b, logs.append, clock, hostname="b")
    try:
        changed = []
        rnd.sync(changed.append)
        rnd.harvest({pub(1): PeerStatus(state="up", endpoint="198.51.100.1:40000")}, changed[0])
    finally:
        rnd.close()
    assert any("published harvested endpoint 198.51.100.1:40000 for Node1Id" in line for line in logs)
    # a third node now sees n1 with the harvested endpoint too
    _rnd, changed = run_round(tmp_path, "c", node_state(3, target), clock, logs)
    n1 = [p for p in changed[0] if p["name"] == "n1"][0]
    assert sorted(n1["endpoints"]) == ["10.0.0.1:51820", "198.51.100.1:40000"]


# --- the agent's use of it ---------------------------------------------------------------------------


def test_agent_discovery_sync_rewrites_the_desired_state_peers(tmp_path, service):
    _server, target = service
    clock, logs = Clock(), []
    run_round(tmp_path, "a", node_state(1, target), clock, logs)
    d = str(tmp_path / "b")
    os.makedirs(d)
    state = node_state(2, target)
    write_json(state_path(d), state)
    rnd, new_state = agent._discovery_sync(d, state, logs.append, clock, lock_timeout=5)
    rnd.close()
    assert [p["name"] for p in new_state["peers"]] == ["n1"]
    assert new_state["peers"][0]["version"] == 1
    assert load_state(d)["peers"] == new_state["peers"]
    assert any("peer set updated (added: n1" in line for line in logs)
    # the desired state changed under us (a playbook run with other inventory peers): no rewrite
    other = dict(state, inventory_peers=[aff(5)])
    write_json(state_path(d), other)
    run_round(tmp_path, "c", node_state(3, target), clock, logs)
    logs.clear()
    rnd, _new = agent._discovery_sync(d, dict(load_state(d), inventory_peers=[]), logs.append, clock, lock_timeout=5)
    rnd.close()
    assert any("changed during this tick" in line for line in logs)


def test_agent_discovery_sync_survives_bad_settings(tmp_path):
    logs = []
    state = node_state(2, "")
    disc, same = agent._discovery_sync(str(tmp_path), state, logs.append, Clock(), lock_timeout=5)
    assert disc is None and same is state and "discovery skipped" in logs[0]


def test_cli_lists_affiliates(tmp_path):
    d = str(tmp_path)
    state = node_state(2, "127.0.0.1:1", inventory=[aff(3)])
    write_json(state_path(d), state)
    dag.save_memory(d, {"affiliates": [dict(aff(1), source="discovery")]})
    recs = cli.affiliate_records(d)
    assert [(r["hostname"], r["source"]) for r in recs] == [("n2", "local"), ("n3", "inventory"), ("n1", "discovery")]
    assert recs[2]["endpoints"] == ["10.0.0.1:51820"]


def test_cli_discovery_serve_dispatches_to_the_service_cli(capsys):
    with pytest.raises(SystemExit):
        cli.main(["discovery-serve", "--help"])
    assert "--tls-cert" in capsys.readouterr().out


def _start(svc):
    server = dg.DiscoveryServer(svc, listen="127.0.0.1:0", max_workers=8, logger=logging.getLogger("test"))
    return server, "127.0.0.1:%d" % server.start()


def test_hello_redirect_is_followed_and_logged_once(tmp_path):
    new_server, new_target = _start(ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000)))
    old_server, old_target = _start(ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000), redirect=new_target))
    try:
        clock, logs = Clock(), []
        a = node_state(1, old_target)
        rnd, _changed = run_round(tmp_path, "a", a, clock, logs)
        assert rnd.reachable and rnd.endpoint == new_target
        # the affiliate went to the service the old one redirected to, not to the old one
        assert [x.id for x in new_server.service.state.list(CLUSTER)] == ["Node1Id"]
        assert old_server.service.state.list(CLUSTER) == []
        assert sum("redirects to %s: using it" % new_target in line for line in logs) == 1
        memory = dag.load_memory(str(tmp_path / "a"))[0]
        assert memory["redirected_to"] == new_target
        # a second node pointed at the old service finds the first one through the redirect
        _rnd, changed_b = run_round(tmp_path, "b", node_state(2, old_target), clock, logs)
        assert [p["name"] for p in changed_b[0]] == ["n1"]
        # the next tick: same redirect, nothing logged about it again
        logs.clear()
        run_round(tmp_path, "a", a, clock, logs)
        assert not any("redirect" in line for line in logs)
        # the old service stops redirecting: logged once, and the node talks to it again
        old_server.service.redirect = ""
        # Hello is said again after HELLO_INTERVAL (the ticks between use the kept redirect, as Talos's client keeps
        # its connection)
        rnd, _changed = run_round(tmp_path, "a", a, clock, logs)
        assert rnd.endpoint == new_target
        clock.t += dag.HELLO_INTERVAL
        rnd, _changed = run_round(tmp_path, "a", a, clock, logs)
        assert rnd.endpoint == old_target and any("answers without a redirect" in line for line in logs)
        assert dag.load_memory(str(tmp_path / "a"))[0]["redirected_to"] is None
    finally:
        old_server.stop()
        new_server.stop()


def test_hello_redirect_loop_stops(tmp_path):
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000))
    server, target = _start(svc)
    try:
        svc.redirect = target  # redirects to itself
        logs = []
        rnd, _changed = run_round(tmp_path, "a", node_state(1, target), Clock(), logs)
        assert rnd.reachable and rnd.endpoint == target
        assert any("redirects back to %s" % target in line for line in logs)
        assert [x.id for x in svc.state.list(CLUSTER)] == ["Node1Id"]
    finally:
        server.stop()


def test_unreachable_redirect_target_is_named(tmp_path):
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000), redirect="127.0.0.1:1")
    server, target = _start(svc)
    try:
        logs = []
        rnd, changed = run_round(tmp_path, "a", node_state(1, target), Clock(), logs)
        assert not rnd.reachable and changed == []
        assert any("discovery service 127.0.0.1:1 unavailable" in line for line in logs), logs
        svc.redirect = "not an endpoint"
        logs.clear()
        rnd, _changed = run_round(tmp_path, "a", node_state(1, target), Clock(), logs)
        assert rnd.reachable and rnd.endpoint == target
        assert any("which is not host:port" in line for line in logs), logs
    finally:
        server.stop()


# --- abuse (issue 15 item 4) ------------------------------------------------------------------------------


def test_overwritten_data_is_republished_at_the_next_tick(tmp_path, service):
    """Anyone who knows the cluster ID can overwrite an affiliate's data: every peer would drop it until its next
    refresh (15 min). The node notices that its stored blob no longer opens to its content and publishes again."""
    server, target = service
    clock, logs = Clock(), []
    a, b = node_state(1, target), node_state(2, target)
    run_round(tmp_path, "a", a, clock, logs)
    with dg.DiscoveryClient(target, insecure=True) as attacker:
        attacker.update(CLUSTER, "Node1Id", b"junk" * 10, [bytes([i]) * 16 for i in range(64)])
    _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    assert changed == [] and any("Node1Id dropped" in line for line in logs)  # the attack works on b...
    clock.t += 30
    logs.clear()
    run_round(tmp_path, "a", a, clock, logs)  # ...until a's next tick (well within TTL/2)
    assert any("published this node's affiliate (the service does not have it as published" in line for line in logs)
    _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
    assert [p["name"] for p in changed[0]] == ["n1"] and changed[0][0]["endpoints"] == ["10.0.0.1:51820"]
    # and an unchanged, intact affiliate is not published again
    logs.clear()
    run_round(tmp_path, "a", a, clock, logs)
    assert not any("published" in line for line in logs)


def test_merge_happens_even_when_the_own_publish_fails(tmp_path, service):
    server, target = service
    clock, logs = Clock(), []
    run_round(tmp_path, "a", node_state(1, target), clock, logs)
    server.service.state.affiliates_max = 1  # full: b's own affiliate is refused
    logs.clear()
    rnd, changed = run_round(tmp_path, "b", node_state(2, target), clock, logs)
    assert rnd.reachable and [p["name"] for p in changed[0]] == ["n1"]
    assert any("could not be published" in line and "RESOURCE_EXHAUSTED" in line for line in logs)
    memory = dag.load_memory(str(tmp_path / "b"))[0]
    assert not memory["published"] and "RESOURCE_EXHAUSTED" in memory["publish_error"]
    server.service.state.affiliates_max = 100
    logs.clear()
    run_round(tmp_path, "b", node_state(2, target), clock, logs)
    assert any("published this node's affiliate (first publication" in line for line in logs)
    assert "publish_error" not in dag.load_memory(str(tmp_path / "b"))[0]


class HostileService:
    """A real gRPC server that answers Hello, AffiliateUpdate and List with fixed bytes (List: junk affiliates)."""

    def __init__(self, list_bytes):
        from concurrent import futures

        from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as w

        def unary(payload):
            return grpc.unary_unary_rpc_method_handler(lambda _req, _ctx: payload)
        handler = grpc.method_handlers_generic_handler(w.SERVICE_NAME, {
            "Hello": unary(w.HelloResponse().encode()), "AffiliateUpdate": unary(b""), "List": unary(list_bytes)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler],
                                  options=[("grpc.max_send_message_length", 64 << 20)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = "127.0.0.1:%d" % self.port

    def stop(self):
        self.server.stop(None).wait()


def junk_list(count):
    """A ListResponse of ``count`` junk affiliates, each with data (so each would be opened and give a reason)."""
    return b"".join(b"\x0a\x0d\x0a\x07" + (b"j%06d" % i) + b"\x12\x02zz" for i in range(count))


def test_hostile_service_listing_junk_costs_a_bounded_tick(tmp_path):
    """A hostile service answering List with 390,000 junk affiliates cost a tick 5.2 s of CPU, 444 MB RSS, 390,000
    journal lines and a 51 MB discovery.json. Now: 1,024 affiliates are read, 21 lines logged, the file is small."""
    import resource
    import time
    payload = junk_list(300000)  # 4.5 MB: just under the client's receive cap (dg.CLIENT_MAX_RECEIVE)
    assert len(payload) < dg.CLIENT_MAX_RECEIVE
    hostile = HostileService(payload)
    try:
        clock, logs = Clock(), []
        d = tmp_path / "victim"
        d.mkdir()
        dag.save_memory(str(d), {"affiliates": [dict(aff(3), source="discovery")]})
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu0, t0 = time.process_time(), time.monotonic()
        rnd, changed = run_round(tmp_path, "victim", node_state(2, hostile.target), clock, logs)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        hostile.stop()
    assert rnd.reachable and changed == []
    assert len(logs) <= dag.MAX_REASONS + 5
    assert any("the service lists more than 1024 affiliates" in line for line in logs)
    assert any("more reasons not logged one by one" in line for line in logs)
    size = (d / "discovery.json").stat().st_size
    memory = dag.load_memory(str(d))[0]
    assert len(memory["reasons"]) == dag.MAX_REASONS + 1 and size < 20000
    print("hostile List of 300,000 junk affiliates (%d KiB): tick CPU %.2f s, wall %.2f s, max RSS %d -> %d KiB, "
          "%d log lines, discovery.json %d bytes" % (len(payload) // 1024, cpu, wall, rss0, rss1, len(logs), size))


def test_hostile_service_answer_beyond_the_receive_cap_is_refused_before_decoding(tmp_path):
    hostile = HostileService(junk_list(400000))  # 6 MB: no service within Talos's limits sends this
    try:
        clock, logs = Clock(), []
        d = tmp_path / "victim"
        d.mkdir()
        dag.save_memory(str(d), {"affiliates": [dict(aff(3), source="discovery")]})
        rnd, changed = run_round(tmp_path, "victim", node_state(2, hostile.target), clock, logs)
    finally:
        hostile.stop()
    assert not rnd.reachable and changed == []
    assert any("unavailable" in line and "RESOURCE_EXHAUSTED" in line for line in logs)
    assert [a["name"] for a in dag.load_memory(str(d))[0]["affiliates"]] == ["n3"]  # kept


def test_memory_file_read_back_is_bounded(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    junk = {"version": dag.DISCOVERY_VERSION, "affiliates": [{"n": i} for i in range(5000)], "reasons": ["x" * 5000] * 500}
    write_json(str(d / dag.DISCOVERY_FILE), junk)
    memory = dag.load_memory(str(d))[0]
    assert len(memory["affiliates"]) == dag.MAX_AFFILIATES
    assert len(memory["reasons"]) == dag.MAX_REASONS + 1 and all(len(r) <= dag.MAX_REASON_CHARS for r in memory["reasons"])
