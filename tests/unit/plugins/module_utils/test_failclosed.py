"""Fail closed: the unreachable routes as data, their diffs, and the boot-time restore from the desired state."""

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import failclosed
from ansible_collections.kubespan.mesh.plugins.module_utils.agent.failclosed import FailClosedError, plan, restore
from ansible_collections.kubespan.mesh.plugins.module_utils.core.dataplane import (
    FAIL_CLOSED_METRIC,
    DataPlaneConfig,
    desired_routes,
    desired_rules,
    diff_routes,
    fail_closed_routes,
    owned_main_routes,
    render_route,
)

CFG = DataPlaneConfig().validate()
SUBNET = "fd7f:175a:b97c:5602::/64"


def test_unreachable_defaults_for_both_families_and_the_cluster_subnet():
    routes = fail_closed_routes(CFG, SUBNET)
    assert [render_route(r) for r in routes] == [
        "unreachable default table 180 metric 4278198272",
        "-6 unreachable default table 180 metric 4278198272",
        "-6 unreachable %s table 254 metric 4278198272" % SUBNET]
    assert all("oif" not in r for r in routes)  # device-less: they survive the link
    assert all(r["metric"] > d["metric"] for r in routes for d in desired_routes(CFG))  # worse than the link's routes
    assert fail_closed_routes(CFG) == routes[:2]


def test_host_spelling_of_unreachable_routes_is_no_drift():
    # as netlink.Netlink.routes reads them back: IPv6 unreachable routes report "lo", no MTU
    host = [{"family": 4, "dst": "0.0.0.0/0", "table": 180, "oif": "", "metric": FAIL_CLOSED_METRIC, "mtu": 0, "type": "unreachable"},
            {"family": 6, "dst": "::/0", "table": 180, "oif": "lo", "metric": FAIL_CLOSED_METRIC, "mtu": 0, "type": "unreachable"},
            {"family": 6, "dst": SUBNET, "table": 254, "oif": "lo", "metric": FAIL_CLOSED_METRIC, "mtu": 0, "type": "unreachable"}]
    assert diff_routes(fail_closed_routes(CFG, SUBNET), host) == ([], [])


def test_a_unicast_route_is_not_a_fail_closed_route():
    # a device route at the fail-closed metric (or a blackhole) is something else: replaced, never taken for ours
    want = fail_closed_routes(CFG)
    imposter = [dict(want[0], type="unicast", oif="eth0"), dict(want[1], type="blackhole")]
    add, remove = diff_routes(want, imposter)
    assert add == want and remove == imposter


def test_whole_table_plan_keeps_device_and_unreachable_routes_apart():
    want = desired_routes(CFG) + fail_closed_routes(CFG, SUBNET)
    # the link is gone (wireguard-go killed, ip link del): only its device routes are missing
    add, remove = diff_routes(want, fail_closed_routes(CFG, SUBNET))
    assert add == desired_routes(CFG) and remove == []
    # the cluster ID changed: the former subnet's unreachable route is removed, the new one added
    old = fail_closed_routes(CFG, "fd00:1::/64")[2:]
    add, remove = diff_routes(want, desired_routes(CFG) + fail_closed_routes(CFG) + old)
    assert add == fail_closed_routes(CFG, SUBNET)[2:] and remove == old


def test_owned_main_routes_are_only_unreachable_at_the_fail_closed_metric():
    main = [{"family": 4, "dst": "0.0.0.0/0", "table": 254, "oif": "eth0", "metric": 0},
            {"family": 6, "dst": SUBNET, "table": 254, "oif": "kubespan", "metric": 256},
            {"family": 6, "dst": "fd00:9::/64", "table": 254, "oif": "lo", "metric": 1024, "type": "unreachable"},
            {"family": 6, "dst": SUBNET, "table": 254, "oif": "lo", "metric": FAIL_CLOSED_METRIC, "type": "unreachable"}]
    assert owned_main_routes(main, CFG) == main[3:]


@pytest.mark.parametrize("link_metric,metric", [(1, 1), (9, 5)])
def test_fail_closed_metric_must_be_worse_than_the_link_route(link_metric, metric):
    with pytest.raises(ValueError, match="fail-closed route metric %d must be worse" % metric):
        DataPlaneConfig(route_metric=link_metric, fail_closed_metric=metric).validate()


# --- the boot-time restore ---------------------------------------------------------------------------

def state(**over):
    doc = {"version": 1, "subnet": SUBNET,
           "settings": {"interface": "kubespan", "mtu": 1420, "route_table": 180, "rule_priority": 32500, "fwmark": 0x20,
                        "force_mark": 0x40, "mark_mask": 0x60, "nft_table": "kubespan", "allow_down_peer_bypass": True},
           "cluster_secret": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=",
           "peers": [{"public_key": "A", "allowed_ips": ["10.89.50.12/32", "fd7f:175a:b97c:5602::12/128"]},
                     {"public_key": "B", "allowed_ips": ["10.89.50.13/32", "10.244.3.0/24"]}]}
    doc.update(over)
    return doc


def test_plan_marks_every_peer_even_with_bypass_and_no_ula():
    cfg, rules, routes, table, count = plan(state())
    assert rules == desired_rules(cfg) and routes == fail_closed_routes(cfg, SUBNET)
    text = str(table)
    assert "'10.89.50.12', 'len': 31" in text and "10.244.3.0" in text  # peer B counts (no evidence it is down)
    assert "fd7f:175a" not in text and count == 2  # .12 and .13 merge; the ULA is routed by its /64, not marked


@pytest.mark.parametrize("doc", [None, state(disabled=True)])
def test_no_state_or_disabled_is_nothing_to_do(doc):
    assert plan(doc) is None


