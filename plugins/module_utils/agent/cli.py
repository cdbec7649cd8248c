# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The ``kubespan`` command on the node: the agent tick and talosctl-like listings.

Installed by the role as /usr/local/sbin/kubespan; its code is this package, bundled in
/usr/lib/kubespan/kubespan-agent.pyz.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

# Only the standard library (and the exception base and the settings model, which import nothing else) at import time: ``kubespan
# failclosed`` runs at every boot before the network, on machines that may be slow, and needs none of the agent
# (main() imports it for every other command).
from ..base.errors import KubeSpanError
from ..core.settings import STATE_DIR as DEFAULT_STATE_DIR  # the settings model (standard library only)


def _table(headers, rows):
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(str(cell)))
    lines = ["   ".join(str(c).ljust(widths[i]) for i, c in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("   ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def _emit(records, headers, row_of, output, out):
    if output == "records":  # the flat records of earlier releases: one JSON list
        out.write(json.dumps(records, indent=2, sort_keys=True) + "\n")
    else:
        out.write(_table(headers, [row_of(r) for r in records]) + "\n")


def get_documents(resource: str, state_dir: str, include_private_key: bool = False, node: str = ""):
    """talosctl's documents of one resource (listing.py), from the same records as list_resource."""
    from ..core.listing import documents, resolve
    from ..host.layout import file_times
    short = resolve(resource)
    times = file_times(state_dir)
    recs = list_resource(short, state_dir, include_private_key)[0]
    return documents(short, recs, node or socket.gethostname(), times)


def list_resource(resource: str, state_dir: str, include_private_key: bool = False):
    """Records and table columns of one resource, like ``talosctl get``."""
    from ..host.identity import load_identity
    from ..reconcile.engine import load_state
    from .agent import status_records
    if resource == "peerstatuses":
        return status_records(state_dir), ["ID", "VERSION", "LABEL", "ENDPOINT", "STATE", "RX", "TX"], \
            lambda r: [r["id"], r["version"], r["label"], r["endpoint"], r["state"], r["receiveBytes"], r["transmitBytes"]]
    if resource == "peerspecs":
        state = load_state(state_dir) or {}
        recs = [{"id": p["public_key"], "label": p["name"], "address": p["address"], "endpoints": p["endpoints"],
                 "allowedIPs": p["allowed_ips"], "affiliateID": p.get("node_id", ""), "version": p.get("version", 1)}
                for p in sorted(state.get("peers", []), key=lambda p: p["public_key"])]
        return recs, ["ID", "VERSION", "LABEL", "ENDPOINTS"], lambda r: [r["id"], r["version"], r["label"], json.dumps(r["endpoints"])]
    if resource == "endpoints":
        # as Talos: the endpoints of up peers that WireGuard is using (what harvesting would publish)
        state = load_state(state_dir) or {}
        node_ids = {p["public_key"]: p.get("node_id", "") for p in state.get("peers", [])}
        recs = [{"id": r["id"], "endpoint": r["endpoint"], "affiliateID": node_ids.get(r["id"], ""), "version": 1 + r.get("endpointChanges", 0)}
                for r in status_records(state_dir) if r["state"] == "up" and r["endpoint"]]
        return recs, ["ID", "VERSION", "ENDPOINT", "AFFILIATE ID"], lambda r: [r["id"], r["version"], r["endpoint"], r["affiliateID"]]
    if resource == "affiliates":
        return affiliate_records(state_dir), ["ID", "VERSION", "HOSTNAME", "ADDRESSES", "ENDPOINTS", "SOURCE"], \
            lambda r: [r["id"], r["version"], r["hostname"], ",".join(r["addresses"]), json.dumps(r["endpoints"]), r["source"]]
    ident = load_identity(state_dir)
    recs = []
    if ident is not None:
        rec = {"id": "local", "version": 1, "address": ident.address, "subnet": ident.subnet, "publicKey": ident.public_key,
               "nodeId": ident.node_id}
        if include_private_key:
            rec["privateKey"] = ident.private_key
        recs.append(rec)
    return recs, ["ID", "VERSION", "ADDRESS", "SUBNET", "PUBLICKEY"], lambda r: [r["id"], r["version"], r["address"], r["subnet"], r["publicKey"]]


def affiliate_records(state_dir: str):
    """Like ``talosctl get affiliates``: this node, the inventory's peers and the affiliates discovered last."""
    from ..discovery.discovery_agent import last_discovered
    from ..reconcile.engine import load_state
    state = load_state(state_dir) or {}
    local = state.get("local_affiliate")
    inventory = state.get("inventory_peers")
    if inventory is None:  # discovery off: the peers are the inventory's
        inventory = state.get("peers") or []
    rows = []
    for source, entries in (("local", [local] if local else []), ("inventory", inventory), ("discovery", last_discovered(state_dir))):
        for aff in entries:
            rows.append({"id": aff.get("node_id") or aff.get("public_key", ""), "version": 1, "hostname": aff.get("name", ""),
                         "publicKey": aff.get("public_key", ""), "kubespanAddress": aff.get("address", ""),
                         "addresses": list(aff.get("addresses") or []), "endpoints": list(aff.get("endpoints") or []),
                         "additionalAddresses": list(aff.get("additional_addresses") or []), "source": source})
    return rows


def _failclosed(argv, state_dir: str, out):
    """``kubespan [--state-dir DIR] failclosed`` with the failclosed module alone imported (no argparse parser of the
    other commands, no agent): the exit code, or None for any other command line (main() parses it)."""
    if argv[-1:] != ["failclosed"] or len(argv) not in (1, 2, 3):
        return None
    if len(argv) == 2:
        if not argv[0].startswith("--state-dir="):
            return None
        state_dir = argv[0][len("--state-dir="):]
    elif len(argv) == 3:
        if argv[0] != "--state-dir":
            return None
        state_dir = argv[1]
    from .failclosed import restore

    def log(line):
        out.write(line + "\n")
        out.flush()

    try:
        restore(state_dir, log)
    except (KubeSpanError, ValueError, OSError) as exc:
        sys.stderr.write("kubespan: %s\n" % exc)
        return 1
    return 0


def main(argv=None, state_dir: str = DEFAULT_STATE_DIR, out=None) -> int:
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["discovery-serve"]:
        # the discovery service (docs/discovery.md) from the same bundle: kubespan discovery-serve --listen [::]:3000 ...
        from ..discovery.discovery_cli import main as discovery_main
        return discovery_main(["serve"] + argv[1:])
    fast = _failclosed(argv, state_dir, out)
    if fast is not None:
        return fast
    from ..core.listing import SHORT_NAMES as RESOURCES  # peerstatuses, peerspecs, ...
    from ..core.listing import ListingError, render, resolve, watch
    from ..core.peerstatus import StatusSettings
    from ..host.statefile import LockBusy, state_lock
    from ..reconcile.engine import load_state, reapply_from_state
    from .agent import run_tick
    parser = argparse.ArgumentParser(prog="kubespan", description="KubeSpan node agent and listings")
    parser.add_argument("--state-dir", default=state_dir)
    sub = parser.add_subparsers(dest="command")
    p_agent = sub.add_parser("agent", help="one agent tick: repair drift, watch peers, cycle endpoints, write statuses and metrics")
    p_agent.add_argument("--check", action="store_true", help="only report drift from the desired state, change nothing")
    p_agent.add_argument("--lock-timeout", type=float, default=20.0, help="seconds to wait for a running playbook (default 20)")
    p_agent.add_argument("--watch-seconds", type=float, default=StatusSettings.watch_seconds,
                         help="how long one tick samples the peers (default %(default)s)")
    p_agent.add_argument("--sample-interval", type=float, default=StatusSettings.sample_interval,
                         help="seconds between samples (default %(default)s)")
    p_agent.add_argument("--metrics-file", help="Prometheus textfile output (default <state dir>/metrics.prom)")
    sub.add_parser("watch", help="the resident discovery watcher (kubespan-watch.service): one Watch stream per discovery "
                                 "service, peers applied as they change; the agent's tick then lists nothing itself")
    sub.add_parser("discovery-serve", help="run the discovery service (options: kubespan discovery-serve --help)", add_help=False)
    sub.add_parser("failclosed", help="at boot, before the network: add the rules, nftables marks and unreachable routes that keep "
                                      "mesh traffic off the underlay, from the desired state (no network access)")
    p_get = sub.add_parser("get", help="list KubeSpan resources, as talosctl get does")
    p_get.add_argument("resource", help="%s, or a talosctl name or alias (kubespanpeerstatuses, kubespanpeerspecs, "
                       "kubespanendpoints, kubespanidentities, affiliates, ...)" % ", ".join(RESOURCES))
    p_get.add_argument("-o", "--output", choices=["table", "json", "yaml", "records"], default="table",
                       help="table, yaml and json as talosctl; records: the flat JSON list of earlier releases")
    p_get.add_argument("-w", "--watch", action="store_true", help="keep printing changes (created, updated, destroyed)")
    p_get.add_argument("--watch-interval", type=float, default=1.0, help="seconds between two reads in --watch (default 1)")
    p_get.add_argument("--include-private-key", action="store_true",
                       help="identities: also print the private key (only ever on the node, only when asked)")
    args = parser.parse_args(argv)

    def log(line):
        out.write(line + "\n")
        out.flush()

    try:
        if args.command == "agent":
            if args.check:
                if load_state(args.state_dir) is None:
                    log("no desired state in %s" % args.state_dir)
                    return 0
                with state_lock(args.state_dir, timeout=args.lock_timeout):
                    res = reapply_from_state(args.state_dir, check_mode=True)
                for change in res.changes:
                    log("drift: %s" % change)
                return 0
            settings = StatusSettings(watch_seconds=args.watch_seconds, sample_interval=args.sample_interval)
            return run_tick(args.state_dir, log, lock_timeout=args.lock_timeout, status_settings=settings, metrics_file=args.metrics_file)
        if args.command == "watch":
            from .discovery_watch import main as watch_main
            return watch_main(args.state_dir, log)
        if args.command == "failclosed":  # other spellings than _failclosed's (same work, the agent imported)
            from .failclosed import restore
            restore(args.state_dir, log)
            return 0
        if args.command == "get":
            short = resolve(args.resource)
            if args.output == "records":
                if args.watch:
                    raise ListingError("--watch prints talosctl's layout: use -o table, yaml or json")
                recs, headers, row_of = list_resource(short, args.state_dir, args.include_private_key)
                _emit(recs, headers, row_of, args.output, out)
                return 0
            node = socket.gethostname()

            def poll():
                return get_documents(short, args.state_dir, args.include_private_key, node)

            if args.watch:
                def write(text):
                    out.write(text)
                    out.flush()
                try:
                    watch(short, poll, args.output, write, time.sleep, max(0.1, args.watch_interval))
                except KeyboardInterrupt:
                    return 0
                return 0
            out.write(render(short, poll(), args.output))
            return 0
        parser.print_help(out)
        return 2
    except LockBusy as exc:
        log("skipped: %s" % exc)
        return 0
    except (KubeSpanError, ValueError, OSError) as exc:  # the one place the CLI turns expected errors into a message
        sys.stderr.write("kubespan: %s\n" % exc)
        return 1
