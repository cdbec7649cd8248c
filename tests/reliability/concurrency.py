# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Agent ticks and the mesh module at the same moment, many times: no lost or half-applied change.

    concurrency.py --inventory INV --secrets-file SECRETS [--rounds N] NODE LEAVER

On NODE the node agent runs tick after tick (``kubespan agent`` with a short watch, as fast as it can),
and every round also a ``systemctl start kubespan-agent.service`` fired together with the change. The
controller meanwhile calls the kubespan.mesh.mesh module (ad hoc, as the role does) with a change
each round: the persistent keepalive alternates, and LEAVER leaves and rejoins the peer set (with the
member list), so the agent's endpoint updates race a peer removal. Both sides take statefile.state_lock.

After each round, once the agent has finished a tick that started after the module returned:
state.json holds exactly what the module was given; the device has exactly the desired peers with
the desired keepalive; `kubespan agent --check` reports no drift. Exit status 1 on any violation.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time

PEER_OPTIONS = ("name", "public_key", "address", "node_id", "endpoints", "addresses", "additional_addresses",
                "exclude_advertised_networks")


def node(name, command, check=True):
    res = subprocess.run(["podman", "exec", name, "sh", "-c", command], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError("%s: %s: %s" % (name, command, res.stderr[-400:]))
    return res.stdout


def device(name):
    """{public key: keepalive} from `wg show kubespan dump`."""
    lines = node(name, "wg show kubespan dump").strip().split("\n")[1:]
    return {f[0]: f[7] for f in (line.split("\t") for line in lines if line)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--secrets-file", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--agent-args", default="", help="test of this test only: more arguments for the racing `kubespan agent` "
                    "(e.g. --no-such-option: every tick ends non-zero, and this test must fail; docs/reliability.md)")
    ap.add_argument("target")
    ap.add_argument("leaver")
    args = ap.parse_args()
    secrets = {}
    with open(args.secrets_file) as handle:
        for line in handle:
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                secrets[k.strip()] = v.strip().strip("'\"")
    state = json.loads(node(args.target, "cat /var/lib/kubespan/state.json"))
    all_peers = [{k: p[k] for k in PEER_OPTIONS if k in p} for p in state["peers"]]
    members = state["members"]
    node(args.target, "systemctl stop kubespan-agent.timer; while systemctl is-active -q kubespan-agent.service; do sleep 0.2; done")
    node(args.target, "rm -f /tmp/rel-agent.stop /tmp/rel-agent.log")
    agent_args = " ".join(shlex.quote(a) for a in shlex.split(args.agent_args))
    subprocess.run(["podman", "exec", "-d", args.target, "sh", "-c",
                    "while [ ! -e /tmp/rel-agent.stop ]; do echo \"start $(date +%%s.%%N)\" >>/tmp/rel-agent.log; "
                    "kubespan agent --watch-seconds 2 --sample-interval 0.5 --lock-timeout 60 %s >>/tmp/rel-agent.log 2>&1; "
                    "echo \"end $(date +%%s.%%N) rc=$?\" >>/tmp/rel-agent.log; done" % agent_args], check=True, stdout=subprocess.DEVNULL)
    failures, module_seconds = [], []
    try:
        for rnd in range(1, args.rounds + 1):
            leave = rnd % 2 == 1
            keepalive = 20 + rnd % 7
            peers = [p for p in all_peers if not (leave and p["name"] == args.leaver)]
            mem = [m for m in members if not (leave and m == args.leaver)]
            margs = {"cluster_id": secrets["kubespan_cluster_id"], "cluster_secret": secrets["kubespan_cluster_secret"],
                     "peers": peers, "members": mem, "local_name": args.target, "persistent_keepalive": keepalive}
            subprocess.run(["podman", "exec", args.target, "systemctl", "start", "--no-block", "kubespan-agent.service"], check=True)
            start = time.time()
            res = subprocess.run(["ansible", "-i", args.inventory, args.target, "-m", "kubespan.mesh.mesh", "-a", json.dumps(margs)],
                                 capture_output=True, text=True, check=False)
            done = time.time()
            module_seconds.append(done - start)
            where = "round %d (%s %s, keepalive %d)" % (rnd, "without" if leave else "with", args.leaver, keepalive)
            if res.returncode != 0:
                failures.append("%s: the module failed: %s" % (where, res.stdout[-600:]))
                continue
            # state.json right after the module: exactly what it was given
            st = json.loads(node(args.target, "cat /var/lib/kubespan/state.json"))
            names = sorted(p["name"] for p in st["peers"])
            if names != sorted(p["name"] for p in peers) or st["settings"]["persistent_keepalive"] != keepalive:
                failures.append("%s: state.json has peers %s keepalive %s" % (where, names, st["settings"]["persistent_keepalive"]))
            # the device right after the module: the whole change is applied (not half of it)
            dev = device(args.target)
            if set(dev) != {p["public_key"] for p in peers} or any(v != str(keepalive) for v in dev.values()):
                failures.append("%s: right after the module the device is half-applied: %s" % (where, dev))
            # wait for an agent tick that started after the module returned, and for it to end
            node_done = float(node(args.target, "date +%s.%N"))
            deadline = time.time() + 90
            while time.time() < deadline:
                log = node(args.target, "cat /tmp/rel-agent.log", check=False).split("\n")
                starts = [float(x.split()[1]) for x in log if x.startswith("start ")]
                ends = [float(x.split()[1]) for x in log if x.startswith("end ")]
                if any(s > node_done for s in starts) and any(e > min(s for s in starts if s > node_done) for e in ends):
                    break
                time.sleep(0.3)
            # a sample of the device, and the agent's own drift check, both under no further change
            want = {p["public_key"] for p in peers}
            dev = device(args.target)
            if set(dev) != want:
                failures.append("%s: device peers differ: extra %s missing %s" % (where, sorted(set(dev) - want), sorted(want - set(dev))))
            bad_ka = {k: v for k, v in dev.items() if v != str(keepalive)}
            if bad_ka:
                failures.append("%s: device keepalive not %d for %s" % (where, keepalive, bad_ka))
            drift = [x for x in node(args.target, "kubespan agent --check --lock-timeout 60").split("\n") if x.startswith("drift:")]
            if drift:
                failures.append("%s: drift after the agent's tick: %s" % (where, drift[:5]))
            print("round %2d: module %.1f s; state, device (%d peers, keepalive %d) and drift check %s" % (
                rnd, done - start, len(dev), keepalive, "ok" if not failures or not failures[-1].startswith(where) else "FAILED"),
                flush=True)
    finally:
        node(args.target, "touch /tmp/rel-agent.stop; sleep 5; systemctl start kubespan-agent.timer", check=False)
    log = node(args.target, "cat /tmp/rel-agent.log", check=False)
    ticks = log.count("\nend ") + log.startswith("end ")
    skipped = log.count("skipped")
    failed_ticks = [x for x in log.split("\n") if x.startswith("end ") and not x.endswith("rc=0")]
    print("concurrency: %d rounds, %d agent ticks alongside (%d skipped a busy lock, %d ended non-zero), module median %.1f s"
          % (args.rounds, ticks, skipped, len(failed_ticks), sorted(module_seconds)[len(module_seconds) // 2] if module_seconds else 0))
    # A tick that finds the lock busy skips and exits 0 (agent.py); any other exit status is a failed tick.
    for line in failed_ticks:
        failures.append("agent tick on %s ended non-zero: %s" % (args.target, line))
    if ticks == 0:
        failures.append("no agent tick ran alongside the module runs on %s: nothing was tested" % args.target)
    # restore the full mesh as the playbook left it
    subprocess.run(["ansible", "-i", args.inventory, args.target, "-m", "kubespan.mesh.mesh", "-a", json.dumps(
        {"cluster_id": secrets["kubespan_cluster_id"], "cluster_secret": secrets["kubespan_cluster_secret"], "peers": all_peers,
         "members": members, "local_name": args.target, "persistent_keepalive": state["settings"]["persistent_keepalive"]})],
        capture_output=True, check=False)
    for f in failures:
        print("FAIL " + f)
    print("concurrency: %s" % ("no lost or half-applied change" if not failures else "%d failures" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
