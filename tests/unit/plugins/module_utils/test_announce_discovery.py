"""Issue 17 items 2-4: Talos's address rules for what a node announces, filters.peerEndpoints, the affiliate's machine type
and API server port, several discovery services at once, Watch within the sampling window, the address recomputed from
the current first physical MAC. The service tests run the real discovery service (in-process gRPC on 127.0.0.1) and the
real client."""

import logging
import os
import time

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core.addressing import eui64_address, ula_prefix
from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_affiliates import affiliate_message
from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_crypto import key_from_secret, open_data
from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_wire import ClientAffiliate
from ansible_collections.kubespan.mesh.plugins.module_utils.core.endpoints import filter_peer_endpoints
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_agent as dag
from ansible_collections.kubespan.mesh.plugins.module_utils.host.identity import load_identity, new_identity, save_identity
from ansible_collections.kubespan.mesh.plugins.module_utils.host.netlink import RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, select_node_addresses
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import write_json
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import STATE_VERSION, load_state, state_path
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.nodestate import NodeState

SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
SUBNET = "fd7f:175a:b97c:5602::/64"
CLUSTER = "unit-cluster"


def pub(n):
    import base64
    return base64.b64encode(bytes([n]) * 32).decode()


def aff(n, **extra):
    base = {"name": "n%d" % n, "node_id": "Node%dId" % n, "public_key": pub(n), "address": "fd7f:175a:b97c:5602::%d" % n,
            "endpoints": ["10.0.0.%d:51820" % n], "addresses": ["10.0.0.%d" % n, "fd7f:175a:b97c:5602::%d" % n]}
    base.update(extra)
    return base


def node_state(n, endpoint):
    me = aff(n)
    return {"version": STATE_VERSION, "settings": {"listen_port": 51820, "state_dir": "/nonexistent"}, "cluster_id": CLUSTER,
            "cluster_secret": SECRET, "address": me["address"] + "/128", "subnet": SUBNET, "members": None,
            "peers": [], "inventory_peers": [], "local_affiliate": me,
            "discovery": {"enabled": True, "endpoint": endpoint, "insecure": True}}


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


grpc = pytest.importorskip("grpc")
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_grpc as dg  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_server as ds  # noqa: E402

# --- item 2: the node addresses Talos announces -----------------------------------------------------------


def test_node_addresses_links_up_global_scope_sorted_v4_first_deduplicated():
    records = [
        ("eth1", "2001:db8::20", True, RT_SCOPE_UNIVERSE),
        ("eth0", "192.168.1.10", True, RT_SCOPE_UNIVERSE),
        ("eth0", "10.0.0.9", True, RT_SCOPE_UNIVERSE),
        ("eth2", "10.9.9.9", False, RT_SCOPE_UNIVERSE),         # link down: never announced
        ("eth0", "fe80::1", True, RT_SCOPE_LINK),                # link scope
        ("lo", "127.0.0.1", True, RT_SCOPE_HOST),                # host scope
        ("kube-ipvs0", "10.96.0.1", True, RT_SCOPE_UNIVERSE),    # a Service ClusterIP held by kube-proxy's IPVS dummy
        ("eth3", "10.0.0.9", True, RT_SCOPE_UNIVERSE),           # duplicate: the first interface is kept
        ("eth1", "2001:db8::3", True, RT_SCOPE_UNIVERSE),
        ("eth0", "10.0.0.10", True, RT_SCOPE_UNIVERSE),
    ]
    assert select_node_addresses(records) == [
        ("eth0", "10.0.0.9"), ("eth0", "10.0.0.10"), ("eth0", "192.168.1.10"), ("eth1", "2001:db8::3"), ("eth1", "2001:db8::20")]


