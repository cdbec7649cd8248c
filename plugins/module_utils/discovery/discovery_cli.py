# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""``kubespan-discovery``: the self-hosted discovery service (docs/discovery.md).

    kubespan-discovery serve --listen [::]:3000 [--tls-cert cert.pem --tls-key key.pem] [--state-file path]

Logs to stderr (the journal under systemd): start, loaded state, every rejected request with the client's
address and the reason, garbage collection, state saves that fail. SIGTERM and SIGINT stop it cleanly and
save the state.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import List, Optional

from ..host.statefile import StateFileError
from .discovery_server import AFFILIATES_MAX, MEMORY_MAX, RATE_BURST, RATE_PER_SECOND, DiscoveryService, DiscoveryState, RateLimiter


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SystemExit("kubespan-discovery: cannot read the TLS %s %s: %s" % (what, path, exc.strerror or exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubespan-discovery", description="Talos-compatible KubeSpan discovery service")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the discovery service")
    serve.add_argument("--listen", default="[::]:3000", help="address:port to listen on (default [::]:3000)")
    serve.add_argument("--tls-cert", help="PEM certificate (chain) for TLS; without it the service speaks plaintext gRPC")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument("--state-file", help="keep the affiliates across restarts in this file (written atomically, mode 0600)")
    serve.add_argument("--save-interval", type=float, default=30.0, help="seconds between saves of a changed state (default 30)")
    serve.add_argument("--gc-interval", type=float, default=60.0, help="seconds between garbage collections (default 60, as Talos)")
    serve.add_argument("--rate", type=float, default=RATE_PER_SECOND,
                       help="requests per second per client /24 (IPv4) or /64 (IPv6) (default 15)")
    serve.add_argument("--burst", type=int, default=RATE_BURST, help="burst of requests per client /24 or /64 (default 60)")
    serve.add_argument("--max-workers", type=int, default=128, help="worker threads (default 128); each Watch holds one")
    serve.add_argument("--max-watchers-per-source", type=int, default=16,
                       help="Watch streams at once from one /24 or /64 (default 16)")
    serve.add_argument("--max-affiliates", type=int, default=AFFILIATES_MAX,
                       help="affiliates stored in all clusters together (default %d)" % AFFILIATES_MAX)
    serve.add_argument("--max-memory-mib", type=int, default=MEMORY_MAX >> 20,
                       help="estimated MiB of affiliates stored in all clusters together (default %d)" % (MEMORY_MAX >> 20))
    serve.add_argument("--redirect", default="", help="tell clients to use this endpoint instead (Hello redirect)")
    serve.add_argument("--no-client-ip", action="store_true", help="do not report the client's address in Hello")
    serve.add_argument("--stats-file", help="write the requests received per client address and method to this file "
                       "(JSON, mode 0600, at most once a second when they changed; for tests and capacity planning)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    from .discovery_grpc import HAS_GRPC, DiscoveryServer
    if not HAS_GRPC:
        sys.stderr.write("kubespan-discovery: the Python grpc package is required: install python3-grpcio (Debian/Ubuntu)\n")
        return 1
    cert = _read(args.tls_cert, "certificate") if args.tls_cert else None
    key = _read(args.tls_key, "key") if args.tls_key else None
    for name in ("max_watchers_per_source", "max_affiliates", "max_memory_mib"):
        if getattr(args, name) < 1:
            parser.error("--%s must be at least 1" % name.replace("_", "-"))
    state = DiscoveryState(affiliates_max=args.max_affiliates, memory_max=args.max_memory_mib << 20)
    service = DiscoveryService(state, RateLimiter(args.rate, args.burst), redirect=args.redirect,
                               report_client_ip=not args.no_client_ip)
    server = DiscoveryServer(service, listen=args.listen, tls_cert=cert, tls_key=key, max_workers=args.max_workers,
                             state_file=args.state_file, save_interval=args.save_interval, gc_interval=args.gc_interval,
                             max_watchers_per_source=args.max_watchers_per_source)
    stop = threading.Event()

    def _signal(signum, _frame):
        logging.getLogger("kubespan.discovery").info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        sys.stderr.write("kubespan-discovery: %s\n" % exc)
        return 1
    sys.stdout.write("listening on port %d\n" % server.port)
    sys.stdout.flush()
    while not stop.wait(1.0):
        if args.stats_file:
            try:
                service.requests.save(args.stats_file)
            except StateFileError as exc:
                logging.getLogger("kubespan.discovery").error("%s", exc)
    server.stop()
    return 0
