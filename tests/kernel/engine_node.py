# -*- coding: utf-8 -*-
"""One node of the engine phase of the kernel test; runs in network namespace ``c`` or ``d`` of the guest.

Unlike node.py (the transport), this drives the same code path as the kubespan.mesh.mesh module and the
node agent: ensure_identity -> compute_peers -> reconcile_mesh(implementation=kernel), on a real kernel.
Checks: the interface is created over netlink, the peer's ULA answers pings through it, a second
reconcile changes nothing, drift (MTU, a removed peer) is repaired and reported, teardown removes it.
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


def main():
    from kubespan_mesh.engine import Settings, compute_peers, ensure_identity, reconcile_mesh, teardown_mesh
    from kubespan_mesh.netlink import Netlink

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
    me = {"name": ME, "node_id": facts["node_id"], "public_key": facts["public_key"], "address": facts["address"],
          "endpoints": facts["endpoints"]}
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

    res = teardown_mesh(settings)
    with Netlink() as nl:
        gone = nl.link("kubespan") is None
    check(gone and any("remove interface" in c for c in res.changes), "teardown removes the interface", str(res.changes))
    check(os.path.exists(os.path.join(STATE, "kubespan-identity.yaml")), "teardown keeps the identity")
    check(policy_present() == (False, False, False), "teardown removes rule, routes and nft table", str(policy_present()))
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
