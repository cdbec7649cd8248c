# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Benchmark results: one file per section run (bench/results/<section>/<UTC date>-<commit>.json), and
docs/benchmarks.md with its plot, generated from ALL of those files.

  report.py converge-entry ...   one converge/re-run measurement -> raw JSON (prints the figures and ratios)
  report.py agent-entry ...      agent process/tick lines and the import profile -> raw JSON
  report.py failover-entry ...   bench/failover.sh output -> raw JSON
  report.py relay-entry ...      bench/relay.sh output -> raw JSON
  report.py doublenat-entry ...  bench/doublenat.sh output -> raw JSON
  report.py import-measurements --file build/test-logs/measurements.txt [--commit C] [--date D] --results DIR
                                 a test run's measurements (CI: scripts/test.sh) -> one result file per section they
                                 measured (failover, discovery, relay, doublenat), with that run's commit and date
  report.py record --section S --raw RAW --results DIR --load-start "1 5 15" --started DATE
                                 RAW wrapped with commit, dirty flag, dates, load at start and end, nproc
  report.py write --results DIR --doc docs/benchmarks.md --plot docs/benchmarks/scale.png

Every figure in the document comes from a result file; the only fixed numbers here are the goals (GOALS) and
Talos's reference failover time. The summary shows, per goal, ALL runs of the newest code commit that measured
it (a range, never a chosen subset), with their dates and commit; for a goal not met (or not measured), the
reason written in bench/notes/goals.json under the goal's key, with the code commit it was written for.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import time

TALOS_FAILOVER_S = 275 + 30
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what "the code" is: a commit touching only results, docs or notes does not start a new code version
CODE_PATHS = ["plugins", "roles", "playbooks", "bench", ":(exclude)bench/results", ":(exclude)bench/notes"]


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load(path):
    with open(path) as f:
        return json.load(f)


def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def top_tasks(profile, k=8):
    tasks = sorted(profile["tasks"], key=lambda t: -t["seconds"])
    return [{"name": t["name"].replace("kubespan.mesh.kubespan : ", ""), "seconds": t["seconds"], "changed": t["changed"]} for t in tasks[:k]]


# --- entries (raw section results) -------------------------------------------------------------------


def converge_entry(args):
    conv, rerun = (load(p) for p in args.profiles)
    base = statistics.mean(args.facts)
    changed = sum(h.get("changed", 0) for h in rerun["recap"].values())
    res = {"n": args.n, "facts_s": args.facts, "baseline_s": base, "cold_s": args.cold, "cold_play_s": args.play,
           "rerun_s": args.rerun, "cold_ratio": args.cold / base, "rerun_ratio": args.rerun / base, "rerun_changed": changed,
           "tasks_total": len(rerun["tasks"]), "converge_top": top_tasks(conv), "rerun_top": top_tasks(rerun),
           "rerun_tasks": rerun["tasks"]}
    if changed:
        raise SystemExit("converge N=%d: the re-run reported changed=%d (not idempotent): nothing recorded" % (args.n, changed))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print("  fact-gathering play (baseline): %s s, mean %.1f s" % (" and ".join("%.1f" % x for x in args.facts), base))
    print("  cold converge to every peer up: %.1f s (playbook %.1f s) = %.2fx baseline" % (args.cold, args.play, res["cold_ratio"]))
    print("  idempotent re-run: %.1f s = %.2fx baseline, changed=%d" % (args.rerun, res["rerun_ratio"], changed))


def agent_entry(args):
    rows = [json.loads(line) for line in open(args.jsonl) if line.strip()]
    imports = load(args.importtime) if args.importtime and os.path.exists(args.importtime) else None
    if not any(r["mode"] == "process" for r in rows):
        raise SystemExit("agent: no whole-process tick measured: nothing recorded")
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "importtime": imports}, f, indent=1)


def failover_parse(text):
    times = [float(x) for x in re.findall(r"failover: (\d+(?:\.\d+)?) s", text)]
    if not times:
        raise SystemExit("failover: no time measured: nothing recorded")
    return {"text": text, "times_s": times, "talos_s": TALOS_FAILOVER_S}


def discovery_parse(text):
    """molecule/discovery's join lines: "discovery join (...): <node> up on <nodes> after N s"."""
    joins = [(label, float(t)) for label, t in re.findall(r"^discovery join \(([^)\n]*)\):[^\n]* after (\d+(?:\.\d+)?) s$", text, re.M)]
    if not joins:
        raise SystemExit("discovery: no join time measured: nothing recorded")
    return {"text": text, "joins": [{"label": label, "seconds": t} for label, t in joins]}


def failover_entry(args):
    data = failover_parse(open(args.text).read())
    times = data["times_s"]
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    for t in times:
        print("  failover %.1f s" % t)


def ci_suite_parse(text):
    """scripts/test.sh's last line: "ci suite: N s on P cores, X passed, Y failed"."""
    found = re.findall(r"^ci suite: (\d+) s on (\d+) cores, (\d+) passed, (\d+) failed$", text, re.M)
    if not found:
        raise SystemExit("ci suite: no total measured: nothing recorded")
    seconds, cores, passed, failed = (int(x) for x in found[-1])
    return {"text": text, "seconds": seconds, "cores": cores, "passed": passed, "failed": failed}


def relay_parse(text):
    def one(pattern, what):
        found = re.findall(pattern, text)
        if not found:
            raise SystemExit("relay: no %s measured: nothing recorded" % what)
        return [float(x) for x in found[-1]] if isinstance(found[-1], tuple) else float(found[-1])

    data = {"text": text,
            "to_relayed_s": one(r"relay: time to the relayed path[^\n]*?: (\d+(?:\.\d+)?) s", "time to the relayed path"),
            "back_to_direct_s": one(r"relay: time back to the direct path[^\n]*?: (\d+(?:\.\d+)?) s", "time back to direct")}
    data["relayed_mbps"], data["direct_mbps"] = one(
        r"through the relay (\d+(?:\.\d+)?) Mbit/s, direct (\d+(?:\.\d+)?) Mbit/s", "throughput")
    return data


def relay_entry(args):
    data = relay_parse(open(args.text).read())
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    print("  relay: %.1f s to the relayed path, %.1f s back to direct, %.0f Mbit/s relayed, %.0f Mbit/s direct" % (
        data["to_relayed_s"], data["back_to_direct_s"], data["relayed_mbps"], data["direct_mbps"]))


def doublenat_parse(text):
    """The pairs' times to a direct path after the second agent start (only that line: the scenario also prints the
    times back after an outage, with the same pair names)."""
    lines = [line for line in text.splitlines() if "time to a direct path" in line] or text.splitlines()[:1]
    pairs = {k: float(v) for k, v in re.findall(r"(dn-[a-z]+ <-> dn-[a-z]+) (\d+(?:\.\d+)?) s", "\n".join(lines[-1:]))}
    if "dn-a <-> dn-b" not in pairs:
        raise SystemExit("doublenat: no time to the direct path measured: nothing recorded")
    return {"text": text, "pairs_s": pairs, "direct_s": pairs["dn-a <-> dn-b"]}


