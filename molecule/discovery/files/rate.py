"""Requests per node per minute between two copies of the discovery service's --stats-file (RequestCounter).

Usage: python3 rate.py BEFORE.json AFTER.json SECONDS IP[,IP...]   -> one JSON object on stdout:
  {"seconds": S, "per_node": {ip: {method: count}}, "total": {ip: n}, "rate": {ip: n per minute}, "max_rate": r}
Counts are differences of the service's cumulative counters; the window is measured by the caller."""
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
    print(json.dumps({"seconds": round(seconds, 1), "per_node": per_node, "total": total, "rate": rate,
                      "max_rate": max(rate.values()) if rate else 0.0}, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
