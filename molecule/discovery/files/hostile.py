"""Publish the hostile affiliate of issue 15 item 2 (run on disc-svc with the service's own code bundle).

usage: hostile.py TARGET CA_FILE SERVER_NAME CLUSTER_ID SECRET SUBNET KNOWN GATEWAY SERVICE
  HostileClaims: sealed with the cluster secret (an insider), claiming, as pod networks, every IPv4 address but
  KNOWN (comma-separated node addresses of the real nodes) in a few dozen prefixes, plus 10.244.0.0/16,
  10.96.0.0/12, 2000::/3, 8.8.8.8, 1.1.1.1, GATEWAY (also the controller's address in this test bed) and
  SERVICE (the discovery service); endpoints of refused classes (broadcast, loopback) beside one usable one.
The nodes must trim the claims to kubespan_allowed_peer_networks minus what is never routed, with a warning.
"""
import base64
import ipaddress
import os
import sys

sys.path.insert(0, "/usr/lib/kubespan-discovery/kubespan-agent.pyz")
from kubespan_mesh.core.discovery_affiliates import seal_affiliate  # noqa: E402
from kubespan_mesh.core.discovery_crypto import key_from_secret  # noqa: E402
from kubespan_mesh.core.ipset import IPSet  # noqa: E402
from kubespan_mesh.discovery.discovery_grpc import DiscoveryClient  # noqa: E402

TARGET, CA_FILE, SERVER_NAME, CLUSTER, SECRET, SUBNET, KNOWN, GATEWAY, SERVICE = sys.argv[1:10]
everything = IPSet(["0.0.0.0/0"]).difference(IPSet(KNOWN.split(",")))
claims = everything.prefixes() + ["10.244.0.0/16", "10.96.0.0/12", "2000::/3", "8.8.8.8/32", "1.1.1.1/32",
                                  GATEWAY + "/32", SERVICE + "/32"]
affiliate = {"name": "hostileclaims", "node_id": "HostileClaims", "public_key": base64.b64encode(os.urandom(32)).decode(),
             "address": str(ipaddress.IPv6Network(SUBNET).network_address + 0xbad01),
             "endpoints": ["255.255.255.255:51820", "127.0.0.1:51820", "10.89.130.98:51820"],
             "addresses": [], "additional_addresses": claims}
with open(CA_FILE, "rb") as handle:
    ca = handle.read()
with DiscoveryClient(TARGET, ca_cert=ca, server_name=SERVER_NAME, timeout=5) as client:
    data, endpoints = seal_affiliate(key_from_secret(SECRET), affiliate)
    client.update(CLUSTER, "HostileClaims", data, endpoints, ttl=900)
print("published HostileClaims with %d claimed prefixes" % len(claims))
