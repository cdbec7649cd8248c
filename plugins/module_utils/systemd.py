# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""systemd adapter: ``systemctl`` calls of the modules and the node agent, in one place."""

from __future__ import annotations

import subprocess

# A slow host (emulated CPUs, a loaded machine) can take tens of seconds for a daemon-reload; a hung
# systemctl still ends here instead of holding the run.
SYSTEMCTL_TIMEOUT = 60


def systemctl(*args) -> subprocess.CompletedProcess:
    """Run ``systemctl ARGS``; stdout and stderr together in ``.stdout``; never raises on a non-zero exit."""
    return subprocess.run(["systemctl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=SYSTEMCTL_TIMEOUT, check=False)
