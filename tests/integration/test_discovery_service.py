"""The discovery service as a real process (kubespan-discovery serve) on 127.0.0.1, exercised over gRPC.

Each test starts its own service on a free port (the service reports it) and talks to it with the client of
discovery_grpc, or with a raw grpc channel for malformed requests. Affiliate data is sealed with the real
cluster-secret crypto, so what the service stores is checked to be ciphertext only.
"""

import datetime
import json
import os
import re
import signal
import subprocess
import sys

import grpc
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
CLUSTER = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
OTHER_CLUSTER = "v16UCWpO2iOm82n6F8dGCJ41ZXXBvDrjRDs2su7C_zs="
STREAM_DEADLINE = 20  # guard only: a stream that hangs fails the test instead of hanging it


@pytest.fixture(scope="module")
def collection_path(tmp_path_factory):
    base = tmp_path_factory.mktemp("collections")
    link = base / "ansible_collections" / "kubespan" / "mesh"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    sys.path.insert(0, str(base))
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]
    yield str(base)
    sys.path.remove(str(base))


@pytest.fixture(scope="module")
def mods(collection_path):
    from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_affiliates as da
    from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_crypto as dc
    from ansible_collections.kubespan.mesh.plugins.module_utils.discovery import discovery_grpc as dg

    class Mods:
        affiliates, crypto, grpc = da, dc, dg
    return Mods


class Service:
    def __init__(self, collection_path, tmp_path, *args):
        code = ("import sys; sys.path.insert(0, %r); "
                "from ansible_collections.kubespan.mesh.plugins.module_utils.discovery.discovery_cli import main; "
                "sys.exit(main(sys.argv[1:]))" % collection_path)
        self.log_path = tmp_path / ("service-%d.log" % len(list(tmp_path.glob("service-*.log"))))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", code, "serve", "--listen", "127.0.0.1:0", "--log-level", "info"] + list(args),
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        match = re.match(r"listening on port (\d+)", line)
        if not match:
            self.stop()
            raise AssertionError("the service did not start: %r\n%s" % (line, self.log_path.read_text()))
        self.port = int(match.group(1))
        self.target = "127.0.0.1:%d" % self.port

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.log_path.read_text()


@pytest.fixture
def start(collection_path, tmp_path):
    services = []

    def _start(*args):
        svc = Service(collection_path, tmp_path, *args)
        services.append(svc)
        return svc
    yield _start
    for svc in services:
        svc.stop()


def affiliate(n, **extra):
    import base64
    aff = {"name": "node%d" % n, "node_id": "NodeId%d" % n, "public_key": base64.b64encode(bytes([n]) * 32).decode(),
           "address": "fd7f:175a:b97c:5602::%d" % n, "endpoints": ["192.0.2.%d:51820" % n], "addresses": ["192.0.2.%d" % n]}
    aff.update(extra)
    return aff


def publish(mods, client, aff, cluster=CLUSTER, ttl=1800):
    key = mods.crypto.key_from_secret(SECRET)
    data, endpoints = mods.affiliates.seal_affiliate(key, aff)
    client.update(cluster, aff["node_id"], data, endpoints, ttl=ttl)
    return data, endpoints


