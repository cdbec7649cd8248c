"""The resident discovery watcher (discovery_watch.py, `kubespan watch`): its backoff, the tick's staleness decision and
choice of fallback, and the watcher against the real discovery service (in-process gRPC on 127.0.0.1) with the real
client: one Hello and one Watch per connection, peers applied from the stream, the tick opening no Watch or List."""

import base64
import json
import logging
import os
import threading
import time

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agent
from ansible_collections.kubespan.mesh.plugins.module_utils.agent import discovery_watch as dw
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_agent as dag
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_watchfile as dwf
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import read_json, write_json
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import STATE_VERSION, load_state, state_path

grpc = pytest.importorskip("grpc")
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_grpc as dg  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_server as ds  # noqa: E402

SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="  # test value (tests/unit/.../test_discovery_agent.py)
SUBNET = "fd7f:175a:b97c:5602::/64"
CLUSTER = "unit-cluster"


def aff(n):
    return {"name": "n%d" % n, "node_id": "Node%dId" % n, "public_key": base64.b64encode(bytes([n]) * 32).decode(),
            "address": "fd7f:175a:b97c:5602::%d" % n, "endpoints": ["10.0.0.%d:51820" % n],
            "addresses": ["10.0.0.%d" % n, "fd7f:175a:b97c:5602::%d" % n]}


def node_state(n, endpoint):
    me = aff(n)
    return {"version": STATE_VERSION, "settings": {"listen_port": 51820, "state_dir": "/nonexistent"}, "cluster_id": CLUSTER,
            "cluster_secret": SECRET, "address": me["address"] + "/128", "subnet": SUBNET, "members": None,
            "peers": [], "inventory_peers": [], "local_affiliate": me,
            "discovery": {"enabled": True, "endpoint": endpoint, "insecure": True}}


class Clock:
    def __init__(self, t=None):
        self.t = time.time() if t is None else t

    def __call__(self):
        return self.t


def run_round(tmp_path, name, state, clock, logs):
    d = str(tmp_path / name)
    os.makedirs(d, exist_ok=True)
    rnd = dag.DiscoveryRound(d, state, logs.append, clock, hostname=name)
    try:
        rnd.sync(lambda _peers: None)
    finally:
        rnd.close()


# --- pure parts --------------------------------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter_and_a_cap():
    low = [dw.backoff_delay(n, lambda: 0.0) for n in range(1, 10)]
    high = [dw.backoff_delay(n, lambda: 1.0) for n in range(1, 10)]
    assert low[:4] == [0.5, 1.0, 2.0, 4.0] and high[:4] == [1.0, 2.0, 4.0, 8.0]
    assert high[-1] == dw.BACKOFF_MAX and low[-1] == dw.BACKOFF_MAX / 2  # capped; jitter keeps at least half
    assert dw.backoff_delay(0, lambda: 0.5) == dw.backoff_delay(1, lambda: 0.5)  # nonsense counts are the first
    assert dw.backoff_delay(10 ** 6, lambda: 2.0) == dw.BACKOFF_MAX  # huge counts and a bad random source stay bounded


EPS = ["10.0.0.5:3000", "10.0.0.6:3000"]


def status(at=1000.0, pid=4242, cluster=CLUSTER, services=None):
    entries = services if services is not None else {ep: {"connected": True, "endpoint": ep, "client_ip": "10.0.0.9"} for ep in EPS}
    return {"version": dw.WATCH_VERSION, "pid": pid, "at": at, "cluster": dw.cluster_tag(cluster), "services": entries}


