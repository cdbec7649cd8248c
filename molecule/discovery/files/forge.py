"""Publish hostile affiliates to the discovery service (run on disc-svc with the service's own code bundle).

usage: forge.py TARGET CA_FILE SERVER_NAME CLUSTER_ID SECRET SUBNET VICTIM_ADDRESS
  ForgedWrongKey: a well-formed affiliate sealed with another secret (an outsider);
  zzzzzzForgedThief: sealed with the cluster secret (an insider or a stolen secret) but claiming VICTIM_ADDRESS,
                  a node address that belongs to another peer; its node ID sorts after the real nodes' IDs, so
                  (issue 17, Talos's node-ID order) it is kept without that address;
  ForgedCorrupt:  random bytes as affiliate data.
The nodes must drop the other two with a logged reason, trim the thief with a logged reason, and keep their
peers and routes.
"""
import base64
import ipaddress
import os
import sys

sys.path.insert(0, "/usr/lib/kubespan-discovery/kubespan-agent.pyz")
from kubespan_mesh.core.discovery_affiliates import seal_affiliate  # noqa: E402
from kubespan_mesh.core.discovery_crypto import key_from_secret  # noqa: E402
from kubespan_mesh.discovery.discovery_grpc import DiscoveryClient  # noqa: E402


def forged(node_id, address_suffix, addresses):
    subnet = ipaddress.IPv6Network(SUBNET)
    return {"name": node_id.lower(), "node_id": node_id, "public_key": base64.b64encode(os.urandom(32)).decode(),
            "address": str(subnet.network_address + address_suffix), "endpoints": ["10.89.130.99:51820"], "addresses": addresses}


TARGET, CA_FILE, SERVER_NAME, CLUSTER, SECRET, SUBNET, VICTIM = sys.argv[1:8]
with open(CA_FILE, "rb") as handle:
    ca = handle.read()
with DiscoveryClient(TARGET, ca_cert=ca, server_name=SERVER_NAME, timeout=5) as client:
    data, endpoints = seal_affiliate(bytes(range(32)), forged("ForgedWrongKey", 0xdead01, []))
    client.update(CLUSTER, "ForgedWrongKey", data, endpoints, ttl=900)
    data, endpoints = seal_affiliate(key_from_secret(SECRET), forged("zzzzzzForgedThief", 0xdead02, [VICTIM]))
    client.update(CLUSTER, "zzzzzzForgedThief", data, endpoints, ttl=900)
    client.update(CLUSTER, "ForgedCorrupt", os.urandom(64), [], ttl=900)
print("published ForgedWrongKey, zzzzzzForgedThief (claims %s), ForgedCorrupt" % VICTIM)