def test_register_watch_snapshot_updates_deletes_and_cluster_isolation(mods, start):
    svc = start()
    key = mods.crypto.key_from_secret(SECRET)
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        assert client.hello(CLUSTER).client_ip == "127.0.0.1"
        data1, unused = publish(mods, client, affiliate(1))
        assert b"node1" not in data1 and b"NodeId1" not in data1  # the service only ever sees ciphertext
        watch = client.watch(CLUSTER, timeout=STREAM_DEADLINE)
        other = client.watch(OTHER_CLUSTER, timeout=STREAM_DEADLINE)
        snapshot = next(watch)
        assert snapshot.snapshot and [a.id for a in snapshot.affiliates] == ["NodeId1"]
        assert next(other) == mods.grpc.WatchEvent(True, False, [])

        publish(mods, client, affiliate(2))
        event = next(watch)
        assert not event.snapshot and not event.deleted and [a.id for a in event.affiliates] == ["NodeId2"]
        opened, reasons = mods.affiliates.open_affiliates(key, event.affiliates)
        assert reasons == [] and opened[0]["name"] == "node2" and opened[0]["endpoints"] == ["192.0.2.2:51820"]

        # a peer publishes an endpoint it observed for node 2 (harvesting): merged, deduplicated server-side
        client.update(CLUSTER, "NodeId2", None, mods.affiliates.seal_endpoints(key, ["198.51.100.2:4242", "192.0.2.2:51820"]))
        event = next(watch)
        opened, unused = mods.affiliates.open_affiliates(key, event.affiliates)
        assert opened[0]["endpoints"] == ["192.0.2.2:51820", "198.51.100.2:4242"]

        both, reasons = mods.affiliates.open_affiliates(key, client.list(CLUSTER), local_node_id="NodeId1")
        assert [a["name"] for a in both] == ["node2"] and reasons == []

        client.delete(CLUSTER, "NodeId1")
        event = next(watch)
        assert event.deleted and [a.id for a in event.affiliates] == ["NodeId1"]

        # the other cluster saw none of it: its first event after the snapshot is its own update
        client.update(OTHER_CLUSTER, "theirs", b"x" * 40, [], ttl=60)
        event = next(other)
        assert [a.id for a in event.affiliates] == ["theirs"]
        assert [a.id for a in client.list(OTHER_CLUSTER)] == ["theirs"]
        # a client of the other cluster with the wrong secret cannot open ours
        unused, reasons = mods.affiliates.open_affiliates(bytes(32), client.list(CLUSTER))
        assert "does not authenticate" in reasons[0]
        watch.cancel()
        other.cancel()
        assert list(watch) == []


