# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""systemd adapter: ``systemctl`` calls of the modules and the node agent, in one place."""

from __future__ import annotations

import subprocess

# systemctl (daemon-reload, enable, start) waits for systemd, which on a loaded or slow machine took over 60 s
# (tests/vm: two emulated guests under load); the limit only ends a hung call.
SYSTEMCTL_TIMEOUT = 300
WIREGUARD_GO_UNIT = "kubespan-wireguard-go.service"  # wireguard-go for the mesh interface (agentfiles renders it)


def systemctl(*args) -> subprocess.CompletedProcess:
    """Run ``systemctl ARGS``; stdout and stderr together in ``.stdout``; never raises on a non-zero exit."""
    return subprocess.run(["systemctl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
