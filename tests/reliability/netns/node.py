"""Node-side helper of tests/reliability/netns_mesh.sh: runs inside one network namespace with /usr/bin/python3.

usage: node.py BUNDLE ident STATE_DIR CLUSTER_ID IFNAME NAME     prints this node's affiliate (JSON)
       node.py BUNDLE up STATE_DIR CLUSTER_ID SECRET IFNAME NAME AFFILIATES_JSON   the mesh module's reconcile
       node.py BUNDLE tick STATE_DIR                               one agent tick; prints cpu_ms and max_rss_kb
"""

import json
import resource
import sys


def main():
    sys.path.insert(0, sys.argv[1])
    cmd, args = sys.argv[2], sys.argv[3:]
    if cmd == "ident":
        from kubespan_mesh.core.settle import affiliate_of
        from kubespan_mesh.reconcile.engine import ensure_identity
        state_dir, cluster_id, ifname, name = args
        _ident, facts, _changed = ensure_identity(state_dir, cluster_id, "auto", False, 51820, ifname)
        print(json.dumps(affiliate_of(name, facts)))
        return 0
    if cmd == "up":
        from kubespan_mesh.host.identity import load_identity
        from kubespan_mesh.host.statefile import state_lock
        from kubespan_mesh.reconcile.engine import Settings, compute_peers, reconcile_mesh
        state_dir, cluster_id, secret, ifname, name, aff_file = args
        with open(aff_file) as handle:
            affiliates = json.load(handle)
        settings = Settings(interface=ifname, listen_port=51820, state_dir=state_dir, nft_table="ksn",
                            implementation="userspace", firewall_backend="none")
        settings.validate()
        ident = load_identity(state_dir)
        with state_lock(state_dir):
            peers, warnings = compute_peers(ident, state_dir, affiliates, None, name)
            res = reconcile_mesh(settings, ident, cluster_id, secret, peers, None)
        print(json.dumps(dict(peers=len(res.peers), implementation=res.implementation, warnings=warnings + res.warnings)))
        return 0
    if cmd == "tick":
        from kubespan_mesh.agent.agent import run_tick
        before = resource.getrusage(resource.RUSAGE_SELF)
        lines = []
        rc = run_tick(args[0], lines.append)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
        print(json.dumps(dict(rc=rc, tick_cpu_ms=round(cpu, 1), total_cpu_ms=round((after.ru_utime + after.ru_stime) * 1000, 1),
                              max_rss_kb=after.ru_maxrss, log=lines[-3:])))
        return rc
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
