# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Filter kubespan.mesh.mesh_svg: a picture (SVG) of the mesh from every node's peer statuses."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: mesh_svg
short_description: Draw the KubeSpan mesh as an SVG picture from every node's peer statuses
version_added: 0.1.0
description:
  - Takes what M(kubespan.mesh.peer_status_info) returned on each node and returns an SVG document (text) that shows
    every node and, between every two nodes, a link in two halves; each half is coloured by what the node at its end
    sees of the other (green up, red down, grey unknown; grey also when the node has no status for that peer, or
    could not be read).
  - A half is dashed and labelled C(via <relay>) when the peer's status has a non-empty C(via) field (traffic relayed
    through another node), and labelled C(NAT) when its C(natPath) field is true (the endpoint in use is not one of
    the peer's own node addresses, so the path goes through an address translation the node observed).
  - Nodes are grouped in boxes by site. A host's site is the first (by name) of its inventory groups among
    O(site_groups); by default every group except C(all), C(ungrouped), O(cluster_group) and the groups that hold
    every host of the picture. Hosts in no such group are drawn in one box named after O(cluster_group).
  - Peers that are not hosts of the input (discovered through the discovery service) are drawn in a box of their own.
  - The output is deterministic (no time, sorted names) and plain SVG 1.1 that any browser shows. Each node, link half
    and site is an element with C(data-*) attributes (C(data-name), C(data-site); C(data-from), C(data-to),
    C(data-state), C(data-via), C(data-nat)) so that tests and scripts can read it, and a C(title) shown on hover.
  - Written directly rather than through Graphviz, so the controller needs no package and the layout (sites as
    boxes, nodes on a ring in each box) is the same everywhere.
  - At most 200 nodes (the picture would be unreadable, and has a line per pair).
options:
  _input:
    description:
      - Either the hosts (usually C(ansible_play_hosts_all)) with O(hostvars), where each host's registered
        M(kubespan.mesh.peer_status_info) result (its C(identity) and C(peers)) is the variable O(status_var);
      - or a dictionary of host name to that result.
      - A host without the variable, or whose result failed, is drawn as a node that could not be read.
    type: raw
    required: true
  hostvars:
    description: The C(hostvars) magic variable, when O(_input) is a list of hosts.
    type: dict
  status_var:
    description: The variable the status was registered in, when O(_input) is a list of hosts.
    type: str
    default: kubespan_status
  groups:
    description: The C(groups) magic variable (group name to host names), for the sites.
    type: dict
    default: {}
  site_groups:
    description: The inventory groups that are sites. Default (null) as described above.
    type: list
    elements: str
  cluster_group:
    description: The cluster's inventory group (never a site).
    type: str
    default: kubespan
  title:
    description: The picture's title.
    type: str
    default: KubeSpan mesh
author:
  - kubespan.mesh contributors
"""

EXAMPLES = r"""
- name: Read the peer statuses
  kubespan.mesh.peer_status_info:
  register: kubespan_status

- name: Write the picture of the mesh on the controller
  ansible.builtin.copy:
    content: "{{ ansible_play_hosts_all | kubespan.mesh.mesh_svg(hostvars, groups=groups, cluster_group='kubespan') }}"
    dest: mesh.svg
    mode: "0600"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The SVG document.
  type: str
"""

MAX_NODES = 200
STATES = ("up", "down", "unknown")
COLOURS = {"up": "#2e7d32", "down": "#c62828", "unknown": "#9e9e9e"}
NODE_R = 26
LABEL_PAD = 46          # room around a ring for the node labels
BOX_GAP = 40
PER_ROW = 3
DISCOVERED = "(discovered peers)"
HALO = 'stroke="#ffffff" stroke-width="3" paint-order="stroke"'   # labels stay readable over the links


def _esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _fail(message):
    raise AnsibleFilterError("mesh_svg: " + message)


def _peers_of(host, status):
    """The peer records of one host's status, checked: {peer name: record}."""
    if status is None:
        return None
    if not isinstance(status, Mapping):
        _fail("the status of %s is not a dictionary (a peer_status_info result)" % host)
    if status.get("failed") or status.get("skipped") or status.get("unreachable"):
        return None
    peers = status.get("peers")
    if peers is None:
        return None
    if not isinstance(peers, (list, tuple)):
        _fail("the peers of %s are not a list" % host)
    seen = {}
    for index, peer in enumerate(peers):
        if not isinstance(peer, Mapping) or not isinstance(peer.get("label"), str) or not peer["label"]:
            _fail("peer %d of %s is not a dictionary with a label" % (index, host))
        seen[peer["label"]] = peer
    return seen


def _state(record):
    if record is None:
        return "unknown", "no status"
    state = record.get("state")
    if state not in STATES:
        return "unknown", "state %s" % _esc(str(state)[:40])
    return state, ""


def _sites(hosts, groups, site_groups, cluster_group):
    if not isinstance(groups, Mapping):
        _fail("groups is not a dictionary (pass the groups magic variable)")
    hostset = set(hosts)
    if site_groups is None:
        candidates = [g for g in groups if g not in ("all", "ungrouped", cluster_group)
                      and not hostset <= set(groups.get(g) or ())]
    else:
        if isinstance(site_groups, (str, bytes)) or not isinstance(site_groups, (list, tuple)):
            _fail("site_groups is not a list of group names")
        candidates = [str(g) for g in site_groups]
    member = {g: set(groups.get(g) or ()) for g in candidates}
    sites = {}
    for host in hosts:
        names = sorted(g for g in candidates if host in member[g])
        sites[host] = names[0] if names else ""
    return sites


def _from_hostvars(hosts, hostvars, status_var):
    if not isinstance(hostvars, Mapping):
        _fail("with a list of hosts, pass hostvars (the magic variable)")
    if len(hosts) > MAX_NODES:
        _fail("%d nodes, at most %d can be drawn" % (len(hosts), MAX_NODES))
    statuses = {}
    for host in hosts:
        if not isinstance(host, str):
            _fail("the host list holds a %s, not a host name" % type(host).__name__)
        host_vars = hostvars.get(host) or {}
        statuses[host] = host_vars.get(status_var) if status_var in host_vars else None
    return statuses


def mesh_svg(statuses, hostvars=None, groups=None, site_groups=None, cluster_group="kubespan", title="KubeSpan mesh",
             status_var="kubespan_status"):
    if isinstance(statuses, (list, tuple)):
        statuses = _from_hostvars(statuses, hostvars, status_var)
    if not isinstance(statuses, Mapping):
        _fail("expects a list of hosts (with hostvars) or a dictionary of host name to peer_status_info result, got %s"
              % type(statuses).__name__)
    hosts = sorted(str(h) for h in statuses)
    views = {h: _peers_of(h, statuses[h]) for h in hosts}
    identity = {}
    for h in hosts:
        ident = statuses[h].get("identity") if isinstance(statuses[h], Mapping) else None
        identity[h] = ident if isinstance(ident, Mapping) else {}
    discovered = sorted({p for v in views.values() if v for p in v} - set(hosts))
    nodes = hosts + discovered
    if len(nodes) > MAX_NODES:
        _fail("%d nodes, at most %d can be drawn" % (len(nodes), MAX_NODES))
    site_of = _sites(hosts, groups or {}, site_groups, cluster_group)
    for name in discovered:
        site_of[name] = DISCOVERED
    order = sorted({s for s in site_of.values() if s not in ("", DISCOVERED)})
    if any(s == "" for s in site_of.values()):
        order.append("")
    if discovered:
        order.append(DISCOVERED)

    # layout: one box per site, PER_ROW boxes a row; nodes on a ring inside their box
    boxes, pos = [], {}
    x = y = row_h = 0
    width = 0
    for index, site in enumerate(order):
        members = sorted(n for n in nodes if site_of[n] == site)
        count = len(members)
        ring = 0 if count == 1 else max(70.0, count * (2 * NODE_R + 34) / (2 * math.pi))
        size = 2 * (ring + NODE_R + LABEL_PAD)
        if index and index % PER_ROW == 0:
            x, y, row_h = 0, y + row_h + BOX_GAP, 0
        boxes.append((site, x, y, size, members))
        cx, cy = x + size / 2, y + size / 2 + 8
        for k, name in enumerate(members):
            angle = -math.pi / 2 + 2 * math.pi * k / count
            pos[name] = (cx + ring * math.cos(angle), cy + ring * math.sin(angle))
        x += size + BOX_GAP
        width = max(width, x - BOX_GAP)
        row_h = max(row_h, size)
    height = y + row_h
    margin_top, legend_h = 40, 60
    # at least the legend's width (a small mesh would cut it)
    total_w, total_h = max(int(width + 2 * BOX_GAP), 760), int(height + margin_top + legend_h + BOX_GAP)

    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif" data-nodes="%d">' % (total_w, total_h, total_w, total_h, len(nodes)),
           '<title>%s</title>' % _esc(title),
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           '<text x="%d" y="26" font-size="18" font-weight="bold">%s</text>' % (BOX_GAP, _esc(title)),
           '<g transform="translate(%d,%d)">' % (BOX_GAP, margin_top)]
    out.append('<g class="sites">')
    for site, bx, by, size, members in boxes:
        label = site or cluster_group
        out.append('<g class="site" data-site="%s"><title>%s: %d nodes</title>'
                   '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="12" fill="#f5f7fa" stroke="#90a4ae"/>'
                   '<text x="%.1f" y="%.1f" font-size="13" fill="#455a64">%s</text></g>'
                   % (_esc(site), _esc(label), len(members), bx, by, size, size, bx + 10, by + 18, _esc(label)))
    out.append('</g>')

    out.append('<g class="links">')
    drawn = 0
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if a in discovered and b in discovered:
                continue  # no host's view of it: two discovered peers of the hosts
            (ax, ay), (bx_, by_) = pos[a], pos[b]
            mx, my = (ax + bx_) / 2, (ay + by_) / 2
            for frm, to, (fx, fy) in ((a, b, (ax, ay)), (b, a, (bx_, by_))):
                view = views.get(frm)
                record = view.get(to) if view else None
                state, reason = _state(record)
                if frm in discovered:
                    reason = "not an inventory host: its view is not known"
                elif view is None:
                    reason = "the statuses of %s could not be read" % _esc(frm)
                via = record.get("via") if record is not None else None
                via = _esc(via[:64]) if isinstance(via, str) and via else ""
                nat = bool(record is not None and record.get("natPath") is True)
                tip = "%s sees %s: %s" % (_esc(frm), _esc(to), state)
                if record is not None and record.get("endpoint"):
                    tip += " at %s" % _esc(str(record["endpoint"])[:64])
                if via:
                    tip += ", relayed via %s" % via
                if nat:
                    tip += ", NAT path"
                if reason:
                    tip += " (%s)" % reason
                dash = ' stroke-dasharray="7 4"' if via else ""
                out.append('<g class="link" data-from="%s" data-to="%s" data-state="%s" data-via="%s" data-nat="%s">'
                           '<title>%s</title><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"%s/>'
                           % (_esc(frm), _esc(to), state, via, "true" if nat else "false", tip, fx, fy, mx, my,
                              COLOURS[state], dash))
                mark_x, mark_y = fx + (mx - fx) * 0.55, fy + (my - fy) * 0.55
                if via:
                    out.append('<text x="%.1f" y="%.1f" font-size="10" fill="#37474f" %s>via %s</text>' % (mark_x, mark_y - 4, HALO, via))
                if nat:
                    out.append('<text x="%.1f" y="%.1f" font-size="10" font-weight="bold" fill="#6a1b9a" %s>NAT</text>'
                               % (mark_x, mark_y + (12 if via else -4), HALO))
                out.append('</g>')
                drawn += 1
    out.append('</g>')

    out.append('<g class="nodes">')
    for name in nodes:
        nx, ny = pos[name]
        view = views.get(name)
        if name in discovered or view is None:
            health = "unknown"
        else:
            seen = [_state(view.get(p))[0] for p in hosts if p != name] + [_state(view[p])[0] for p in view if p not in hosts]
            health = "down" if "down" in seen else ("unknown" if "unknown" in seen else "up")
        address = identity.get(name, {}).get("address") or ""
        tip = "%s (%s)%s" % (_esc(name), _esc(site_of[name] or cluster_group), (" " + _esc(str(address)[:60])) if address else "")
        out.append('<g class="node" data-name="%s" data-site="%s" data-health="%s"><title>%s</title>'
                   '<circle cx="%.1f" cy="%.1f" r="%d" fill="#ffffff" stroke="%s" stroke-width="4"/>'
                   '<text x="%.1f" y="%.1f" font-size="12" text-anchor="middle" %s>%s</text>'
                   % (_esc(name), _esc(site_of[name]), health, tip, nx, ny, NODE_R, COLOURS[health], nx, ny + NODE_R + 15,
                      HALO, _esc(name[:40])))
        if address:
            out.append('<text x="%.1f" y="%.1f" font-size="9" fill="#607d8b" text-anchor="middle" %s>%s</text>'
                       % (nx, ny + NODE_R + 27, HALO, _esc(str(address).partition("/")[0][:45])))
        out.append('</g>')
    out.append('</g></g>')

    ly = total_h - legend_h + 10
    out.append('<g class="legend" font-size="12">')
    lx = BOX_GAP
    for state in STATES:
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text>'
                   % (lx, ly, lx + 30, ly, COLOURS[state], lx + 36, ly + 4, state))
        lx += 100
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#607d8b" stroke-width="3" stroke-dasharray="7 4"/>'
               '<text x="%d" y="%d">relayed (via)</text>' % (lx, ly, lx + 30, ly, lx + 36, ly + 4))
    lx += 130
    out.append('<text x="%d" y="%d" font-weight="bold" fill="#6a1b9a">NAT</text><text x="%d" y="%d">NAT path observed</text>'
               % (lx, ly + 4, lx + 32, ly + 4))
    out.append('<text x="%d" y="%d" fill="#455a64">Each link has two halves: the colour of a half is what the node at its '
               'end sees of the other.</text>' % (BOX_GAP, ly + 26))
    out.append('</g></svg>')
    return "\n".join(out) + "\n"


class FilterModule:
    def filters(self):
        return {"mesh_svg": mesh_svg}
