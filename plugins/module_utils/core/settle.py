# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""One remote call per host when nothing changed: is the controller's cached view of the cluster current?

The affiliates exchange normally takes two calls per host: every node reports its identity, then every node
is given every other node's. The role keeps the affiliates of its last run on the controller and first
calls the mesh module with them. Each node checks (1) that its own fresh affiliate is the cached one and
(2) that the peer set built from the cache is exactly the one it already has (state.json), with the same
members. A node that finds both reconciles as usual (settings, drift) and reports ``settled``; otherwise it
applies nothing from the cache. When every host of the play is settled, each one's cached entry was
verified by its owner in this run and every node already had the result, so the second call is skipped.
Nothing from the cache is ever applied unverified: a host that fails or is outside the play only makes the
others keep what they had.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

AFFILIATE_KEYS = ("name", "node_id", "public_key", "address", "endpoints", "addresses", "additional_addresses",
                  "exclude_advertised_networks")
_LIST_KEYS = ("endpoints", "addresses", "additional_addresses", "exclude_advertised_networks")


def affiliate_of(name: str, facts: Dict) -> Dict:
    """This node's affiliate, as the other nodes get it, from the identity facts (ensure_identity)."""
    out = {"name": name}
    for key in AFFILIATE_KEYS[1:]:
        out[key] = list(facts.get(key) or []) if key in _LIST_KEYS else facts.get(key)
    return out


def _normal(entry: Dict) -> Dict:
    return {k: (list(entry.get(k) or []) if k in _LIST_KEYS else entry.get(k)) for k in AFFILIATE_KEYS}


def _specs(peers: Sequence[Dict]) -> List[Dict]:
    return sorted(({k: v for k, v in p.items() if k != "version"} for p in peers), key=lambda p: str(p.get("public_key")))


def check(cached: Sequence[Dict], own: Dict, desired_peers: Sequence[Dict], state: Optional[Dict],
          members: Optional[Sequence[str]]) -> Tuple[bool, str]:
    """(settled, why not). ``desired_peers``: the peer specs built from ``cached`` (engine.compute_peers)."""
    mine = [a for a in cached if a.get("name") == own.get("name")]
    if len(mine) != 1:
        return False, "this host is not in the controller's cache"
    if _normal(mine[0]) != _normal(own):
        changed = sorted(k for k in AFFILIATE_KEYS if _normal(mine[0])[k] != _normal(own)[k])
        return False, "this host's affiliate changed (%s)" % ", ".join(changed)
    if not state or state.get("disabled"):
        return False, "no desired state on this host yet"
    if members is not None and sorted(state.get("members") or []) != sorted(members):
        return False, "the members of the cluster group changed"
    if _specs(desired_peers) != _specs(state.get("peers") or []):
        return False, "the peers built from the cache differ from this host's"
    return True, ""
