# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Controller side of playbooks/site.yml on large inventories (bench/plugins/connection/benchfake.py answers
for the hosts), against a plain fact-gathering play on the same inventory as the same-run baseline.

For each size: an inventory of n hosts in group kubespan (one cluster ID and secret, the role's controller
cache of affiliates in a directory of --workdir, never the user's ~/.cache), then
  facts  a play with gather_facts only (full fact set, replayed from a real one), run before and again after the
         two site.yml runs (the ratios use the mean of the two: the machine's load moves during a long run)
  site   playbooks/site.yml without the controller's cache (first run, or a cache lost): round 1 is skipped,
         the identity module, the affiliates collected, round 2 (the mesh module with every affiliate)
  rerun  playbooks/site.yml again, the cache now current: round 1 (mesh module with the cached affiliates and
         the identity) settles on every host, round 2 is skipped; the routine run
timed as wall seconds and CPU seconds of ansible-playbook and its workers (the machine is shared, CPU is the
steadier figure), with the per-task profile (bench/plugins/callback/bench_profile.py). The fake hosts report no
change. Each run is checked to have taken the path it is named for (which tasks ran or were skipped).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FACTS_PLAY = """- name: Plain fact gathering (baseline)
  hosts: kubespan
  become: true
  gather_facts: true
  tasks: []
"""


def write_inventory(workdir, n, cache_dir):
    lines = ["kubespan:", "  hosts:"]
    for i in range(n):
        lines.append("    host-%05d: {ansible_host: 10.%d.%d.%d}" % (i, 100 + (i >> 16), (i >> 8) & 255, i & 255))
    lines += ["  vars:",
              "    ansible_connection: benchfake",
              "    ansible_python_interpreter: /usr/bin/python3",
              "    kubespan_cluster_id: kubespan-bench-controller-cluster",
              "    kubespan_cluster_secret: " + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",
              "    kubespan_install_packages: true",
              "    kubespan_controller_cache_dir: " + cache_dir]
    path = os.path.join(workdir, "inventory-%d.yml" % n)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_play(workdir, inventory, playbook, label, forks, cprofile=False):
    profile = os.path.join(workdir, "profile-%s.json" % label)
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONNECTION_PLUGINS": os.path.join(HERE, "plugins", "connection"),
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HERE, "plugins", "callback"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_profile",
        "KUBESPAN_BENCH_PROFILE": profile,
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_DISPLAY_OK_HOSTS": "false",
        "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false",
    })
    log = os.path.join(workdir, "%s.log" % label)
    start = time.perf_counter()
    with open(log, "w") as out:
        cmd = ["ansible-playbook", "-i", inventory, playbook]
        if cprofile:  # main process: python -m cProfile; each forked worker: bench/plugins/cprofile/sitecustomize.py
            pdir = os.path.join(workdir, "cprofile-%s" % label)
            shutil.rmtree(pdir, ignore_errors=True)
            os.makedirs(pdir)
            env.update(KUBESPAN_BENCH_CPROFILE_DIR=pdir,
                       PYTHONPATH=os.pathsep.join([os.path.join(HERE, "plugins", "cprofile")] + [p for p in [env.get("PYTHONPATH")] if p]))
            cmd = [sys.executable, "-m", "cProfile", "-o", os.path.join(pdir, "main.pstats"), shutil.which("ansible-playbook")] + cmd[1:]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        # this run's own usage: ansible-playbook and the workers it reaped (peak memory: its largest process)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if rc != 0:
        sys.stderr.write(open(log).read()[-3000:])
        raise SystemExit("%s failed (rc %d), log: %s" % (label, rc, log))
    with open(profile) as f:
        prof = json.load(f)
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "system_cpu_s": usage.ru_stime, "max_rss_bytes": usage.ru_maxrss * 1024, "tasks": prof["tasks"],
            "changed": sum(h.get("changed", 0) for h in prof["recap"].values())}


def task_counts(run, ending):
    rows = [t for t in run["tasks"] if t["name"].endswith(ending)]
    return (sum(t["ok"] for t in rows), sum(t["skipped"] for t in rows)) if rows else (0, 0)


def check_path(label, run, n, cold):
    """The run took the path it is named for: (ok, skipped) counts of the tasks that tell the two apart."""
    want = {"Ensure the node identity": (n, 0) if cold else (0, n),
            "Reconcile the WireGuard mesh if the cached affiliates are current": (0, n) if cold else (n, 0),
            "Reconcile the WireGuard mesh": (n, 0) if cold else (0, n),
            "Keep the cluster's affiliates on the controller for the next run": (1, 0)}
    got = {k: task_counts(run, k) for k in want}
    if got != want:
        raise SystemExit("%s did not take the expected path: %s, expected %s" % (label, got, want))
    if run["changed"]:
        raise SystemExit("%s reported %d changes (the fake hosts change nothing)" % (label, run["changed"]))