@pytest.mark.parametrize("why, doc, now, alive, current", [
    ("fresh, alive, every service connected", status(), 1000.0, True, True),
    ("a heartbeat just within STALE_AFTER", status(at=1000.0 - dwf.STALE_AFTER), 1000.0, True, True),
    ("stale heartbeat: the watcher hangs or died", status(at=1000.0 - dwf.STALE_AFTER - 1), 1000.0, True, False),
    ("a heartbeat from the future (clock went back)", status(at=1010.0), 1000.0, True, False),
    ("its process is gone", status(), 1000.0, False, False),
    ("another cluster", status(cluster="other"), 1000.0, True, False),
    ("one service not connected", status(services={EPS[0]: {"connected": True}, EPS[1]: {"connected": False}}), 1000.0, True, False),
    ("a service missing", status(services={EPS[0]: {"connected": True}}), 1000.0, True, False),
    ("connected as a string", status(services={ep: {"connected": "yes"} for ep in EPS}), 1000.0, True, False),
    ("no file", None, 1000.0, True, False),
    ("junk", ["x"], 1000.0, True, False),
    ("another version", dict(status(), version=99), 1000.0, True, False),
])
def test_staleness_decision(why, doc, now, alive, current):
    got = dwf.current_watcher(doc, CLUSTER, EPS, now, alive=lambda _pid: alive)
    assert (got is not None) == current, why
    if current:
        assert sorted(got) == sorted(EPS)


def test_the_cluster_id_is_not_written_in_clear():
    assert CLUSTER not in json.dumps(status())


def test_self_listing_feeds_stored_is_current():
    entry = {"self": {"data": "AAEC", "endpoints": ["AwQ="]}}
    [own] = dwf.self_listing(entry, "Node1Id")
    assert (own.id, own.data, own.endpoints) == ("Node1Id", b"\x00\x01\x02", [b"\x03\x04"])
    assert dwf.self_listing({"self": None}, "Node1Id") == []  # the service does not have it: publish again
    [bad] = dwf.self_listing({"self": {"data": "!!", "endpoints": []}}, "Node1Id")
    assert bad.data == b""  # junk on disk: not current, so published again (never trusted)


# --- against the real service -------------------------------------------------------------------------


@pytest.fixture
def service():
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000))
    server = dg.DiscoveryServer(svc, listen="127.0.0.1:0", max_workers=16, logger=logging.getLogger("test"))
    port = server.start()
    yield server, "127.0.0.1:%d" % port
    server.stop()


class CountingFactory:
    """make_client, counting the calls each client makes (what a tick asks the service)."""

    def __init__(self):
        self.calls = []

    def __call__(self, settings):
        client = dag.make_client(settings)
        calls = self.calls

        class Counted:
            def __getattr__(self, name):
                attr = getattr(client, name)
                if name in ("hello", "list", "watch", "update", "delete"):
                    def counted(*a, **kw):
                        calls.append(name)
                        return attr(*a, **kw)
                    return counted
                return attr
        return Counted()


def write_watcher(d, target, connected=True, at=None, own=None):
    write_json(os.path.join(d, dw.WATCH_FILE), {
        "version": dw.WATCH_VERSION, "pid": os.getpid(), "at": time.time() if at is None else at, "cluster": dw.cluster_tag(CLUSTER),
        "services": {target: {"connected": connected, "endpoint": target, "client_ip": "10.0.0.77", "self": own}}})


def test_tick_with_a_current_watcher_opens_no_watch_or_list_and_says_no_hello(tmp_path, service):
    """Fails on the code before the watcher: the tick then says Hello and opens a Watch (or List) every time."""
    _server, target = service
    logs = []
    run_round(tmp_path, "a", node_state(1, target), Clock(), logs)  # n1 on the service
    d = str(tmp_path / "b")
    os.makedirs(d)
    state = node_state(2, target)
    write_json(state_path(d), state)
    write_watcher(d, target)
    factory = CountingFactory()
    rnd, _state = agent._discovery_sync(d, state, logs.append, time.time, lock_timeout=5, client_factory=factory, watch_seconds=5.0)
    rnd.close()
    # the watcher saw no own affiliate: the tick publishes (AffiliateUpdate stays with the tick), nothing else
    assert factory.calls == ["update"], factory.calls
    assert any("resident watcher (kubespan-watch) holds every service's stream" in line for line in logs)
    memory = dag.load_memory(d)[0]
    assert memory["public_endpoint"] == "10.0.0.77:51820"  # the address the watcher's Hello saw
    assert "hello_at" not in memory  # no Hello of its own: when the watcher dies, the next tick says Hello at once


