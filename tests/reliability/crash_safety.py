# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Crash safety of the identity and state writers: SIGKILL at every system call, and at random times.

Runs the project's real writers (engine.ensure_identity, which writes the Talos-format identity files
through statefile.atomic_write, and statefile.write_json) in a child process (crash_child.py) and kills it:

* at deterministic points: strace attaches to the child once it is ready and injects SIGKILL into the
  Nth call of one system call (openat, write, fchmod, fsync, close, rename, unlink), for every N the
  writer makes (``strace -e inject=SYSCALL:signal=KILL:when=N``), so every step of the write is a kill point;
* at random times: SIGKILL from here after a random delay, hundreds of times (``--random``).

After each kill it checks the files: each is the old or the new complete version (never empty, torn or
mixed), mode 0600 in a 0700 directory owned by root, and a following run of the writer succeeds and
keeps an identity that was complete. Exit status 1 and a list of failures when anything is wrong.

    crash_safety.py [--random N] [--seed S] [--no-strace] [--json FILE]
"""

import argparse
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _project  # noqa: E402,F401  # pylint: disable=unused-import,wrong-import-position
from crash_child import state_bytes  # noqa: E402

from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import StateFileError  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine  # noqa: E402

CHILD = os.path.join(HERE, "crash_child.py")
# mkdir: the state directory of a fresh node (identity-create starts without it). chmod of an existing
# directory is not a kill point here: every scenario's directory is created 0700, so it is never called.
SYSCALLS = ("mkdir", "openat", "write", "fchmod", "fsync", "close", "rename", "unlink")
MAX_NTH = 100  # kill points tried per system call and scenario; a writer that reaches it is reported as capped
CLUSTER_A = "reliability-cluster-A"
CLUSTER_B = "reliability-cluster-B"
IDENTITY_KEYS = ("address", "subnet", "privateKey", "publicKey")


class Trial:
    def __init__(self, scenario, how):
        self.scenario, self.how = scenario, how


class Harness:
    def __init__(self):
        self.trials = 0
        self.killed = 0
        self.outcomes = {}
        self.failures = []
        self.leftover_temp = 0
        self.base = tempfile.mkdtemp(prefix="kubespan-crash-")
        os.chmod(self.base, 0o700)

    # ------------------------------------------------------------------ set-up of each scenario
    def prepare(self, scenario):
        """A fresh state directory with the scenario's "old" version; returns (dir, old facts)."""
        d = tempfile.mkdtemp(dir=self.base)
        os.rmdir(d)  # ensure_identity creates it (0700), as on a fresh node
        old = None
        if scenario == "identity-readdress":
            ident, _facts, _changed = engine.ensure_identity(d, CLUSTER_A)
            old = ident
        elif scenario in ("state", "state-loop"):
            os.makedirs(d, 0o700)
            with open(os.path.join(d, "state.json"), "wb") as handle:
                handle.write(state_bytes(1))
            os.chmod(os.path.join(d, "state.json"), 0o600)
        return d, old

    def spawn(self, scenario, d):
        arg = {"identity-create": CLUSTER_A, "identity-readdress": CLUSTER_B, "state": "2", "state-loop": "2"}[scenario]
        child = subprocess.Popen([sys.executable, CHILD, scenario, d, arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        line = child.stdout.readline()
        if line.strip() != b"ready":
            child.kill()
            raise RuntimeError("child did not start: %s" % child.stderr.read().decode(errors="replace")[-2000:])
        return child

    # ------------------------------------------------------------------ kill methods
    def run_strace(self, scenario, syscall, nth):
        """Kill the writer at the nth call of syscall; returns True if it was killed (False: fewer calls)."""
        d, old = self.prepare(scenario)
        child = self.spawn(scenario, d)
        tracer = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-p", str(child.pid), "-e", "trace=%s" % syscall,
                                   "-e", "inject=%s:signal=KILL:when=%d" % (syscall, nth)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while _tracer_pid(child.pid) == 0:
            if time.monotonic() > deadline or tracer.poll() is not None:
                child.kill()
                raise RuntimeError("strace did not attach: %s" % tracer.stderr.read().decode(errors="replace"))
            time.sleep(0.005)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        rc = child.wait(30)
        tracer.wait(30)
        killed = rc == -signal.SIGKILL
        if rc not in (0, -signal.SIGKILL):
            self.failures.append("%s: writer failed without a kill (rc %s): %s" % (scenario, rc, child.stderr.read().decode()[-500:]))
        self.check(scenario, d, old, "SIGKILL at %s #%d" % (syscall, nth) if killed else "completed")
        return killed

    def run_random(self, scenario, rng, max_delay):
        d, old = self.prepare(scenario)
        child = self.spawn(scenario, d)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        time.sleep(rng.uniform(0, max_delay))
        child.send_signal(signal.SIGKILL)
        rc = child.wait(30)
        if rc not in (0, -signal.SIGKILL):
            self.failures.append("%s: writer failed without a kill (rc %s): %s" % (scenario, rc, child.stderr.read().decode()[-500:]))
        self.check(scenario, d, old, "random SIGKILL" if rc == -signal.SIGKILL else "completed")

    # ------------------------------------------------------------------ the property
    def check(self, scenario, d, old, how):
        self.trials += 1
        if how != "completed":
            self.killed += 1
        where = "%s (%s, %s)" % (scenario, how, d)
        before = len(self.failures)
        outcome = "?"
        if os.path.isdir(d):
            self.check_modes(d, where)
            temps = [n for n in os.listdir(d) if n.endswith(".tmp")]
            self.leftover_temp += len(temps)
        if scenario.startswith("identity"):
            outcome = self.check_identity(scenario, d, old, where)
        else:
            outcome = self.check_state(scenario, d, where)
        self.outcomes.setdefault(scenario, {}).setdefault(outcome, 0)
        self.outcomes[scenario][outcome] += 1
        if len(self.failures) == before:
            shutil.rmtree(d, ignore_errors=True)

    def check_modes(self, d, where):
        st = os.stat(d)
        if stat.S_IMODE(st.st_mode) != 0o700 or st.st_uid != 0:
            self.failures.append("%s: directory mode %o uid %d (want 0700, root)" % (where, stat.S_IMODE(st.st_mode), st.st_uid))
        for name in os.listdir(d):
            st = os.stat(os.path.join(d, name))
            if stat.S_IMODE(st.st_mode) != 0o600 or st.st_uid != 0:
                self.failures.append("%s: %s mode %o uid %d (want 0600, root)" % (where, name, stat.S_IMODE(st.st_mode), st.st_uid))
            if name.endswith(".yaml") and st.st_size == 0:
                self.failures.append("%s: %s is empty" % (where, name))

    def check_identity(self, scenario, d, old, where):
        kpath = os.path.join(d, identity.KUBESPAN_IDENTITY_FILE)
        try:
            loaded = identity.load_identity(d)
        except StateFileError as exc:
            self.failures.append("%s: identity neither old nor new: %s" % (where, exc))
            loaded = "error"
        if isinstance(loaded, identity.Identity):
            with open(kpath) as handle:
                text = handle.read()
            missing = [k for k in IDENTITY_KEYS if "\n%s:" % k not in "\n" + text]
            if missing:
                self.failures.append("%s: %s lacks %s (torn)" % (where, kpath, ", ".join(missing)))
        outcome = "old" if loaded is None or (old is not None and loaded != "error" and loaded.address == old.address) else "new"
        if scenario == "identity-readdress" and isinstance(loaded, identity.Identity):
            if (loaded.private_key, loaded.node_id) != (old.private_key, old.node_id):
                self.failures.append("%s: the key or node ID changed while only the address was rewritten" % where)
        elif scenario == "identity-readdress" and loaded is None:
            self.failures.append("%s: the existing identity disappeared" % where)
        # The next run (a playbook re-run) must succeed and keep a complete identity.
        try:
            again, _facts, _changed = engine.ensure_identity(d, CLUSTER_B if scenario == "identity-readdress" else CLUSTER_A)
        except StateFileError as exc:
            self.failures.append("%s: the re-run fails: %s" % (where, exc))
            return outcome
        if isinstance(loaded, identity.Identity) and (again.private_key, again.node_id) != (loaded.private_key, loaded.node_id):
            self.failures.append("%s: the re-run replaced a complete identity" % where)
        return outcome

    def check_state(self, scenario, d, where):
        path = os.path.join(d, "state.json")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            self.failures.append("%s: state.json vanished" % where)
            return "missing"
        try:
            seq = json.loads(data)["seq"]
        except (ValueError, KeyError, TypeError):
            self.failures.append("%s: state.json is torn or empty (%d bytes)" % (where, len(data)))
            return "torn"
        if data != state_bytes(seq):
            self.failures.append("%s: state.json is a mix of versions (seq %r)" % (where, seq))
            return "mixed"
        if scenario == "state":
            return "old" if seq == 1 else "new"
        return "old" if seq == 1 else "new (seq %s)" % ("2" if seq == 2 else ">2")

    def close(self):
        if not self.failures:
            shutil.rmtree(self.base, ignore_errors=True)


def _tracer_pid(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def measure(harness, scenario, runs=5):
    """Median wall time of one uninterrupted write (go to exit), to spread random kills over it."""
    times = []
    for _run in range(runs):
        d, _old = harness.prepare(scenario)
        child = harness.spawn(scenario, d)
        start = time.monotonic()
        child.stdin.write(b"go\n")
        child.stdin.flush()
        child.wait(30)
        times.append(time.monotonic() - start)
        shutil.rmtree(d, ignore_errors=True)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--random", type=int, default=300, help="random-time SIGKILL trials (spread over the scenarios)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--json", help="write the summary as JSON to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("crash_safety.py checks root ownership and mode: run it as root", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    harness = Harness()
    started = time.monotonic()
    points = {}
    capped = []
    try:
        if not args.no_strace:
            if not shutil.which("strace"):
                print("strace is not installed (apt-get install strace), or use --no-strace", file=sys.stderr)
                return 2
            for scenario in ("identity-create", "identity-readdress", "state"):
                for syscall in SYSCALLS:
                    nth = 1
                    while nth <= MAX_NTH and harness.run_strace(scenario, syscall, nth):
                        nth += 1
                    points["%s %s" % (scenario, syscall)] = nth - 1
                    if nth > MAX_NTH:
                        capped.append("%s %s" % (scenario, syscall))
        scenarios = ("identity-create", "identity-readdress", "state", "state-loop")
        durations = {s: measure(harness, s) for s in scenarios[:3]}
        for i in range(args.random):
            scenario = scenarios[i % len(scenarios)]
            max_delay = 0.06 if scenario == "state-loop" else durations[scenario] * 1.2
            harness.run_random(scenario, rng, max_delay)
    finally:
        harness.close()
    elapsed = time.monotonic() - started
    summary = {"trials": harness.trials, "killed": harness.killed, "seed": seed, "seconds": round(elapsed, 1),
               "kill_points": points, "deterministic_kill_points": sum(points.values()), "capped_at_%d" % MAX_NTH: capped, "outcomes": harness.outcomes,
               "leftover_temp_files": harness.leftover_temp, "failures": harness.failures}
    print("crash safety: %d trials (%d killed: %d at distinct system calls under strace, the rest at random times), "
          "seed %d, %.0f s" % (harness.trials, harness.killed, summary["deterministic_kill_points"], seed, elapsed))
    for scenario, outcome in sorted(harness.outcomes.items()):
        print("  %-20s %s" % (scenario, ", ".join("%s: %d" % kv for kv in sorted(outcome.items()))))
    print("  kill points per system call: %s" % ", ".join("%s=%d" % kv for kv in sorted(points.items())))
    print("  system calls whose kill points stopped at the cap of %d (more calls not tried): %s" % (MAX_NTH, ", ".join(capped) or "none"))
    print("  temporary files left by killed writers (0600 in the 0700 directory): %d" % harness.leftover_temp)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
    for failure in harness.failures[:40]:
        print("FAIL " + failure)
    if harness.failures:
        print("crash safety: %d failures" % len(harness.failures))
        return 1
    print("crash safety: every file was the old or the new complete version; modes 0600/0700 root; every re-run succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
