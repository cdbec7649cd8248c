"""bench/report.py: a test run's measurements become result files, and the summary carries every goal with a reason."""

import json
import os
from types import SimpleNamespace

import pytest

from ansible_collections.kubespan.mesh.bench import report

# Lines as scripts/test.sh's measurements.txt has them (CI at 7ce860f), with others' lines in between.
MEASUREMENTS = """\
default: node2 wireguard-go killed: mesh recovered after 13.8 s
discovery join (Watch; one service): disc-node4 up on disc-node1 disc-node2 disc-node3 after 3.8 s
discovery join (Watch; first of two services stopped): disc-node4 up on disc-node1 disc-node2 disc-node3 after 2.1 s
failover round a: fo-node1 -> fo-node2, path via 10.89.60.12:51820 cut: failover: 31.7 s (154 pings lost; 0 lost after it)
systemd-analyze security on fo-node1: kubespan-agent.service 1.6 (ceiling 1.6)
failover round b: fo-node1 -> fo-node2, path via 10.89.61.12:51820 cut: failover: 29.9 s (145 pings lost; 0 lost after it)
relay: time to the relayed path under symmetric NAT (second agent starts -> A's ping to B answered): 34.0 s
relay: time back to the direct path (routers start routing LAN to LAN -> B's ranges on A's direct entry): 6.0 s
relay: iperf3 A -> B (5 s, same nodes) through the relay 128.9 Mbit/s, direct 281.5 Mbit/s
doublenat: time to a direct path after the second agent start (limit 60 s, goal < 30 s): dn-a <-> dn-b 34.1 s; dn-pub <-> dn-a 4.3 s; dn-pub <-> dn-b 3.5 s
doublenat: time for every pair to be back after a 60 s outage of dn-rtr-a that lost its NAT mappings (limit 120 s): \
dn-a <-> dn-b 5.7 s; dn-pub <-> dn-a 28.6 s; dn-pub <-> dn-b 6.5 s
"""
ISSUE_18_GOALS = {"converge-cold", "converge-rerun", "agent-cpu", "agent-rss", "failover", "join", "controller-1000",
                  "shipped-1000", "ci-suite"}


FAKE_HEAD = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _fixed_commit(monkeypatch):
    """The import asks git for the commit; these tests run in a checkout (pytest) and in ansible-test's copy of the
    collection, which has no .git: git answers with a fixed commit here, and any other git call fails the test."""
    def fake_git(*args):
        if args[:2] == ("rev-parse", "--verify") or args[:1] == ("log",):
            return FAKE_HEAD
        raise AssertionError("unexpected git call %r" % (args,))
    monkeypatch.setattr(report, "git", fake_git)


def _head():
    return FAKE_HEAD


def _import(tmp_path, text=MEASUREMENTS, date="2026-12-05T10:01:11Z"):
    path = tmp_path / "measurements.txt"
    path.write_text(text)
    results = tmp_path / "results"
    report.import_measurements(SimpleNamespace(file=str(path), commit=_head(), date=date, dirty=False, source="CI",
                                               results=str(results)))
    return report.load_runs(str(results))


def test_import_measurements_makes_one_run_per_section_with_commit_and_date(tmp_path):
    runs = _import(tmp_path)
    assert sorted(runs) == ["discovery", "doublenat", "failover", "relay"]  # no "ci suite:" line in MEASUREMENTS
    for section, [run] in runs.items():
        assert run["meta"]["finished"] == "2026-12-05T10:01:11Z" and run["meta"]["commit"] == _head(), section
        assert run["meta"]["code_commit"] and run["meta"]["load_end"] is None
        assert report.load_label(run["meta"]).startswith("not recorded")
    assert runs["failover"][0]["data"]["times_s"] == [31.7, 29.9]
    assert [j["seconds"] for j in runs["discovery"][0]["data"]["joins"]] == [3.8, 2.1]
    relay = runs["relay"][0]["data"]
    assert (relay["to_relayed_s"], relay["back_to_direct_s"], relay["relayed_mbps"], relay["direct_mbps"]) == (34.0, 6.0, 128.9, 281.5)
    # the time to a direct path, not the time back after the outage printed later with the same pair names
    assert runs["doublenat"][0]["data"]["pairs_s"] == {"dn-a <-> dn-b": 34.1, "dn-pub <-> dn-a": 4.3, "dn-pub <-> dn-b": 3.5}
    with pytest.raises(SystemExit, match="already recorded"):
        _import(tmp_path)  # the same run twice is refused


