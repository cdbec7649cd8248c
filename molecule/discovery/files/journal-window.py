"""What a node's journal says it sent to the discovery service in a window (rate.yml): the AffiliateUpdates it
attributes to the TTL/2 refresh (its own affiliate, harvested endpoints), every publication or connection line (for
the record), and how many peers' endpoints it harvests (discovery.json).

Usage: python3 journal-window.py SINCE UNTIL  (seconds since the epoch)  -> one JSON object on stdout."""
import json
import re
import subprocess
import sys

INTERESTING = re.compile(r"published|refreshed|Hello|holding a Watch|connected again|reconnecting|tick says|this tick|not published")


def main(argv):
    since, until = int(float(argv[1])), int(float(argv[2])) + 1
    text = subprocess.run(["journalctl", "-u", "kubespan-agent", "-u", "kubespan-watch", "--since", "@%d" % since,
                           "--until", "@%d" % until, "-o", "short-unix", "--no-pager"],
                          check=True, stdout=subprocess.PIPE, text=True).stdout
    lines = [line for line in text.splitlines() if "discovery" in line and INTERESTING.search(line)]
    refreshes = sum(1 for line in lines if "published this node's affiliate (refresh (TTL/2)" in line)
    refreshes += sum(int(m.group(1)) for m in (re.search(r"refreshed the harvested endpoints of (\d+) peers", line) for line in lines) if m)
    try:
        with open("/var/lib/kubespan/discovery.json") as handle:
            memory = json.load(handle)
    except (OSError, ValueError):
        memory = {}
    print(json.dumps({"refreshes": refreshes, "harvested": len(memory.get("harvested") or {}), "lines": lines[:40]}))


if __name__ == "__main__":
    main(sys.argv)
