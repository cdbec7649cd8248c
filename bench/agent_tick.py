# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Agent benchmark, run ON a node container (python3 agent_tick.py ...) with the agent bundle on sys.path.

  prepare N              a desired state with N synthetic peers in /var/lib/kubespan (the mesh module's own
                         reconcile, so wireguard-go, routes, rules and the nft table are really configured)
  process N [--state-dir D]  THE PRIMARY FIGURE: the real `kubespan agent --metrics-file ...` command exactly as
                         the timer's unit starts it (the command file rendered by agentfiles, fork+exec, default
                         sampling with its real sleeps), CPU (user+system of the process and the nft children it
                         reaped) and max RSS from wait4; the tick is checked: exit status 0, no "skipped"/"no
                         desired state" line, a statuses file rewritten during the tick with exactly N peers.
                         A failed check exits non-zero and prints nothing on stdout.
  importtime N           the same command under `python3 -X importtime`: where the process start goes
                         (top-level imports, cumulative wall microseconds), plus bare-interpreter baselines
  profile N real|synthetic   the in-process tick under cProfile (where the tick's CPU goes)
  tick N real|synthetic  SECONDARY: one agent tick (agent.run_tick) inside this fresh process; prints one JSON
                         line: CPU seconds of the tick (this process and its children, i.e. nft), of this
                         process, peak RSS, tracemalloc peak of the tick (a second tick, traced); the tick's
                         return code and statuses file are checked as above

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
import subprocess
import sys
import time
import tracemalloc

BUNDLE = "/usr/lib/kubespan/kubespan-agent.pyz"
sys.path.insert(0, BUNDLE)

from kubespan_mesh.agent import agent, agentfiles  # noqa: E402
from kubespan_mesh.core.wgtypes import DeviceState, PeerState  # noqa: E402
from kubespan_mesh.reconcile import engine  # noqa: E402

STATE_DIR = "/var/lib/kubespan"
COMMAND = "/usr/local/sbin/kubespan"
METRICS = STATE_DIR + "/metrics.prom"


class TickFailed(SystemExit):
    """A tick that did not do its work: the benchmark run fails (non-zero exit, nothing written)."""

    def __init__(self, message):
        super().__init__("agent_tick: tick failed: %s" % message)


def check_statuses(state_dir, n, since):
    """The tick wrote its statuses file during this run, a version-1 document with exactly n peers."""
    path = os.path.join(state_dir, "peerstatus.json")
    try:
        st = os.stat(path)
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise TickFailed("statuses file %s unreadable: %s" % (path, exc))
    if st.st_mtime < since:
        raise TickFailed("statuses file %s not rewritten by this tick" % path)
    peers = doc.get("peers") if isinstance(doc, dict) else None
    if not isinstance(peers, dict) or len(peers) != n:
        raise TickFailed("statuses file %s holds %s peers, expected %d" % (path, len(peers) if isinstance(peers, dict) else "no", n))


def check_log(lines):
    for line in lines:
        if line.startswith("skipped") or line.startswith("no desired state"):
            raise TickFailed("the agent did no tick: %r" % line[:200])


def install_command():
    """The `kubespan` command file exactly as the mesh module installs it (agentfiles renders it)."""
    with open(BUNDLE, "rb") as f:
        bundle = f.read()
    for path, data, mode in agentfiles.render_files(agentfiles.AgentOptions(bundle=bundle, command_path=COMMAND)):
        if path == COMMAND:
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.chmod(path + ".tmp", mode)
            os.rename(path + ".tmp", path)
            return
    raise SystemExit("agentfiles rendered no command file")


# The launcher between this bench process and the measured command: a bare interpreter (-S, no imports before the
# fork) that forks, execs the command and reports its wait4 rusage. Linux counts a child's max RSS from its fork (the
# forking process's pages, kept through exec): forked from this bench process (the bundle imported, ~20 MB) the
# command's figure could never go below that; forked from the launcher its floor is the launcher's ~8 MB, below any
# Python command's own peak (baseline row "python3 -S -c pass"), as under systemd (PID 1 forks the unit's process).
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_pid, status, ru = os.wait4(pid, 0)
import json
with open(sys.argv[1], "w") as f:
    json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_bytes": ru.ru_maxrss * 1024}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(argv):
    """fork+exec argv through LAUNCHER; (rc, CPU seconds incl. reaped children, max RSS bytes of the largest process,
    wall, stdout, stderr, start time), CPU and RSS from the launcher's wait4 of the command (not of the launcher)."""
    import tempfile
    since = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as usage_file:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, usage_file.name] + list(argv), stdout=out, stderr=err)
        rc = proc.wait()
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        text_out, text_err = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        text_usage = usage_file.read()
    if not text_usage:
        raise TickFailed("the launcher reported no usage for %s (rc %d): %s" % (argv[0], rc, text_err.strip()[-300:]))
    usage = json.loads(text_usage)
    return rc, usage["cpu_s"], usage["max_rss_bytes"], wall, text_out, text_err, since


