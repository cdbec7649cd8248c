"""Requests per node per minute between two copies of the discovery service's --stats-file (RequestCounter).

Usage: python3 rate.py BEFORE.json AFTER.json SECONDS IP[,IP...] [JOURNALS.json TTL_SECONDS]  -> one JSON object:
  {"seconds": S, "per_node": {ip: {method: count}}, "total": {ip: n}, "rate": {ip: n per minute}, "max_rate": r, ...}
Counts are differences of the service's cumulative counters; the window is measured by the caller.

With JOURNALS.json ({ip: {"refreshes": n, "harvested": h, "up_peers": u}}: what each node's own journal says it
sent in the window as TTL/2 refreshes, how many peers' endpoints it harvests, how many peers are up) the steady
state is computed too, per node:
  periodic    = the AffiliateUpdates its journal attributes to the TTL/2 refresh (own affiliate, harvested
                endpoints), at most 1 + h (each item is refreshed once per TTL/2: a 3-minute window holds one at most)
                and at most the AffiliateUpdates the service counted;
  extra       = every other request the service counted (Hello, Watch, List, AffiliateUpdate for a change, ...);
  steady_rate = extra per minute + (1 + h) per TTL/2: the long-run rate when nothing changes;
  talos_rate  = Talos's client on the same node (discovery-client refreshData): its own affiliate and every
                harvested endpoint (of the u up peers when harvesting is on, else none) per TTL/2, and a Hello and
                a Watch per connection (none in a window without reconnection).
"""
import json
import sys


def load(path):
    with open(path) as handle:
        doc = json.load(handle)
    return doc.get("requests") or {}


def main(argv):
    before, after = load(argv[1]), load(argv[2])
    seconds = float(argv[3])
    ips = [ip for ip in argv[4].split(",") if ip]
    per_node, total, rate = {}, {}, {}
    for ip in ips:
        b, a = before.get(ip) or {}, after.get(ip) or {}
        per_node[ip] = {m: a.get(m, 0) - b.get(m, 0) for m in sorted(set(a) | set(b)) if a.get(m, 0) - b.get(m, 0)}
        total[ip] = sum(per_node[ip].values())
        rate[ip] = round(total[ip] * 60.0 / seconds, 3)
    out = {"seconds": round(seconds, 1), "per_node": per_node, "total": total, "rate": rate,
           "max_rate": max(rate.values()) if rate else 0.0}
    if len(argv) > 6:
        with open(argv[5]) as handle:
            journals = json.load(handle)
        half_ttl_min = float(argv[6]) / 2.0 / 60.0
        periodic, extra, steady, talos = {}, {}, {}, {}
        for ip in ips:
            j = journals.get(ip) or {}
            h, up = int(j.get("harvested", 0)), int(j.get("up_peers", 0))
            periodic[ip] = min(int(j.get("refreshes", 0)), 1 + h, per_node[ip].get("AffiliateUpdate", 0))
            extra[ip] = total[ip] - periodic[ip]
            steady[ip] = round(extra[ip] * 60.0 / seconds + (1 + h) / half_ttl_min, 3)
            talos[ip] = round((1 + (up if j.get("harvest") else 0)) / half_ttl_min, 3)
        out.update(periodic=periodic, extra=extra, steady_rate=steady, talos_rate=talos,
                   max_steady_rate=max(steady.values()) if steady else 0.0,
                   steady_within_talos=all(steady[ip] <= talos[ip] for ip in ips))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
