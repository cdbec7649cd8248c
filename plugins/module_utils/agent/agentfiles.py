# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""The node agent's files on a node: its code, the ``kubespan`` command and the three systemd units.

Rendering is pure (``render_files``); ``install`` compares each file with what is on disk and writes only
the ones that differ (atomically), reloads systemd only when a unit changed, and ``enable_units`` brings
the units' enablement and the timer to the wanted state with one ``systemctl show`` when nothing needs to
change. The mesh module calls both, so a playbook run installs the agent in the same remote call that
reconciles the mesh (docs/benchmarks.md: one remote call instead of eight).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

from ..base.errors import KubeSpanError
from ..core.dataplane import IFNAME, IFNAME_RULE
from ..core.settings import AGENT_INTERVAL, COMMAND_PATH, LIB_DIR, LINK_NAME, MAX_AGENT_INTERVAL, METRICS_FILE, STATE_DIR
from ..core.settingscheck import UNIT_PATH_RULE, unit_path_problem
from ..host import layout
from ..host.statefile import StateFileError, atomic_write
from ..host.systemd import systemctl
from ..reconcile.engine import WIREGUARD_GO_UNIT

AGENT_SERVICE = "kubespan-agent.service"
AGENT_TIMER = "kubespan-agent.timer"
FAILCLOSED_SERVICE = "kubespan-failclosed.service"
WATCH_SERVICE = "kubespan-watch.service"  # the resident discovery watcher (discovery_watch.py), only with discovery on
WATCH_MEMORY_MAX = "256M"
WATCH_TASKS_MAX = 32
# Resource bounds of the units (generous: they stop a runaway process, not normal work). An agent tick needs
# about 40 MB and well under a minute (its peer watch is about 20 s); TimeoutStartSec ends a hung one, so the
# timer's next tick can start.
AGENT_MEMORY_MAX = "512M"
AGENT_TASKS_MAX = 64
AGENT_TIMEOUT_START = "5min"
WIREGUARD_GO_MEMORY_MAX = "1G"
WIREGUARD_GO_TASKS_MAX = 1024
FAILCLOSED_MEMORY_MAX = "256M"
FAILCLOSED_TASKS_MAX = 16
# The fail-closed unit's limit is long on purpose: it is ordered before the network, so a slow start only delays
# the network, while a killed one lets the boot go on WITHOUT the fail-closed pieces (cleartext to the peers until
# the agent's first tick). It once hit 60 s on an emulated CPU under load (tests/vm, 14 s of CPU with pyroute2 and
# the agent imported; now a fraction of that). 10 minutes still ends a hung process (it waits on nothing: netlink
# and one nft) so that it cannot hold the boot forever.
FAILCLOSED_TIMEOUT_START = "10min"
HEADER = "# Managed by the kubespan.mesh Ansible collection: local changes are overwritten by the next run."


class AgentFilesError(KubeSpanError, ValueError):
    """A bad agent option; the message names the value and the fix."""


@dataclass
class AgentOptions:
    bundle: bytes
    lib_dir: str = LIB_DIR
    state_dir: str = STATE_DIR
    interface: str = LINK_NAME
    interval: int = AGENT_INTERVAL
    metrics_file: str = METRICS_FILE
    discovery_endpoint: Optional[str] = None  # set when the discovery client is on: the unit must allow IP traffic
    command_path: str = COMMAND_PATH
    unit_dir: str = "/etc/systemd/system"

    def validate(self) -> None:
        for label, value in (("lib_dir", self.lib_dir), ("state_dir", self.state_dir), ("metrics_file", self.metrics_file),
                             ("command_path", self.command_path), ("unit_dir", self.unit_dir)):
            if unit_path_problem(value):
                raise AgentFilesError("agent %s %r: %s" % (label, value, UNIT_PATH_RULE))
        if not isinstance(self.interval, int) or isinstance(self.interval, bool) or not 1 <= self.interval <= MAX_AGENT_INTERVAL:
            raise AgentFilesError("agent interval %r: must be a whole number of seconds from 1 to %d" % (self.interval, MAX_AGENT_INTERVAL))
        if not isinstance(self.interface, str) or not IFNAME.match(self.interface):
            raise AgentFilesError("interface %r: %s" % (self.interface, IFNAME_RULE))
        if not self.bundle.startswith(b"PK"):
            raise AgentFilesError("agent bundle: not a zip archive (pass lookup('kubespan.mesh.agent_bundle'))")