def test_tick_falls_back_when_the_watcher_is_stale_or_disconnected(tmp_path, service):
    _server, target = service
    logs = []
    run_round(tmp_path, "a", node_state(1, target), Clock(), logs)
    d = str(tmp_path / "b")
    os.makedirs(d)
    state = node_state(2, target)
    write_json(state_path(d), state)
    for why, kwargs in (("stale", dict(at=time.time() - dwf.STALE_AFTER - 5)), ("disconnected", dict(connected=False))):
        write_watcher(d, target, **kwargs)
        factory = CountingFactory()
        rnd, new_state = agent._discovery_sync(d, load_state(d), logs.append, time.time, lock_timeout=5, client_factory=factory)
        rnd.close()
        assert "list" in factory.calls or "watch" in factory.calls, (why, factory.calls)
        assert [p["name"] for p in new_state["peers"]] == ["n1"], why
    assert any("no current resident watcher" in line for line in logs)


def wait_for(predicate, what, seconds=20.0):
    end = time.monotonic() + seconds  # a bound on a wait, not a timing assertion: the value is not checked
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("never happened: %s" % what)


def test_watcher_holds_one_stream_and_applies_joins_as_they_happen(tmp_path, service):
    server, target = service
    d = str(tmp_path / "b")
    os.makedirs(d)
    state = node_state(2, target)
    write_json(state_path(d), state)
    logs = []
    w = dw.Watcher(d, logs.append, lock_timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    counts = server.service.requests
    thread.start()
    try:
        wait_for(lambda: dwf.load_watcher(d, CLUSTER, [target], time.time()) is not None, "the watcher connected")
        assert counts.snapshot() == {"127.0.0.1": {"Hello": 1, "Watch": 1}}
        # a node joins after the watcher connected: it becomes a peer from the stream, no tick involved
        run_round(tmp_path, "a", node_state(1, target), Clock(), logs)
        wait_for(lambda: [p["name"] for p in load_state(d).get("peers") or []] == ["n1"], "n1 became a peer")
        # the updater logs right after it replaced the peers (outside the lock): wait for the line, do not race it
        wait_for(lambda: any("peer set updated (added: n1" in line for line in list(logs)), "the peer set update logged")
        # this node publishes (the tick's job): the watcher records what the service holds for it
        run_round(tmp_path, "b2", node_state(2, target), Clock(), logs)
        wait_for(lambda: read_json(os.path.join(d, dw.WATCH_FILE))["services"][target].get("self") is not None, "own affiliate seen")
        after = counts.snapshot()["127.0.0.1"]
        # the watcher made no request since its connection: the rounds made theirs (2 Hello, 2 List/Watch, 2 updates)
        assert after["Hello"] == 3 and after["Watch"] + after.get("List", 0) == 3, after
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not os.path.exists(os.path.join(d, dw.WATCH_FILE))  # stopped: the next tick lists at once


def test_watcher_reconnects_with_backoff_after_the_service_went_away(tmp_path, monkeypatch):
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(1000, 1000))
    server = dg.DiscoveryServer(svc, listen="127.0.0.1:0", max_workers=8, logger=logging.getLogger("test"))
    port = server.start()
    target = "127.0.0.1:%d" % port
    d = str(tmp_path / "b")
    os.makedirs(d)
    write_json(state_path(d), node_state(2, target))
    monkeypatch.setattr(dw, "backoff_delay", lambda n, rand=None: 0.2)
    logs = []
    w = dw.Watcher(d, logs.append, lock_timeout=5)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: dwf.load_watcher(d, CLUSTER, [target], time.time()) is not None, "connected")
        server.stop(grace=0)
        wait_for(lambda: dwf.load_watcher(d, CLUSTER, [target], time.time()) is None, "disconnect seen by the tick")
        assert any("reconnecting in" in line for line in logs)
        server2 = dg.DiscoveryServer(svc, listen=target, max_workers=8, logger=logging.getLogger("test"))
        server2.start()
        try:
            wait_for(lambda: dwf.load_watcher(d, CLUSTER, [target], time.time()) is not None, "connected again")
            assert any("connected again" in line for line in logs)
        finally:
            stop.set()
            thread.join(timeout=10)
            server2.stop()
    finally:
        stop.set()


