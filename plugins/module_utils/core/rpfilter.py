# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Which IPv4 reverse-path filter sysctls the mesh needs (pure: the engine reads and writes /proc/sys).

Packets decrypted by WireGuard arrive on the mesh link with the sources of peers' node addresses and
advertised networks. The kernel validates them with an unmarked lookup (the fwmark rule into table 180
does not apply: a decrypted packet carries mark 0, so src_valid_mark changes nothing), which finds the
underlay, not the link. And the link has no IPv4 address, so even loose mode (2) drops every such packet
(``fib_validate_source``: an interface without an IPv4 address goes straight to the "last resort", which
rejects whenever rp_filter is on). Only an effective value of 0 on the link lets them in; WireGuard has
already checked the source against the sending peer's AllowedIPs, an authenticated reverse-path check.

The kernel's effective value on an interface is max(conf/all, conf/<interface>). So:

- ``all`` is 0: set the link's own value to 0 (nothing else changes);
- ``all`` is not 0: set ``all`` to 0 and the link to 0, and raise every other interface's own value and
  ``default`` (which interfaces created later copy) to at least the old ``all``, so that their effective
  value stays exactly what it was. Only the link loses its filter.

docs/dataplane.md ("Reverse-path filtering") records the experiment behind this.
"""

from typing import Dict, List, Optional, Tuple

CONF = "net/ipv4/conf"


def sysctl_path(name: str) -> str:
    return "%s/%s/rp_filter" % (CONF, name)


def _value(raw: Optional[str]) -> Optional[int]:
    """An rp_filter value as the kernel reports it (0, 1 or 2); None for absent or unreadable ones."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 2:
        return None
    return int(text)


def effective(all_value: Optional[str], own_value: Optional[str]) -> int:
    """The kernel's effective rp_filter on an interface: max(conf/all, conf/<interface>)."""
    return max(_value(all_value) or 0, _value(own_value) or 0)


def rp_filter_plan(interface: str, values: Dict[str, Optional[str]]) -> List[Tuple[str, str]]:
    """(sysctl path, value) to write so that the link's effective rp_filter is 0, every other interface's unchanged.

    ``values``: conf name ("all", "default" and every interface) -> its current rp_filter. When the link has
    no entry (not created yet) it counts with ``default``'s value, which it will copy. Unreadable values
    are left alone."""
    all_value = _value(values.get("all"))
    own = values.get(interface, values.get("default"))
    if all_value is None or effective(values.get("all"), own) == 0:
        return []
    want = []
    if all_value:  # raise the others first, then lower all: no interface's effective value dips meanwhile
        for name in sorted(values):
            if name in ("all", interface):
                continue
            value = _value(values[name])
            if value is not None and value < all_value:
                want.append((sysctl_path(name), str(all_value)))
        want.append((sysctl_path("all"), "0"))
    if _value(own) != 0:
        want.append((sysctl_path(interface), "0"))
    return want
