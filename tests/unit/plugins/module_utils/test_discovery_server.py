"""Discovery service state: every Talos limit, TTL and GC on an injected clock, watch ordering, rate limit, persistence."""

import json
import os
import stat
import threading

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as w
from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_server as s
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import StateFileError


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def state(clock):
    return s.DiscoveryState(clock=clock)


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, code, match", [
    (dict(cluster_id=""), s.INVALID_ARGUMENT, "cluster ID can't be empty"),
    (dict(cluster_id="c" * 257), s.INVALID_ARGUMENT, "cluster ID is too long: 257 bytes, the limit is 256"),
    (dict(cluster_id="é" * 129), s.INVALID_ARGUMENT, "cluster ID is too long: 258 bytes"),
    (dict(affiliate_id=""), s.INVALID_ARGUMENT, "affiliate ID can't be empty"),
    (dict(affiliate_id="a" * 257), s.INVALID_ARGUMENT, "affiliate ID is too long: 257 bytes, the limit is 256"),
    (dict(data=b"d" * 2049), s.INVALID_ARGUMENT, "affiliate data is too big: 2049 bytes, the limit is 2048"),
    (dict(endpoints=[b"e" * 33]), s.INVALID_ARGUMENT, "affiliate endpoint is too big: 33 bytes, the limit is 32"),
    (dict(endpoints=[bytes([i]) for i in range(65)]), s.INVALID_ARGUMENT, "too many endpoints in one request: 65, the limit is 64"),
    (dict(ttl=30 * 60 + 0.001), s.INVALID_ARGUMENT, "ttl is too large"),
    (dict(ttl=0), s.INVALID_ARGUMENT, "ttl must be positive"),
    (dict(ttl=float("nan")), s.INVALID_ARGUMENT, "ttl must be positive"),
])
def test_update_limits(state, kwargs, code, match):
    args = dict(cluster_id="c", affiliate_id="a", data=b"d", endpoints=[], ttl=60)
    args.update(kwargs)
    with pytest.raises(s.LimitError, match=match) as err:
        state.update(**args)
    assert err.value.code == code
    assert state.stats()["affiliates"] == 0


def test_limits_at_the_boundary_are_accepted(state):
    state.update("c" * 256, "a" * 256, b"d" * 2048, [bytes([i]) * 32 for i in range(64)], 30 * 60)
    assert state.stats() == {"clusters": 1, "affiliates": 1, "endpoints": 64, "subscriptions": 0}


def test_endpoint_overflow_evicts_the_oldest_endpoints_not_in_the_update(state, clock):
    """Talos's service would answer RESOURCE_EXHAUSTED here (and keep the data): the update is kept whole and
    the endpoints refreshed longest ago, which the update does not carry, are evicted."""
    state.update("c", "a", b"d", [bytes([i]) for i in range(60)], 60)
    clock.now += 5
    state.update("c", "a", None, [bytes([i]) for i in range(30, 40)], 60)  # refreshes 30..39
    clock.now += 5
    assert state.update("c", "a", b"d2", [bytes([i]) for i in range(55, 70)], 60)  # 5 known, 10 new: 6 evicted
    (aff,) = state.list("c")
    assert len(aff.endpoints) == 64 and aff.data == b"d2"
    assert set(aff.endpoints) >= {bytes([i]) for i in range(55, 70)} | {bytes([i]) for i in range(30, 40)}
    assert set(bytes([i]) for i in range(60)) - set(aff.endpoints) == {bytes([i]) for i in range(6)}  # the oldest, in order
    state.update("c", "a", None, [bytes([i]) for i in range(56, 64)], 60)  # known ones do not count twice
    assert len(state.list("c")[0].endpoints) == 64


def test_victim_with_64_junk_endpoints_still_publishes_its_data_and_endpoints(state, clock):
    """The demonstration of issue 15: anyone who knows the cluster ID fills the victim's 64 endpoint slots with
    junk; the victim's next update (data plus endpoints) must be stored, not refused."""
    state.update("c", "victim", b"good", [b"v1", b"v2"], 1800)
    clock.now += 1
    state.update("c", "victim", None, [b"junk%02d" % i for i in range(64)], 1800)  # the attacker: no data, 64 endpoints
    assert len(state.list("c")[0].endpoints) == 64 and b"v1" not in state.list("c")[0].endpoints
    clock.now += 1
    state.update("c", "victim", b"good2", [b"v1", b"v2"], 1800)  # the victim's next tick
    (aff,) = state.list("c")
    assert aff.data == b"good2" and {b"v1", b"v2"} <= set(aff.endpoints) and len(aff.endpoints) == 64