def test_import_refuses_a_file_without_measurements_and_a_bad_date(tmp_path):
    with pytest.raises(SystemExit, match="nothing recorded"):
        _import(tmp_path, text="default: node2 wireguard-go killed: mesh recovered after 13.8 s\n")
    with pytest.raises(SystemExit, match="YYYY-MM-DD"):
        _import(tmp_path, date="yesterday")


def test_doublenat_entry_takes_the_direct_path_line(tmp_path):
    text = tmp_path / "dn.txt"
    text.write_text(MEASUREMENTS)
    out = tmp_path / "dn.json"
    report.doublenat_entry(SimpleNamespace(text=str(text), out=str(out)))
    assert json.loads(out.read_text())["direct_s"] == 34.1


def test_summary_has_every_issue_goal_and_a_reason_for_each_unmet_one(tmp_path):
    runs = _import(tmp_path)
    code = runs["failover"][0]["meta"]["code_commit"]
    notes = {"failover": {"reason": "the floor is STALL_AFTER", "written_for": code[:7]}}
    lines = report.summary(runs, notes)
    rows = {goal[0]: next(line for line in lines if line.startswith("| %s |" % goal[1])) for goal in report.GOALS}
    assert ISSUE_18_GOALS <= set(rows)
    failover = rows["failover"].split(" | ")
    assert "29.9 s to 31.7 s" in failover and "**not met**" in failover and "the floor is STALL_AFTER |" in rows["failover"]
    assert code[:7] in rows["failover"] and "2026-12-05 10:01:11 UTC" in rows["failover"]
    assert "**met**" in rows["join"] and "median 3.0 s" in rows["join"]  # 3.8 and 2.1 s
    assert "information only" in rows["relay-throughput"] and "0.46" in rows["relay-throughput"]
    # unmet or unmeasured without a written reason: said so, not left blank
    assert "no reason written" in rows["ci-suite"] and "not measured" in rows["ci-suite"]
    # a reason written for other code is flagged
    stale = report.summary(runs, {"failover": {"reason": "old", "written_for": "0000000"}})
    assert any("written for `0000000`" in line for line in stale)


def test_goal_notes_keys_and_fields_are_checked(tmp_path):
    path = tmp_path / "goals.json"
    path.write_text(json.dumps({"failover-typo": {"reason": "x", "written_for": "abc"}}))
    with pytest.raises(SystemExit, match="failover-typo: not a goal key"):
        report.load_goal_notes(str(path))
    path.write_text(json.dumps({"failover": {"reason": "x"}}))
    with pytest.raises(SystemExit, match="written_for"):
        report.load_goal_notes(str(path))


def test_the_committed_goal_notes_are_valid_and_cover_every_unmet_goal():
    notes = report.load_goal_notes(report.GOALS_NOTES)
    lines = report.summary(report.load_runs(os.path.join(report.ROOT, "bench", "results")), notes)
    assert not [line for line in lines if "no reason written" in line]


def test_the_committed_doc_is_the_one_the_results_give(tmp_path, monkeypatch):
    # docs/benchmarks.md is regenerated from bench/results (bench/report.py write); the plot (matplotlib, a bench-only
    # requirement) is not compared
    monkeypatch.setattr(report, "plot", lambda *a: None)
    doc = tmp_path / "benchmarks.md"
    report.write(SimpleNamespace(results=os.path.join(report.ROOT, "bench", "results"), doc=str(doc), plot=str(tmp_path / "scale.png"),
                                 goal_notes=report.GOALS_NOTES, notes=os.path.join(report.ROOT, "bench", "notes")))
    assert doc.read_text() == open(os.path.join(report.ROOT, "docs", "benchmarks.md")).read()