def test_malformed_and_oversize_requests_get_invalid_argument_and_the_service_stays_up(mods, start):
    svc = start()
    channel = grpc.insecure_channel(svc.target)
    raw_update = channel.unary_unary("/sidero.discovery.server.Cluster/AffiliateUpdate")
    for blob, detail in [(b"\x0a\x05ab", "malformed AffiliateUpdateRequest"), (b"\xff\xff", "truncated varint"),
                         (b"\x0b", "unsupported wire type 3")]:
        with pytest.raises(grpc.RpcError) as err:
            raw_update(blob, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and detail in err.value.details()
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        for kwargs, detail in [(dict(data=b"d" * 2049), "affiliate data is too big"), (dict(endpoints=[b"e" * 33]), "endpoint is too big"),
                               (dict(ttl=3600), "ttl is too large")]:
            args = dict(cluster_id=CLUSTER, affiliate_id="a", data=b"d", endpoints=[], ttl=60)
            args.update(kwargs)
            with pytest.raises(mods.grpc.DiscoveryRPCError) as err:
                client.update(**args)
            assert err.value.code == "INVALID_ARGUMENT" and detail in err.value.details
        with pytest.raises(mods.grpc.DiscoveryRPCError) as err:
            client.hello("c" * 257)
        assert err.value.code == "INVALID_ARGUMENT" and "cluster ID is too long" in err.value.details
        with pytest.raises(grpc.RpcError) as err:
            raw_update(b"\x0a" + b"\x80\x80\x08" + b"x" * 131072, timeout=10)  # 128 KiB: over the receive limit
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.hello(CLUSTER).client_ip == "127.0.0.1"
    channel.close()
    assert svc.alive()
    log = svc.stop()
    assert "rejected AffiliateUpdate from 127.0.0.1: malformed AffiliateUpdateRequest" in log
    assert "rejected AffiliateUpdate from 127.0.0.1: affiliate data is too big: 2049 bytes, the limit is 2048 (INVALID_ARGUMENT)" in log


def test_hello_flood_beyond_the_rate_limit_gets_resource_exhausted(mods, start):
    svc = start("--rate", "1")  # burst 60 as Talos; 1/s refill so the test's own pace cannot refill the bucket
    codes = []
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        for _unused in range(90):
            try:
                client.hello(CLUSTER)
                codes.append("OK")
            except mods.grpc.DiscoveryRPCError as exc:
                codes.append(exc.code)
                assert "rate limit" in exc.details
    assert codes[:60] == ["OK"] * 60
    assert codes.count("RESOURCE_EXHAUSTED") >= 20
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
    assert svc.alive()
    print("hello flood: %d accepted, %d rejected" % (codes.count("OK"), codes.count("RESOURCE_EXHAUSTED")))


def test_restart_with_a_state_file_keeps_affiliates(mods, start, tmp_path):
    state_file = str(tmp_path / "discovery-state.json")
    svc = start("--state-file", state_file)
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        publish(mods, client, affiliate(1))
        publish(mods, client, affiliate(2))
        before = client.list(CLUSTER)
    log = svc.stop()
    assert oct(os.stat(state_file).st_mode & 0o777) == "0o600"
    text = open(state_file).read()
    assert "node1" not in text and "192.0.2.1" not in text  # ciphertext only on disk too
    svc = start("--state-file", state_file)
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        assert client.list(CLUSTER) == before
    log = svc.stop()
    assert "loaded 2 affiliates from %s" % state_file in log


def make_cert(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "discovery.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("discovery.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return cert_pem, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


def test_tls_with_a_self_signed_certificate(mods, start, tmp_path):
    cert_pem, cert_path, key_path = make_cert(tmp_path)
    svc = start("--tls-cert", cert_path, "--tls-key", key_path)
    with mods.grpc.DiscoveryClient(svc.target, ca_cert=cert_pem, server_name="discovery.test") as client:
        assert client.hello(CLUSTER).client_ip == "127.0.0.1"
        publish(mods, client, affiliate(1))
        watch = client.watch(CLUSTER, timeout=STREAM_DEADLINE)
        assert [a.id for a in next(watch).affiliates] == ["NodeId1"]
        watch.cancel()
    # a client that does not trust the certificate, or speaks plaintext, gets nothing
    with mods.grpc.DiscoveryClient(svc.target, server_name="discovery.test", timeout=5) as client:
        with pytest.raises(mods.grpc.DiscoveryRPCError) as err:
            client.hello(CLUSTER)
        assert err.value.code == "UNAVAILABLE"
    with mods.grpc.DiscoveryClient(svc.target, insecure=True, timeout=5) as client:
        with pytest.raises(mods.grpc.DiscoveryRPCError) as err:
            client.list(CLUSTER)
        assert err.value.code == "UNAVAILABLE"
    assert svc.alive()


def test_tls_with_the_ca_and_certificate_the_role_makes(mods, start, tmp_path):
    """roles/discovery_service/files/make-tls.sh (what the role runs on the service host) makes a CA and a certificate
    the client accepts, by IP name and by DNS name (server_name); a second run changes nothing; new names renew the
    certificate under the same CA."""
    script = os.path.join(ROOT, "roles", "discovery_service", "files", "make-tls.sh")
    pki = tmp_path / "pki"
    pki.mkdir(mode=0o700)

    def make(san, *extra):
        return subprocess.run(["sh", script, str(pki), san] + list(extra), check=True, capture_output=True, text=True).stdout.strip()
    assert make("DNS:disc.test,IP:127.0.0.1", "check") == "changed" and not list(pki.iterdir())
    assert make("DNS:disc.test,IP:127.0.0.1") == "changed"
    assert make("DNS:disc.test,IP:127.0.0.1") == "ok"
    assert oct((pki / "ca.key").stat().st_mode & 0o777) == "0o600" and oct((pki / "tls.key").stat().st_mode & 0o777) == "0o600"
    ca = (pki / "ca.crt").read_bytes()
    svc = start("--tls-cert", str(pki / "tls.crt"), "--tls-key", str(pki / "tls.key"))
    with mods.grpc.DiscoveryClient(svc.target, ca_cert=ca) as client:  # checked against IP:127.0.0.1
        assert client.hello(CLUSTER).client_ip == "127.0.0.1"
    with mods.grpc.DiscoveryClient(svc.target, ca_cert=ca, server_name="disc.test") as client:
        client.hello(CLUSTER)
    with mods.grpc.DiscoveryClient(svc.target, ca_cert=ca, server_name="other.test", timeout=5) as client:
        with pytest.raises(mods.grpc.DiscoveryRPCError) as err:  # a name the certificate does not have
            client.hello(CLUSTER)
        assert err.value.code == "UNAVAILABLE"
    svc.stop()
    assert make("DNS:other.test") == "changed" and (pki / "ca.crt").read_bytes() == ca
    svc = start("--tls-cert", str(pki / "tls.crt"), "--tls-key", str(pki / "tls.key"))
    with mods.grpc.DiscoveryClient(svc.target, ca_cert=ca, server_name="other.test") as client:
        client.hello(CLUSTER)


# --- abuse (issue 15 item 4): each demonstration against the real service; costs printed, not asserted -----


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_junk_endpoints_cannot_lock_out_an_affiliates_next_update(mods, start):
    """Anyone who knows the cluster ID fills the victim's 64 endpoint slots with junk: the victim's next update (data
    plus endpoints) is stored whole (the oldest endpoints are evicted) instead of failing with RESOURCE_EXHAUSTED."""
    svc = start()
    key = mods.crypto.key_from_secret(SECRET)
    victim = affiliate(1)
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        publish(mods, client, victim)
        client.update(CLUSTER, victim["node_id"], None, [bytes([i]) * 16 for i in range(64)])  # the attacker
        assert len(client.list(CLUSTER)[0].endpoints) == 64
        moved = dict(victim, endpoints=["198.51.100.7:51820"])
        _data, blobs = publish(mods, client, moved)  # no RESOURCE_EXHAUSTED
        (stored,) = client.list(CLUSTER)
        opened, _reasons = mods.affiliates.open_affiliate(key, stored)
        assert opened["endpoints"] == ["198.51.100.7:51820"] and set(blobs) <= set(stored.endpoints)
        assert len(stored.endpoints) == 64


def test_one_source_cannot_take_every_watch_slot(mods, start):
    """One address opened all 120 watch slots in 4 s: now one /24 or /64 holds at most --max-watchers-per-source
    streams; another source still gets one, and a slot freed is usable again."""
    svc = start("--listen", "[::]:0", "--max-workers", "40", "--max-watchers-per-source", "4", "--rate", "1000", "--burst", "1000")
    streams, codes = [], []
    with mods.grpc.DiscoveryClient("127.0.0.1:%d" % svc.port, insecure=True) as client, \
            mods.grpc.DiscoveryClient("[::1]:%d" % svc.port, insecure=True) as other:
        for _unused in range(12):
            stream = client.watch(CLUSTER, timeout=STREAM_DEADLINE)
            try:
                next(stream)
                streams.append(stream)
                codes.append("OK")
            except mods.grpc.DiscoveryRPCError as exc:
                codes.append(exc.code)
                assert "too many watchers from 127.0.0.0/24: the limit is 4 per source network" in exc.details
        assert codes == ["OK"] * 4 + ["RESOURCE_EXHAUSTED"] * 8
        elsewhere = other.watch(CLUSTER, timeout=STREAM_DEADLINE)  # positive control: another source network
        assert next(elsewhere).snapshot
        elsewhere.cancel()
        streams.pop().cancel()
        for _unused in range(50):  # the server notices the cancel asynchronously
            again = client.watch(CLUSTER, timeout=STREAM_DEADLINE)
            try:
                next(again)
                streams.append(again)
                break
            except mods.grpc.DiscoveryRPCError:
                import time
                time.sleep(0.1)
        else:
            raise AssertionError("a freed watch slot was never usable again")
        for stream in streams:
            stream.cancel()
    log = svc.stop()
    assert log.count("too many watchers from") <= 20


def _flood(mods, svc, count, cluster_of):
    """AffiliateUpdates of maximum size (2 KiB data, 64 x 32 B endpoints): (accepted, refusal details, seconds)."""
    import time
    accepted, refused = 0, {}
    t0 = time.monotonic()
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        for i in range(count):
            try:
                client.update(cluster_of(i), "a%05d" % i, os.urandom(2048), [os.urandom(32) for _unused in range(64)])
                accepted += 1
            except mods.grpc.DiscoveryRPCError as exc:
                assert exc.code == "RESOURCE_EXHAUSTED", exc
                refused[exc.details] = refused.get(exc.details, 0) + 1
    return accepted, refused, time.monotonic() - t0


def _hello_ms(mods, svc, n=20):
    import time
    with mods.grpc.DiscoveryClient(svc.target, insecure=True) as client:
        client.hello(CLUSTER)
        t0 = time.monotonic()
        for _unused in range(n):
            client.hello(CLUSTER)
        return (time.monotonic() - t0) * 1000.0 / n


@pytest.mark.parametrize("cap_args, attempts", [
    (["--max-affiliates", "300"], 400),  # the count cap
    (["--max-memory-mib", "4"], 400),  # the memory cap (about 240 maximum-size affiliates)
])
def test_maximum_size_affiliate_flood_is_capped_with_clear_refusals(mods, start, tmp_path, cap_args, attempts):
    """10,240 maximum-size affiliates took the service to 210 MB RSS and a 70 MB state file, Hello to 918 ms, and
    6,889 warnings in 3 s: the global caps refuse the surplus with a clear RESOURCE_EXHAUSTED, the rejection log
    is sampled, the state file stays bounded. Scaled down by a small cap; docs/reliability.md has the default run."""
    state = tmp_path / "state.json"
    svc = start("--rate", "100000", "--burst", "100000", "--state-file", str(state), "--save-interval", "0.2", *cap_args)
    rss0, cpu0 = rss_kib(svc.proc.pid), cpu_seconds(svc.proc.pid)
    accepted, refused, seconds = _flood(mods, svc, attempts, lambda i: "cluster-%d" % (i % 7))
    hello = _hello_ms(mods, svc)
    rss1, cpu1 = rss_kib(svc.proc.pid), cpu_seconds(svc.proc.pid)
    log = svc.stop()
    assert 0 < accepted < attempts and sum(refused.values()) == attempts - accepted
    assert len(refused) == 1
    detail = list(refused)[0]
    if "--max-affiliates" in cap_args:
        assert accepted == 300 and detail == "too many affiliates on this service: the limit is 300 (all clusters)"
    else:
        assert detail.startswith("the service's memory limit is reached") and "(limit 4 MiB)" in detail
    rejected_lines = [line for line in log.splitlines() if "rejected AffiliateUpdate" in line]
    # at most 20 per 10 s window (the flood may straddle windows on a slow machine); the rest in summary lines
    assert len(rejected_lines) <= 20 * (int(seconds / 10) + 2) and "more rejected requests in the last" in log
    saved = json.loads(state.read_text())
    assert sum(len(c) for c in saved["clusters"].values()) == accepted
    print("flood %s: %d of %d accepted in %.1f s; service RSS %d -> %d KiB, CPU %.2f s; Hello %.1f ms; state file %d KiB; "
          "%d log lines" % (" ".join(cap_args), accepted, attempts, seconds, rss0, rss1, cpu1 - cpu0, hello,
                            state.stat().st_size // 1024, len(log.splitlines())))


def test_maximum_size_affiliate_flood_at_the_default_caps(mods, start, tmp_path):
    """The demonstration at full scale (10,240 maximum-size affiliates from one address) against the default caps."""
    state = tmp_path / "state.json"
    svc = start("--rate", "100000", "--burst", "100000", "--state-file", str(state))
    rss0 = rss_kib(svc.proc.pid)
    accepted, refused, seconds = _flood(mods, svc, 10240, lambda i: "cluster-%d" % (i // 1000))
    hello = _hello_ms(mods, svc)
    rss1, cpu1 = rss_kib(svc.proc.pid), cpu_seconds(svc.proc.pid)
    log = svc.stop()
    assert 0 < accepted < 10240
    assert list(refused) == ["the service's memory limit is reached: 63 MiB of affiliates stored (limit 64 MiB)"]
    logged = [line for line in log.splitlines() if "rejected AffiliateUpdate from" in line]
    assert len(logged) <= 20 * (int(seconds / 10) + 2)  # at most 20 per 10 s; the rest in summary lines
    assert "more rejected requests in the last" in log
    print("flood at the default caps: %d of 10240 accepted in %.1f s; service RSS %d -> %d KiB, CPU %.1f s; Hello %.1f ms; "
          "state file %d KiB; %d log lines"
          % (accepted, seconds, rss0, rss1, cpu1, hello, state.stat().st_size // 1024, len(log.splitlines())))