def test_too_many_affiliates_per_cluster(state):
    for i in range(s.CLUSTER_AFFILIATES_MAX):
        state.update("c", "a%d" % i, b"d", [], 60)
    with pytest.raises(s.LimitError, match="too many affiliates in the cluster: the limit is 1024") as err:
        state.update("c", "one-more", b"d", [], 60)
    assert err.value.code == s.RESOURCE_EXHAUSTED
    state.update("c", "a0", b"new", [], 60)  # an existing one can still update
    state.update("other", "one-more", b"d", [], 60)  # another cluster is not affected


def test_too_many_clusters(clock):
    state = s.DiscoveryState(clock=clock, clusters_max=2)
    state.update("c1", "a", b"d", [], 60)
    state.update("c2", "a", b"d", [], 60)
    with pytest.raises(s.LimitError, match="too many clusters") as err:
        state.update("c3", "a", b"d", [], 60)
    assert err.value.code == s.RESOURCE_EXHAUSTED


def test_delete_list_and_watch_validate_ids(state):
    for call in (lambda: state.delete("", "a"), lambda: state.delete("c", "a" * 257), lambda: state.list("c" * 257),
                 lambda: state.subscribe("")):
        with pytest.raises(s.LimitError) as err:
            call()
        assert err.value.code == s.INVALID_ARGUMENT


# --- data, endpoints, TTL ------------------------------------------------------------------------


def test_endpoints_are_deduplicated_and_data_none_keeps_data(state):
    state.update("c", "a", b"d1", [b"e1", b"e2", b"e1"], 60)
    state.update("c", "a", None, [b"e2", b"e3"], 60)
    state.update("c", "a", b"", [], 60)  # empty data does not erase, as in Talos
    assert state.list("c") == [w.ServerAffiliate(id="a", data=b"d1", endpoints=[b"e1", b"e2", b"e3"])]


def test_ttl_expiry_and_gc(state, clock):
    state.update("c", "a", b"d", [b"e1"], 100)
    state.update("c", "b", b"d", [], 300)
    clock.now += 50
    state.update("c", "a", None, [b"e2"], 100)  # endpoints-only update extends the affiliate, e2 lives to +150
    clock.now += 60  # +110: e1 expired (at +100), a lives (to +150)
    assert state.gc() == {"affiliates": 0, "endpoints": 1, "clusters": 0}
    assert state.list("c")[0].endpoints == [b"e2"]
    clock.now += 40  # +150: a expires exactly now
    assert state.gc() == {"affiliates": 1, "endpoints": 0, "clusters": 0}
    assert [a.id for a in state.list("c")] == ["b"]
    clock.now += 200
    assert state.gc() == {"affiliates": 1, "endpoints": 0, "clusters": 1}
    assert state.stats()["clusters"] == 0


def test_new_data_resets_the_expiry_as_talos_does(state, clock):
    state.update("c", "a", b"d", [], 1000)
    state.update("c", "a", b"d2", [], 10)
    clock.now += 11
    assert state.gc()["affiliates"] == 1


def test_cluster_with_a_watcher_is_kept_by_gc(state, clock):
    sub = state.subscribe("c")
    clock.now += 1000
    assert state.gc()["clusters"] == 0
    sub.close()
    state.update("c", "a", b"d", [], 1)
    clock.now += 2
    assert state.gc() == {"affiliates": 1, "endpoints": 0, "clusters": 1}


def test_clusters_are_isolated(state):
    state.update("ours", "a", b"secret blob", [b"e"], 60)
    assert state.list("theirs") == []
    sub = state.subscribe("theirs")
    state.update("ours", "b", b"x", [], 60)
    assert sub.snapshot == [] and sub.get(timeout=0) is None


# --- watch ----------------------------------------------------------------------------------------