def decode_bundle(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AgentFilesError("agent bundle: not base64 (pass lookup('kubespan.mesh.agent_bundle'))")


# The sandbox of the agent's Python processes (the agent's tick and the early fail-closed unit): no devices, no
# kernel tunables, modules or logs, no namespaces, native system calls of ordinary services only.
SANDBOX = ["ProtectHome=yes", "PrivateTmp=yes", "PrivateMounts=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
           "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
           "ProtectHostname=yes", "ProtectProc=invisible", "ProcSubset=pid", "RestrictNamespaces=yes",
           "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
           "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
           "SystemCallFilter=~@privileged @resources", "SystemCallErrorNumber=EPERM"]


def _agent_service(o: AgentOptions) -> str:
    metrics_dir = os.path.dirname(o.metrics_file)
    lines = [HEADER, "[Unit]",
             "Description=KubeSpan node agent: re-applies the mesh's desired state, tracks peers",
             "After=network.target %s" % WIREGUARD_GO_UNIT, "", "[Service]", "Type=oneshot"]
    if metrics_dir != o.state_dir:
        lines += ["# The metrics directory (e.g. node_exporter's textfile directory) may not exist yet: create it before",
                  "# the sandbox below is set up (\"+\": this one command runs without it).",
                  "ExecStartPre=+/bin/mkdir -p -m 0755 %s" % metrics_dir]
    lines += ["ExecStart=%s agent --metrics-file %s" % (o.command_path, o.metrics_file),
              "TimeoutStartSec=%s" % AGENT_TIMEOUT_START, "MemoryMax=%s" % AGENT_MEMORY_MAX,
              "TasksMax=%d" % AGENT_TASKS_MAX, "",
              "# Least privilege (docs/security.md#least-privilege has the `systemd-analyze security` score). It runs as root",
              "# and needs: CAP_NET_ADMIN (netlink: links, addresses, routes, rules, WireGuard; nftables), netlink and",
              "# unix sockets (nft, wireguard-go's UAPI socket in /run/wireguard, systemd's private socket for",
              "# `systemctl restart %s`), UDP sockets (a bind test of the listen port), and" % WIREGUARD_GO_UNIT,
              "# write access to its state directory and the metrics file's directory only.",
              "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=",
              "ProtectSystem=strict", "ReadWritePaths=%s" % o.state_dir]
    if metrics_dir != o.state_dir:
        lines.append("ReadWritePaths=%s" % metrics_dir)
    lines += SANDBOX + ["RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6"]
    if o.discovery_endpoint is not None:
        lines.append("# No IPAddressDeny: the discovery client talks gRPC to %s." % o.discovery_endpoint.replace("\n", " "))
    else:
        lines.append("IPAddressDeny=any")
    lines.append("UMask=0077")
    return "\n".join(lines) + "\n"


def _agent_timer(o: AgentOptions) -> str:
    return "\n".join([HEADER, "[Unit]", "Description=Run the KubeSpan node agent at boot and every %d s" % o.interval, "",
                      "[Timer]", "OnBootSec=3", "OnUnitActiveSec=%d" % o.interval, "AccuracySec=1", "",
                      "[Install]", "WantedBy=timers.target"]) + "\n"


def _wireguard_go(o: AgentOptions) -> str:
    return "\n".join([
        HEADER, "[Unit]", "Description=KubeSpan userspace WireGuard (wireguard-go) on %s" % o.interface,
        "Before=%s" % AGENT_SERVICE, "", "[Service]", "Type=simple",
        "# Foreground under systemd: wireguard-go's self-daemonizing mode is not used.",
        "Environment=LOG_LEVEL=error", "ExecStart=/usr/bin/wireguard-go -f %s" % o.interface,
        "Restart=on-failure", "RestartSec=2", "TimeoutStartSec=30", "TimeoutStopSec=15",
        "# Bounds: a Go runtime with a few threads per CPU; buffers grow with the traffic.",
        "MemoryMax=%s" % WIREGUARD_GO_MEMORY_MAX, "TasksMax=%d" % WIREGUARD_GO_TASKS_MAX, "",
        "# Least privilege (docs/security.md#least-privilege has the `systemd-analyze security` score). It runs as",
        "# root (the agent, root without CAP_DAC_OVERRIDE, must open the UAPI socket, which wireguard-go makes 0700)",
        "# and needs: CAP_NET_ADMIN (TUNSETIFF, the interface's MTU, SO_MARK), /dev/net/tun, UDP sockets, netlink",
        "# (route changes) and unix sockets (its UAPI socket /run/wireguard/%s.sock, the only place it writes)." % o.interface,
        "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=",
        "DevicePolicy=closed", "DeviceAllow=/dev/net/tun rw",
        "ProtectSystem=strict", "RuntimeDirectory=wireguard", "RuntimeDirectoryPreserve=yes",
        "ProtectHome=yes", "PrivateTmp=yes", "PrivateMounts=yes", "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes",
        "ProtectHostname=yes", "ProtectProc=invisible", "ProcSubset=pid",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6", "RestrictNamespaces=yes",
        "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources", "SystemCallErrorNumber=EPERM", "UMask=0077",
        "", "[Install]", "WantedBy=multi-user.target"]) + "\n"


FAILCLOSED_TAIL = ["RestrictAddressFamilies=AF_UNIX AF_NETLINK", "IPAddressDeny=any", "UMask=0077", "", "[Install]",
                   "WantedBy=sysinit.target"]


def _failclosed_service(o: AgentOptions) -> str:
    """The early boot unit (docs/dataplane.md, fail closed): before any network is configured, the rules, the
    nftables marks and the unreachable routes come back from the desired state, so that nothing to a peer
    leaves in cleartext between boot and the agent's first tick. No state or a disabled one: it succeeds."""
    return "\n".join([HEADER, "[Unit]",
                      "Description=KubeSpan fail closed: refuse mesh traffic until the agent has the link up",
                      "DefaultDependencies=no", "After=local-fs.target systemd-modules-load.service",
                      "Wants=network-pre.target",
                      "# before sysinit.target: every ordinary service (DefaultDependencies=yes) starts after it",
                      "Before=network-pre.target sysinit.target shutdown.target %s" % AGENT_SERVICE,
                      "Conflicts=shutdown.target", "", "[Service]", "Type=oneshot", "RemainAfterExit=yes",
                      "ExecStart=%s failclosed" % o.command_path,
                      "# Bounds: one short Python process. A killed start means a boot without the fail-closed",
                      "# routes (a leak), a slow one only a later network: the limit is far above a slow machine's",
                      "# start and still ends a hung process (docs/dataplane.md, fail closed).",
                      "TimeoutStartSec=%s" % FAILCLOSED_TIMEOUT_START, "MemoryMax=%s" % FAILCLOSED_MEMORY_MAX,
                      "TasksMax=%d" % FAILCLOSED_TASKS_MAX,
                      "# Reads the state directory, talks netlink (and nft over netlink); needs nothing else.",
                      "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=",
                      "ProtectSystem=strict"] + SANDBOX + FAILCLOSED_TAIL) + "\n"


NETWORKD_DROPIN = "networkd.conf.d/kubespan.conf"  # beside the unit directory: /etc/systemd/networkd.conf.d


def networkd_dropin_path(o: AgentOptions) -> str:
    return os.path.dirname(o.unit_dir.rstrip("/")) + "/" + NETWORKD_DROPIN


def _networkd_dropin() -> str:
    """systemd-networkd removes, when it starts, every policy rule and route it did not make itself (its defaults
    ManageForeignRoutingPolicyRules=yes, ManageForeignRoutes=yes): the KubeSpan rules, table 180 and the fail-closed
    unreachable routes, so a boot (or a restart of networkd) would send mesh traffic in the clear until the agent's
    next tick (found by tests/vm). Harmless where networkd is not used; removed when KubeSpan is disabled."""
    return "\n".join([HEADER, "# Keep the KubeSpan policy rules and routes (docs/dataplane.md, fail closed).", "[Network]",
                      "ManageForeignRoutingPolicyRules=no", "ManageForeignRoutes=no"]) + "\n"


def _watch_service(o: AgentOptions) -> str:
    """The resident discovery watcher (docs/discovery.md, "Requests per node per minute"): one Hello and one Watch
    stream per discovery service and connection, peers applied as they change; the sandbox of the agent's tick (it
    applies through the same code), and a restart after a crash (its own reconnections back off with jitter)."""
    return "\n".join([HEADER, "[Unit]",
                      "Description=KubeSpan discovery watcher: one Watch stream per discovery service, peers applied as they change",
                      "After=network.target %s %s" % (WIREGUARD_GO_UNIT, FAILCLOSED_SERVICE), "StartLimitIntervalSec=0", "",
                      "[Service]", "Type=simple", "ExecStart=%s watch" % o.command_path,
                      "Restart=always", "RestartSec=10", "TimeoutStartSec=30", "TimeoutStopSec=15",
                      "# Bounds: one Python process with a gRPC channel per service (docs/discovery.md has its RSS).",
                      "MemoryMax=%s" % WATCH_MEMORY_MAX, "TasksMax=%d" % WATCH_TASKS_MAX, "",
                      "# Least privilege: as the agent's tick (it merges and applies through the same code): CAP_NET_ADMIN,",
                      "# netlink, unix and IP sockets (gRPC to %s), its state directory only." % (o.discovery_endpoint or "").replace("\n", " "),
                      "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=",
                      "ProtectSystem=strict", "ReadWritePaths=%s" % o.state_dir] + SANDBOX
                     + ["RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6", "UMask=0077", "",
                        "[Install]", "WantedBy=multi-user.target"]) + "\n"


def _command(o: AgentOptions) -> str:
    return "\n".join([
        "#!/usr/bin/python3", HEADER,
        "# The kubespan command: node agent and talosctl-like listings. Its code is the collection's",
        "# plugins/module_utils, bundled in %s/kubespan-agent.pyz." % o.lib_dir,
        "import sys", "",
        "sys.path.insert(0, %r)" % (o.lib_dir + "/kubespan-agent.pyz"),
        "from kubespan_mesh.agent.cli import main  # noqa: E402", "",
        "sys.exit(main(sys.argv[1:], state_dir=%r))" % o.state_dir]) + "\n"


def render_files(o: AgentOptions) -> List[Tuple[str, bytes, int]]:
    """Every file of the agent as (path, content, mode), in the order they are installed."""
    if not o.metrics_file:
        o = replace(o, metrics_file=o.state_dir.rstrip("/") + "/" + layout.METRICS)  # state dir "/": "/metrics.prom"
    o.validate()
    unit = o.unit_dir + "/"
    return [
        (o.lib_dir + "/kubespan-agent.pyz", o.bundle, 0o644),
        (o.command_path, _command(o).encode(), 0o755),
        (unit + WIREGUARD_GO_UNIT, _wireguard_go(o).encode(), 0o644),
        (unit + AGENT_SERVICE, _agent_service(o).encode(), 0o644),
        (unit + AGENT_TIMER, _agent_timer(o).encode(), 0o644),
        (unit + FAILCLOSED_SERVICE, _failclosed_service(o).encode(), 0o644),
        (networkd_dropin_path(o), _networkd_dropin().encode(), 0o644),
    ] + ([(unit + WATCH_SERVICE, _watch_service(o).encode(), 0o644)] if o.discovery_endpoint is not None else [])


def _current(path: str) -> Tuple[Optional[bytes], Optional[int]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return data, os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise StateFileError("cannot read %s: %s" % (path, exc.strerror or exc))


def _diff_text(path: str, data: Optional[bytes]) -> str:
    if data is None:
        return ""
    if path.endswith(".pyz"):
        return "zipapp, sha256 %s, %d bytes\n" % (hashlib.sha256(data).hexdigest(), len(data))
    return data.decode("utf-8", "replace")


@dataclass
class InstallResult:
    changes: List[str]
    diffs: List[Dict[str, str]]
    units_changed: bool


def install(o: AgentOptions, check_mode: bool, run: Callable = None) -> InstallResult:
    """Write the files that differ from ``render_files`` (content or mode); ``daemon-reload`` if a unit changed."""
    run = run or systemctl
    changes: List[str] = []
    diffs: List[Dict[str, str]] = []
    units_changed = False
    for path, data, mode in render_files(o):
        old, old_mode = _current(path)
        if old == data and old_mode == mode:
            continue
        changes.append("%s %s" % ("update" if old is not None else "install", path)
                       + (" (mode %04o)" % mode if old == data else ""))
        diffs.append(dict(before_header=path, after_header=path, before=_diff_text(path, old), after=_diff_text(path, data)))
        if path.startswith(o.unit_dir + "/"):
            units_changed = True
        if not check_mode:
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                try:
                    os.makedirs(directory, 0o755)
                except OSError as exc:
                    raise StateFileError("cannot create %s: %s" % (directory, exc.strerror or exc))
            atomic_write(path, data, mode)
    watch_unit = o.unit_dir + "/" + WATCH_SERVICE
    if o.discovery_endpoint is None and os.path.lexists(watch_unit):
        # discovery off: the resident watcher goes (stopped and disabled first, while systemd still has its file)
        old, _mode = _current(watch_unit)
        changes.append("remove %s" % watch_unit)
        diffs.append(dict(before_header=watch_unit, after_header=watch_unit, before=_diff_text(watch_unit, old), after=""))
        units_changed = True
        if not check_mode:
            _check(run("disable", "--now", WATCH_SERVICE), "systemctl disable --now %s" % WATCH_SERVICE)
            try:
                os.unlink(watch_unit)
            except OSError as exc:
                raise StateFileError("cannot remove %s: %s" % (watch_unit, exc.strerror or exc))
    if units_changed and not check_mode:
        _check(run("daemon-reload"), "systemctl daemon-reload")
    return InstallResult(changes, diffs, units_changed)


def _check(res, what: str) -> None:
    if res.returncode != 0:
        raise RuntimeError("%s failed: %s" % (what, (res.stdout or "").strip()[-500:]))


def parse_show(text: str) -> Dict[str, Dict[str, str]]:
    """``systemctl show -p Id -p ...`` of several units: {Id: {property: value}} (blocks split by empty lines)."""
    units: Dict[str, Dict[str, str]] = {}
    for block in text.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def plan_units(states: Dict[str, Dict[str, str]], userspace: bool, watcher: bool = False,
               restart_watcher: bool = False) -> List[Tuple[str, ...]]:
    """The systemctl calls that bring the units to the wanted state: wireguard-go enabled at boot exactly when the
    userspace data path is in use, the agent timer enabled and running; with ``watcher`` (discovery on) the resident
    watcher enabled and running, restarted when ``restart_watcher`` (its code or unit changed). Discovery off:
    install() removed the watcher."""
    calls: List[Tuple[str, ...]] = []
    wg = states.get(WIREGUARD_GO_UNIT, {}).get("UnitFileState", "")
    if userspace and wg != "enabled":
        calls.append(("enable", WIREGUARD_GO_UNIT))
    elif not userspace and wg == "enabled":
        calls.append(("disable", WIREGUARD_GO_UNIT))
    if states.get(FAILCLOSED_SERVICE, {}).get("UnitFileState", "") != "enabled":
        calls.append(("enable", FAILCLOSED_SERVICE))  # runs at the next boot (the playbook run applies everything now)
    timer = states.get(AGENT_TIMER, {})
    if timer.get("UnitFileState", "") != "enabled" or timer.get("ActiveState", "") != "active":
        calls.append(("enable", "--now", AGENT_TIMER))
    if watcher:
        watch = states.get(WATCH_SERVICE, {})
        if watch.get("UnitFileState", "") != "enabled" or watch.get("ActiveState", "") != "active":
            calls.append(("enable", "--now", WATCH_SERVICE))
        elif restart_watcher:
            calls.append(("restart", WATCH_SERVICE))
    return calls


def enable_units(userspace: bool, check_mode: bool, run: Callable = None, watcher: bool = False,
                 restart_watcher: bool = False) -> List[str]:
    """Bring the units' enablement and the timer to the wanted state; returns the changes made (or to make)."""
    run = run or systemctl
    res = run("show", "-p", "Id", "-p", "UnitFileState", "-p", "ActiveState", WIREGUARD_GO_UNIT, AGENT_TIMER,
              FAILCLOSED_SERVICE, *([WATCH_SERVICE] if watcher else []))
    _check(res, "systemctl show")
    calls = plan_units(parse_show(res.stdout), userspace, watcher, restart_watcher)
    changes = []
    for call in calls:
        changes.append("systemctl " + " ".join(call))
        if not check_mode:
            _check(run(*call), "systemctl " + " ".join(call))
    return changes
