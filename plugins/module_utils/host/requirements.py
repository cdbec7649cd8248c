# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""What a node needs installed, probed without importing anything or calling a package manager.

The identity module runs this first, so a routine playbook run learns in the call it makes anyway that
nothing is missing, and the role gathers facts and calls the package manager only when something is
(docs/benchmarks.md: the re-run is two remote calls per host). Groups match the role's package lists:
``base`` (kubespan_packages_base), ``userspace`` (kubespan_packages_userspace), ``discovery``
(kubespan_packages_discovery).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Callable, Dict, List, Sequence, Tuple

from ..core.settings import ADDRESS_SOURCE, ADDRESS_SOURCES

GROUPS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    # (kind, name): a Python module importable by the node's Python, or a command on the PATH (sbin included)
    "base": (("python", "nacl"), ("python", "pyroute2"), ("command", "nft"), ("command", "ip"), ("command", "wg")),
    "userspace": (("command", "wireguard-go"),),
    "discovery": (("python", "grpc"), ("python", "cryptography")),
}
SEARCH_PATH = os.pathsep.join(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _has_python(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_command(name: str) -> bool:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SEARCH_PATH) is not None


def missing(groups: Sequence[str], has_python: Callable[[str], bool] = _has_python,
            has_command: Callable[[str], bool] = _has_command) -> Dict[str, List[str]]:
    """{group: ["python module nacl", "command nft", ...]} for every requested group with something missing."""
    out: Dict[str, List[str]] = {}
    for group in groups:
        if group not in GROUPS:
            raise ValueError("requirement group %r: use one of %s" % (group, ", ".join(sorted(GROUPS))))
        gaps = ["%s %s" % ("python module" if kind == "python" else "command", name)
                for kind, name in GROUPS[group] if not (has_python(name) if kind == "python" else has_command(name))]
        if gaps:
            out[group] = gaps
    return out


def identity_option_spec() -> Dict[str, dict]:
    """The argument spec of the identity options, shared by the identity module and the mesh module's ``identity``
    (a new dict each call: AnsibleModule may change what it is given)."""
    def strings():
        return dict(type="list", elements="str", default=[])
    return dict(
        address_source=dict(type="str", choices=list(ADDRESS_SOURCES), default=ADDRESS_SOURCE),
        endpoint_filters=dict(type="list", elements="str"),  # None (unset): no filtering; []: announce no address
        extra_endpoints=strings(),
        advertised_networks=strings(),
        exclude_advertised_networks=strings(),
        kubernetes_networks=strings(),
        requirements=dict(type="list", elements="str", choices=list(GROUPS), default=[]),
    )