def test_numeric_not_textual_order():
    # text order would put 10.0.0.10 before 10.0.0.9 and 2001:db8::20 before 2001:db8::3
    got = [a for _n, a in select_node_addresses([("e", "10.0.0.10", True, 0), ("e", "10.0.0.9", True, 0), ("e", "9.0.0.1", True, 0)])]
    assert got == ["9.0.0.1", "10.0.0.9", "10.0.0.10"]


# --- item 3: filters.peerEndpoints -------------------------------------------------------------------------


def test_peer_endpoint_filters_as_talos_filter_ips():
    peers = [{"name": "a", "public_key": "k", "endpoints": ["192.168.3.8:457", "10.3.4.5:51820", "[2001:db8::1]:51820", "10.3.4.1:51820"]}]
    assert filter_peer_endpoints(peers, None)[0]["endpoints"] == peers[0]["endpoints"]
    # FilterIPs vector of Talos's tests, on endpoints: [10.0.0.0/8 !10.3.4.1/32] keeps 10.3.4.5 only
    assert filter_peer_endpoints(peers, ["10.0.0.0/8", "!10.3.4.1/32"])[0]["endpoints"] == ["10.3.4.5:51820"]
    # order: filter order, then the peer's order
    assert filter_peer_endpoints(peers, ["::/0", "0.0.0.0/0"])[0]["endpoints"] == [
        "[2001:db8::1]:51820", "192.168.3.8:457", "10.3.4.5:51820", "10.3.4.1:51820"]
    # explicitly empty: no endpoint is dialled
    assert filter_peer_endpoints(peers, [])[0]["endpoints"] == []
    # the input is not changed
    assert len(peers[0]["endpoints"]) == 4
    with pytest.raises(ValueError, match="not a CIDR"):
        filter_peer_endpoints(peers, ["10.0.0.0/33"])


def test_plan_peers_applies_the_peer_endpoint_filter():
    inventory = [aff(1, endpoints=["10.0.0.1:51820", "192.168.50.1:51820"]), aff(2)]
    peers, _last, _reasons = dag.plan_peers(inventory, None, None, aff(2)["public_key"], aff(2)["address"], SUBNET,
                                            aff(2), "n2", None, (), ["10.0.0.0/8"])
    assert [p["endpoints"] for p in peers] == [["10.0.0.1:51820"]]


# --- item 3: machine type and API server port ---------------------------------------------------------------


def test_affiliate_carries_machine_type_and_api_server_port_as_talos():
    msg, _eps = affiliate_message(aff(1), hostname="n1", machine_type="controlplane", operating_system="x", api_server_port=6443)
    decoded = ClientAffiliate.decode(msg.encode())
    assert decoded.machine_type == "controlplane" and decoded.control_plane.api_server_port == 6443
    worker, _eps = affiliate_message(aff(1), machine_type="worker", api_server_port=6443)
    decoded = ClientAffiliate.decode(worker.encode())
    assert decoded.machine_type == "worker" and decoded.control_plane is None


def test_settings_endpoints_list_machine_type_and_port():
    single = dag.normalize_settings({"enabled": True, "endpoint": "10.0.0.5:3000", "insecure": True})
    assert single["endpoints"] == ["10.0.0.5:3000"] and single["machine_type"] == "worker" and single["api_server_port"] == 6443
    several = dag.normalize_settings({"enabled": True, "endpoint": "10.0.0.5:3000", "insecure": True,
                                      "endpoints": ["10.0.0.6:3000", "10.0.0.7:3000", "10.0.0.6:3000"]})
    assert several["endpoints"] == ["10.0.0.6:3000", "10.0.0.7:3000"] and several["endpoint"] == "10.0.0.6:3000"
    with pytest.raises(dag.DiscoverySettingsError, match="kubespan_discovery_endpoints must be a list"):
        dag.normalize_settings({"enabled": True, "endpoints": "10.0.0.6:3000"})
    with pytest.raises(dag.DiscoverySettingsError, match="expected"):
        dag.normalize_settings({"enabled": True, "insecure": True, "endpoints": ["10.0.0.6:3000", "nohostport"]})
    with pytest.raises(dag.DiscoverySettingsError, match="kubespan_machine_type"):
        dag.normalize_settings({"machine_type": "master"})
    with pytest.raises(dag.DiscoverySettingsError, match="kubespan_api_server_port"):
        dag.normalize_settings({"api_server_port": 70000})