# --- the unit: installed with discovery, removed without; the service's request counter ------------------


class Recorder:
    """Stands in for systemctl (the molecule discovery scenario runs the real one)."""

    def __init__(self, stdout=""):
        self.calls, self.stdout = [], stdout

    def __call__(self, *args):
        import subprocess
        self.calls.append(args)
        return subprocess.CompletedProcess(args, 0, self.stdout)


def unit_opts(tmp_path, **kw):
    from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agentfiles
    from ansible_collections.kubespan.mesh.plugins.module_utils.host import bundle
    base = dict(bundle=bundle.build([("x.py", b"")]), lib_dir=str(tmp_path / "lib"), state_dir=str(tmp_path / "state"),
                command_path=str(tmp_path / "sbin" / "kubespan"), unit_dir=str(tmp_path / "units"))
    base.update(kw)
    return agentfiles.AgentOptions(**base)


def test_watch_unit_installed_with_discovery_removed_without(tmp_path):
    from ansible_collections.kubespan.mesh.plugins.module_utils.agent import agentfiles
    unit = str(tmp_path / "units" / agentfiles.WATCH_SERVICE)
    off = unit_opts(tmp_path)
    on = unit_opts(tmp_path, discovery_endpoint="10.0.0.5:3000")
    assert not any(p.endswith(agentfiles.WATCH_SERVICE) for p, _d, _m in agentfiles.render_files(off))
    run = Recorder()
    agentfiles.install(off, check_mode=False, run=run)
    res = agentfiles.install(on, check_mode=False, run=run)
    assert res.changes[-1] == "install %s" % unit and res.units_changed  # (the agent's unit changes too: IP traffic)
    text = open(unit).read()
    for line in ("Type=simple", "Restart=always", "ExecStart=%s watch" % on.command_path, "ProtectSystem=strict",
                 "ReadWritePaths=%s" % on.state_dir, "CapabilityBoundingSet=CAP_NET_ADMIN", "NoNewPrivileges=yes",
                 "SystemCallFilter=@system-service", "WantedBy=multi-user.target"):
        assert line in text.splitlines(), line
    assert agentfiles.install(on, check_mode=False, run=run).changes == []  # idempotent
    # discovery off: check mode says it goes (with a diff) and changes nothing
    before = list(run.calls)
    check = agentfiles.install(off, check_mode=True, run=run)
    assert check.changes[-1] == "remove %s" % unit and check.diffs[-1]["after"] == "" and "watch" in check.diffs[-1]["before"]
    assert run.calls == before and os.path.exists(unit)
    res = agentfiles.install(off, check_mode=False, run=run)
    assert res.changes[-1] == "remove %s" % unit and not os.path.exists(unit)
    assert run.calls[-2:] == [("disable", "--now", agentfiles.WATCH_SERVICE), ("daemon-reload",)]
    assert agentfiles.install(off, check_mode=False, run=run).changes == []


def test_watch_unit_enabled_running_and_restarted_on_new_code():
    from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agentfiles import WATCH_SERVICE, parse_show, plan_units
    base = ("Id=kubespan-wireguard-go.service\nUnitFileState=\nActiveState=inactive\n\nId=kubespan-agent.timer\n"
            "UnitFileState=enabled\nActiveState=active\n\nId=kubespan-failclosed.service\nUnitFileState=enabled\nActiveState=active\n")
    running = parse_show(base + "\nId=%s\nUnitFileState=enabled\nActiveState=active\n" % WATCH_SERVICE)
    assert plan_units(running, userspace=False, watcher=True) == []
    assert plan_units(running, userspace=False, watcher=True, restart_watcher=True) == [("restart", WATCH_SERVICE)]
    absent = parse_show(base + "\nId=%s\nUnitFileState=\nActiveState=inactive\n" % WATCH_SERVICE)
    assert plan_units(absent, userspace=False, watcher=True, restart_watcher=True) == [("enable", "--now", WATCH_SERVICE)]
    assert plan_units(parse_show(base), userspace=False) == []  # discovery off: nothing asked of the watcher here


