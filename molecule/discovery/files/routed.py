"""Print, as JSON, which of the given addresses the kubespan nftables table forces into the mesh.

usage: routed.py ADDRESS...   (reads `nft -j list chain inet kubespan kubespan_outgoing`: the daddr operands of its
mark rules, the routed set as installed in the kernel)
"""
import ipaddress
import json
import subprocess
import sys

out = subprocess.run(["nft", "-j", "list", "chain", "inet", "kubespan", "kubespan_outgoing"], check=True,
                     capture_output=True, text=True).stdout
networks = []


def element(value):
    if isinstance(value, str):
        networks.append(ipaddress.ip_network(value))
    elif "prefix" in value:
        networks.append(ipaddress.ip_network("%s/%d" % (value["prefix"]["addr"], value["prefix"]["len"])))
    elif "range" in value:
        first, last = (ipaddress.ip_address(a) for a in value["range"])
        networks.extend(ipaddress.summarize_address_range(first, last))


for item in json.loads(out)["nftables"]:
    for expr in (item.get("rule") or {}).get("expr") or []:
        match = expr.get("match") or {}
        left = (match.get("left") or {}).get("payload") or {}
        if left.get("field") == "daddr" and match.get("op") == "==":
            right = match["right"]
            for value in right["set"] if isinstance(right, dict) and "set" in right else [right]:
                element(value)
result = {}
for text in sys.argv[1:]:
    ip = ipaddress.ip_address(text)
    result[text] = any(ip.version == net.version and ip in net for net in networks)
print(json.dumps({"routed": result, "networks": len(networks)}))
