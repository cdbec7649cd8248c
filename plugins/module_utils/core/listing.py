# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""``kubespan get`` in talosctl's layout: resource names and aliases, YAML/JSON documents, table, watch.

talosctl prints a resource as ``node``, ``metadata`` (namespace, type, id, version, owner, phase, created,
updated) and ``spec`` with the Talos resource's YAML field names; ``-o json`` is the same document as JSON
(one object per resource, keys sorted, 4-space indent), the table is ``NODE NAMESPACE TYPE ID VERSION``
and the type's print columns. Resource names resolve as talosctl resolves them (COSI resource
definitions): the type, its plural and singular, the type with a partial group suffix, the upper-case
initials; and this project's short names (``peerstatuses`` ...). Matching ignores case.

The records come from ``cli.list_resource`` (the same data as before); this module only reshapes and
prints them. ``created``/``updated`` are file times: see docs/operations.md "Listings". Python 3.8,
no Ansible imports (runs on the node, in the agent's bundle).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Callable, Dict, List, Optional, Tuple

from ..base.errors import KubeSpanError

NAMESPACE = "kubespan"
AGENT = "kubespan-agent"
PLAYBOOK = "kubespan.mesh"

# short name -> (Talos type, namespace, owner, table columns as (header, spec key))
TYPES = {
    "peerstatuses": ("KubeSpanPeerStatuses.kubespan.talos.dev", NAMESPACE, AGENT,
                     [("LABEL", "label"), ("ENDPOINT", "endpoint"), ("STATE", "state"), ("RX", "receiveBytes"), ("TX", "transmitBytes"),
                      ("VIA", "via")]),
    "peerspecs": ("KubeSpanPeerSpecs.kubespan.talos.dev", NAMESPACE, PLAYBOOK, [("LABEL", "label"), ("ENDPOINTS", "endpoints")]),
    "endpoints": ("KubeSpanEndpoints.kubespan.talos.dev", NAMESPACE, AGENT, [("ENDPOINT", "endpoint"), ("AFFILIATE ID", "affiliateID")]),
    "identities": ("KubeSpanIdentities.kubespan.talos.dev", NAMESPACE, PLAYBOOK, [("ADDRESS", "address"), ("PUBLICKEY", "publicKey")]),
    "affiliates": ("Affiliates.cluster.talos.dev", "cluster", PLAYBOOK, [("HOSTNAME", "hostname"), ("ADDRESSES", "addresses")]),
}
SHORT_NAMES = tuple(TYPES)
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as talosctl prints a time never set


class ListingError(KubeSpanError, ValueError):
    """A resource name that is unknown or ambiguous."""


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("ses"):
        return name[:-2]
    return name[:-1] if name.endswith("s") else name


def aliases(short: str) -> List[str]:
    """Every name that selects the resource (lower case), as COSI's ResourceDefinitionSpec.Fill makes them."""
    rtype = TYPES[short][0]
    name, suffix = rtype.split(".", 1)
    out = [short, _singular(short), rtype.lower(), name.lower(), _singular(name).lower()]
    parts = suffix.split(".")
    out += [".".join([name.lower()] + parts[:i]) for i in range(1, len(parts))]
    upper = "".join(c for c in name if c.isupper())
    if len(upper) > 1:
        out.append(upper.lower())
        if not upper.endswith("S"):
            out.append(upper.lower() + "s")
    seen = []
    for a in out:
        if a not in seen:
            seen.append(a)
    return seen


def resolve(name: str) -> str:
    """The short name of the resource ``name`` selects; ListingError when none or several do."""
    want = str(name).lower()
    hits = [short for short in TYPES if want in aliases(short)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ListingError("resource %r is ambiguous: it names %s; use one of their full names"
                           % (name, " and ".join(TYPES[h][0] for h in hits)))
    raise ListingError("unknown resource %r; known: %s (or their talosctl names, e.g. %s)"
                       % (name, ", ".join(SHORT_NAMES), ", ".join(TYPES[s][0].partition(".")[0].lower() for s in SHORT_NAMES)))


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC like Go's RFC3339Nano (fraction without trailing zeros); 0 = Go's zero time."""
    if not ts:
        return ZERO_TIME
    dt = datetime.datetime.fromtimestamp(float(ts), tz=datetime.timezone.utc)
    frac = ("%06d" % dt.microsecond).rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ("." + frac if frac else "") + "Z"


def _spec(short: str, rec: dict) -> Tuple[dict, Optional[dict]]:
    """Talos's spec fields of one record (and metadata labels, affiliates only)."""
    if short == "peerstatuses":
        return {"endpoint": rec.get("endpoint") or "", "label": rec.get("label", ""), "state": rec.get("state", "unknown"),
                "receiveBytes": int(rec.get("receiveBytes") or 0), "transmitBytes": int(rec.get("transmitBytes") or 0),
                "lastHandshakeTime": rfc3339(rec.get("lastHandshakeTime") or 0), "lastUsedEndpoint": rec.get("lastUsedEndpoint") or "",
                "lastEndpointChange": rfc3339(rec.get("lastEndpointChange") or 0),
                **({"via": rec["via"]} if rec.get("via") else {})}, None
    if short == "peerspecs":
        return {"address": rec.get("address", ""), "allowedIPs": list(rec.get("allowedIPs") or []),
                "endpoints": list(rec.get("endpoints") or []), "label": rec.get("label", "")}, None
    if short == "endpoints":
        return {"affiliateID": rec.get("affiliateID", ""), "endpoint": rec.get("endpoint", "")}, None
    if short == "identities":
        spec = {"address": rec.get("address", ""), "subnet": rec.get("subnet", "")}
        if "privateKey" in rec:  # only with --include-private-key
            spec["privateKey"] = rec["privateKey"]
        spec["publicKey"] = rec.get("publicKey", "")
        return spec, None
    spec = {"nodeId": rec.get("id", ""), "addresses": list(rec.get("addresses") or []), "hostname": rec.get("hostname", "")}
    if rec.get("publicKey"):
        spec["kubespan"] = {"publicKey": rec["publicKey"], "address": rec.get("kubespanAddress", ""),
                            "additionalAddresses": list(rec.get("additionalAddresses") or []),
                            "endpoints": list(rec.get("endpoints") or [])}
    return spec, {"source": rec.get("source", "")}


def _times(short: str, rec: dict, times: Dict[str, float]) -> Tuple[float, float]:
    if short in ("peerstatuses", "endpoints"):
        return times["state"], times["status"] or times["state"]
    if short == "identities":
        return times["identity"], times["identity"]
    if short == "affiliates" and rec.get("source") == "discovery":
        return times["discovered"], times["discovered"]
    return times["state"], times["state"]


def documents(short: str, records: List[dict], node: str, times: Dict[str, float]) -> List[dict]:
    """talosctl's documents (node, metadata, spec) of the records of one resource."""
    rtype, namespace, owner, _cols = TYPES[short]
    docs = []
    for rec in records:
        spec, labels = _spec(short, rec)
        created, updated = _times(short, rec, times)
        if short == "affiliates" and rec.get("source") == "discovery":
            owner_of = AGENT
        else:
            owner_of = owner
        meta = {"namespace": namespace, "type": rtype, "id": str(rec.get("id", "")), "version": int(rec.get("version") or 1),
                "owner": owner_of, "phase": "running", "created": rfc3339(created), "updated": rfc3339(max(created, updated))}
        if labels:
            meta["labels"] = labels
        docs.append({"node": node, "metadata": meta, "spec": spec})
    return docs


# --- YAML as gopkg.in/yaml.v3 writes these documents (4-space indent) -----------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/+=:@,()-]*$")
_RESOLVES = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.?[0-9]+(?:[eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+|~|null|true|false|yes|no|on|off|y|n)$",
                       re.IGNORECASE)
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$")


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text == "":
        return '""'
    if _TIME.match(text):
        return text  # a timestamp, as yaml.v3 writes a time.Time
    if _PLAIN.match(text) and not _RESOLVES.match(text) and ": " not in text and not text.endswith((":", " ")) and " #" not in text:
        return text
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return json.dumps(text)
    return "'" + text.replace("'", "''") + "'"


def _yaml_lines(value, indent: int) -> List[str]:
    pad = " " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            if item:
                lines.append("%s%s:" % (pad, key))
                lines += _yaml_lines(item, indent + 4)
            else:
                lines.append("%s%s: {}" % (pad, key))
        elif isinstance(item, list):
            if item:
                lines.append("%s%s:" % (pad, key))
                lines += ["%s    - %s" % (pad, _scalar(v)) for v in item]
            else:
                lines.append("%s%s: []" % (pad, key))
        else:
            lines.append("%s%s: %s" % (pad, key, _scalar(item)))
    return lines


def to_yaml(doc: dict, event: Optional[str] = None) -> str:
    """One document as talosctl -o yaml prints it (without the --- separator)."""
    lines = ["node: %s" % _scalar(doc["node"])]
    if event:
        lines.append("event: %s" % event)
    lines += _yaml_lines({"metadata": doc["metadata"], "spec": doc["spec"]}, 0)
    return "\n".join(lines) + "\n"


def to_json(doc: dict, event: Optional[str] = None) -> str:
    """One document as talosctl -o json prints it: keys sorted (Go maps), 4-space indent."""
    data = dict(doc)
    if event:
        data["event"] = event
    return json.dumps(data, indent=4, sort_keys=True) + "\n"


def _cell(value) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table_rows(short: str, docs: List[dict]) -> Tuple[List[str], List[List[str]]]:
    headers = ["NODE", "NAMESPACE", "TYPE", "ID", "VERSION"] + [h for h, _k in TYPES[short][3]]
    rows = [[d["node"], d["metadata"]["namespace"], d["metadata"]["type"], d["metadata"]["id"], str(d["metadata"]["version"])]
            + [_cell(d["spec"].get(k, "")) for _h, k in TYPES[short][3]] for d in docs]
    return headers, rows


def format_table(headers: List[str], rows: List[List[str]], widths: Optional[List[int]] = None) -> str:
    """Columns padded like Go's tabwriter (padding 3), trailing blanks trimmed. ``widths``: the widths so far
    (watch: later rows line up with the first ones; updated in place, a longer cell widens its column)."""
    widths = widths if widths is not None else []
    for row in [headers] + rows:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    return "\n".join("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in [headers] + rows) + "\n"


def render(short: str, docs: List[dict], output: str) -> str:
    """The whole listing of one resource in one output format (table, yaml, json)."""
    if output == "yaml":
        return "---\n".join(to_yaml(d) for d in docs)
    if output == "json":
        return "".join(to_json(d) for d in docs)
    headers, rows = table_rows(short, docs)
    return format_table(headers, rows)


EVENT_MARK = {"created": "+", "updated": " ", "destroyed": "-"}


def changes(old: Dict[str, dict], new: Dict[str, dict]) -> List[Tuple[str, dict]]:
    """(event, document) for what changed between two polls, keyed by id: created, updated (version or spec
    changed), destroyed (the last document seen). File times alone do not count as a change."""
    out = []
    for key, doc in new.items():
        prev = old.get(key)
        if prev is None:
            out.append(("created", doc))
        elif (prev["metadata"]["version"], prev["spec"]) != (doc["metadata"]["version"], doc["spec"]):
            out.append(("updated", doc))
    out += [("destroyed", doc) for key, doc in old.items() if key not in new]
    return out


def watch(short: str, poll: Callable[[], List[dict]], output: str, write: Callable[[str], None],
          sleep_fn: Callable[[float], None], interval: float = 1.0, iterations: Optional[int] = None) -> None:
    """``talosctl get -w``: print every document once as created, then each change as it appears.

    ``poll`` returns the current documents; the agent rewrites its files atomically each tick, so every
    poll sees a whole state. ``iterations`` bounds the polls (tests); None: until interrupted."""
    seen: Dict[str, dict] = {}
    widths: List[int] = []
    count = 0
    first_yaml = True
    while iterations is None or count < iterations:
        if count:
            sleep_fn(interval)
        count += 1
        current = {d["metadata"]["id"]: d for d in poll()}
        events = changes(seen, current)
        seen = current
        if output == "table":
            headers, rows = table_rows(short, [d for _e, d in events])
            rows = [[EVENT_MARK[e]] + r for (e, _d), r in zip(events, rows)]
            if count == 1:
                write(format_table(["*"] + headers, rows, widths))
            elif rows:
                write(format_table(["*"] + headers, rows, widths).split("\n", 1)[1])
        else:
            for event, doc in events:
                if output == "yaml":
                    write(("" if first_yaml else "---\n") + to_yaml(doc, event))
                    first_yaml = False
                else:
                    write(to_json(doc, event))