def test_watch_snapshot_first_then_updates_and_deletes_in_order(state, clock):
    state.update("c", "b", b"B", [], 60)
    state.update("c", "a", b"A", [], 60)
    sub = state.subscribe("c")
    assert [a.id for a in sub.snapshot] == ["a", "b"]
    state.update("c", "c1", b"C", [b"e"], 60)
    state.update("c", "a", b"A", [], 60)  # nothing changed: no event
    state.update("c", "a", b"A2", [], 60)
    state.delete("c", "b")
    state.delete("c", "missing")  # no event
    clock.now += 61
    state.gc()
    events = []
    while True:
        event = sub.get(timeout=0)
        if event is None:
            break
        events.append((event[0], event[1].id, event[1].data))
    assert events == [(False, "c1", b"C"), (False, "a", b"A2"), (True, "b", b""), (True, "a", b""), (True, "c1", b"")]
    sub.close()
    assert state.stats()["subscriptions"] == 0


def test_slow_watcher_overflows_and_is_cut_off(state):
    sub = state.subscribe("c")
    for i in range(s.WATCH_QUEUE_MAX):
        state.update("c", "a%d" % i, b"d", [], 60)
    assert not sub.overflowed and sub.pending() == s.WATCH_QUEUE_MAX
    state.update("c", "one-more", b"d", [], 60)
    assert sub.overflowed and sub.get(timeout=0) is None


def test_closed_subscription_returns_none_at_once(state):
    sub = state.subscribe("c")
    sub.close()
    assert sub.get(timeout=30) is None


# --- rate limiter ---------------------------------------------------------------------------------


def test_rate_limit_burst_then_rate(clock):
    limiter = s.RateLimiter(clock=clock)
    assert all(limiter.allow("192.0.2.1") for _unused in range(60))
    assert not limiter.allow("192.0.2.1")
    assert limiter.allow("192.0.2.2")  # per IP
    clock.now += 1.0  # 15 tokens back
    assert sum(limiter.allow("192.0.2.1") for _unused in range(20)) == 15
    clock.now += 10
    assert limiter.gc() == 2 and len(limiter) == 0


# --- persistence ----------------------------------------------------------------------------------


def test_state_file_round_trip_drops_expired_and_is_private(tmp_path, clock):
    path = str(tmp_path / "discovery.json")
    state = s.DiscoveryState(clock=clock)
    state.update("c", "a", b"\0\1data", [b"e1"], 100)
    state.update("c", "b", b"short-lived", [], 10)
    state.update("c2", "x", b"d", [], 100)
    state.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and not state.dirty
    clock.now += 50
    restored = s.DiscoveryState(clock=clock)
    assert restored.load(path) == 2
    assert restored.list("c") == [w.ServerAffiliate(id="a", data=b"\0\1data", endpoints=[b"e1"])]
    clock.now += 51
    assert restored.gc()["affiliates"] == 2  # expirations survive the restart


def test_missing_state_file_loads_nothing_and_corrupt_one_names_the_file(tmp_path, state):
    assert state.load(str(tmp_path / "none.json")) == 0
    bad = tmp_path / "bad.json"
    for content in ("{not json", json.dumps({"format": 99}), json.dumps({"format": 1, "clusters": {"c": {"a": {"data": "!!"}}}}),
                    json.dumps({"format": 1, "clusters": {"c": {"a": {"data": "", "expires": 1e9, "endpoints": [["QUFB" * 20, 1e9]]}}}})):
        bad.write_text(content)
        with pytest.raises(StateFileError, match="bad.json"):
            state.load(str(bad))


# --- the service's bytes layer --------------------------------------------------------------------


def update_bytes(**kw):
    args = dict(cluster_id="c", affiliate_id="a", affiliate_data=b"d", ttl=w.Duration(seconds=60))
    args.update(kw)
    return w.AffiliateUpdateRequest(**args).encode()