def test_the_ci_suite_total_is_imported_and_a_failed_run_gives_no_figure(tmp_path):
    runs = _import(tmp_path, text=MEASUREMENTS + "ci suite: 2110 s on 2 cores, 19 passed, 0 failed\n")
    [run] = runs["ci-suite"]
    assert (run["data"]["seconds"], run["data"]["cores"], run["data"]["passed"], run["data"]["failed"]) == (2110, 2, 19, 0)
    assert report._ci_suite(run)[0][0] == pytest.approx(2110 / 60.0)
    failed = dict(run, data=dict(run["data"], failed=1))
    assert report._ci_suite(failed) == []


def test_the_test_script_writes_the_line_the_import_reads():
    with open(os.path.join(report.ROOT, "scripts", "test.sh")) as handle:
        script = handle.read()
    line = [x for x in script.splitlines() if 'echo "ci suite: ' in x]
    assert line and ">>\"$KUBESPAN_TEST_MEASUREMENTS\"" in line[0]
    sample = "ci suite: 2110 s on 2 cores, 19 passed, 0 failed"
    assert report.ci_suite_parse(sample)["seconds"] == 2110


# --- side by side (bench/sidebyside.sh) ---------------------------------------------------------------------


def _agent_raw(cpus_ms, tick_ms, cli_ms):
    rows = [{"peers": 1000, "mode": "process", "process_cpu_s": c / 1e3, "max_rss_bytes": 50 * 2**20, "launcher": True} for c in cpus_ms]
    rows.append({"peers": 1000, "mode": "real", "process_cpu_s": 0.9, "max_rss_bytes": 50 * 2**20, "tick_cpu_s": tick_ms / 1e3,
                 "tick_children_cpu_s": 0.01, "tick_traced_peak_bytes": 2**20})
    samples = [{"cpu_s": cli_ms / 1e3, "max_rss_bytes": 11 * 2**20}] * 3
    base = [{"cpu_s": 0.01, "max_rss_bytes": 7 * 2**20}] * 3
    return {"rows": rows, "importtime": {"peers": 100, "imports_total_us": 1, "top_imports_us": [],
                                         "baselines": {"python3 -c pass": base, cli_label(cli_ms): samples}}}


def cli_label(cli_ms):
    # the flat module name before issue 14's layers, the layered one after: both are the agent's command module
    return "import kubespan_mesh.cli" if cli_ms < 40 else "import kubespan_mesh.agent.cli"


def _scale_raw(per_node_ms):
    return {"sizes": [{"n": 1000, "per_node": {"total": per_node_ms / 1e3}, "shipped_cluster_s": per_node_ms, "shipped_estimated": False,
                       "cold_per_node_s": 0.05, "per_node_peak_bytes": 3 * 2**20, "baseline_json_s": 0.004}], "growth": []}


def _record_pair(tmp_path, base_agent, new_agent, base_scales, new_scales, sid="2026-12-05T14:00:00Z"):
    """Record a side-by-side run as bench/sidebyside.sh does (base's files first), return the result folder."""
    results = tmp_path / "results"
    clock = iter(range(10, 60))
    items = [("base", "scale", raw) for raw in base_scales] + [("base", "agent", base_agent)] + \
            [("new", "scale", raw) for raw in new_scales] + [("new", "agent", new_agent)]
    for i, (role, section, raw) in enumerate(items):
        path = tmp_path / ("raw-%d.json" % i)
        path.write_text(json.dumps(raw))
        finished = "2026-12-05T14:10:%02dZ" % next(clock)
        report.now = lambda finished=finished: finished
        report.record(SimpleNamespace(section=section, raw=str(path), results=str(results), load_start="1.0 1.0 1.0", load_end="2.5 2.0 1.5", started=sid,
                                      commit="base" if role == "base" else "new", sidebyside=sid, role=role, pair=["base", "new"]))
    return results


@pytest.fixture
def _two_commits(monkeypatch):
    """git knows two commits, "base" and "new" (their own code commits); no other git call."""
    shas = {"base": "b" * 40, "new": "e" * 40}

    def fake_git(*args):
        if args[:2] == ("rev-parse", "--verify"):
            return shas[args[2].split("^")[0]]
        if args[:3] == ("log", "-1", "--format=%H"):
            return args[3]
        raise AssertionError("unexpected git call %r" % (args,))
    monkeypatch.setattr(report, "git", fake_git)
    monkeypatch.setattr(report, "now", report.now)
    return shas