def real_facts(workdir):
    """One real fact set (of this controller), replayed by the fake hosts for the baseline play."""
    path = os.path.join(workdir, "facts.json")
    if not os.path.exists(path):
        out = subprocess.run(["ansible", "localhost", "-m", "ansible.builtin.setup", "-o"], capture_output=True, text=True, check=True,
                             env=dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")).stdout
        facts = json.loads(out.split("=>", 1)[1])["ansible_facts"]
        with open(path, "w") as f:
            json.dump(facts, f)
    return path


def write_results(path, results, args):
    growth = []
    for a, b in zip(results, results[1:]):
        def exp(key, a=a, b=b):
            return math.log(b[key]["cpu_s"] / a[key]["cpu_s"]) / math.log(b["hosts"] / a["hosts"])
        growth.append({"from": a["hosts"], "to": b["hosts"], "site_cpu_exponent": exp("site"), "rerun_cpu_exponent": exp("rerun"),
                       "facts_cpu_exponent": exp("facts")})
    with open(path, "w") as f:
        json.dump({"sizes": results, "growth": growth, "forks": args.forks, "result_peers": not args.no_result_peers,
                   "invocation_echo": not args.no_invocation,
                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f, indent=1)
    return growth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--hosts", default="25,50,100")
    ap.add_argument("--forks", type=int, default=5)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-invocation", action="store_true",
                    help="the fake modules do not echo their arguments (invocation.module_args) in their results")
    ap.add_argument("--no-result-peers", action="store_true",
                    help="what-if: the fake mesh module returns no peer list (KUBESPAN_BENCH_MESH_PEERS=none)")
    ap.add_argument("--cprofile", action="store_true",
                    help="profile the site.yml runs: <workdir>/cprofile-<run>/main.pstats and worker-<pid>.pstats (CPU figures are then inflated)")
    args = ap.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    if args.no_result_peers:
        os.environ["KUBESPAN_BENCH_MESH_PEERS"] = "none"
    os.environ["KUBESPAN_BENCH_INVOCATION"] = "none" if args.no_invocation else "echo"
    os.environ["KUBESPAN_BENCH_FACTS"] = real_facts(args.workdir)
    facts_play = os.path.join(args.workdir, "facts.yml")
    with open(facts_play, "w") as f:
        f.write(FACTS_PLAY)
    results = []
    site_yml = os.path.join(ROOT, "playbooks", "site.yml")
    print("%6s %16s %16s %16s %8s  %s" % ("hosts", "facts wall/CPU", "first run", "re-run", "ratio", "slowest task of the first run"))
    for n in [int(x) for x in args.hosts.split(",")]:
        cache_dir = os.path.join(args.workdir, "controller-cache-%d" % n)
        shutil.rmtree(cache_dir, ignore_errors=True)
        inv = write_inventory(args.workdir, n, cache_dir)
        facts = run_play(args.workdir, inv, facts_play, "facts-%d" % n, args.forks)
        site = run_play(args.workdir, inv, site_yml, "site-%d" % n, args.forks, args.cprofile)
        check_path("site-%d" % n, site, n, cold=True)
        rerun = run_play(args.workdir, inv, site_yml, "rerun-%d" % n, args.forks, args.cprofile)
        check_path("rerun-%d" % n, rerun, n, cold=False)
        # the baseline again after the site.yml runs: the machine's load moves during a long run
        facts_after = run_play(args.workdir, inv, facts_play, "facts-after-%d" % n, args.forks)
        slow = max(site["tasks"], key=lambda t: t["seconds"])
        results.append({"hosts": n, "facts": facts, "facts_after": facts_after, "site": site, "rerun": rerun})
        print("%6d %6.1f/%6.1f s %6.1f/%6.1f s %6.1f/%6.1f s %7.1fx  %s (%.0f%% of wall)" % (
            n, facts["wall_s"], facts["cpu_s"], site["wall_s"], site["cpu_s"], rerun["wall_s"], rerun["cpu_s"],
            site["cpu_s"] / facts["cpu_s"], slow["name"], 100 * slow["seconds"] / site["wall_s"]), flush=True)
        write_results(args.out, results, args)  # after each size: a long run stopped later keeps what it measured
    for g in write_results(args.out, results, args):
        print("growth %d -> %d hosts: site.yml CPU ~ n^%.2f (first run), n^%.2f (re-run), fact gathering ~ n^%.2f" % (
            g["from"], g["to"], g["site_cpu_exponent"], g["rerun_cpu_exponent"], g["facts_cpu_exponent"]))


if __name__ == "__main__":
    main()