def test_service_round_trip_and_hello_reports_the_client_ip(clock):
    svc = s.DiscoveryService(s.DiscoveryState(clock=clock), s.RateLimiter(clock=clock))
    assert w.HelloResponse.decode(svc.hello(w.HelloRequest(cluster_id="c").encode(), "::ffff:192.0.2.7")).client_ip == bytes([192, 0, 2, 7])
    assert w.HelloResponse.decode(svc.hello(w.HelloRequest(cluster_id="c").encode(), "2001:db8::7")).client_ip == \
        bytes.fromhex("20010db8000000000000000000000007")
    svc.affiliate_update(update_bytes(), "192.0.2.7")
    listed = w.ListResponse.decode(svc.list(w.ListRequest(cluster_id="c").encode(), "192.0.2.7"))
    assert listed.affiliates == [w.ServerAffiliate(id="a", data=b"d")]
    sub = svc.watch(w.WatchRequest(cluster_id="c").encode(), "192.0.2.7")
    assert w.WatchResponse.decode(svc.snapshot_bytes(sub)).affiliates == listed.affiliates
    svc.affiliate_delete(w.AffiliateDeleteRequest(cluster_id="c", affiliate_id="a").encode(), "192.0.2.7")
    event = w.WatchResponse.decode(svc.event_bytes(sub.get(timeout=0)))
    assert event.deleted and event.affiliates == [w.ServerAffiliate(id="a")]


def test_service_redirect_and_no_client_ip():
    svc = s.DiscoveryService(redirect="discovery2.example:443", report_client_ip=False)
    resp = w.HelloResponse.decode(svc.hello(w.HelloRequest(cluster_id="c").encode(), "192.0.2.7"))
    assert resp.client_ip == b"" and resp.redirect.endpoint == "discovery2.example:443"


@pytest.mark.parametrize("request_bytes, match", [
    (b"\x0a\x05ab", "malformed AffiliateUpdateRequest: field 1 at byte 0: length 5 runs past the end"),
    (b"\xff", "malformed AffiliateUpdateRequest: truncated varint"),
    (update_bytes(ttl=None), "ttl is required"),
    (update_bytes(ttl=w.Duration(seconds=3600)), "ttl is too large"),
])
def test_service_rejects_malformed_requests_as_invalid_argument(request_bytes, match):
    svc = s.DiscoveryService()
    with pytest.raises(s.LimitError, match=match) as err:
        svc.affiliate_update(request_bytes, "192.0.2.7")
    assert err.value.code == s.INVALID_ARGUMENT


def test_service_rate_limit_is_resource_exhausted(clock):
    svc = s.DiscoveryService(limiter=s.RateLimiter(clock=clock))
    hello = w.HelloRequest(cluster_id="c").encode()
    for _unused in range(60):
        svc.hello(hello, "192.0.2.9")
    with pytest.raises(s.LimitError, match="rate limit: more than 15 requests/s \\(burst 60\\) from 192.0.2.0/24") as err:
        svc.list(w.ListRequest(cluster_id="c").encode(), "192.0.2.9")
    assert err.value.code == s.RESOURCE_EXHAUSTED


def test_rate_limit_counts_per_source_network(clock):
    """Addresses of one /24 (IPv4) or /64 (IPv6) share one bucket; the next network has its own."""
    svc = s.DiscoveryService(limiter=s.RateLimiter(clock=clock))
    hello = w.HelloRequest(cluster_id="c").encode()
    for i in range(60):
        svc.hello(hello, "192.0.2.%d" % (i + 1))
        svc.hello(hello, "2001:db8:1:2::%x" % (i + 1))
    for ip in ("192.0.2.200", "::ffff:192.0.2.201", "2001:db8:1:2:ffff::1"):
        with pytest.raises(s.LimitError, match="rate limit") as err:
            svc.hello(hello, ip)
        assert err.value.code == s.RESOURCE_EXHAUSTED
    svc.hello(hello, "192.0.3.1")
    svc.hello(hello, "2001:db8:1:3::1")


@pytest.mark.parametrize("ip, key", [
    ("192.0.2.77", "192.0.2.0/24"), ("::ffff:10.1.2.3", "10.1.2.0/24"), ("2001:db8:a:b:c:d:e:f", "2001:db8:a:b::/64"),
    ("fe80::1%eth0", "fe80::/64"), (None, None), ("", None), ("garbage", "garbage"),
])
def test_source_key(ip, key):
    assert s.source_key(ip) == key


def test_global_affiliate_cap_refuses_clearly_and_frees_on_delete(clock):
    state = s.DiscoveryState(clock=clock, affiliates_max=5)
    for i in range(5):
        state.update("c%d" % (i % 2), "a%d" % i, b"d", [], 60)
    with pytest.raises(s.LimitError, match="too many affiliates on this service: the limit is 5 \\(all clusters\\)") as err:
        state.update("c9", "new", b"d", [], 60)
    assert err.value.code == s.RESOURCE_EXHAUSTED
    state.update("c0", "a0", b"d2", [b"e"], 60)  # an existing one still updates
    state.delete("c0", "a0")
    state.update("c9", "new", b"d", [], 60)
    clock.now += 61
    state.gc()
    assert state.stats()["affiliates"] == 0 and state.memory() == 0
    state.update("c", "after-gc", b"d", [], 60)