def test_merge_discovered_unites_lists_and_overwrites_scalars():
    a1 = aff(1, endpoints=["10.0.0.1:51820"])
    a1b = aff(1, endpoints=["203.0.113.1:51820", "10.0.0.1:51820"], name="n1-renamed")
    assert dag.merge_discovered([None, None]) is None
    got = dag.merge_discovered([[a1, aff(3)], None, [a1b, aff(2)]])
    assert [a["name"] for a in got] == ["n1-renamed", "n2", "n3"]
    assert got[0]["endpoints"] == ["10.0.0.1:51820", "203.0.113.1:51820"]
    assert dag.merge_discovered([[]]) == []


# --- whole rounds against real services ----------------------------------------------------------------------


def _service():
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000))
    server = dg.DiscoveryServer(svc, listen="127.0.0.1:0", max_workers=16, logger=logging.getLogger("test"))
    return server, "127.0.0.1:%d" % server.start()


def _stored(server, node_id):
    return [a for a in server.service.state.list(CLUSTER) if a.id == node_id]


def test_published_affiliate_names_the_machine_type_and_port(tmp_path):
    server, target = _service()
    try:
        state = node_state(1, target)
        state["discovery"] = dict(state["discovery"], machine_type="controlplane", api_server_port=7443)
        run_round(tmp_path, "a", state, Clock(), [])
        stored = _stored(server, "Node1Id")[0]
        msg = ClientAffiliate.decode(open_data(key_from_secret(SECRET), stored.data))
        assert msg.machine_type == "controlplane" and msg.control_plane.api_server_port == 7443
        assert msg.operating_system == "kubespan.mesh" and msg.nodename == "n1"
    finally:
        server.stop()


def test_two_services_stopping_either_loses_no_peer(tmp_path):
    s1, t1 = _service()
    s2, t2 = _service()
    clock = Clock()
    try:
        def state(n):
            st = node_state(n, t1)
            st["discovery"] = dict(st["discovery"], endpoints=[t1, t2])
            return st
        logs = []
        run_round(tmp_path, "a", state(1), clock, logs)
        # a published on both services, with its own client each
        assert _stored(s1, "Node1Id") and _stored(s2, "Node1Id")
        assert sum("published this node's affiliate (first publication" in line for line in logs) == 2
        b = state(2)
        _rnd, changed = run_round(tmp_path, "b", b, clock, logs)
        assert [p["name"] for p in changed[0]] == ["n1"]
        b["peers"] = changed[0]
        # stop the first service: b keeps n1 (the second lists it); then a third node appears only on the second one
        s1.stop()
        c = state(3)
        c["discovery"] = dict(c["discovery"], endpoints=[t2])
        run_round(tmp_path, "c", c, clock, [])
        logs.clear()
        rnd, changed = run_round(tmp_path, "b", b, clock, logs)
        assert rnd.reachable and any("unavailable" in line and t1 in line for line in logs)
        assert [p["name"] for p in changed[0]] == ["n1", "n3"]
        b["peers"] = changed[0]
        # the first back, the second stopped: nothing lost (n3, known only to the second, stands in from its last list)
        s1 = dg.DiscoveryServer(ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000)),
                                listen=t1, max_workers=16, logger=logging.getLogger("test"))
        s1.start()
        run_round(tmp_path, "a", state(1), clock, [])  # a re-publishes on the restarted (empty) first service
        s2.stop()
        logs.clear()
        rnd, changed = run_round(tmp_path, "b", b, clock, logs)
        assert rnd.reachable and changed == []  # same peers: n1 from the first service, n3 from the second's last list
        assert [p["name"] for p in load_peers(b)] == ["n1", "n3"]
    finally:
        s1.stop()
        s2.stop()


