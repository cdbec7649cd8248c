# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Scale benchmark: peer set and data-plane planning for synthetic clusters (pure logic, on the controller).

For each cluster size n, a deterministic synthetic cluster of n affiliates is built: every node has a
WireGuard key, a base62 node ID, a KubeSpan address, an IPv4 and an IPv6 node address (both announced as
endpoints), a pod network per family, and
  - every 20th node advertises a /23 that also covers the next node's /24 (a pod-network overlap),
  - every 50th node excludes a /26 of its own pod network,
  - every 100th node repeats the previous node's IPv4 node address (a node-address overlap).

Per node, the work of one `kubespan.mesh.mesh` run on a re-run (the desired state already holds every peer)
is timed in phases, with the functions the module calls:
  peer_set  peers.build_peer_set (validation of fresh and last-known affiliates, merge, AllowedIPs)
  routed    peerspec.routed_set
  nft       dataplane.desired_nft + diff_nft against the same table + render_nft (before/after text)
  device    plan.plan_device against a device that already has every peer, expected_device, render_device x2
  cold      plan.plan_device against an empty device (first run), reported separately
Baseline, same run, same n: json.loads of the n affiliates (Ansible hands the module its arguments as JSON,
so no planning can cost less than reading them). Ratio = phase time / baseline.

Whole cluster, as computed on the controller (``cluster_s``): clusterplan.iter_cluster_plans over every node
of the cluster, in one process, timed in full (never sampled): every node's peer specs and warnings (what
build_peer_set returns for it, members = every host, last_known None), its routed set, its desired nft table
(dataplane.desired_nft) and its desired device peers (plan.DesiredPeer, as plan_node builds them). The diff
of each node's desired state against its live device and nft table (diff_nft, render_nft, plan_device,
expected_device, render_device) needs that node's live state, so it is node-side work and stays in the
per-node figure. A re-run's last-known entries equal the fresh data and change nothing (build_peer_set skips
them), which the bench checks on a few nodes against plan_node's own specs and build_peer_set's warnings.
NOT SHIPPED: the product never runs clusterplan (each node's mesh module plans for itself), so ``cluster_s``
is labelled "not shipped" in the report.

Whole cluster by the SHIPPED path (``shipped_cluster_s``, also kept as ``cluster_independent_s``): what the
nodes do, every node's own re-run planning (all of plan_node: build_peer_set with that node's last-known
entries, routed_set, the nft and device plans and diffs), n runs one after the other in ONE process. One
process rather than n: the planning is the same function calls on the same inputs as in each node's module
run, and n processes would add n interpreter starts and imports, which are per node, not per cluster, and
measured by the agent section; so this is the planning's share of the nodes' work, a lower bound of the
whole module run. Every node is timed in full up to --full-cluster-max (default 1,000) nodes; above that it
is estimated from --cluster-sample evenly spaced nodes and marked so.

Output: one JSON document (--out), and a table on stdout.
"""

from __future__ import annotations

import argparse
import base64
import gc
import ipaddress
import json
import math
import os
import random
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "build", "collections"))

from ansible_collections.kubespan.mesh.bench import clusterplan  # noqa: E402  (bench/: the product never runs it)
from ansible_collections.kubespan.mesh.plugins.module_utils.core import dataplane, peers, peerspec, plan  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.core.addressing import ula_prefix  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.core.keys import base62_encode  # noqa: E402
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, PeerState  # noqa: E402

CLUSTER_ID = "kubespan-bench-cluster-id"
SECRET = base64.b64encode(b"\x07" * 32).decode()


def synthetic_cluster(n: int, seed: int = 6):
    rng = random.Random(seed)
    subnet = ula_prefix(CLUSTER_ID)
    base4 = int(ipaddress.IPv4Address("10.128.0.10"))
    affiliates = []
    for i in range(n):
        v4 = str(ipaddress.IPv4Address(base4 + i))
        if i % 100 == 99:
            v4 = str(ipaddress.IPv4Address(base4 + i - 1))  # node-address overlap with the previous node
        v6 = "2001:db8:1::%x" % (i + 10)
        pod4 = "10.%d.%d.0/24" % (64 + i // 256, i % 256)
        if i % 20 == 19:  # i - 1 is even: the /23 holds the previous node's /24 and this node's own
            pod4 = "10.%d.%d.0/23" % (64 + (i - 1) // 256, (i - 1) % 256)
        aff = {
            "name": "node-%05d" % i,
            "node_id": base62_encode(rng.getrandbits(256).to_bytes(32, "big")),
            "public_key": base64.b64encode(rng.getrandbits(256).to_bytes(32, "big")).decode(),
            "address": str(subnet.network_address + 0x100 + i),
            "endpoints": ["%s:51820" % v4, "[%s]:51820" % v6],
            "addresses": [v4, v6],
            "additional_addresses": [pod4, "fd00:10:244:%x::/64" % i],
            "exclude_advertised_networks": [],
        }
        if i % 50 == 49:
            aff["exclude_advertised_networks"] = ["10.%d.%d.192/26" % (64 + i // 256, i % 256)]
        affiliates.append(aff)
    return subnet, affiliates


class NodeInputs:
    """What one node's module run receives and has on disk: its identity, the affiliates, the last-known peers."""

    def __init__(self, subnet, affiliates, index, last_known):
        self.subnet = subnet
        self.affiliates = affiliates
        self.me = affiliates[index]
        self.members = [a["name"] for a in affiliates]
        self.last_known = last_known


