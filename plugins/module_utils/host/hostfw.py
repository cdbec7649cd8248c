# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Host firewall adapters: which firewall manages the host, and the ufw / firewalld command lines.

The planning is pure (firewall.py); this module only runs ``ufw`` and ``firewall-cmd`` and reads their
answers. nftables needs no adapter here (nft.py). Detection is cheap (no firewall-cmd call): firewalld
counts when its unit is active, ufw when its configuration says ENABLED=yes and the binary exists.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import List, Tuple

from ..base.errors import KubeSpanError
from ..core.firewall import BACKENDS

UFW_CONF = "/etc/ufw/ufw.conf"


class FirewallError(KubeSpanError):
    """A host firewall command failed; the message names the command and its output."""


def _run(argv: List[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError("%s failed: %s" % (" ".join(argv), exc))


def firewalld_running() -> bool:
    if not shutil.which("firewall-cmd") or not shutil.which("systemctl"):
        return False
    return _run(["systemctl", "is-active", "--quiet", "firewalld.service"], timeout=15).returncode == 0


def ufw_active(conf: str = UFW_CONF) -> bool:
    if not shutil.which("ufw"):
        return False
    try:
        with open(conf) as fh:
            for line in fh:
                key, _sep, value = line.strip().partition("=")
                if key.strip() == "ENABLED":
                    return value.strip().strip("'\"").lower() == "yes"
    except OSError:
        return False
    return False


def detect_backend(setting: str, nft_present: bool) -> str:
    """The firewall backend to use: the setting, or for ``auto`` the one that manages this host."""
    if setting not in BACKENDS:
        raise FirewallError("kubespan_firewall_backend %r is unknown: use one of %s" % (setting, ", ".join(BACKENDS)))
    if setting != "auto":
        return setting
    if firewalld_running():
        return "firewalld"
    if ufw_active():
        return "ufw"
    return "nftables" if nft_present else "none"


# ----------------------------------------------------------------------------------------------- ufw

def ufw_added() -> str:
    res = _run(["ufw", "show", "added"])
    if res.returncode != 0:
        raise FirewallError("ufw show added failed (rc %d): %s" % (res.returncode, (res.stderr or res.stdout).strip()))
    return res.stdout


def ufw_apply(commands: List[List[str]]) -> None:
    for args in commands:
        res = _run(["ufw"] + args)
        if res.returncode != 0:
            raise FirewallError("ufw %s failed (rc %d): %s" % (" ".join(args), res.returncode, (res.stderr or res.stdout).strip()))


# ----------------------------------------------------------------------------------------------- firewalld

def _fwcmd(args: List[str]) -> subprocess.CompletedProcess:
    return _run(["firewall-cmd"] + args)


def firewalld_default_zone() -> str:
    res = _fwcmd(["--get-default-zone"])
    if res.returncode != 0 or not res.stdout.strip():
        raise FirewallError("firewall-cmd --get-default-zone failed (rc %d): %s" % (res.returncode, (res.stderr or res.stdout).strip()))
    return res.stdout.strip()


def firewalld_state(zone: str, port: int, ifname: str) -> dict:
    """{"port": (runtime, permanent), "interface_zone": (runtime, permanent)} for plan_firewalld."""
    spec = "%d/udp" % port
    port_present: List[bool] = []
    zones: List[str] = []
    for perm in ([], ["--permanent"]):
        port_present.append(_fwcmd(perm + ["--zone=%s" % zone, "--query-port=%s" % spec]).returncode == 0)
        res = _fwcmd(perm + ["--get-zone-of-interface=%s" % ifname])
        zones.append(res.stdout.strip() if res.returncode == 0 else "")
    return {"port": tuple(port_present), "interface_zone": tuple(zones)}


def firewalld_apply(commands: List[List[str]]) -> Tuple[int, int]:
    done = 0
    for args in commands:
        res = _fwcmd(args)
        # Removing what is already gone is not an error (firewalld says NOT_ENABLED / UNKNOWN_INTERFACE).
        if res.returncode != 0 and "NOT_ENABLED" not in res.stderr + res.stdout and "UNKNOWN_INTERFACE" not in res.stderr + res.stdout:
            raise FirewallError("firewall-cmd %s failed (rc %d): %s" % (" ".join(args), res.returncode, (res.stderr or res.stdout).strip()))
        done += 1
    return done, len(commands)
