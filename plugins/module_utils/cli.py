# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The ``kubespan`` command on the node: the agent tick and talosctl-like listings.

Installed by the role as /usr/local/sbin/kubespan with this package at /usr/lib/kubespan/kubespan_mesh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .engine import DEFAULT_STATE_DIR, ReconcileError, Settings, load_state, open_device, reapply_from_state, resolve_implementation
from .identity import load_identity
from .netlink import NetlinkError
from .statefile import LockBusy, StateFileError, state_lock
from .wgtypes import WireGuardError


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
    if output == "json":
        out.write(json.dumps(records, indent=2, sort_keys=True) + "\n")
    elif output == "yaml":
        for rec in records:
            out.write("---\n")
            for key in sorted(rec):
                out.write("%s: %s\n" % (key, json.dumps(rec[key])))
    else:
        out.write(_table(headers, [row_of(r) for r in records]) + "\n")


def peer_statuses(state_dir: str, now: float = None):
    """Peer status records from the live device and the persisted peer specs."""
    state = load_state(state_dir)
    if state is None:
        raise ReconcileError("no desired state in %s yet: run the kubespan.mesh playbook first" % state_dir)
    settings = Settings(**{k: v for k, v in state["settings"].items() if k in Settings.__dataclass_fields__})
    impl = resolve_implementation(settings.implementation)
    dev = open_device(impl, settings.interface)
    try:
        device = dev.read()
    finally:
        dev.close()
    now = time.time() if now is None else now
    labels = {p["public_key"]: p["name"] for p in state.get("peers", [])}
    records = []
    for key in sorted(device.peers):
        peer = device.peers[key]
        hs = peer.last_handshake
        records.append({
            "id": key,
            "label": labels.get(key, ""),
            "endpoint": peer.endpoint or "",
            "state": "up" if hs and now - hs < 275 else ("down" if peer.endpoint else "unknown"),
            "receiveBytes": peer.rx_bytes,
            "transmitBytes": peer.tx_bytes,
            "lastHandshakeTime": hs,
            "secondsSinceHandshake": round(now - hs, 1) if hs else None,
        })
    return records


def main(argv=None, state_dir: str = DEFAULT_STATE_DIR, out=None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="kubespan", description="KubeSpan node agent and listings")
    parser.add_argument("--state-dir", default=state_dir)
    sub = parser.add_subparsers(dest="command")
    p_agent = sub.add_parser("agent", help="one agent tick: re-apply the persisted desired state")
    p_agent.add_argument("--check", action="store_true", help="report drift without repairing it")
    p_agent.add_argument("--lock-timeout", type=float, default=20.0, help="seconds to wait for a running playbook (default 20)")
    p_get = sub.add_parser("get", help="list KubeSpan resources")
    p_get.add_argument("resource", choices=["peerstatuses", "peerspecs", "identities"])
    p_get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    args = parser.parse_args(argv)
    try:
        if args.command == "agent":
            if load_state(args.state_dir) is None:
                out.write("no desired state in %s: nothing to do until the playbook has run\n" % args.state_dir)
                return 0
            try:
                with state_lock(args.state_dir, timeout=args.lock_timeout):
                    res = reapply_from_state(args.state_dir, check_mode=args.check)
            except LockBusy as exc:
                out.write("skipped this tick: %s\n" % exc)
                return 0
            for change in res.changes:
                out.write("%s: %s\n" % ("drift" if args.check else "repaired", change))
            return 0
        if args.command == "get":
            if args.resource == "peerstatuses":
                recs = peer_statuses(args.state_dir)
                _emit(recs, ["ID", "LABEL", "ENDPOINT", "STATE", "RX", "TX"],
                      lambda r: [r["id"], r["label"], r["endpoint"], r["state"], r["receiveBytes"], r["transmitBytes"]], args.output, out)
            elif args.resource == "peerspecs":
                state = load_state(args.state_dir) or {}
                recs = [{"id": p["public_key"], "label": p["name"], "address": p["address"], "endpoints": p["endpoints"],
                         "allowedIPs": p["allowed_ips"]} for p in sorted(state.get("peers", []), key=lambda p: p["public_key"])]
                _emit(recs, ["ID", "LABEL", "ENDPOINTS"], lambda r: [r["id"], r["label"], json.dumps(r["endpoints"])], args.output, out)
            else:
                ident = load_identity(args.state_dir)
                recs = [] if ident is None else [{"id": "local", "address": ident.address, "subnet": ident.subnet,
                                                  "publicKey": ident.public_key, "nodeId": ident.node_id}]
                _emit(recs, ["ID", "ADDRESS", "SUBNET", "PUBLICKEY"],
                      lambda r: [r["id"], r["address"], r["subnet"], r["publicKey"]], args.output, out)
            return 0
        parser.print_help(out)
        return 2
    except (ReconcileError, StateFileError, WireGuardError, NetlinkError, ValueError, OSError) as exc:
        sys.stderr.write("kubespan: %s\n" % exc)
        return 1
