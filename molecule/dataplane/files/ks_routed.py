"""python3 ks_routed.py ADDRESS: print "routed" when ADDRESS is in the routed set of table inet kubespan (the
daddr matches that mark traffic into the mesh), else "direct". Prefixes may be merged (two peers'
10.244.2.0/24 and 10.244.3.0/24 become 10.244.2.0/23), so a string search would not do."""
import ipaddress
import json
import subprocess
import sys

addr = ipaddress.ip_address(sys.argv[1])
out = subprocess.run(["nft", "-j", "list", "table", "inet", "kubespan"], capture_output=True, text=True, check=False).stdout
nets = []


def collect(value):
    if isinstance(value, dict):
        if "prefix" in value:
            nets.append(ipaddress.ip_network("%s/%s" % (value["prefix"]["addr"], value["prefix"]["len"])))
        elif "set" in value:
            for item in value["set"]:
                collect(item)
        elif "range" in value:
            lo, hi = (ipaddress.ip_address(v) for v in value["range"])
            nets.extend(ipaddress.summarize_address_range(lo, hi))
    elif isinstance(value, str):
        try:
            nets.append(ipaddress.ip_network(value))
        except ValueError:
            pass
    elif isinstance(value, list):
        for item in value:
            collect(item)


for item in json.loads(out or '{"nftables": []}')["nftables"]:
    rule = item.get("rule")
    if not rule or rule.get("chain") != "kubespan_outgoing":
        continue
    for expr in rule["expr"]:
        match = expr.get("match")
        if match and match.get("left", {}).get("payload", {}).get("field") == "daddr":
            collect(match["right"])
print("routed" if any(addr.version == n.version and addr in n for n in nets) else "direct")