def doublenat_entry(args):
    text = open(args.text).read()
    data = doublenat_parse(text)
    pairs = data["pairs_s"]
    with open(args.out, "w") as f:
        json.dump(data, f, indent=1)
    for k, v in sorted(pairs.items()):
        print("  %s: first up %.1f s after the second agent start" % (k, v))


def record(args):
    """Wrap a section's raw JSON with where and when it was measured; one new file per run."""
    data = load(args.raw)
    if getattr(args, "commit", ""):  # bench/sidebyside.sh: a commit's own tree (git archive: nothing uncommitted)
        head = git("rev-parse", "--verify", args.commit + "^{commit}")
        code = git("log", "-1", "--format=%H", head, "--", *CODE_PATHS) or head
        dirty = False
    else:
        head = git("rev-parse", "HEAD")
        code = git("log", "-1", "--format=%H", "--", *CODE_PATHS) or head
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS))
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal:")))
    finished = now()
    meta = {"section": args.section, "commit": head, "code_commit": code, "dirty": dirty,
            "started": args.started or finished, "finished": finished,
            "load_start": [float(x) for x in args.load_start.split()] if args.load_start else None,
            "load_end": [float(x) for x in args.load_end.split()] if getattr(args, "load_end", "") else list(os.getloadavg()),
            "nproc": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": os.uname().release, "python": subprocess.run(["python3", "--version"], capture_output=True, text=True, check=False).stdout.split()[-1]}
    if getattr(args, "sidebyside", ""):
        if args.role not in ("base", "new") or not args.pair or len(args.pair) != 2:
            raise SystemExit("record --sidebyside needs --role base|new and --pair BASE NEW")
        meta["sidebyside"] = {"id": args.sidebyside, "role": args.role, "base": git("rev-parse", "--verify", args.pair[0] + "^{commit}"),
                              "new": git("rev-parse", "--verify", args.pair[1] + "^{commit}")}
    write_result(args.results, meta, data)


def write_result(results, meta, data):
    """bench/results/<section>/<finished>-<code commit>[-dirty].json, atomically; refuses to overwrite a run."""
    finished, code, dirty = meta["finished"], meta["code_commit"], meta["dirty"]
    folder = os.path.join(results, meta["section"])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "%s-%s%s.json" % (finished.replace("-", "").replace(":", ""), code[:7], "-dirty" if dirty else ""))
    if os.path.exists(path):
        raise SystemExit("%s exists: that run is already recorded" % os.path.relpath(path, ROOT))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "data": data}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    print("recorded %s" % os.path.relpath(path, ROOT))


# the sections a test run's measurements.txt can give: (section, the lines that belong to it, parser)
MEASURED_SECTIONS = [
    ("failover", lambda line: line.startswith("failover round "), failover_parse),
    ("discovery", lambda line: line.startswith("discovery join "), discovery_parse),
    ("relay", lambda line: line.startswith("relay: "), relay_parse),
    ("doublenat", lambda line: line.startswith("doublenat: "), doublenat_parse),
    ("ci-suite", lambda line: line.startswith("ci suite: "), ci_suite_parse),
]


def import_measurements(args):
    """One result file per section that ``--file`` (a test run's measurements.txt) measured, with the run's commit
    (default: HEAD of the checkout holding the file) and date (default: the file's modification time, UTC). The
    run's load was not recorded: its rows say so."""
    with open(args.file) as f:
        lines = [line.rstrip("\n") for line in f]
    where = os.path.dirname(os.path.abspath(args.file))
    commit = args.commit or subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                           check=True).stdout.strip()
    head = git("rev-parse", "--verify", commit + "^{commit}")
    code = git("log", "-1", "--format=%H", head, "--", *CODE_PATHS) or head
    date = args.date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(args.file)))
    if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", date):
        raise SystemExit("--date %r: give it as YYYY-MM-DDTHH:MM:SSZ (UTC)" % date)
    done = 0
    for section, mine, parse in MEASURED_SECTIONS:
        text = "\n".join(line for line in lines if mine(line))
        if not text:
            continue
        meta = {"section": section, "commit": head, "code_commit": code, "dirty": args.dirty, "started": date, "finished": date,
                "load_start": None, "load_end": None, "nproc": None,
                "source": args.source or "a test run's measurements.txt"}
        write_result(args.results, meta, parse(text))
        done += 1
    if not done:
        raise SystemExit("%s: no failover, discovery, relay, doublenat or ci suite measurement in it: nothing recorded" % args.file)


# --- reading every run ----------------------------------------------------------------------------------


def load_runs(results):
    """{section: [run, ...]} oldest first; a run is {"meta": ..., "data": ..., "file": relative path}."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        doc = load(path)
        doc["file"] = os.path.relpath(path, ROOT)
        runs.setdefault(doc["meta"]["section"], []).append(doc)
    for v in runs.values():
        v.sort(key=lambda r: r["meta"]["finished"])
    return runs


def ms(s):
    return "%.1f ms" % (s * 1e3)


def span(values, fmt):
    lo, hi = fmt % min(values), fmt % max(values)
    return lo if lo == hi else "%s to %s" % (lo, hi)


def commit_label(meta):
    return "`%s`%s" % (meta["code_commit"][:7], " (dirty)" if meta["dirty"] else "")


def load_label(meta):
    if not meta.get("load_end"):
        return "not recorded (imported: %s)" % meta.get("source", "?")
    start = meta.get("load_start") or [float("nan")]
    return "%.1f -> %.1f (%d cores)" % (start[0], meta["load_end"][0], meta["nproc"])


def date_label(meta):
    return meta["finished"].replace("T", " ").replace("Z", " UTC")


def agent_rows(run, mode, peers):
    return [r for r in run["data"]["rows"] if r["mode"] == mode and r["peers"] == peers]


def scale_size(run, n):
    return next((s for s in run["data"]["sizes"] if s["n"] == n), None)


def controller_size(run, n):
    return next((s for s in run["data"]["sizes"] if s["hosts"] == n), None)


def controller_baseline(s, key):
    """The fact play's figure: the mean of the runs before and after site.yml (runs before that: the one before)."""
    runs = [s["facts"]] + ([s["facts_after"]] if "facts_after" in s else [])
    return sum(r[key] for r in runs) / len(runs)


# Each goal: (figure, goal text, section, extract(run) -> list of (value, shown text), met(value) -> bool).
# extract returns [] when the run did not measure this figure (e.g. a controller run without 1,000 hosts).


def _converge(key, n):
    def extract(run):
        d = run["data"]
        return [(d[key], "%.2fx" % d[key])] if d["n"] == n else []
    return extract


def _agent_cpu(run):
    return [(r["process_cpu_s"], "%.0f ms" % (r["process_cpu_s"] * 1e3)) for r in agent_rows(run, "process", 100)]


def _agent_rss(run):
    return [(r["max_rss_bytes"] / 2**20, "%.1f MB" % (r["max_rss_bytes"] / 2**20)) for r in agent_rows(run, "process", 100)]


def _failover(run):
    return [(t, "%.1f s" % t) for t in run["data"]["times_s"]]


def _discovery(run):
    joins = [j["seconds"] for j in run["data"]["joins"]]
    med = statistics.median(joins)
    return [(med, "median %.1f s (%s)" % (med, ", ".join("%.1f s" % t for t in joins)))]