def plan_node(inp: NodeInputs, timings=None, current_device=None):
    """The pure work of one mesh module run on one node; returns (peer specs, device state after)."""
    t = time.process_time
    t0 = t()
    me = inp.me
    specs, _warnings = peers.build_peer_set(
        me["public_key"], me["address"] + "/128", inp.subnet, inp.affiliates, inp.members, inp.last_known, me["name"],
        me["addresses"], me["additional_addresses"])
    t1 = t()
    routed = peerspec.routed_set(specs, inp.subnet)
    t2 = t()
    cfg = dataplane.DataPlaneConfig().validate()
    want = dataplane.desired_nft(routed, cfg)
    current = json.loads(json.dumps(want))  # the table as nft lists it after the first run
    dataplane.diff_nft(want, current)
    dataplane.render_nft(current)
    dataplane.render_nft(want)
    t3 = t()
    desired = plan.DesiredDevice(private_key=SECRET, listen_port=51820, fwmark=0x20, peers=[
        plan.DesiredPeer(public_key=p["public_key"], allowed_ips=p["allowed_ips"], endpoints=p["endpoints"],
                         persistent_keepalive=25, preshared_key=SECRET, label=p["name"]) for p in specs])
    labels = {p["public_key"]: p["name"] for p in specs}
    now = 1_000_000.0
    plan.plan_device(desired, current_device, now)
    after = plan.expected_device(desired, current_device, me["public_key"], now)
    plan.render_device("kubespan", {}, current_device, labels)
    plan.render_device("kubespan", {}, after, labels)
    t4 = t()
    if timings is not None:
        timings["peer_set"] = t1 - t0
        timings["routed"] = t2 - t1
        timings["nft"] = t3 - t2
        timings["device"] = t4 - t3
        timings["total"] = t4 - t0
    return specs, after


def steady_device(specs, private_key):
    """A device that already has every peer (a re-run), with recent handshakes."""
    dev = DeviceState(private_key=private_key, public_key="", listen_port=51820, fwmark=0x20)
    for p in specs:
        dev.peers[p["public_key"]] = PeerState(public_key=p["public_key"], endpoint=p["endpoints"][0], allowed_ips=sorted(p["allowed_ips"]),
                                               persistent_keepalive=25, preshared_key=SECRET, last_handshake=999_990.0,
                                               rx_bytes=1000, tx_bytes=1000)
    return dev


def node_case(subnet, affiliates, index):
    """Inputs of a re-run on node ``index``: last-known peers and device as the first run left them."""
    first = NodeInputs(subnet, affiliates, index, [])
    specs, _after = plan_node(first)
    keep = ("name", "node_id", "public_key", "address", "endpoints", "allowed_ips", "addresses", "additional_addresses",
            "exclude_advertised_networks")
    last_known = [{k: p[k] for k in keep if k in p} for p in specs]
    return NodeInputs(subnet, affiliates, index, last_known), steady_device(specs, SECRET)


def best_of(fn, repeat):
    best = None
    for _attempt in range(repeat):
        gc.collect()
        timings = {}
        fn(timings)
        if best is None or timings["total"] < best["total"]:
            best = timings
    return best