def test_sidebyside_records_both_commits_and_tabulates_every_run(tmp_path, _two_commits):
    results = _record_pair(tmp_path, _agent_raw([900, 1000, 1100], 600, 30), _agent_raw([950, 1050, 1500], 800, 50),
                           [_scale_raw(60), _scale_raw(58)], [_scale_raw(34), _scale_raw(36)])
    runs = report.load_runs(str(results))
    groups = report.sidebyside_groups(runs)
    assert len(groups) == 1
    group = next(iter(groups.values()))
    assert [r["meta"]["code_commit"] for r in group["base"]] == ["b" * 40] * 3
    assert [r["meta"]["code_commit"] for r in group["new"]] == ["e" * 40] * 3
    assert all(not r["meta"]["dirty"] and r["meta"]["sidebyside"]["base"] == "b" * 40 for r in group["base"] + group["new"])
    assert all(r["meta"]["load_end"] == [2.5, 2.0, 1.5] for r in group["base"] + group["new"])  # the section's end, not the record's
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in report.sidebyside_table(group["base"], group["new"])[2:]}
    cpu = rows["agent, 1000 peers: whole process CPU"]
    # median, range and count of ALL runs on each side; ratio of medians; overlapping ranges are no difference
    assert cpu[1] == "1000 ms (900 ms to 1100 ms, 3 runs)" and cpu[2] == "1050 ms (950 ms to 1500 ms, 3 runs)"
    assert cpu[3] == "1.05" and cpu[4].startswith("ranges overlap")
    planning = rows["scale, 1000 nodes: one node's planning (CPU)"]
    assert planning[3] == "0.59" and planning[4].startswith("new lower (ranges apart)")
    assert rows["agent, 1000 peers: in-process tick CPU, real device"][4].startswith("one run each")
    # the command module's import under its flat (base) and layered (new) name; the control row is in both
    assert rows["agent: `import kubespan_mesh...cli` (best of 3)"][1:3] == ["30.0 ms", "50.0 ms"]
    assert rows["control, same code in both: `python3 -c pass` (best of 3)"][1:3] == ["10.0 ms", "10.0 ms"]
    # the document carries the table; the summary's newest code commit is NEW (base's files were recorded first)
    section = report.sidebyside_section(runs)
    assert any(line.startswith("| agent, 1000 peers: whole process CPU |") for line in section)
    assert any("base `bbbbbbb`, new `eeeeeee`" in line for line in section)
    summary = report.summary(runs)
    assert any(line.startswith("| One node's planning, 1,000 nodes") and "`eeeeeee`" in line for line in summary)


def test_sidebyside_apart_when_every_new_run_is_higher(tmp_path, _two_commits):
    results = _record_pair(tmp_path, _agent_raw([900, 950], 600, 30), _agent_raw([1200, 1300], 600, 30), [], [])
    group = next(iter(report.sidebyside_groups(report.load_runs(str(results))).values()))
    [cpu] = [line for line in report.sidebyside_table(group["base"], group["new"]) if "whole process CPU" in line]
    assert "**new higher (ranges apart)**" in cpu


def test_sidebyside_record_refuses_a_role_without_the_pair(tmp_path, _two_commits):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(_scale_raw(50)))
    with pytest.raises(SystemExit, match="--role base|new"):
        report.record(SimpleNamespace(section="scale", raw=str(raw), results=str(tmp_path / "r"), load_start="", started="",
                                      commit="base", sidebyside="x", role="old", pair=["base", "new"]))


def test_sidebyside_from_raw_files(tmp_path, capsys):
    for name, raw in (("scale-base-1", _scale_raw(60)), ("agent-base", _agent_raw([900], 600, 30)),
                      ("scale-new-1", _scale_raw(34)), ("agent-new", _agent_raw([950], 600, 50))):
        (tmp_path / (name + ".json")).write_text(json.dumps(raw))
    report.sidebyside_print(SimpleNamespace(raw=str(tmp_path), pair=["b" * 40, "e" * 40], results=None, id=""))
    out = capsys.readouterr().out
    assert "| agent, 1000 peers: whole process CPU | 900 ms | 950 ms | 1.06 | one run each: no spread |" in out
    with pytest.raises(SystemExit, match="no raw result of base"):
        report.sidebyside_from_raw(str(tmp_path / "none"), ["b", "e"])