@pytest.mark.parametrize("over,needle", [
    ({"version": 7}, "version 7"),
    ({"settings": None}, "no settings"),
    ({"settings": {"route_table": "180"}}, "settings.route_table"),
    ({"settings": {"route_table": 254}}, "routing table 254 is reserved"),
    ({"subnet": "10.0.0.0/8"}, "subnet"),
    ({"peers": [{"allowed_ips": "10.0.0.1/32"}]}, "peer 0"),
    ({"peers": [{"allowed_ips": ["not-an-address"]}]}, "allowed_ips"),
    ({"peers": [{"allowed_ips": []}] * (failclosed.MAX_PEERS + 1)}, "at most"),
])
def test_bad_state_is_an_error_naming_the_field_never_a_secret(over, needle):
    with pytest.raises(FailClosedError, match=needle) as err:
        plan(state(**over))
    assert state()["cluster_secret"] not in str(err.value)


class FakeNetlink:
    def __init__(self):
        self.table = {180: [], 254: [{"family": 4, "dst": "0.0.0.0/0", "table": 254, "oif": "eth0", "metric": 0, "mtu": 0}]}
        self.rule_list = []
        self.calls = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def routes(self, table):
        return list(self.table.get(table, []))

    def rules(self, priority, table):
        return list(self.rule_list)

    def add_route(self, route, replace=False):
        self.calls.append(("add_route", render_route(route)))
        self.table.setdefault(route["table"], []).append(route)

    def add_rule(self, rule):
        self.calls.append(("add_rule", rule["family"]))
        self.rule_list.append(rule)

    def __getattr__(self, name):  # del_route, del_rule, delete_link...: restore must never remove anything
        raise AssertionError("restore called %s" % name)


def test_restore_adds_what_is_missing_then_nothing(tmp_path):
    from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import write_json
    write_json(str(tmp_path / "state.json"), state())
    nl, tables, lines = FakeNetlink(), {}, []

    def apply(batch, what):
        tables["kubespan"] = batch

    added = restore(str(tmp_path), lines.append, netlink=nl, list_table=tables.get, apply_batch=apply)
    assert added[0].startswith("nftables table inet kubespan (2 routed prefixes)")
    assert [c for c in nl.calls if c[0] == "add_route"] == [("add_route", render_route(r)) for r in fail_closed_routes(CFG, SUBNET)]
    assert [c for c in nl.calls if c[0] == "add_rule"] == [("add_rule", 4), ("add_rule", 6)]
    assert len(added) == 6 and all(line.startswith("fail closed: added") for line in lines)
    nl.calls.clear()
    lines.clear()
    assert restore(str(tmp_path), lines.append, netlink=nl, list_table=tables.get, apply_batch=apply) == []
    assert nl.calls == [] and lines == ["fail closed: every piece is in place"]


def test_restore_without_state_succeeds_and_touches_nothing(tmp_path):
    lines = []
    assert restore(str(tmp_path), lines.append, netlink=FakeNetlink(), list_table=None, apply_batch=None) == []
    assert "nothing to do" in lines[0]


# --- the boot path for real: `kubespan failclosed` (cli.main) in a fresh network namespace -------------------------

BOOT = r'''
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli
rc = [cli.main(["--state-dir", sys.argv[2], "failclosed"]), cli.main(["--state-dir", sys.argv[2], "failclosed"])]
shown = [subprocess.run(cmd.split(), capture_output=True, text=True, check=True).stdout
         for cmd in ("ip rule show", "ip -6 rule show", "ip route show table 180", "ip -6 route show table 180",
                     "ip -6 route show table main", "nft list table inet kubespan")]
mods = sorted(m.split(".")[-1] for m in sys.modules if ("module_utils." in m and not hasattr(sys.modules[m], "__path__"))
              or m.split(".")[0] == "pyroute2")  # the files imported (not the layers' packages)
print(json.dumps({"rc": rc, "shown": shown, "modules": mods}))
'''


def test_boot_path_writes_through_the_kernel_and_imports_only_what_it_needs(tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys

    from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli
    from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import write_json
    from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine
    assert cli.DEFAULT_STATE_DIR == engine.DEFAULT_STATE_DIR
    assert os.geteuid() == 0 and shutil.which("unshare") and shutil.which("nft"), "needs root, unshare and nft (the suite runs as root)"
    write_json(str(tmp_path / "state.json"), state())
    root = os.path.abspath(os.path.join(os.path.dirname(cli.__file__), *[".."] * 6))
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", BOOT, root, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *logged, last = proc.stdout.splitlines()
    out = json.loads(last)
    assert out["rc"] == [0, 0]
    assert logged[0] == "fail closed: added nftables table inet kubespan (2 routed prefixes)" and len(logged) == 7
    assert logged[-1] == "fail closed: every piece is in place"
    rules4, rules6, table4, table6, main6, nft = out["shown"]
    assert "32500:\tfrom all fwmark 0x40/0x60 lookup 180" in rules4 and "32500:\tfrom all fwmark 0x40/0x60 lookup 180" in rules6
    assert rules4.count("lookup 180") == 1  # the second run added nothing
    assert "unreachable default proto static metric 4278198272" in table4
    assert "unreachable default dev lo proto static metric 4278198272" in table6
    assert "unreachable fd7f:175a:b97c:5602::/64 dev lo proto static metric 4278198272" in main6
    assert "ip daddr { 10.89.50.12/31, 10.244.3.0/24 } meta mark set" in nft
    # the boot path imported neither pyroute2 nor the agent: failclosed, its data plane and the readers/writers only
    assert "pyroute2" not in out["modules"] and not {"agent", "engine", "listing", "peerstatus", "wgtypes"} & set(out["modules"])
    assert "failclosed" in out["modules"] and "rtnl" in out["modules"]
