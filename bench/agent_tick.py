# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Agent benchmark, run ON a node container (python3 agent_tick.py ...) with the agent bundle on sys.path.

  prepare N              a desired state with N synthetic peers in /var/lib/kubespan (the mesh module's own
                         reconcile, so wireguard-go, routes, rules and the nft table are really configured)
  profile N real|synthetic   the same under cProfile (where the CPU goes)
  tick N real|synthetic  one agent tick (agent.run_tick, as `kubespan agent` runs it from the timer), in this
                         fresh process; prints one JSON line: CPU seconds of the tick (this process and its
                         children, i.e. nft), of the whole process (interpreter start and imports included),
                         peak RSS, tracemalloc peak of the tick (a second tick, traced)

``synthetic``: the WireGuard device the agent reads and writes is replaced by an in-memory object with the same
interface (read/apply/close) whose N peers are all up, with recent handshakes and growing counters: the tick
then does the work of a healthy large mesh. Everything else (netlink, nft, state files) is real. ``real``: the
wireguard-go device itself; its synthetic peers have unreachable endpoints, so they are down and get cycled.
The tick's sampling sleeps (5 s apart) are skipped: they cost no CPU.
"""

import base64
import json
import os
import random
import resource
import sys
import time
import tracemalloc

BUNDLE = "/usr/lib/kubespan/kubespan-agent.pyz"
sys.path.insert(0, BUNDLE)

from kubespan_mesh import agent, engine  # noqa: E402
from kubespan_mesh.wgtypes import DeviceState, PeerState  # noqa: E402

STATE_DIR = "/var/lib/kubespan"
CLUSTER_ID = "kubespan-bench-agent"
SECRET = base64.b64encode(b"\x05" * 32).decode()


def affiliates(n, subnet):
    rng = random.Random(n)
    result = []
    for i in range(n):
        v4 = "192.0.2.%d" % (i % 250 + 1) if i < 250 else "198.51.%d.%d" % (100 + i // 250, i % 250 + 1)
        result.append({
            "name": "peer-%04d" % i,
            "public_key": base64.b64encode(rng.getrandbits(256).to_bytes(32, "big")).decode(),
            "address": str(subnet.network_address + 0x1000 + i),
            "endpoints": ["%s:51820" % v4, "[2001:db8:ff::%x]:51820" % (i + 1)],
            "addresses": [v4],
            "additional_addresses": ["10.%d.%d.0/24" % (100 + i // 256, i % 256)],
        })
    return result


def prepare(n):
    import ipaddress
    ident, _facts, _changed = engine.ensure_identity(STATE_DIR, CLUSTER_ID)
    subnet = ipaddress.IPv6Network(ident.subnet)
    affs = affiliates(n, subnet)
    peers, _warnings = engine.compute_peers(ident, STATE_DIR, affs, [a["name"] for a in affs])
    settings = engine.Settings(implementation="userspace", state_dir=STATE_DIR)
    res = engine.reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [a["name"] for a in affs])
    for name in ("peerstatus.json",):
        path = os.path.join(STATE_DIR, name)
        if os.path.exists(path):
            os.unlink(path)
    print(json.dumps({"prepared": n, "changes": len(res.changes)}))


class SyntheticDevice:
    """The agent's device interface (read/apply/close) over N healthy peers in memory."""

    def __init__(self, *_args):
        with open(os.path.join(STATE_DIR, "state.json")) as f:
            self.peers = json.load(f)["peers"]

    def read(self):
        now = time.time()
        dev = DeviceState(private_key=None, public_key="", listen_port=51820, fwmark=0x20)
        for p in self.peers:
            dev.peers[p["public_key"]] = PeerState(
                public_key=p["public_key"], endpoint=p["endpoints"][0], allowed_ips=sorted(p["allowed_ips"]), persistent_keepalive=25,
                preshared_key=SECRET, last_handshake=now - 30, rx_bytes=int(now * 100), tx_bytes=int(now * 120))
        return dev

    def apply(self, update):
        pass

    def close(self):
        pass


def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def tick(n, mode):
    if mode == "synthetic":
        real_read = engine.load_identity(STATE_DIR).private_key

        class Device(SyntheticDevice):
            def read(self):
                dev = SyntheticDevice.read(self)
                dev.private_key = real_read  # as the device reports it: no key change planned
                return dev

        engine.open_device = Device
        agent.open_device = Device
    logs = []

    def run():
        return agent.run_tick(STATE_DIR, logs.append, sleep_fn=lambda _s: None)

    import pyroute2  # noqa: F401  (imported by the tick anyway: its memory counts as the process's, not the tick's)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    self0, child0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    rc = run()
    wall = time.perf_counter() - wall0
    tick_child_cpu = cpu(resource.RUSAGE_CHILDREN) - child0
    tick_cpu = cpu(resource.RUSAGE_SELF) - self0 + tick_child_cpu
    process_cpu = cpu(resource.RUSAGE_SELF) + cpu(resource.RUSAGE_CHILDREN)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    run()
    _cur, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"peers": n, "mode": mode, "rc": rc, "tick_cpu_s": tick_cpu, "tick_wall_s": wall, "tick_children_cpu_s": tick_child_cpu,
                      "rss_before_tick_bytes": rss_before_kb * 1024, "process_cpu_s": process_cpu,
                      "max_rss_bytes": rss_kb * 1024, "tick_traced_peak_bytes": traced_peak, "log_lines": len(logs),
                      "log_sample": logs[:3]}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(int(sys.argv[2]))
    elif sys.argv[1] == "profile":  # where a tick's CPU goes: python3 agent_tick.py profile N real|synthetic
        import cProfile
        import pstats
        profiler = cProfile.Profile(time.process_time)
        profiler.runcall(tick, int(sys.argv[2]), sys.argv[3])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    else:
        tick(int(sys.argv[2]), sys.argv[3])
