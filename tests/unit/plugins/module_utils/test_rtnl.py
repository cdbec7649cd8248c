"""rtnl.py, the standard-library rtnetlink reader of the agent's tick: parser bounds on crafted bytes, and the
same answers as the pyroute2 reads it replaced (FROZEN below: a copy of netlink.Netlink's read methods before
the change) on a real network namespace holding what a KubeSpan node holds (a link with its addresses and MTU,
table 180 with a device route carrying an MTU metric and unreachable defaults, an unreachable route in the main
table, fwmark rules)."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.host import rtnl
from ansible_collections.kubespan.mesh.plugins.module_utils.host.rtnl import RtnlError, attributes, parse_messages


def _attr(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _msg(kind, body, seq=1):
    return struct.pack("=IHHII", 16 + len(body), kind, 2, seq, 0) + body


def test_attributes_parse_and_first_of_a_type_wins():
    data = _attr(3, b"kubespan\0") + _attr(4, struct.pack("=I", 1420)) + _attr(3, b"other\0") + _attr(0x8000 | 18, _attr(1, b"wireguard\0"))
    attrs = attributes(data, 0, len(data), "t")
    assert attrs[3] == b"kubespan\0"
    assert struct.unpack("=I", attrs[4])[0] == 1420
    assert attributes(attrs[18], 0, len(attrs[18]), "t")[1] == b"wireguard\0"  # NLA_F_NESTED masked off


@pytest.mark.parametrize("data", [
    struct.pack("=HH", 200, 1) + b"x" * 8,  # longer than the buffer
    struct.pack("=HH", 2, 1) + b"xxxx",  # shorter than its own header
])
def test_attribute_overruns_raise_the_project_error(data):
    with pytest.raises(RtnlError, match="overruns"):
        attributes(data, 0, len(data), "link dump")


def test_messages_of_other_sequences_are_ignored_and_done_ends():
    link = _msg(16, b"\0" * 16)
    msgs, done = parse_messages([_msg(16, b"\0" * 16, seq=7) + link + _msg(3, b"\0\0\0\0")], 1, "t")
    assert done and [m[1] for m in msgs] == [link]


def test_kernel_error_and_overrun_raise():
    with pytest.raises(RtnlError, match="Operation not permitted"):
        parse_messages([_msg(2, struct.pack("=i", -1) + b"\0" * 16)], 1, "rule dump")
    with pytest.raises(RtnlError, match="overruns"):
        parse_messages([struct.pack("=IHHII", 400, 16, 2, 1, 0) + b"\0" * 16], 1, "t")
    assert parse_messages([_msg(2, struct.pack("=i", 0) + b"\0" * 16)], 1, "t") == ([], False)  # an ACK


def test_bad_address_length_raises():
    with pytest.raises(RtnlError, match="address of 5 bytes"):
        rtnl._address(b"\1\2\3\4\5", socket.AF_INET, "route dump")
    with pytest.raises(RtnlError, match="32-bit attribute of 2 bytes"):
        rtnl._u32(b"\1\2", "route dump")


def test_message_count_is_capped(monkeypatch):
    monkeypatch.setattr(rtnl, "MAX_MESSAGES", 3)

    class Sock:
        def send(self, _data):
            pass

        def recvfrom(self, _size):
            return _msg(16, b"\0" * 16) * 4, (0, 0)

    r = rtnl.Rtnl.__new__(rtnl.Rtnl)
    r.sock, r.seq = Sock(), 0
    with pytest.raises(RtnlError, match="more than 3 messages"):
        r.dump(rtnl.RTM_GETLINK, b"\0" * 16, "link dump")


# --- differential, on a real network namespace ------------------------------------------------------------

FROZEN = r'''
import ipaddress, socket
from pyroute2 import IPRoute

def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value

def _kind(msg):
    info = msg.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")

class Frozen:
    def __init__(self):
        self.ipr = IPRoute()
    def link_index(self, ifname):
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None
    def link(self, ifname):
        idx = self.link_index(ifname)
        if idx is None:
            return None
        msg = self.ipr.get_links(idx)[0]
        return {"index": idx, "mtu": _attr(msg, "IFLA_MTU", 0), "up": bool(msg["flags"] & 1), "kind": _kind(msg),
                "addresses": self.addresses(idx)}
    def addresses(self, index, family=socket.AF_INET6):
        result = []
        for msg in self.ipr.get_addr(family=family, index=index):
            if msg["index"] != index or msg["scope"] != 0:
                continue
            addr = _attr(msg, "IFA_ADDRESS") or _attr(msg, "IFA_LOCAL")
            if addr:
                result.append("%s/%d" % (ipaddress.ip_address(addr).compressed, msg["prefixlen"]))
        return sorted(result)
    def routes(self, table):
        names = {msg["index"]: _attr(msg, "IFLA_IFNAME", "") for msg in self.ipr.get_links()}
        result = []
        for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for msg in self.ipr.get_routes(family=family, table=table):
                if (_attr(msg, "RTA_TABLE") or msg["table"]) != table:
                    continue
                dst = _attr(msg, "RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
                metrics = msg.get_attr("RTA_METRICS")
                mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
                route = {"family": fam, "dst": "%s/%d" % (dst, msg["dst_len"]), "table": table,
                         "oif": names.get(_attr(msg, "RTA_OIF"), ""), "metric": _attr(msg, "RTA_PRIORITY", 0), "mtu": mtu or 0}
                if msg["type"] != 1:
                    route["type"] = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}.get(msg["type"], str(msg["type"]))
                result.append(route)
        return result
    def rules(self, priority, table):
        result = []
        for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for msg in self.ipr.get_rules(family=family):
                prio = _attr(msg, "FRA_PRIORITY", 0)
                tab = _attr(msg, "FRA_TABLE") or msg["table"]
                if prio != priority and tab != table:
                    continue
                result.append({"family": fam, "priority": prio, "fwmark": _attr(msg, "FRA_FWMARK", 0),
                               "fwmask": _attr(msg, "FRA_FWMASK", 0), "table": tab})
        return result
'''

SETUP = [
    "ip link add ks0 type veth peer name ks0p", "ip link set ks0 mtu 1420 up", "ip link set ks0p up",
    "ip link add eth9 type bridge", "ip link set eth9 up",
    "ip -6 addr add fd7f:175a:b97c:5602:a8f0:1ff:fe02:3/64 dev ks0 nodad", "ip -6 addr add fd00:1::5/64 dev ks0 nodad",
    "ip addr add 192.0.2.9/24 dev eth9", "ip -6 addr add 2001:db8:9::9/64 dev eth9 nodad",
    "ip route add 10.244.0.0/16 dev ks0 table 180 mtu 1420 metric 1",
    "ip -6 route add fd7f:175a:b97c:5602::/64 dev ks0 table 180 mtu 1420 metric 1",
    "ip route add unreachable default table 180 metric 4278198272",
    "ip -6 route add unreachable default table 180 metric 4278198272",
    "ip -6 route add unreachable fd7f:175a:b97c:5602::/64 table 254 metric 4278198272",
    "ip route add default via 192.0.2.1 dev eth9",
    "ip rule add fwmark 0x20/0x60 lookup 180 priority 32500", "ip -6 rule add fwmark 0x20/0x60 lookup 180 priority 32500",
    "ip rule add fwmark 0x40/0x60 lookup main priority 32499",
]

CHILD = r'''
import json, os, subprocess, sys
for cmd in json.loads(sys.argv[1]):
    subprocess.run(cmd.split(), check=True)
sys.path.insert(0, sys.argv[2])
exec(sys.argv[3])
from ansible_collections.kubespan.mesh.plugins.module_utils.host.netlink import Netlink
out = {}
for label, nl in (("frozen", Frozen()), ("rtnl", Netlink())):
    out[label] = {"link": nl.link("ks0"), "missing": nl.link("nope"), "index": nl.link_index("eth9"),
                  "addr4": nl.addresses(nl.link_index("eth9"), 2), "table180": nl.routes(180), "main": nl.routes(254),
                  "rules": nl.rules(32500, 180), "rules_main": nl.rules(32499, 254), "local": nl.routes(255)}
print(json.dumps(out))
'''


# the directory holding ansible_collections/ as this test imported it (module_utils/host/rtnl.py is 7 levels below)
ROOT = os.path.abspath(os.path.join(os.path.dirname(rtnl.__file__), *[".."] * 6))


def _netns_available():
    return os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip")


def test_same_answers_as_the_frozen_pyroute2_reads_on_a_real_namespace():
    assert _netns_available(), "needs root, unshare and ip for a private network namespace (the suite runs as root)"
    root = ROOT
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", CHILD, json.dumps(SETUP), root, FROZEN],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["rtnl"] == out["frozen"]
    got = out["rtnl"]
    # the namespace really holds what the comparison is about (a comparison of two empty answers proves nothing)
    assert got["link"]["mtu"] == 1420 and got["link"]["kind"] == "veth" and got["link"]["up"]
    assert got["link"]["addresses"] == ["fd00:1::5/64", "fd7f:175a:b97c:5602:a8f0:1ff:fe02:3/64"]
    assert got["missing"] is None and got["addr4"] == ["192.0.2.9/24"]
    assert {"family": 4, "dst": "10.244.0.0/16", "table": 180, "oif": "ks0", "metric": 1, "mtu": 1420} in got["table180"]
    assert sum(1 for r in got["table180"] if r.get("type") == "unreachable") == 2
    assert any(r.get("type") == "unreachable" and r["dst"] == "fd7f:175a:b97c:5602::/64" for r in got["main"])
    assert sorted((r["family"], r["fwmark"], r["fwmask"]) for r in got["rules"]) == [(4, 0x20, 0x60), (6, 0x20, 0x60)]
    assert got["rules_main"] and got["local"]


def test_reads_do_not_import_pyroute2():
    assert _netns_available(), "needs root, unshare and ip for a private network namespace (the suite runs as root)"
    root = ROOT
    code = ("import sys, json; sys.path.insert(0, %r)\n"
            "from ansible_collections.kubespan.mesh.plugins.module_utils.host.netlink import Netlink\n"
            "with Netlink() as nl:\n"
            "    nl.link('lo'); nl.routes(254); nl.rules(32500, 180)\n"
            "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'pyroute2']))\n"
            "nl = Netlink(); nl.ipr; print(json.dumps('pyroute2' in sys.modules)); nl.close()\n") % root
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reads, write = proc.stdout.splitlines()
    assert json.loads(reads) == []
    assert json.loads(write) is True  # the positive control: a write path does import it


# --- the writes of the fail-closed unit, on a real network namespace -------------------------------------------
# The same rules and device-less routes written by pyroute2 (netlink.Netlink, the path before) and by rtnl.py
# (failclosed.StdlibNetlink), each in a fresh namespace, then read back with iproute2's own `ip -d` listings.

ROUTES = [  # unreachable in a table and in main, with a metric, both families (dataplane.fail_closed_routes' shapes)
    {"family": 4, "dst": "0.0.0.0/0", "table": 180, "type": "unreachable", "metric": 4278198272},
    {"family": 6, "dst": "::/0", "table": 180, "type": "unreachable", "metric": 4278198272},
    {"family": 6, "dst": "fd7f:175a:b97c:5602::/64", "table": 254, "type": "unreachable", "metric": 4278198272},
    {"family": 4, "dst": "10.244.0.0/16", "table": 254, "type": "unreachable", "metric": 4278198272},
    {"family": 4, "dst": "192.0.2.0/24", "table": 1000, "type": "unreachable", "metric": 7},
]
RULES = [{"family": 4, "priority": 32500, "fwmark": 0x40, "fwmask": 0x60, "table": 180},
         {"family": 6, "priority": 32500, "fwmark": 0x40, "fwmask": 0x60, "table": 180},
         {"family": 4, "priority": 32499, "fwmark": 0x20, "fwmask": 0x60, "table": 254},
         {"family": 6, "priority": 32400, "fwmark": 0x1, "fwmask": 0xffffffff, "table": 1000}]

WRITER = r'''
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
which, routes, rules = sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
from ansible_collections.kubespan.mesh.plugins.module_utils.host.netlink import Netlink, NetlinkError
from ansible_collections.kubespan.mesh.plugins.module_utils.agent.failclosed import StdlibNetlink
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
nl = Netlink() if which == "pyroute2" else StdlibNetlink()
with nl:
    for route in routes:
        nl.add_route(route, replace=True)
    for rule in rules:
        nl.add_rule(rule)
    nl.add_route(routes[0], replace=True)  # replace: the same route again is no error
    errors = []
    for again in (lambda: nl.add_rule(rules[0]), lambda: nl.add_route(routes[0], replace=False)):
        try:
            again()
            errors.append(None)
        except NetlinkError as exc:
            errors.append(str(exc))
    read = {"table180": nl.routes(180), "main": [r for r in nl.routes(254) if r.get("type")], "rules": nl.rules(32500, 180)}
shown = [subprocess.run(["ip", "-d"] + fam + cmd, capture_output=True, text=True, check=True).stdout
         for fam in (["-4"], ["-6"]) for cmd in (["rule", "show"], ["route", "show", "table", "all"])]
print(json.dumps({"shown": shown, "errors": errors, "read": read,
                  "pyroute2": sorted(m for m in sys.modules if m.split(".")[0] == "pyroute2")}))
'''


def _write_in_netns(which):
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", WRITER, ROOT, which, json.dumps(ROUTES), json.dumps(RULES)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_writes_are_the_same_as_pyroute2s_on_a_real_namespace():
    assert _netns_available(), "needs root, unshare and ip for a private network namespace (the suite runs as root)"
    old, new = _write_in_netns("pyroute2"), _write_in_netns("rtnl")
    assert new["shown"] == old["shown"]
    assert new["read"] == old["read"]
    assert new["pyroute2"] == [] and old["pyroute2"]  # the positive control: the old path did import it
    v4_rules, v4_routes, v6_rules, v6_routes = new["shown"]
    # what the comparison is about is really there (two empty listings would compare equal)
    assert "32500:\tfrom all fwmark 0x40/0x60 lookup 180" in v4_rules and "32499:\tfrom all fwmark 0x20/0x60 lookup main" in v4_rules
    assert "32500:\tfrom all fwmark 0x40/0x60 lookup 180" in v6_rules and "32400:\tfrom all fwmark 0x1 lookup 1000" in v6_rules
    assert "unreachable default table 180 proto static scope global metric 4278198272" in v4_routes
    assert "unreachable 10.244.0.0/16 table main proto static scope global metric 4278198272" in v4_routes
    assert "unreachable 192.0.2.0/24 table 1000 proto static scope global metric 7" in v4_routes
    assert "unreachable default dev lo table 180 proto static scope global metric 4278198272" in v6_routes
    assert "unreachable fd7f:175a:b97c:5602::/64 dev lo table main proto static scope global metric 4278198272" in v6_routes
    # errors: an existing rule is EEXIST (restore adds only what is missing), a replaced route is none
    assert new["errors"][0] and "File exists" in new["errors"][0] and new["errors"][1] and "File exists" in new["errors"][1]
    assert old["errors"][0] and old["errors"][1]


@pytest.mark.parametrize("call,needle", [
    (lambda r: r.add_rule(5, 1, 180, 0x40, 0x60), "family 5"),
    (lambda r: r.add_rule(4, -1, 180, 0x40, 0x60), "-1 is not a 32-bit"),
    (lambda r: r.add_rule(4, 1, 2**32, 0x40, 0x60), "is not a 32-bit"),
    (lambda r: r.add_typed_route(4, "10.0.0.0/8", 180, 1, "unicast"), "only blackhole, prohibit, throw, unreachable"),
    (lambda r: r.add_typed_route(4, "10.0.0.1/8", 180, 1, "unreachable"), "not a network"),
    (lambda r: r.add_typed_route(6, "10.0.0.0/8", 180, 1, "unreachable"), "not an IPv6 network"),
    (lambda r: r.add_typed_route(4, "10.0.0.0/8", 180, True, "unreachable"), "not a 32-bit"),
])
def test_bad_write_arguments_raise_before_sending(call, needle):
    class Sock:
        def send(self, _data):
            raise AssertionError("sent a malformed request")
    r = rtnl.Rtnl.__new__(rtnl.Rtnl)
    r.sock, r.seq = Sock(), 0
    with pytest.raises(RtnlError, match=needle):
        call(r)


def test_a_write_is_acknowledged_or_raises_the_kernels_error():
    class Sock:
        def __init__(self, code):
            self.code, self.sent = code, []

        def send(self, data):
            self.sent.append(data)

        def recvfrom(self, _size):
            seq = struct.unpack_from("=I", self.sent[-1], 8)[0]
            return _msg(rtnl.NLMSG_ERROR, struct.pack("=i", self.code) + self.sent[-1][:16], seq), (0, 0)

    for code, raises in ((0, None), (-17, "File exists"), (-1, "Operation not permitted")):
        r = rtnl.Rtnl.__new__(rtnl.Rtnl)
        r.sock, r.seq = Sock(code), 0
        if raises is None:
            r.add_rule(4, 32500, 180, 0x40, 0x60)
            flags = struct.unpack_from("=H", r.sock.sent[0], 6)[0]
            assert flags & rtnl.NLM_F_ACK and flags & rtnl.NLM_F_CREATE and flags & rtnl.NLM_F_EXCL
        else:
            with pytest.raises(RtnlError, match=raises):
                r.add_typed_route(6, "::/0", 180, 1, "unreachable")