def load_peers(state):
    return state["peers"]


def test_watch_applies_a_new_node_within_the_sampling_window(tmp_path):
    """A node that joins while another's agent samples is applied as its affiliate arrives (Watch), not at the next
    tick's List. The time from its publication to the merged peer set is printed (no timed assertion)."""
    server, target = _service()
    try:
        clock = Clock()
        d = str(tmp_path / "a")
        os.makedirs(d)
        logs, updates = [], []
        rnd = dag.DiscoveryRound(d, node_state(1, target), logs.append, clock, hostname="a", watch_seconds=20)
        try:
            rnd.sync(updates.append)
            assert updates == [] and rnd.watching()
            assert not rnd.poll(updates.append)  # nothing arrived
            t0 = time.monotonic()
            run_round(tmp_path, "b", node_state(2, target), clock, [])  # b publishes on the service
            assert rnd.wait(10.0)
            assert rnd.poll(updates.append)
            elapsed = time.monotonic() - t0
            assert [p["name"] for p in updates[-1]] == ["n2"]
            print("watch: n2 in a's peer set %.3f s after b's tick began" % elapsed)
            # b leaves (AffiliateDelete): gone at the next event
            with dg.DiscoveryClient(target, insecure=True) as client:
                client.delete(CLUSTER, "Node2Id")
            assert rnd.wait(10.0) and rnd.poll(updates.append)
            assert updates[-1] == []
        finally:
            rnd.close()
        assert not rnd.watching()
        # one Hello and one Watch: List was not needed
        assert server.service.state is not None
    finally:
        server.stop()