def _relay_ratio(run):
    d = run["data"]
    ratio = d["relayed_mbps"] / d["direct_mbps"] if d["direct_mbps"] else 0.0
    return [(ratio, "%.2f (%.0f / %.0f Mbit/s)" % (ratio, d["relayed_mbps"], d["direct_mbps"]))]


def _ci_suite(run):
    d = run["data"]
    if d["failed"]:
        return []  # a failed run's time is no figure of the suite
    minutes = d["seconds"] / 60.0
    return [(minutes, "%.1f min (%d s, %d cores, %d sections passed)" % (minutes, d["seconds"], d["cores"], d["passed"]))]


def _doublenat(run):
    return [(run["data"]["direct_s"], "%.1f s" % run["data"]["direct_s"])]


def _controller(run):
    s = controller_size(run, 1000)
    if not s:
        return []
    wall, cpu = s["site"]["wall_s"] / controller_baseline(s, "wall_s"), s["site"]["cpu_s"] / controller_baseline(s, "cpu_s")
    mem = max(s["site"]["max_rss_bytes"], s["rerun"]["max_rss_bytes"]) / 2**30
    return [((wall, cpu, mem), "%.2fx wall, %.2fx CPU, %.2f GB" % (wall, cpu, mem))]


def _controller_largest(run):
    s = max(run["data"]["sizes"], key=lambda x: x["hosts"])
    if s["hosts"] >= 1000:
        return []
    wall, cpu = s["site"]["wall_s"] / controller_baseline(s, "wall_s"), s["site"]["cpu_s"] / controller_baseline(s, "cpu_s")
    return [(cpu, "%d hosts: %.2fx wall, %.2fx CPU, %.2f GB" % (s["hosts"], wall, cpu, s["site"]["max_rss_bytes"] / 2**30))]


def _shipped(run):
    s = scale_size(run, 1000)
    if not s or "shipped_cluster_s" not in s:
        return []
    return [(s["shipped_cluster_s"], "%.1f s CPU%s" % (s["shipped_cluster_s"], " (ESTIMATED)" if s["shipped_estimated"] else ""))]


def _per_node(run):
    s = scale_size(run, 1000)
    return [(s["per_node"]["total"], ms(s["per_node"]["total"]))] if s else []


def _dataplane(run):
    return [(run["data"]["kubespan_vs_wgquick"], "%.3f" % run["data"]["kubespan_vs_wgquick"])]


# Each goal: (key in bench/notes/goals.json, figure, goal text, section, extract, met); the issue 18 goals first.
GOALS = [
    ("converge-cold", "Cold converge, N=3, to every peer up, ratio to a fact-gathering play", "<= 2.0x", "converge-3",
     _converge("cold_ratio", 3), lambda v: v <= 2.0),
    ("converge-rerun", "Idempotent re-run, N=3, same ratio", "<= 1.1x", "converge-3", _converge("rerun_ratio", 3), lambda v: v <= 1.1),
    ("agent-cpu", "Agent tick, whole process (`kubespan agent` as the timer runs it), 100 peers, CPU", "< 100 ms", "agent",
     _agent_cpu, lambda v: v < 0.1),
    ("agent-rss", "Agent tick, whole process, 100 peers, max RSS", "< 32 MB", "agent", _agent_rss, lambda v: v < 32),
    ("failover", "Failover to another endpoint (`failover` scenario)", "< 20 s", "failover", _failover, lambda v: v < 20),
    ("join", "Join via discovery (`discovery` scenario: a fourth node up on the three others)", "< 10 s median", "discovery",
     _discovery, lambda v: v < 10),
    ("controller-1000", "Controller side, 1,000 fake hosts, first run: ratio to the same-run fact play; peak memory",
     "<= 2x, < 1 GB", "controller", _controller, lambda v: v[0] <= 2 and v[1] <= 2 and v[2] < 1),
    ("controller-largest", "Controller side, largest inventory below 1,000 hosts of a run, first run: ratio to the fact play "
     "(for information)", "(goal applies at 1,000)", "controller", _controller_largest, None),
    ("shipped-1000", "Whole cluster planned by the shipped path (every node's own planning), 1,000 nodes, measured", "< 10 s CPU",
     "scale", _shipped, lambda v: v < 10),
    ("ci-suite", "CI suite on 2 cores, with the new scenarios (`scripts/test.sh` on a fresh clone)", "< 45 min", "ci-suite",
     _ci_suite, lambda v: v < 45),
    ("doublenat", "Time to a direct path between two nodes behind two NATs (`doublenat` scenario; moonshot < 30 s)", "< 60 s",
     "doublenat", _doublenat, lambda v: v < 60),
    ("per-node", "One node's planning, 1,000 nodes (issue 6)", "< 50 ms CPU", "scale", _per_node, lambda v: v < 0.05),
    ("dataplane", "Data plane, kubespan / wg-quick throughput (issue 6)", ">= 0.95", "dataplane", _dataplane, lambda v: v >= 0.95),
    ("relay-throughput", "Data plane through a relay: iperf3 relayed / direct, same nodes (`relay` scenario; for information)",
     "(no goal)", "relay", _relay_ratio, None),
]
GOALS_NOTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes", "goals.json")


def load_goal_notes(path):
    """bench/notes/goals.json: {goal key: {"reason": text, "written_for": code commit}}; every key must be a goal's."""
    if not path or not os.path.exists(path):
        return {}
    notes_ = load(path)
    keys = {g[0] for g in GOALS}
    bad = sorted(set(notes_) - keys)
    if bad:
        raise SystemExit("%s: %s: not a goal key (keys: %s)" % (path, ", ".join(bad), ", ".join(sorted(keys))))
    for key, note in notes_.items():
        if not isinstance(note, dict) or not isinstance(note.get("reason"), str) or not isinstance(note.get("written_for"), str):
            raise SystemExit("%s: %s: needs a \"reason\" text and the \"written_for\" code commit" % (path, key))
    return notes_


def reason_text(note, newest_code):
    """The written reason, flagged when the newest measuring code commit is not the one it was written for."""
    if not note:
        return "**no reason written** (bench/notes/goals.json)"
    text = note["reason"].replace("|", "\\|")
    if newest_code and not newest_code.startswith(note["written_for"]):
        text += " *(written for `%s`; the figure is of `%s`: check it still holds)*" % (note["written_for"][:7], newest_code[:7])
    return text


