"""Table line of tests/reliability/netns_mesh.sh for one N; exit 1 when a criterion fails.

usage: stats.py --header
       stats.py N T_BUILD LINKS_UP LINKS T_LINKS PING_OK PING_N T_TICKS WG_RSS_KB TICKS_JSONL
"""

import json
import os
import statistics
import sys

COLUMNS = ("N", "build s", "links up", "links s", "pings", "tick round s", "tick cpu ms med/p95", "tick maxrss MB med/p95",
           "wg-go RSS MB/node", "mem used GB", "load1", "rc!=0")


def p95(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def mem_used_gb():
    info = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024 / 1024


def main():
    if sys.argv[1] == "--header":
        print(" | ".join(COLUMNS))
        return 0
    n, t_build, up, links, t_links, ping_ok, ping_n = (int(x) for x in sys.argv[1:8])
    t_ticks, wg_rss_kb, path = float(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
    with open(path) as handle:
        ticks = [json.loads(line) for line in handle if line.strip()]
    cpu = [t["total_cpu_ms"] for t in ticks]
    rss = [t["max_rss_kb"] / 1024 for t in ticks]
    bad = sum(1 for t in ticks if t["rc"] != 0) + (n - len(ticks))
    row = (n, t_build, "%d/%d" % (up, links), t_links, "%d/%d" % (ping_ok, ping_n), "%.1f" % t_ticks,
           "%.0f/%.0f" % (statistics.median(cpu), p95(cpu)) if cpu else "-",
           "%.1f/%.1f" % (statistics.median(rss), p95(rss)) if rss else "-",
           "%.1f" % (wg_rss_kb / 1024 / n), "%.2f" % mem_used_gb(), "%.2f" % os.getloadavg()[0], bad)
    print(" | ".join(str(x) for x in row))
    failures = []
    if up != links:
        failures.append("only %d of %d directed links have a handshake after %d s" % (up, links, t_links))
    if t_ticks > 30:
        failures.append("one round of agent ticks took %.1f s, more than the 30 s agent interval" % t_ticks)
    if ping_ok != ping_n:
        failures.append("%d of %d pings failed" % (ping_n - ping_ok, ping_n))
    if bad:
        failures.append("%d ticks failed" % bad)
        for t in ticks:
            if t["rc"] != 0:
                print("  tick failed: %s" % t.get("log"), file=sys.stderr)
                break
    for f in failures:
        print("  FAIL: %s" % f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