def test_watch_failure_falls_back_to_list(tmp_path):
    """A service whose Watch fails (here: no Watch method at all) is read with List, with one log line."""
    from concurrent import futures

    from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as w
    real, target = _service()
    try:
        run_round(tmp_path, "b", node_state(2, target), Clock(), [])
        list_bytes = w.ListResponse(affiliates=real.service.state.list(CLUSTER)).encode()
    finally:
        real.stop()

    def unary(payload):
        return grpc.unary_unary_rpc_method_handler(lambda _req, _ctx: payload)
    handler = grpc.method_handlers_generic_handler(w.SERVICE_NAME, {
        "Hello": unary(w.HelloResponse().encode()), "AffiliateUpdate": unary(b""), "List": unary(list_bytes)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        d = str(tmp_path / "a")
        os.makedirs(d)
        logs, updates = [], []
        rnd = dag.DiscoveryRound(d, node_state(1, "127.0.0.1:%d" % port), logs.append, Clock(), hostname="a", watch_seconds=20)
        try:
            rnd.sync(updates.append)
        finally:
            rnd.close()
        assert [p["name"] for p in updates[0]] == ["n2"]
        assert sum("Watch failed" in line and "using List" in line for line in logs) == 1
    finally:
        server.stop(None).wait()


def test_hello_only_every_hello_interval(tmp_path):
    """Hello once per HELLO_INTERVAL (Talos's client says it once per connection): the requests of a quiet tick are the
    Watch (or List) alone."""
    server, target = _service()
    calls = []
    real_hello = dg.DiscoveryClient.hello

    def counting(self, cluster_id, timeout=None):
        calls.append(cluster_id)
        return real_hello(self, cluster_id, timeout)
    try:
        dg.DiscoveryClient.hello = counting
        clock = Clock()
        st = node_state(1, target)
        for _tick in range(5):
            run_round(tmp_path, "a", st, clock, [])
            clock.t += 30
        assert len(calls) == 1
        clock.t += dag.HELLO_INTERVAL
        run_round(tmp_path, "a", st, clock, [])
        assert len(calls) == 2
    finally:
        dg.DiscoveryClient.hello = real_hello
        server.stop()


# --- item 2: the address follows the current first physical MAC -------------------------------------------------


class FakeNetlink:
    links_now = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def links(self):
        return list(self.links_now)


def test_agent_recomputes_the_address_from_the_current_first_physical_mac(tmp_path, monkeypatch):
    d = str(tmp_path)
    prefix = ula_prefix(CLUSTER)
    old = str(eui64_address(prefix, "2e:1a:b6:53:81:69"))
    new = str(eui64_address(prefix, "ea:71:1b:b2:cc:ee"))
    ident = new_identity()
    ident.address, ident.subnet = old + "/128", str(prefix)
    save_identity(d, ident)
    me = dict(aff(1), address=old, addresses=["10.0.0.1", old])
    state = {"version": STATE_VERSION, "settings": {"address_source": "auto"}, "cluster_id": CLUSTER, "cluster_secret": SECRET,
             "address": old + "/128", "subnet": str(prefix), "members": None, "peers": [], "local_affiliate": me}
    write_json(state_path(d), state)
    monkeypatch.setattr(engine, "Netlink", FakeNetlink)
    logs = []
    FakeNetlink.links_now = [("eth0", 1, None, "2e:1a:b6:53:81:69")]
    assert not engine.refresh_address(d, logs.append) and logs == []
    # the first physical NIC is now another one (eth0 replaced; a veth and a bridge do not count)
    FakeNetlink.links_now = [("eth0", 1, None, "ea:71:1b:b2:cc:ee"), ("veth1", 1, "veth", "02:00:00:00:00:01"),
                             ("br0", 1, "bridge", "02:00:00:00:00:02")]
    assert engine.refresh_address(d, logs.append)
    assert len(logs) == 1 and "changed from %s to %s" % (old, new) in logs[0] and "mac:eth0" in logs[0]
    after = load_state(d)
    assert after["address"] == new + "/128" and after["local_affiliate"]["address"] == new
    assert after["local_affiliate"]["addresses"] == ["10.0.0.1", new]
    kept = load_identity(d)
    assert kept.address == new + "/128" and kept.public_key == ident.public_key and kept.node_id == ident.node_id
    # node-id addresses do not follow MACs
    after["settings"]["address_source"] = "node-id"
    write_json(state_path(d), after)
    logs.clear()
    assert engine.refresh_address(d, logs.append) and "node-id" in logs[0]
    assert not engine.refresh_address(d, logs.append)


def test_a_failed_address_save_leaves_the_tick_with_the_identity_on_disk(tmp_path, monkeypatch):
    """The address check must not change the tick's cached identity unless the file was written: the re-apply that
    follows in the same tick reads it from the same NodeState (review of the node-state change)."""
    d = str(tmp_path)
    prefix = ula_prefix(CLUSTER)
    old = str(eui64_address(prefix, "2e:1a:b6:53:81:69"))
    ident = new_identity()
    ident.address, ident.subnet = old + "/128", str(prefix)
    save_identity(d, ident)
    state = {"version": STATE_VERSION, "settings": {"address_source": "auto"}, "cluster_id": CLUSTER, "cluster_secret": SECRET,
             "address": old + "/128", "subnet": str(prefix), "members": None, "peers": [], "local_affiliate": None}
    write_json(state_path(d), state)
    monkeypatch.setattr(engine, "Netlink", FakeNetlink)
    FakeNetlink.links_now = [("eth0", 1, None, "ea:71:1b:b2:cc:ee")]

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "save_identity", full_disk)
    node = NodeState(d)
    assert node.identity().address == old + "/128"
    with pytest.raises(OSError):
        engine.refresh_address(d, lambda _line: None, node=node)
    assert node.identity().address == old + "/128"  # what the re-apply of this tick would use
    assert load_identity(d).address == old + "/128" and load_state(d)["address"] == old + "/128"