def test_memory_cap_refuses_growth_but_not_shrinking_updates(clock):
    one = s.affiliate_cost("a0", b"d" * 2048, [bytes([i]) * 32 for i in range(64)])
    state = s.DiscoveryState(clock=clock, memory_max=3 * one)
    for i in range(3):
        state.update("c", "a%d" % i, b"d" * 2048, [bytes([i]) * 32 for i in range(64)], 60)
    assert state.memory() == 3 * one
    with pytest.raises(s.LimitError, match="the service's memory limit is reached") as err:
        state.update("c", "a3", b"d", [], 60)
    assert err.value.code == s.RESOURCE_EXHAUSTED
    state.update("c", "a0", b"small", [], 60)  # shrinks: allowed
    assert state.memory() < 3 * one
    state.update("c", "a3", b"d", [], 60)  # room again


def test_memory_accounting_matches_a_recount_after_churn(clock):
    state = s.DiscoveryState(clock=clock)
    for i in range(50):
        state.update("c%d" % (i % 3), "a%d" % (i % 20), b"x" * (i * 7 % 300), [b"e%d" % j for j in range(i % 70 // 2)], 30 + i)
        if i % 7 == 0:
            state.delete("c%d" % (i % 3), "a%d" % ((i + 3) % 20))
        clock.now += 3
        if i % 10 == 0:
            state.gc()
    state.gc()  # load_json drops what expired; so does gc
    recount = s.DiscoveryState(clock=clock)
    recount.load_json(state.to_json())
    assert state.memory() == recount.memory() > 0


def test_load_refuses_a_state_beyond_the_global_limits(clock, tmp_path):
    big = s.DiscoveryState(clock=clock)
    for i in range(4):
        big.update("c", "a%d" % i, b"d", [], 60)
    small = s.DiscoveryState(clock=clock, affiliates_max=3)
    with pytest.raises(StateFileError, match="more affiliates than the service's limits"):
        small.load_json(big.to_json())


def test_save_encodes_outside_the_lock(state, tmp_path, monkeypatch):
    """A save holds the lock only to copy references (snapshot); the JSON encoding runs without it."""
    for i in range(10):
        state.update("c", "a%d" % i, b"d" * 100, [b"e"], 60)
    held = []
    real = s.DiscoveryState.to_json

    def spy(self, snapshot=None):
        def probe():
            if self._lock.acquire(blocking=False):
                self._lock.release()
                held.append(False)
            else:
                held.append(True)
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return real(self, snapshot)

    monkeypatch.setattr(s.DiscoveryState, "to_json", spy)
    state.save(str(tmp_path / "state.json"))
    assert held == [False]  # another thread could take the lock while the state was encoded
    assert len(json.loads((tmp_path / "state.json").read_text())["clusters"]["c"]) == 10


def test_log_sampler_bounds_lines_and_sums_up_the_rest():
    clock = Clock(0.0)
    sampler = s.LogSampler(limit=3, interval=10.0, clock=clock)
    admitted = [sampler.admit("Hello RESOURCE_EXHAUSTED" if i % 2 else "Watch RESOURCE_EXHAUSTED") for i in range(1000)]
    assert admitted.count(True) == 3 and admitted[:3] == [True] * 3
    assert sampler.summary() is None  # the interval is not over
    clock.now = 10.0
    line = sampler.summary()
    assert line.startswith("997 more rejected requests in the last 10 s") and "Hello RESOURCE_EXHAUSTED: 499" in line
    assert sampler.summary() is None and sampler.admit("x")  # a new interval
    for i in range(500):
        sampler.admit("kind%d" % i)  # distinct kinds are bounded too
    clock.now = 20.0
    line = sampler.summary()
    assert "other: " in line and len(line) < 400


def test_client_ip_bytes():
    assert s.client_ip_bytes(None) == b"" and s.client_ip_bytes("garbage") == b""
    assert s.client_ip_bytes("fe80::1%eth0") == bytes.fromhex("fe800000000000000000000000000001")
