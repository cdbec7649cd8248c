# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Every file KubeSpan keeps in the node's state directory (``kubespan_state_dir``, /var/lib/kubespan), named once.

Every other file of module_utils takes the names (and the paths) from here; tests/unit/plugins/module_utils/
test_layout.py fails when a file name is written anywhere else in plugins/. Who writes and who reads each file:

======================  ==============================================================================
state.json              the desired state: the playbook run (mesh module) writes it, the agent re-applies it
peerstatus.json         the agent's peer statuses (its memory between ticks); read by runs for the routed set
metrics.prom            the agent's metrics (default place; node_exporter's textfile directory when set)
discovery.json          the discovery client's memory (affiliates last discovered, published, harvested)
announce.json           the inputs of the announced endpoints (ensure_identity), read by the agent's discovery
relay.json              the sysctl values a relay changed, restored when it stops being one
rpfilter.json           the rp_filter values changed for the link, restored when KubeSpan is disabled
firewall.json           what the run added to firewalld (removed when KubeSpan is disabled)
watch.json              the resident discovery watcher's entries and heartbeat (kubespan-watch.service)
.lock                   the node lock (flock) every run and tick holds while it changes the node
kubespan-identity.yaml  the WireGuard key pair, address and subnet (Talos's KubeSpanIdentity)
node-identity.yaml      the node ID (Talos's NodeIdentity)
.identity-creating      present only while a new identity's two files are written
======================  ==============================================================================
"""

from __future__ import annotations

import os
from typing import Dict

STATE = "state.json"
STATUSES = "peerstatus.json"
METRICS = "metrics.prom"
DISCOVERY = "discovery.json"
ANNOUNCE = "announce.json"
RELAY = "relay.json"
RPFILTER = "rpfilter.json"
FIREWALL = "firewall.json"
WATCH = "watch.json"
LOCK = ".lock"
KUBESPAN_IDENTITY = "kubespan-identity.yaml"
NODE_IDENTITY = "node-identity.yaml"
IDENTITY_CREATING = ".identity-creating"

# what a disabled node no longer needs (teardown removes them; the desired state and the identity stay)
RUNTIME_FILES = (STATUSES, METRICS, DISCOVERY, RELAY)


def path(state_dir: str, name: str) -> str:
    """The path of the state file ``name`` (one of the names above) in ``state_dir``."""
    return os.path.join(state_dir, name)


def _mtime(file_path: str) -> float:
    try:
        return os.stat(file_path).st_mtime
    except OSError:
        return 0.0


def file_times(state_dir: str) -> Dict[str, float]:
    """Modification times of the files the listings' records are read from (0 when missing), by listing.py's keys."""
    return {key: _mtime(path(state_dir, name)) for key, name in (
        ("state", STATE), ("status", STATUSES), ("identity", KUBESPAN_IDENTITY), ("discovered", DISCOVERY))}
