"""Measurements behind docs/dependencies.md "nft -j and IP sets": run with Debian's python3 as root.

  unshare --net /usr/bin/python3 bench/deps.py      (a private network namespace: the host's nftables is untouched)

needs python3-nftables and python3-netaddr (benchmark only; nothing in the collection imports them).

1. nftables: `nft -j list table` and a one-rule `nft -j -f` batch as a subprocess (what plugins/module_utils/host/nft.py
   does) against the same through libnftables (python3-nftables, in process); the agent's peak RSS with and without
   the binding loaded.
2. IP sets: the peer-set workload (every node's /128 plus IPv4 and IPv6 routed prefixes, some overlapping, then
   the node's own ranges removed) through plugins/module_utils/core/ipset.py, netaddr.IPSet and
   ipaddress.collapse_addresses (which can merge but not remove): time and whether the prefixes agree.
"""

import ipaddress
import json
import os
import random
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "build", "unit-path")
if not os.path.islink(os.path.join(BASE, "ansible_collections", "kubespan", "mesh")):
    os.makedirs(os.path.join(BASE, "ansible_collections", "kubespan"), exist_ok=True)
    os.symlink(ROOT, os.path.join(BASE, "ansible_collections", "kubespan", "mesh"))
sys.path.insert(0, BASE)


def best(fn, n):
    times = []
    for _run in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[0] * 1000, times[len(times) // 2] * 1000


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def nft_part(elements=1000, runs=30):
    setup = {"nftables": [{"add": {"table": {"family": "inet", "name": "kbench"}}},
                          {"add": {"chain": {"family": "inet", "table": "kbench", "name": "c", "type": "filter", "hook": "output", "prio": 0,
                                             "policy": "accept"}}},
                          {"add": {"set": {"family": "inet", "table": "kbench", "name": "s", "type": "ipv6_addr", "flags": ["interval"]}}},
                          {"add": {"element": {"family": "inet", "table": "kbench", "name": "s",
                                               "elem": [{"prefix": {"addr": "fd00:%x::" % i, "len": 64}} for i in range(elements)]}}}]}
    subprocess.run(["nft", "-j", "-f", "-"], input=json.dumps(setup), text=True, check=True)
    rule = {"nftables": [{"add": {"rule": {"family": "inet", "table": "kbench", "chain": "c",
                                           "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 1}}, {"accept": None}]}}},
                         {"flush": {"chain": {"family": "inet", "table": "kbench", "name": "c"}}}]}
    rss0 = rss_mb()
    sub_list = best(lambda: json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", "kbench"], capture_output=True, text=True,
                                                      check=True).stdout), runs)
    sub_apply = best(lambda: subprocess.run(["nft", "-j", "-f", "-"], input=json.dumps(rule), text=True, check=True), runs)
    rss_sub = rss_mb()
    import nftables  # noqa: E402  # pylint: disable=import-outside-toplevel
    t = time.perf_counter()
    nft = nftables.Nftables()
    nft.set_json_output(True)
    load_ms = (time.perf_counter() - t) * 1000

    def lib_list():
        rc, out, err = nft.cmd("list table inet kbench")
        assert rc == 0, err
        json.loads(out)

    def lib_apply():
        rc, _out, err = nft.json_cmd(rule)
        assert rc == 0, err
    lib_list_t = best(lib_list, runs)
    lib_apply_t = best(lib_apply, runs)
    rss_lib = rss_mb()
    subprocess.run(["nft", "delete", "table", "inet", "kbench"], check=True)
    return {"elements": elements, "runs": runs,
            "subprocess list ms (best, median)": sub_list, "subprocess apply ms": sub_apply,
            "libnftables load ms": round(load_ms, 1), "libnftables list ms": lib_list_t, "libnftables apply ms": lib_apply_t,
            "max RSS MB before / after subprocess runs / after libnftables": (round(rss0, 1), round(rss_sub, 1), round(rss_lib, 1))}


def workload(nodes, seed=1):
    rnd = random.Random(seed)
    adds = []
    for i in range(nodes):
        adds.append("fd7f:175a:b97c:5602:%x:%x:%x:%x/128" % (rnd.getrandbits(16), rnd.getrandbits(16), i >> 16, i & 0xffff))
        adds.append("10.%d.%d.0/24" % (i >> 8, i & 255))
        adds.append("10.%d.%d.128/25" % (i >> 8, i & 255))  # inside the /24: merges
        adds.append("2001:db8:%x::/48" % i)
        if i % 7 == 0:
            adds.append("192.168.%d.0/23" % (2 * (i % 128)))
    removes = ["10.0.0.0/24", "2001:db8:1::/48", "192.168.0.0/24"]
    return adds, removes


def ipset_part(nodes=1000, runs=7):
    import netaddr  # pylint: disable=import-outside-toplevel

    from ansible_collections.kubespan.mesh.plugins.module_utils.core.ipset import IPSet  # pylint: disable=import-outside-toplevel
    adds, removes = workload(nodes)

    def ours():
        s = IPSet(adds)
        for r in removes:
            s.remove(r)
        return s.prefixes()

    def with_netaddr():
        s = netaddr.IPSet(adds)
        for r in removes:
            s.remove(r)
        return [str(c) for c in s.iter_cidrs()]

    def with_ipaddress():  # merge only: ipaddress has no set with removal; exclude by address_exclude per removed net
        nets = {4: [], 6: []}
        for a in adds:
            n = ipaddress.ip_network(a)
            nets[n.version].append(n)
        out = []
        for v in (4, 6):
            merged = list(ipaddress.collapse_addresses(nets[v]))
            for r in removes:
                rn = ipaddress.ip_network(r)
                if rn.version != v:
                    continue
                nxt = []
                for n in merged:
                    if rn.subnet_of(n) and rn != n:
                        nxt.extend(n.address_exclude(rn))
                    elif not n.subnet_of(rn):
                        nxt.append(n)
                merged = sorted(nxt)
            out += [str(n) for n in merged]
        return out
    ref = ours()
    res = {"nodes": nodes, "input prefixes": len(adds), "output prefixes": len(ref)}
    for name, fn in (("ipset.py", ours), ("netaddr 0.8 IPSet", with_netaddr), ("ipaddress collapse+exclude", with_ipaddress)):
        out = fn()
        res[name + " ms (best, median)"] = best(fn, runs)
        res[name + " same prefixes"] = out == ref
    return res


if __name__ == "__main__":
    print(json.dumps({"python": sys.version.split()[0], "ipset": ipset_part(), "nft": nft_part()}, indent=2, default=lambda x: x))