def measure(n: int, repeat: int, full_cluster_max: int, sample: int, cluster_repeat: int = 3) -> dict:
    subnet, affiliates = synthetic_cluster(n)
    payload = json.dumps({"peers": affiliates, "members": [a["name"] for a in affiliates]})
    base = min(_timed(lambda: json.loads(payload)) for _attempt in range(max(repeat, 7)))

    index = n // 2
    inp, dev = node_case(subnet, affiliates, index)
    per_node = best_of(lambda tm: plan_node(inp, tm, dev), repeat)
    cold_inp = NodeInputs(subnet, affiliates, index, [])
    cold = best_of(lambda tm: plan_node(cold_inp, tm, None), repeat)

    gc.collect()
    tracemalloc.start()
    plan_node(inp, None, dev)
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # whole cluster as computed on the controller: every node's plan from the cluster-wide planner, in full
    cluster, paths, checked = cluster_planner(subnet, affiliates, max(1, cluster_repeat))
    for i, (specs, warnings, routed, nft, device_peers) in checked.items():
        case_inp, case_dev = node_case(subnet, affiliates, i)  # the node's own re-run, with its last-known entries
        me = case_inp.me
        own_specs, _after = plan_node(case_inp, None, case_dev)
        own_warnings = peers.build_peer_set(me["public_key"], me["address"] + "/128", subnet, affiliates, case_inp.members,
                                            case_inp.last_known, me["name"], me["addresses"], me["additional_addresses"])[1]
        own_routed = peerspec.routed_set(own_specs, subnet)
        if (specs, warnings, routed, nft, device_peers) != (own_specs, own_warnings, own_routed,
                                                            dataplane.desired_nft(own_routed, dataplane.DataPlaneConfig().validate()),
                                                            [device_peer(p) for p in own_specs]):
            raise SystemExit("cluster planner and node %d's own run differ at n=%d" % (i, n))

    # the SHIPPED path: the product never runs clusterplan; each node's mesh module plans its own peer set. Every
    # node's re-run planning (plan_node with that node's own last-known entries and device), one node after the other
    # in this process, each node's inputs built untimed just before it (so memory stays one node's). Up to
    # --full-cluster-max nodes every node is timed; above, evenly spaced nodes, scaled to n and marked estimated.
    if n <= full_cluster_max:
        indexes = list(range(n))
        estimated = False
    else:
        indexes = sorted({int(k * n / sample) for k in range(sample)})
        estimated = True
    shipped = 0.0
    shipped_max = 0.0
    for i in indexes:
        case_inp, case_dev = node_case(subnet, affiliates, i)
        gc.collect()
        start = time.process_time()
        plan_node(case_inp, None, case_dev)
        took = time.process_time() - start
        shipped += took
        shipped_max = max(shipped_max, took)
        del case_inp, case_dev
    independent = shipped * (n / len(indexes))
    return {
        "n": n,
        "baseline_json_s": base,
        "per_node": per_node,
        "cold_per_node_s": cold["total"],
        "per_node_peak_bytes": peak,
        "cluster_s": cluster,
        "cluster_planner_paths": paths,
        "cluster_checked_nodes": sorted(checked),
        "cluster_independent_s": independent,
        "cluster_independent_nodes_timed": len(indexes),
        "cluster_independent_estimated": estimated,
        "shipped_cluster_s": independent,
        "shipped_slowest_node_s": shipped_max,
        "shipped_nodes_timed": len(indexes),
        "shipped_estimated": estimated,
        "routed_prefixes": len(peerspec.routed_set(plan_node(inp, None, dev)[0], subnet).prefixes()),
    }


def device_peer(p):
    """The device peer plan_node builds from one spec."""
    return plan.DesiredPeer(public_key=p["public_key"], allowed_ips=p["allowed_ips"], endpoints=p["endpoints"],
                            persistent_keepalive=25, preshared_key=SECRET, label=p["name"])


