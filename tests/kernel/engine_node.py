# -*- coding: utf-8 -*-
"""One node of the engine phase of the kernel test; runs in network namespace ``c`` or ``d`` of the guest.

Unlike node.py (the transport), this drives the same code path as the kubespan.mesh.mesh module and the
node agent: ensure_identity -> compute_peers -> reconcile_mesh(implementation=kernel), on a real kernel.
Checks: the interface is created over netlink, the peer's ULA answers pings through it, a second
reconcile changes nothing, drift (MTU, a removed peer) is repaired and reported, a deleted link fails closed
(nothing to the peer leaves on the underlay; a positive control does), teardown removes it all.
Prints PASS/FAIL lines; exits 0 and leaves KTEST_DIR/<node>.ok only when every check passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

from rendezvous import Rendezvous

ME = sys.argv[1]
PEER = {"c": "d", "d": "c"}[ME]
DIR = os.environ.get("KTEST_DIR", "/run/ktest")
CLUSTER_ID = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
STATE = os.path.join(DIR, "state-" + ME)
failures = []


def emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(ok, what, detail=""):
    emit("%s %s: %s%s" % ("PASS" if ok else "FAIL", ME, what, (" (%s)" % detail) if detail and not ok else ""))
    if not ok:
        failures.append(what)
    return ok


RV = Rendezvous(DIR, ME, PEER)
put, wait_for = RV.put, RV.wait_for


def ping(addr):
    r = subprocess.run(["ping", "-6", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "30", "-I", "kubespan", addr],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    return r.returncode == 0, r.stdout.strip().splitlines()[-2:] if r.stdout else ""


def _out(*cmd):
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False).stdout


def policy_present():
    """(rule, routes, nft table) present: as `ip` and `nft` see them, independent of the code under test."""
    rule = "fwmark 0x40/0x60 lookup 180" in _out("ip", "rule") and "fwmark 0x40/0x60 lookup 180" in _out("ip", "-6", "rule")
    routes = "dev kubespan" in _out("ip", "route", "show", "table", "180") and "dev kubespan" in _out("ip", "-6", "route", "show", "table", "180")
    table = "table inet kubespan" in _out("nft", "list", "tables")
    return rule, routes, table


def _routes(*args):
    """``ip route show`` output, without the error a missing table prints."""
    return subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False).stdout


def _unreachable_routes():
    return _routes("route", "show", "table", "180") + _routes("-6", "route", "show", "table", "180") \
        + _routes("-6", "route", "show", "type", "unreachable")


def _sent(counter):
    """Packets the ``ktest`` table counted on their way out (postrouting: after routing, before the wire)."""
    listing = json.loads(_out("nft", "-j", "list", "counter", "inet", "ktest", counter))
    return [c["counter"]["packets"] for c in listing["nftables"] if "counter" in c][0]


def fail_closed(settings, ident, peers, peer):
    """Delete the link: traffic to the peer's node address (marked) and to its ULA (the /64) must be refused
    by the unreachable routes, not sent on the underlay; positive controls send the same in the clear."""
    from kubespan_mesh.reconcile.engine import reconcile_mesh

    node4 = [e.rsplit(":", 1)[0] for e in peer["endpoints"] if e.startswith("192.168.78.")][0]
    ula = peer["address"]
    veth = "veth-" + ME
    # counters of what leaves on the underlay to the peer's node address and ULA; an on-link IPv6 default
    # on the underlay: without the fail-closed /64 route, a ULA would be routed there once the link is gone
    subprocess.run(["nft", "-f", "-"], input="""table inet ktest {
        counter to_node {}
        counter to_ula {}
        chain post { type filter hook postrouting priority 0; policy accept;
            oifname "%s" ip daddr %s icmp type echo-request counter name to_node
            oifname "%s" ip6 daddr %s icmpv6 type echo-request counter name to_ula
        }
    }
    """ % (veth, node4, veth, ula), text=True, check=True)
    subprocess.run(["ip", "-6", "route", "add", "default", "dev", veth, "metric", "4000"], check=True)

    def pings(*args):
        subprocess.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1"] + list(args), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)

    subprocess.run(["ip", "link", "del", "kubespan"], check=True)
    routes = _unreachable_routes()
    check(routes.count("unreachable") == 3 and "dev kubespan" not in routes,
          "link deleted: only the unreachable routes are left (table 180 v4/v6, the cluster /64)", routes)
    marked = _out("nft", "list", "table", "inet", "kubespan")
    check(node4 in marked, "the peer's node address is in the marking table", marked)
    got = _out("ip", "route", "get", node4, "mark", "0x40")
    check("dev " + veth not in got, "link deleted: a marked packet to the peer's node address gets no underlay route", got)
    before = _sent("to_node"), _sent("to_ula")
    pings(node4)
    pings("-6", ula)
    after = _sent("to_node"), _sent("to_ula")
    check(after == before, "link deleted: 0 pings to the peer's node address and ULA left on the underlay",
          "%s -> %s" % (before, after))
    # positive controls: the counters do see the same pings when they are sent in the clear on purpose
    pings("-m", "32", node4)  # the WireGuard mark: not marked for the mesh, routed by the main table
    subprocess.run(["ip", "-6", "route", "add", ula + "/128", "dev", veth], check=True)
    pings("-6", ula)
    subprocess.run(["ip", "-6", "route", "del", ula + "/128", "dev", veth], check=True)
    control = _sent("to_node"), _sent("to_ula")
    check(control[0] - after[0] >= 3 and control[1] - after[1] >= 3, "positive control: cleartext pings are counted",
          "%s -> %s" % (after, control))
    subprocess.run(["ip", "-6", "route", "del", "default", "dev", veth, "metric", "4000"], check=True)
    subprocess.run(["nft", "delete", "table", "inet", "ktest"], check=True)
    res = reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [ME, PEER])
    check(any("create kernel WireGuard interface" in c for c in res.changes), "reconcile recreates the link", str(res.changes))
    ok, out = ping(peer["address"])
    check(ok, "ping the peer's ULA again after the link came back", str(out))


def main():
    from kubespan_mesh.host.netlink import Netlink
    from kubespan_mesh.reconcile.engine import Settings, compute_peers, ensure_identity, reconcile_mesh, teardown_mesh

    # a host firewall that drops every input it does not know (as a strict Debian nftables.conf):
    # the mesh can only come up through the openings the engine adds
    for cmd in (["add", "table", "inet", "hostfw"],
                ["add", "chain", "inet", "hostfw", "input", "{ type filter hook input priority 0 ; policy drop ; }"],
                ["add", "rule", "inet", "hostfw", "input", "iifname", "lo", "accept"]):
        subprocess.run(["nft"] + cmd, check=True)
    ident, facts, changed = ensure_identity(STATE, CLUSTER_ID, "auto", False, 51820, "kubespan")
    check(changed and facts["created"], "identity created")
    check(facts["address_source"] == "node-id", "no physical NIC in a netns: node-id address source", facts["address_source"])
    check(ident.private_key not in json.dumps(facts), "identity facts carry no private key")
    _ident2, facts2, changed2 = ensure_identity(STATE, CLUSTER_ID, "auto", False, 51820, "kubespan")
    check(not changed2 and facts2["public_key"] == facts["public_key"] and facts2["address"] == facts["address"],
          "second ensure_identity keeps the identity")
    # with its node addresses (as the role announces them): they join the routed set, marked into the mesh
    me = {"name": ME, "node_id": facts["node_id"], "public_key": facts["public_key"], "address": facts["address"],
          "endpoints": facts["endpoints"], "addresses": facts["addresses"]}
    check(any(e.startswith("192.168.78.") for e in me["endpoints"]), "underlay address among endpoints", str(me["endpoints"]))
    put("aff", json.dumps(me))
    peer = json.loads(wait_for("aff"))

    settings = Settings(implementation="kernel", state_dir=STATE)
    peers, warnings = compute_peers(ident, STATE, [me, peer], [ME, PEER], ME)
    check([p["name"] for p in peers] == [PEER] and not warnings, "peer set is the other node", str(warnings))
    res = reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [ME, PEER])
    check(res.implementation == "kernel", "kernel data path chosen", res.implementation)
    check("create kernel WireGuard interface kubespan" in res.changes, "interface created over netlink", str(res.changes))
    with Netlink() as nl:
        link = nl.link("kubespan")
    check(link is not None and link["kind"] == "wireguard" and link["mtu"] == 1420 and link["up"], "link is wireguard, MTU 1420, up", str(link))
    check(link is not None and link["addresses"] == ["%s/64" % facts["address"]], "ULA /64 on the link", str(link and link["addresses"]))
    check(policy_present() == (True, True, True), "rule 32500, table 180 routes and nft table inet kubespan in place", str(policy_present()))
    hostfw = _out("nft", "list", "chain", "inet", "hostfw", "input")
    check(hostfw.count("kubespan.mesh") == 2, "UDP 51820 opened and kubespan trusted in the drop-policy input chain", hostfw)
    put("configured", "")
    wait_for("configured")

    ok, out = ping(peer["address"])
    check(ok, "ping the peer's ULA through kernel WireGuard", str(out))
    put("pinged", "")
    wait_for("pinged")

    res = reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [ME, PEER])
    check(res.changes == [], "second reconcile changes nothing", str(res.changes))

    subprocess.run(["ip", "link", "set", "kubespan", "mtu", "1300"], check=True)
    subprocess.run(["wg", "set", "kubespan", "peer", peer["public_key"], "remove"], check=True)
    res = reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [ME, PEER])
    check("MTU -> 1420" in res.changes and any(c.startswith("add peer %s" % PEER) for c in res.changes),
          "drift (MTU, removed peer) repaired and reported", str(res.changes))
    res = reconcile_mesh(settings, ident, CLUSTER_ID, SECRET, peers, [ME, PEER])
    check(res.changes == [], "no change after the repair", str(res.changes))
    ok, out = ping(peer["address"])
    check(ok, "ping again after the repair", str(out))
    put("repaired", "")
    wait_for("repaired")

    fail_closed(settings, ident, peers, peer)
    put("failclosed", "")
    wait_for("failclosed")

    res = teardown_mesh(settings)
    with Netlink() as nl:
        gone = nl.link("kubespan") is None
    check(gone and any("remove interface" in c for c in res.changes), "teardown removes the interface", str(res.changes))
    check(os.path.exists(os.path.join(STATE, "kubespan-identity.yaml")), "teardown keeps the identity")
    check(policy_present() == (False, False, False), "teardown removes rule, routes and nft table", str(policy_present()))
    left = _unreachable_routes()
    check(left.strip() == "", "teardown removes the fail-closed unreachable routes", left)
    hostfw = _out("nft", "list", "chain", "inet", "hostfw", "input")
    check("kubespan.mesh" not in hostfw and 'iifname "lo" accept' in hostfw and "policy drop" in hostfw,
          "teardown removes only its own firewall rules", hostfw)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        emit("FAIL %s: exception\n%s" % (ME, traceback.format_exc()))
        failures.append("exception")
    if failures:
        put("failed", "\n".join(failures))
        sys.exit(1)
    put("ok", "")