def test_service_counts_requests_per_source_and_method(tmp_path):
    counter = ds.RequestCounter(max_sources=2)
    for ip, method in (("10.0.0.1", "Hello"), ("10.0.0.1", "Watch"), ("10.0.0.1", "Hello"), ("10.0.0.2", "List"),
                       ("10.0.0.3", "List"), (None, "Hello")):
        counter.count(ip, method)
    assert counter.snapshot() == {"10.0.0.1": {"Hello": 2, "Watch": 1}, "10.0.0.2": {"List": 1}, "other": {"List": 1, "Hello": 1}}
    path = str(tmp_path / "requests.json")
    assert counter.save(path, clock=lambda: 5.0) and not counter.save(path)  # written only when changed
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert read_json(path)["requests"]["10.0.0.1"] == {"Hello": 2, "Watch": 1}
    # every method counts, refused ones too (the rate limit applies after counting)
    svc = ds.DiscoveryService(ds.DiscoveryState(), ds.RateLimiter(0.001, 1))
    from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_wire import HelloRequest
    svc.hello(HelloRequest(cluster_id="c", client_version="t").encode(), "10.1.0.1")
    with pytest.raises(ds.LimitError):
        svc.hello(HelloRequest(cluster_id="c", client_version="t").encode(), "10.1.0.1")
    assert svc.requests.snapshot() == {"10.1.0.1": {"Hello": 2}}


def test_every_harvest_publication_is_in_the_journal_with_its_reason(tmp_path, service):
    """The discovery scenario's steady-state rate (molecule/discovery/rate.yml) tells TTL/2 refreshes from other
    AffiliateUpdates by the node's journal: a harvested endpoint refreshed at TTL/2 is published again (as Talos's
    refreshData does) and logged as a refresh; nothing is published or logged before TTL/2 when nothing changed."""
    from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus
    server, target = service
    counts = server.service.requests
    clock, logs = Clock(1000000.0), []
    run_round(tmp_path, "a", node_state(1, target), clock, logs)
    b = node_state(2, target)
    b["discovery"]["harvest_extra_endpoints"] = True
    d = str(tmp_path / "b")
    os.makedirs(d)
    key1 = aff(1)["public_key"]

    def tick():
        rnd = dag.DiscoveryRound(d, b, logs.append, clock, hostname="b")
        try:
            changed = []
            rnd.sync(changed.append)
            peers = changed[0] if changed else b["peers"]
            b["peers"] = peers
            rnd.harvest({key1: PeerStatus(state="up", endpoint="198.51.100.1:40000")}, peers)
        finally:
            rnd.close()

    def updates():
        return counts.snapshot()["127.0.0.1"].get("AffiliateUpdate", 0)

    tick()
    first = updates()
    assert any("published harvested endpoint 198.51.100.1:40000 for Node1Id" in line for line in logs)
    logs.clear()
    clock.t += 60.0  # a minute later, nothing changed: no AffiliateUpdate, no line
    tick()
    assert updates() == first and not any("harvested" in line for line in logs), logs
    clock.t += 1800 / 2.0  # TTL/2 since the harvest: published again (own affiliate and harvested endpoint), both logged
    tick()
    assert updates() == first + 2
    assert sum("refreshed the harvested endpoints of 1 peers on %s (TTL/2)" % target in line for line in logs) == 1, logs
    assert sum("published this node's affiliate (refresh (TTL/2)" in line for line in logs) == 1, logs