def cluster_planner(subnet, affiliates, repeat):
    """Best-of-``repeat`` CPU time of every node's plan from clusterplan (nothing sampled); the count of nodes per
    path (shared or fallback) and, for a few nodes, their results (to check against their own runs)."""
    nodes = clusterplan.nodes_from_affiliates(affiliates)
    members = [a["name"] for a in affiliates]
    n = len(affiliates)
    keep = {0, n // 2, n - 1} | {i for i in (19, 49, 99) if i < n}
    best, paths, checked = None, {}, {}
    for _attempt in range(repeat):
        cfg = dataplane.DataPlaneConfig().validate()
        paths, checked = {}, {}
        gc.collect()
        start = time.process_time()
        for i, result in enumerate(clusterplan.iter_cluster_plans(subnet, affiliates, nodes, members, cfg, device_peer)):
            if result.error is not None:
                raise SystemExit("node %d: %s" % (i, result.error))
            paths[result.path] = paths.get(result.path, 0) + 1
            if i in keep:
                checked[i] = (result.specs, result.warnings, result.routed, result.nft, result.device_peers)
        took = time.process_time() - start
        best = took if best is None else min(best, took)
    return best, paths, checked


def _timed(fn):
    gc.collect()
    start = time.process_time()
    fn()
    return time.process_time() - start


def exponent(n1, t1, n2, t2):
    return math.log(t2 / t1) / math.log(n2 / n1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--full-cluster-max", type=int, default=1000,
                    help="largest n whose shipped path (every node's own planning) is timed for every node")
    ap.add_argument("--cluster-sample", type=int, default=20, help="nodes timed to estimate larger clusters' shipped path")
    ap.add_argument("--cluster-repeat", type=int, default=3, help="best of this many timings of the cluster planner")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    print("%6s %10s %10s %8s %10s %8s %10s %10s %10s %10s" % ("n", "json base", "per node", "ratio", "cold node", "peak MB", "peer_set",
                                                              "nft", "clusterplan", "shipped"))
    for n in sizes:
        r = measure(n, args.repeat, args.full_cluster_max, args.cluster_sample, args.cluster_repeat)
        results.append(r)
        pn = r["per_node"]
        print("%6d %8.1fms %8.1fms %7.1fx %8.1fms %8.1f %8.1fms %8.1fms %9.2fs %9.2fs%s" % (
            n, r["baseline_json_s"] * 1e3, pn["total"] * 1e3, pn["total"] / r["baseline_json_s"], r["cold_per_node_s"] * 1e3,
            r["per_node_peak_bytes"] / 2**20, pn["peer_set"] * 1e3, pn["nft"] * 1e3, r["cluster_s"], r["cluster_independent_s"],
            " (est. from %d nodes)" % r["cluster_independent_nodes_timed"] if r["cluster_independent_estimated"] else ""), flush=True)
        print("       clusterplan = every node's plan from clusterplan, NOT SHIPPED (%s); shipped = every node's own planning" % ", ".join(
            "%d %s" % (v, k) for k, v in sorted(r["cluster_planner_paths"].items())), flush=True)
    growth = []
    for a, b in zip(results, results[1:]):
        k = exponent(a["n"], a["per_node"]["total"], b["n"], b["per_node"]["total"])
        nlogn = exponent(a["n"], a["n"] * math.log(a["n"]), b["n"], b["n"] * math.log(b["n"]))
        mem = exponent(a["n"], a["per_node_peak_bytes"], b["n"], b["per_node_peak_bytes"])
        base_k = exponent(a["n"], a["baseline_json_s"], b["n"], b["baseline_json_s"])
        # the ratio to the baseline (reading the input, linear work) grows as n^(k - base_k); n log n work would
        # make it grow as log n, i.e. as n^(nlogn - 1) over this step
        growth.append({"from": a["n"], "to": b["n"], "time_exponent": k, "nlogn_exponent": nlogn, "memory_exponent": mem,
                       "baseline_exponent": base_k, "ratio_exponent": k - base_k, "log_exponent": nlogn - 1,
                       "cluster_exponent": exponent(a["n"], a["cluster_s"], b["n"], b["cluster_s"])})
        print("growth %d -> %d: per-node time ~ n^%.2f (n log n would be n^%.2f; the JSON baseline n^%.2f, so the ratio to it "
              "~ n^%.2f where log n would be n^%.2f), peak memory ~ n^%.2f, cluster planner ~ n^%.2f"
              % (a["n"], b["n"], k, nlogn, base_k, k - base_k, nlogn - 1, mem, growth[-1]["cluster_exponent"]))
    with open(args.out, "w") as f:
        json.dump({"sizes": results, "growth": growth}, f, indent=1)


if __name__ == "__main__":
    main()