def summary(runs, goal_notes=None):
    goal_notes = goal_notes or {}
    out = ["## Summary: goals (issue 18)", "",
           "Per goal: every run of the newest code commit that measured it (the range of all of them), its dates and",
           "commit. \"met\" only when every one of those runs meets the goal. Why a goal is not met: written in",
           "`bench/notes/goals.json` for the code commit named there.", "",
           "| figure | goal | measured (newest code commit, all its runs) | runs | commit | dates | load (1-min) start -> end | result "
           "| why not met |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, figure, goal, section, extract, met in GOALS:
        measured = []
        for run in runs.get(section, []) if section else []:
            for value, text in extract(run):
                measured.append((run, value, text))
        if not measured:
            out.append("| %s | %s | - | 0 | - | - | - | not measured | %s |" % (figure, goal, reason_text(goal_notes.get(key), None)))
            continue
        newest = max(measured, key=lambda m: m[0]["meta"]["finished"])[0]["meta"]["code_commit"]
        mine = [m for m in measured if m[0]["meta"]["code_commit"] == newest]
        ok = [met(v) for _r, v, _t in mine] if met else []
        texts = [t for _r, _v, t in mine]
        if all(isinstance(v, (int, float)) for _r, v, _t in mine):
            values = [v for _r, v, _t in mine]
            lo = texts[values.index(min(values))]
            hi = texts[values.index(max(values))]
            shown = lo if lo == hi else "%s to %s" % (lo, hi)
        else:
            shown = "; ".join(texts)
        dates = sorted({date_label(r["meta"]) for r, _v, _t in mine})
        result = "information only" if not met else "met" if all(ok) else "not met" if not any(ok) else "not met (%d of %d runs met)" % (sum(ok), len(ok))
        loads = sorted({load_label(r["meta"]) for r, _v, _t in mine})
        why = reason_text(goal_notes.get(key), newest) if met and not all(ok) else ""
        out.append("| %s | %s | %s | %d | %s | %s | %s | **%s** | %s |" % (
            figure, goal, shown, len(mine), commit_label(mine[0][0]["meta"]),
            dates[0] if len(dates) == 1 else "%s to %s" % (dates[0], dates[-1]), "; ".join(loads), result, why))
    return out + [""]


def run_list(runs):
    out = ["## Every run", "",
           "Every result file in `bench/results/`, oldest first. Load: the 1-minute load average at the section's start",
           "and end (the machine is shared; other engineers' tests run on it).", "",
           "| section | finished | code commit | load start -> end | file |", "| --- | --- | --- | --- | --- |"]
    for section in sorted(runs):
        for run in runs[section]:
            m = run["meta"]
            out.append("| %s | %s | %s | %s | `%s` |" % (section, date_label(m), commit_label(m), load_label(m), run["file"]))
    return out + ["",
                  "Figures published before this format (up to commit `daf1c81`) were not re-run on the current code and are",
                  "not repeated here: `git show daf1c81:docs/benchmarks.md`.", ""]


# --- sections -------------------------------------------------------------------------------------------


def converge_section(runs):
    conv = [r for k in sorted(runs) if k.startswith("converge-") for r in runs[k]]
    if not conv:
        return []
    out = ["## Converge and re-run (podman containers, podman connection)", "",
           "Cold run of `playbooks/site.yml` on fresh containers `bench-node1..N` until every node has a handshake",
           "with every other (`wg show kubespan latest-handshakes`), then an idempotent second run (changed=0 is",
           "checked). Baseline: a play that only gathers facts on the same nodes, run before and after, in the same run.", "",
           "| N | date | commit | load | fact play | cold converge, all peers up | ratio | re-run | ratio |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in conv:
        d, m = run["data"], run["meta"]
        out.append("| %d | %s | %s | %s | %.1f s (%s) | %.1f s (playbook %.1f s) | %.2fx | %.1f s | %.2fx |" % (
            d["n"], date_label(m), commit_label(m), load_label(m), d["baseline_s"], " / ".join("%.1f" % x for x in d["facts_s"]),
            d["cold_s"], d["cold_play_s"], d["cold_ratio"], d["rerun_s"], d["rerun_ratio"]))
    last = conv[-1]
    out += ["", "Where the re-run's time goes (newest run, N=%d, %s; wall seconds per task):" % (last["data"]["n"], date_label(last["meta"])),
            "", "| task | seconds |", "| --- | --- |"]
    out += ["| %s | %.2f |" % (t["name"], t["seconds"]) for t in last["data"]["rerun_top"]]
    return out + [""]


def scale_section(runs):
    if "scale" not in runs:
        return []
    out = ["## Scale: peer set and data-plane planning (pure logic, CPU time)", "",
           "Synthetic clusters (`bench/scale.py`, its docstring has the details). *One node*: one re-run of the mesh",
           "module's pure work on one node. *Shipped path*: what the product does, every node's own planning (each",
           "node's `build_peer_set`, `routed_set`, nft and device plans with its own last-known entries), n runs one",
           "after the other in one process: the same calls on the same inputs as each node's module run, without the n",
           "interpreter starts and imports (per node, not per cluster; see the agent section), so a lower bound of the",
           "nodes' total work. *clusterplan (NOT SHIPPED)*: `clusterplan.iter_cluster_plans`, which the product never",
           "runs; shown only for comparison. Baseline: `json.loads` of the same affiliates, same run.", "",
           "| date | commit | load | nodes | baseline | one node | ratio | cold node | peak memory | shipped path, whole cluster "
           "| slowest node | clusterplan (not shipped) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs["scale"]:
        m = run["meta"]
        for r in run["data"]["sizes"]:
            pn = r["per_node"]
            shipped = r.get("shipped_cluster_s", r.get("cluster_independent_s"))
            est = r.get("shipped_estimated", r.get("cluster_independent_estimated"))
            timed = r.get("shipped_nodes_timed", r.get("cluster_independent_nodes_timed"))
            out.append("| %s | %s | %s | %d | %s | %s | %.0fx | %s | %.1f MB | %.1f s%s | %s | %.2f s |" % (
                date_label(m), commit_label(m), load_label(m), r["n"], ms(r["baseline_json_s"]), ms(pn["total"]),
                pn["total"] / r["baseline_json_s"], ms(r["cold_per_node_s"]), r["per_node_peak_bytes"] / 2**20, shipped,
                " (estimated from %d nodes)" % timed if est else " (every node timed)",
                ms(r["shipped_slowest_node_s"]) if "shipped_slowest_node_s" in r else "-", r["cluster_s"]))
    last = runs["scale"][-1]
    out += ["", "Growth in the newest run (%s):" % date_label(last["meta"]), ""]
    for g in last["data"]["growth"]:
        out.append("- %d -> %d nodes: one node's time grows as n^%.2f (n log n would be n^%.2f, the JSON baseline n^%.2f); "
                   "peak memory as n^%.2f." % (g["from"], g["to"], g["time_exponent"], g["nlogn_exponent"], g["baseline_exponent"],
                                               g["memory_exponent"]))
    return out + ["", "![scale](benchmarks/scale.png)", ""]


def controller_section(runs):
    if "controller" not in runs:
        return []
    out = ["## Controller side of a playbook run (fake hosts)", "",
           "`playbooks/site.yml` against n hosts of the connection `bench/plugins/connection/benchfake.py`, which runs",
           "nothing and answers every module call with a result of the real module's shape and size: only Ansible's",
           "work on the controller is measured. Baseline: a fact-gathering play on the same fake inventory, in the same",
           "run (before the site.yml runs and, from the runs that have it, again after them: the ratios then use the",
           "mean). CPU: the ansible-playbook process tree (user + system); peak memory: its largest process.", "",
           "| date | commit | load | hosts | fact play wall / CPU (before; after) | first run wall / CPU | ratio wall / CPU "
           "| re-run wall / CPU | ratio wall / CPU | peak memory |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs["controller"]:
        m = run["meta"]
        for r in run["data"]["sizes"]:
            f, s, rr = r["facts"], r["site"], r["rerun"]
            fw, fc = controller_baseline(r, "wall_s"), controller_baseline(r, "cpu_s")
            fa = r.get("facts_after")
            facts_text = "%.1f s / %.1f s%s" % (f["wall_s"], f["cpu_s"], "; %.1f s / %.1f s" % (fa["wall_s"], fa["cpu_s"]) if fa else "")
            out.append("| %s | %s | %s | %d | %s | %.1f s / %.1f s | %.2fx / %.2fx | %.1f s / %.1f s | %.2fx / %.2fx | %.0f MB |" % (
                date_label(m), commit_label(m), load_label(m), r["hosts"], facts_text, s["wall_s"], s["cpu_s"],
                s["wall_s"] / fw, s["cpu_s"] / fc, rr["wall_s"], rr["cpu_s"], rr["wall_s"] / fw,
                rr["cpu_s"] / fc, max(s["max_rss_bytes"], rr["max_rss_bytes"]) / 2**20))
    last = runs["controller"][-1]
    for g in last["data"]["growth"]:
        out.append("- newest run, %d -> %d hosts: controller CPU grows as n^%.2f (first run), n^%.2f (re-run), the fact play as n^%.2f." % (
            g["from"], g["to"], g["site_cpu_exponent"], g["rerun_cpu_exponent"], g["facts_cpu_exponent"]))
    if max(r["hosts"] for r in last["data"]["sizes"]) < 1000:
        out.append("- The newest run has no 1,000-host inventory: the goal at 1,000 hosts is not measured by it.")
    big = max(last["data"]["sizes"], key=lambda x: x["hosts"])
    fact_tasks = sorted(big["facts"]["tasks"], key=lambda t: -t["seconds"])
    fact_name = fact_tasks[0]["name"] if fact_tasks else "-"
    fact_seconds = fact_tasks[0]["seconds"] if fact_tasks else 0
    out += ["", "Where the first run's wall time goes, per task (newest run, %d hosts, %s; hosts ok / skipped; the fact play's "
            "own task for comparison: %s, %.1f s):" % (big["hosts"], date_label(last["meta"]), fact_name, fact_seconds), "",
            "| task | ok | skipped | wall seconds |", "| --- | --- | --- | --- |"]
    for t in sorted(big["site"]["tasks"], key=lambda t: -t["seconds"]):
        out.append("| %s | %d | %d | %.1f |" % (t["name"].replace("kubespan.mesh.kubespan : ", ""), t["ok"], t["skipped"], t["seconds"]))
    return out + [""]


def failover_section(runs):
    out = ["## Failover", "",
           "`bench/failover.sh` (molecule scenario `failover`: the path in use is cut, both directions; time until pings",
           "recover over the peer's other endpoint). Reference: Talos declares a peer down after 275 s without a",
           "handshake and cycles its endpoint at the next 30 s tick, up to %d s." % TALOS_FAILOVER_S, ""]
    if "failover" not in runs:
        return out + ["No run recorded yet (`bash bench/run.sh --only failover`).", ""]
    out += ["| date | commit | load | failover times |", "| --- | --- | --- | --- |"]
    for run in runs["failover"]:
        m = run["meta"]
        out.append("| %s | %s | %s | %s |" % (date_label(m), commit_label(m), load_label(m), ", ".join("%.1f s" % t for t in run["data"]["times_s"])))
    return out + [""]


def discovery_section(runs):
    out = ["## Join via discovery", "",
           "Molecule scenario `discovery` (imported from a test run's measurements.txt, or run by hand): a fourth node",
           "joins a three-node mesh through the discovery service's Watch; seconds until it is up on the three others,",
           "with one service, then with the first of two services stopped.", ""]
    if "discovery" not in runs:
        return out + ["No run recorded yet (`bench/report.py import-measurements`).", ""]
    out += ["| date | commit | load | joins |", "| --- | --- | --- | --- |"]
    for run in runs["discovery"]:
        m = run["meta"]
        out.append("| %s | %s | %s | %s |" % (date_label(m), commit_label(m), load_label(m), "; ".join(
            "%s: %.1f s" % (j["label"], j["seconds"]) for j in run["data"]["joins"])))
    return out + [""]


def doublenat_section(runs):
    out = ["## Double NAT: time to a direct path", "",
           "`bench/doublenat.sh` (molecule scenario `doublenat`: two nodes behind two nftables routers, port-preserving,",
           "endpoint-dependent filtering, a public node and the discovery service). Per pair: seconds from the later of the",
           "two agents' first start to the first handshake. Talos never connects the two NAT'd nodes (issue 16).", ""]
    if "doublenat" not in runs:
        return out + ["No run recorded yet (`bash bench/run.sh --only doublenat`).", ""]
    out += ["| date | commit | load | dn-a <-> dn-b (both NAT'd) | dn-pub <-> dn-a | dn-pub <-> dn-b |", "| --- | --- | --- | --- | --- | --- |"]
    for run in runs["doublenat"]:
        m, p = run["meta"], run["data"]["pairs_s"]
        out.append("| %s | %s | %s | %s |" % (date_label(m), commit_label(m), load_label(m), " | ".join(
            "%.1f s" % p[k] if k in p else "-" for k in ("dn-a <-> dn-b", "dn-pub <-> dn-a", "dn-pub <-> dn-b"))))
    return out + [""]


def dataplane_section(runs):
    if "dataplane" not in runs:
        return []
    out = ["## Data plane throughput", "",
           "iperf3 TCP, bench-node1 -> bench-node2, the three paths interleaved. `wg-quick`: a second wireguard-go",
           "tunnel set up by hand on the same nodes; underlay: the IPv6 link-local address of eth0.", "",
           "| date | commit | load | kubespan | wg-quick | underlay | kubespan / wg-quick |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs["dataplane"]:
        d, m = run["data"], run["meta"]
        med = d["median_bps"]
        out.append("| %s | %s | %s | %.0f Mbit/s | %.0f Mbit/s | %.0f Mbit/s | %.3f |" % (
            date_label(m), commit_label(m), load_label(m), med["kubespan"] / 1e6, med["wg-quick"] / 1e6, med["underlay"] / 1e6,
            d["kubespan_vs_wgquick"]))
    return out + [""]


def relay_section(runs):
    if "relay" not in runs:
        return []
    out = ["## Relay under symmetric NAT (issue 16)", "",
           "Molecule scenario `relay`: A and B behind two routers with `masquerade random,fully-random`, a public relay",
           "member. Relayed: from the start of the second agent (A's; B's started earlier, both with fresh memory) to A's",
           "first ping to B's ULA answered through the relay (the test allows 90 s); load \"nan\": not recorded at the",
           "start (the run was not started by bench/run.sh). Back to direct: from the routers starting to route LAN to LAN to",
           "B's ranges back on A's direct entry. iperf3 TCP A -> B, 5 s, through the relay and then direct, same nodes.", "",
           "| date | commit | load | to relayed path | back to direct | iperf3 relayed | iperf3 direct | relayed / direct |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs["relay"]:
        d, m = run["data"], run["meta"]
        out.append("| %s | %s | %s | %.1f s | %.1f s | %.0f Mbit/s | %.0f Mbit/s | %.2f |" % (
            date_label(m), commit_label(m), load_label(m), d["to_relayed_s"], d["back_to_direct_s"], d["relayed_mbps"],
            d["direct_mbps"], d["relayed_mbps"] / d["direct_mbps"] if d["direct_mbps"] else 0.0))
    return out + [""]


def agent_section(runs):
    if "agent" not in runs:
        return []
    out = ["## Agent tick", "",
           "**Primary figure: the whole process.** The real `kubespan agent --metrics-file ...` command, the file the",
           "mesh module installs (rendered by `agentfiles`), fork+exec'd as the timer's unit starts it, every 30 s: CPU",
           "(user + system, with the nft children it reaped) and max RSS from `wait4`, sampling with its real sleeps",
           "(wall time is mostly those). Each tick is checked (exit status 0, no skipped tick, a statuses file rewritten",
           "with exactly the N peers); a failed check fails the benchmark run and records nothing. The real wireguard-go",
           "device; the synthetic peers have unreachable endpoints, so they are down and get cycled.",
           "**Secondary: the tick in-process** (`agent.run_tick` in a process that already imported everything):",
           "`real` as above, `synthetic` an in-memory device whose peers are all up.", "",
           "| date | commit | load | peers | whole process CPU (all runs) | max RSS (all runs) | in-process tick CPU real / synthetic "
           "| of which nft (real) | tick heap peak (real) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs["agent"]:
        m = run["meta"]
        for peers in sorted({r["peers"] for r in run["data"]["rows"]}):
            proc = agent_rows(run, "process", peers)
            real, syn = agent_rows(run, "real", peers), agent_rows(run, "synthetic", peers)
            out.append("| %s | %s | %s | %d | %s | %s | %s / %s | %s | %s |" % (
                date_label(m), commit_label(m), load_label(m), peers,
                ", ".join("%.0f ms" % (r["process_cpu_s"] * 1e3) for r in proc) or "-",
                (", ".join("%.1f MB" % (r["max_rss_bytes"] / 2**20) for r in proc) or "-")
                + ("" if all(r.get("launcher") for r in proc) else " (forked from the bench process: upper bound)"),
                ms(real[0]["tick_cpu_s"]) if real else "-", ms(syn[0]["tick_cpu_s"]) if syn else "-",
                ms(real[0]["tick_children_cpu_s"]) if real else "-",
                "%.2f MB" % (real[0]["tick_traced_peak_bytes"] / 2**20) if real else "-"))
    out.append("")
    for run in runs["agent"]:
        if run["data"].get("note"):
            out += ["Run of %s (%s): %s." % (date_label(run["meta"]), commit_label(run["meta"]), run["data"]["note"]), ""]
    last = runs["agent"][-1]
    imp = last["data"].get("importtime")
    if imp:
        base = imp["baselines"]

        def best(label, key="cpu_s"):
            return min(x[key] for x in base[label])
        proc = [r["process_cpu_s"] for r in agent_rows(last, "process", imp["peers"])]
        real = agent_rows(last, "real", imp["peers"])
        out += ["### Where the whole process goes (%d peers, newest run, %s)" % (imp["peers"], date_label(last["meta"])), "",
                "Separate processes, CPU from `wait4`, best of 3 (same node, same run). Max RSS from `wait4` counts the",
                "child from its fork, before exec." + (
                    " Each process is forked by a bare launcher (`LAUNCHER` in bench/agent_tick.py, about 8 MB), so a figure"
                    " is the process's own unless it is at that floor (the `python3 -S -c pass` row)." if imp.get("launcher") else
                    " This run forked them from the bench process itself: a figure at that process's size (the smallest rows)"
                    " is that process's, an upper bound; later runs fork through a bare launcher."), "",
                "| what | CPU | max RSS |", "| --- | --- | --- |"]
        for label in ("python3 -S -c pass", "python3 -c pass", "import pyroute2", "import kubespan_mesh.agent.cli",
                      "import kubespan_mesh.agent.cli, precompiled"):
            if label not in base:  # runs before module_utils had layers recorded the flat module name
                label = label.replace("kubespan_mesh" + ".agent.cli", "kubespan_mesh" + ".cli")
            if label not in base:  # runs before the precompiled what-if was measured
                continue
            out.append("| `%s` | %s | %.1f MB |" % (label, ms(best(label)), best(label, "max_rss_bytes") / 2**20))
        if proc:
            out.append("| whole `kubespan agent` tick (median of its runs) | %s | - |" % ms(statistics.median(proc)))
        if real:
            out.append("| the tick alone, in-process (`real`) | %s | - |" % ms(real[0]["tick_cpu_s"]))
        out += ["", "`python3 -X importtime` of the same command: top-level imports by cumulative time (wall, microseconds",
                "converted to ms; imports total %s):" % ms(imp["imports_total_us"] / 1e6), "",
                "| module | cumulative |", "| --- | --- |"]
        out += ["| `%s` | %s |" % (name, ms(us / 1e6)) for name, us in imp["top_imports_us"][:10]]
        out.append("")
    return out


# --- side by side (bench/sidebyside.sh) -----------------------------------------------------------------


def sidebyside_groups(runs):
    """{id: {"base": [run, ...], "new": [run, ...]}}: the result files each side-by-side run recorded (meta "sidebyside")."""
    groups = {}
    for section in sorted(runs):
        for run in runs[section]:
            sb = run["meta"].get("sidebyside")
            if sb:
                groups.setdefault(sb["id"], {"base": [], "new": []})[sb["role"]].append(run)
    return groups


def _verdict(base, new):
    """How two samples compare: by their ranges (every run counts, not one chosen), never by one number."""
    if len(base) < 2 or len(new) < 2:
        return "one run each: no spread"
    if max(new) < min(base):
        return "new lower (ranges apart)"
    if min(new) > max(base):
        return "**new higher (ranges apart)**"
    return "ranges overlap"


def _shown(values, fmt):
    if not values:
        return "-"
    if len(values) == 1:
        return fmt % values[0]
    return "%s (%s to %s, %d runs)" % (fmt % statistics.median(values), fmt % min(values), fmt % max(values), len(values))


def _import_cpu(run, which):
    """Best-of-3 CPU of an import-profile baseline row: "cli" (the agent's command module, flat or layered name) or a label."""
    imp = run["data"].get("importtime") or {}
    for label, samples in (imp.get("baselines") or {}).items():
        if label == which or (which == "cli" and label.endswith(".cli")):
            return [min(x["cpu_s"] for x in samples)]
    return []


def sidebyside_figures(base_runs, new_runs):
    """(figure, base values, new values, format, scale factor) for every figure both sides measured: the agent's
    whole process, in-process ticks and imports per peer count, the planning per cluster size; controls (the same
    code in both commits: interpreter start, json.loads) show how far the machine alone moves a figure."""
    def agent(runs):
        return [r for r in runs if r["meta"]["section"] == "agent"]

    def scale(runs):
        return [r for r in runs if r["meta"]["section"] == "scale"]

    rows = []

    def add(figure, fn, fmt, factor):
        b = [v * factor for run in base_runs for v in fn(run)]
        n = [v * factor for run in new_runs for v in fn(run)]
        if b or n:
            rows.append((figure, b, n, fmt))

    peers = sorted({r["peers"] for run in agent(base_runs) + agent(new_runs) for r in run["data"]["rows"]})
    for p in peers:
        def rows_of(mode, key, p=p):
            return lambda run: [r[key] for r in agent_rows(run, mode, p)] if run["meta"]["section"] == "agent" else []
        add("agent, %d peers: whole process CPU" % p, rows_of("process", "process_cpu_s"), "%.0f ms", 1e3)
        add("agent, %d peers: whole process max RSS" % p, rows_of("process", "max_rss_bytes"), "%.1f MB", 1.0 / 2**20)
        add("agent, %d peers: in-process tick CPU, real device" % p, rows_of("real", "tick_cpu_s"), "%.0f ms", 1e3)
        add("agent, %d peers: in-process tick CPU, synthetic device" % p, rows_of("synthetic", "tick_cpu_s"), "%.0f ms", 1e3)
    add("agent: `import kubespan_mesh...cli` (best of 3)", lambda run: _import_cpu(run, "cli") if run["meta"]["section"] == "agent" else [],
        "%.1f ms", 1e3)
    add("control, same code in both: `python3 -c pass` (best of 3)",
        lambda run: _import_cpu(run, "python3 -c pass") if run["meta"]["section"] == "agent" else [], "%.1f ms", 1e3)
    sizes = sorted({s["n"] for run in scale(base_runs) + scale(new_runs) for s in run["data"]["sizes"]})
    for n in sizes:
        def size_of(fn, n=n):
            def get(run):
                s = scale_size(run, n) if run["meta"]["section"] == "scale" else None
                return [fn(s)] if s else []
            return get
        add("scale, %d nodes: one node's planning (CPU)" % n, size_of(lambda s: s["per_node"]["total"]), "%.1f ms", 1e3)
        add("scale, %d nodes: shipped path, whole cluster (CPU)" % n,
            size_of(lambda s: s.get("shipped_cluster_s", s.get("cluster_independent_s"))), "%.2f s", 1.0)
        add("scale, %d nodes: cold node (CPU)" % n, size_of(lambda s: s["cold_per_node_s"]), "%.1f ms", 1e3)
        add("scale, %d nodes: one node's peak memory" % n, size_of(lambda s: s["per_node_peak_bytes"]), "%.2f MB", 1.0 / 2**20)
        add("control, same code in both: `json.loads` of %d affiliates" % n, size_of(lambda s: s["baseline_json_s"]), "%.2f ms", 1e3)
    return rows


def sidebyside_table(base_runs, new_runs):
    """Markdown lines: one row per figure, base and new (median, range, runs), the ratio of medians and how the ranges compare."""
    bm, nm = base_runs[0]["meta"], new_runs[0]["meta"]
    out = ["| figure | base %s | new %s | new / base (medians) | ranges |" % (commit_label(bm), commit_label(nm)),
           "| --- | --- | --- | --- | --- |"]
    for figure, b, n, fmt in sidebyside_figures(base_runs, new_runs):
        ratio = "%.2f" % (statistics.median(n) / statistics.median(b)) if b and n and statistics.median(b) else "-"
        out.append("| %s | %s | %s | %s | %s |" % (figure, _shown(b, fmt), _shown(n, fmt), ratio, _verdict(b, n) if b and n else "-"))
    return out


def sidebyside_section(runs):
    groups = sidebyside_groups(runs)
    if not groups:
        return []
    out = ["## Side by side: two commits in one run (bench/sidebyside.sh)", "",
           "`bash bench/sidebyside.sh BASE NEW`: the scale and agent sections for both commits in ONE run, each commit's own",
           "bench code and agent bundle, the measurements interleaved (the order flips every round; agent: BASE in",
           "bench-node1, NEW in bench-node2, both devices up throughout). Each cell: the median, the range and the number",
           "of runs. *ranges overlap*: no difference this run can show; *apart*: every run of one commit is below every",
           "run of the other. The control rows run the same code in both: they show what the machine alone does to a figure.", ""]
    for sid in sorted(groups, reverse=True):
        g = groups[sid]
        if not g["base"] or not g["new"]:
            out += ["Run %s: only one commit recorded (%s): no table." % (sid, "base" if g["base"] else "new"), ""]
            continue
        every = g["base"] + g["new"]
        loads = sorted({load_label(r["meta"]) for r in every})
        out += ["### %s: base %s, new %s" % (sid.replace("T", " ").replace("Z", " UTC"), commit_label(g["base"][0]["meta"]),
                                             commit_label(g["new"][0]["meta"])), "",
                "Load (1-min) at each section's start -> end: %s. Files: %s." % (
                    "; ".join(loads), ", ".join("`%s`" % r["file"] for r in every if "file" in r)), ""]
        out += sidebyside_table(g["base"], g["new"]) + [""]
    return out


def sidebyside_from_raw(raw, pair):
    """bench/sidebyside.sh --no-record: the raw files as runs (not recorded anywhere)."""
    sides = {}
    for role, commit in zip(("base", "new"), pair):
        side = []
        for path in sorted(glob.glob(os.path.join(raw, "scale-%s-*.json" % role))) + [os.path.join(raw, "agent-%s.json" % role)]:
            if os.path.exists(path):
                section = "agent" if os.path.basename(path).startswith("agent") else "scale"
                side.append({"meta": {"section": section, "code_commit": commit, "dirty": False}, "data": load(path)})
        if not side:
            raise SystemExit("%s: no raw result of %s" % (raw, role))
        sides[role] = side
    return sides["base"], sides["new"]


def sidebyside_print(args):
    if args.raw:
        if not args.pair:
            raise SystemExit("sidebyside --raw needs --pair BASE NEW")
        base, new = sidebyside_from_raw(args.raw, args.pair)
    else:
        groups = sidebyside_groups(load_runs(args.results))
        if not groups:
            raise SystemExit("%s: no side-by-side run recorded" % args.results)
        sid = args.id or max(groups)
        if sid not in groups or not groups[sid]["base"] or not groups[sid]["new"]:
            raise SystemExit("side-by-side run %r: not recorded with both commits" % sid)
        base, new = groups[sid]["base"], groups[sid]["new"]
    print("\n".join(sidebyside_table(base, new)))


def plot(scale_run, controller_run, path):
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(path), exist_ok=True)
    panels = 3 if controller_run else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2))
    sizes = scale_run["data"]["sizes"]
    n = [s["n"] for s in sizes]
    node = [s["per_node"]["total"] for s in sizes]
    ax = axes[0]
    ax.loglog(n, node, "o-", label="one node (re-run planning)")
    ax.loglog(n, [s.get("shipped_cluster_s", s.get("cluster_independent_s")) for s in sizes], "s-",
              label="whole cluster, shipped path (every node's own planning)")
    ax.loglog(n, [s["cluster_s"] for s in sizes], "s:", color="tab:gray", label="clusterplan (NOT shipped)")
    ax.loglog(n, [s["baseline_json_s"] for s in sizes], "^:", label="baseline: json.loads of the affiliates")
    ref = [node[0] * (x * math.log(x)) / (n[0] * math.log(n[0])) for x in n]
    ax.loglog(n, ref, "k--", lw=0.8, label="n log n through the first point")
    ax.axhline(0.05, color="tab:red", lw=0.8, ls=":", label="goals: 50 ms / node, 10 s / cluster (1,000)")
    ax.axhline(10, color="tab:red", lw=0.8, ls=":")
    ax.set_xlabel("nodes in the cluster")
    ax.set_ylabel("CPU seconds")
    ax.set_title("Planning, run of %s (%s)" % (scale_run["meta"]["finished"][:16], scale_run["meta"]["code_commit"][:7]), fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(n, [s["per_node_peak_bytes"] / 2**20 for s in sizes], "o-")
    ax.set_xlabel("nodes in the cluster")
    ax.set_ylabel("peak traced memory, MB")
    ax.set_title("Memory of one node's planning")
    if controller_run:
        ax = axes[2]
        cs = controller_run["data"]["sizes"]
        h = [s["hosts"] for s in cs]
        ax.loglog(h, [s["site"]["cpu_s"] for s in cs], "o-", label="playbooks/site.yml, first run")
        ax.loglog(h, [s["rerun"]["cpu_s"] for s in cs], "o--", label="playbooks/site.yml, re-run")
        ax.loglog(h, [s["facts"]["cpu_s"] for s in cs], "^:", label="baseline: fact gathering (same run)")
        ax.set_xlabel("hosts in the inventory (fake connection)")
        ax.set_ylabel("controller CPU seconds")
        ax.set_title("Controller, run of %s (%s)" % (controller_run["meta"]["finished"][:16], controller_run["meta"]["code_commit"][:7]),
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})


def notes(args, name):
    path = os.path.join(args.notes, name)
    return [open(path).read().rstrip(), ""] if args.notes and os.path.exists(path) else []


def write(args):
    runs = load_runs(args.results)
    out = ["# Benchmarks", "",
           "Generated by `bash bench/run.sh` (`--only scale,controller,agent,converge,dataplane,failover,doublenat`) from every result",
           "file in `bench/results/<section>/` (one file per section run, committed with the code); nothing in this file",
           "is typed by hand. Each row names the code commit it measured (the last commit touching `plugins/`, `roles/`,",
           "`playbooks/` or `bench/`; \"dirty\" when that code had uncommitted changes), its date and the machine's load.",
           "Scenario runs of the test suite (failover, discovery, relay, doublenat) are imported from their",
           "`build/test-logs/measurements.txt` by `bench/report.py import-measurements`, with that run's commit and date",
           "(their load was not recorded: the rows say so).", "",
           "**Why ratios and load.** The machine is shared (other engineers' containers and test suites run at the same",
           "time): absolute seconds move with the load, so figures are also given as a ratio to a baseline measured in",
           "the same run, and every row carries the load average at its start and end. Pure-Python figures are CPU",
           "time, not wall time.", ""]
    out += summary(runs, load_goal_notes(args.goal_notes))
    out += sidebyside_section(runs)
    out += converge_section(runs)
    out += scale_section(runs) + notes(args, "scale.md")
    out += controller_section(runs) + notes(args, "controller.md")
    out += failover_section(runs)
    out += discovery_section(runs)
    out += doublenat_section(runs)
    out += dataplane_section(runs)
    out += relay_section(runs)
    out += agent_section(runs) + notes(args, "agent.md")
    out += notes(args, "findings.md")
    out += run_list(runs)
    os.makedirs(os.path.dirname(args.doc) or ".", exist_ok=True)
    with open(args.doc + ".tmp", "w") as f:
        f.write("\n".join(out))
    os.rename(args.doc + ".tmp", args.doc)
    if "scale" in runs:
        plot(runs["scale"][-1], runs.get("controller", [None])[-1], args.plot)
    print("wrote %s%s" % (args.doc, " and " + args.plot if "scale" in runs else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("converge-entry")
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--facts", type=float, nargs="+", required=True)
    c.add_argument("--cold", type=float, required=True)
    c.add_argument("--play", type=float, required=True)
    c.add_argument("--rerun", type=float, required=True)
    c.add_argument("--profiles", nargs=2, required=True)
    c.add_argument("--out", required=True)
    a = sub.add_parser("agent-entry")
    a.add_argument("--jsonl", required=True)
    a.add_argument("--importtime")
    a.add_argument("--out", required=True)
    f = sub.add_parser("failover-entry")
    f.add_argument("--text", required=True)
    f.add_argument("--out", required=True)
    rl = sub.add_parser("relay-entry")
    rl.add_argument("--text", required=True)
    rl.add_argument("--out", required=True)
    d = sub.add_parser("doublenat-entry")
    d.add_argument("--text", required=True)
    d.add_argument("--out", required=True)
    r = sub.add_parser("record")
    r.add_argument("--section", required=True)
    r.add_argument("--raw", required=True)
    r.add_argument("--results", required=True)
    r.add_argument("--load-start", default="")
    r.add_argument("--started", default="")
    r.add_argument("--load-end", default="", help="the load at the section's end (default: now)")
    r.add_argument("--commit", default="", help="the commit measured (bench/sidebyside.sh; default: this checkout's HEAD)")
    r.add_argument("--sidebyside", default="", help="the side-by-side run's id (its start date) this run belongs to")
    r.add_argument("--role", default="", help="base or new, in that side-by-side run")
    r.add_argument("--pair", nargs=2, default=None, metavar=("BASE", "NEW"), help="the side-by-side run's two commits")
    sb = sub.add_parser("sidebyside")
    sb.add_argument("--results", help="print the table of the side-by-side run --id from these result files")
    sb.add_argument("--id", default="", help="the side-by-side run (default: the newest)")
    sb.add_argument("--raw", help="or: from bench/sidebyside.sh's raw files (--no-record)")
    sb.add_argument("--pair", nargs=2, default=None, metavar=("BASE", "NEW"))
    im = sub.add_parser("import-measurements")
    im.add_argument("--file", required=True, help="a test run's measurements.txt (scripts/test.sh: build/test-logs/)")
    im.add_argument("--commit", default="", help="the commit the run tested (default: HEAD of the checkout holding the file)")
    im.add_argument("--date", default="", help="when it ran, YYYY-MM-DDTHH:MM:SSZ (default: the file's modification time)")
    im.add_argument("--dirty", action="store_true", help="the run tested uncommitted changes")
    im.add_argument("--source", default="", help="what produced the file (shown in the rows, e.g. \"CI on a fresh clone\")")
    im.add_argument("--results", required=True)
    w = sub.add_parser("write")
    w.add_argument("--results", required=True)
    w.add_argument("--doc", required=True)
    w.add_argument("--plot", required=True)
    w.add_argument("--goal-notes", default=GOALS_NOTES, help="why a goal is not met, by goal key (bench/notes/goals.json)")
    w.add_argument("--notes", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes"),
                   help="hand-written reasoning included in the document (bench/notes/*.md; no figures: they go stale)")
    args = ap.parse_args()
    {"converge-entry": converge_entry, "agent-entry": agent_entry, "failover-entry": failover_entry, "relay-entry": relay_entry,
     "doublenat-entry": doublenat_entry, "record": record, "import-measurements": import_measurements,
     "write": write, "sidebyside": sidebyside_print}[args.cmd](args)


if __name__ == "__main__":
    main()