def process(n, state_dir):
    install_command()
    argv = [COMMAND, "agent", "--metrics-file", METRICS]
    if state_dir != STATE_DIR:
        argv[1:1] = ["--state-dir", state_dir]
    rc, cpu_s, rss, wall, out, err, since = run_process(argv)
    if rc != 0:
        raise TickFailed("`%s` exited %d: %s" % (" ".join(argv), rc, err.strip()[-500:]))
    lines = out.splitlines()
    check_log(lines)
    check_statuses(state_dir, n, since)  # the statuses of the state dir the command was given
    print(json.dumps({"peers": n, "mode": "process", "command": argv, "rc": rc, "process_cpu_s": cpu_s, "max_rss_bytes": rss,
                      "wall_s": wall, "log_lines": len(lines), "launcher": True}))


def importtime(n):
    """Where the process start goes: -X importtime of the real command, and bare-interpreter baselines (CPU)."""
    install_command()
    rc, _cpu, _rss, _wall, _out, err, _since = run_process([sys.executable, "-X", "importtime", COMMAND, "agent", "--metrics-file", METRICS])
    if rc != 0:
        raise TickFailed("importtime run exited %d" % rc)
    top, total = {}, 0
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = (x.strip() for x in line[len("import time:"):].split("|", 2))
        if not name.startswith(" "):  # a top-level import (nested ones are indented)
            top[name] = top.get(name, 0) + int(cum_us)
            total += int(cum_us)
    # the bundle's modules compiled ahead (a what-if: from the zipapp, every process compiles every module it imports)
    import compileall
    import zipfile
    compiled = "/tmp/kubespan-bench-compiled"
    with zipfile.ZipFile(BUNDLE) as zf:
        zf.extractall(compiled)
    if not compileall.compile_dir(compiled, quiet=1):
        raise TickFailed("cannot compile the bundle's modules in %s" % compiled)
    baselines = {}
    for label, code in (("python3 -c pass", "pass"), ("python3 -S -c pass", None), ("import pyroute2", "import pyroute2"),
                        ("import kubespan_mesh.agent.cli", "import sys; sys.path.insert(0, %r); import kubespan_mesh.agent.cli" % BUNDLE),
                        ("import kubespan_mesh.agent.cli, precompiled", "import sys; sys.path.insert(0, %r); import kubespan_mesh.agent.cli" % compiled)):
        argv = [sys.executable, "-S", "-c", "pass"] if code is None else [sys.executable, "-c", code]
        samples = []
        for _attempt in range(3):
            rc, cpu_s, rss, _wall, _out, _err, _since = run_process(argv)
            if rc != 0:
                raise TickFailed("baseline %r exited %d" % (label, rc))
            samples.append({"cpu_s": cpu_s, "max_rss_bytes": rss})
        baselines[label] = samples
    print(json.dumps({"peers": n, "imports_total_us": total,
                      "top_imports_us": sorted(top.items(), key=lambda kv: -kv[1])[:15], "baselines": baselines, "launcher": True}))


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

    from kubespan_mesh.host.netlink import Netlink
    with Netlink() as nl:  # warm up what the tick's netlink reads import (pyroute2 before rtnl.py): the process's memory
        nl.link("lo")
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    self0, child0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    since = time.time()
    rc = run()
    wall = time.perf_counter() - wall0
    if rc != 0:
        raise TickFailed("agent.run_tick returned %r: %s" % (rc, " / ".join(logs[-3:])[:500]))
    check_log(logs)
    check_statuses(STATE_DIR, n, since)
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
    elif sys.argv[1] == "process":  # python3 agent_tick.py process N [--state-dir DIR]
        process(int(sys.argv[2]), sys.argv[4] if sys.argv[3:4] == ["--state-dir"] else STATE_DIR)
    elif sys.argv[1] == "importtime":
        importtime(int(sys.argv[2]))
    elif sys.argv[1] == "tick":
        tick(int(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit("usage: agent_tick.py prepare|process|importtime|profile|tick N ...")
