"""Delete the affiliates files/forge.py published (run on disc-svc with the service's own code bundle).

usage: unforge.py TARGET CA_FILE SERVER_NAME CLUSTER_ID [AFFILIATE_ID ...]
(default: the affiliates of forge.py; announce.yml also deletes files/hostile.py's HostileClaims this way)
Since issue 17 the nodes keep an overlapping affiliate sealed with the cluster secret (trimmed, as Talos does), so
the forged thief is a peer until it is deleted; the plays after verify (2d) count the real peers only.
"""
import sys

sys.path.insert(0, "/usr/lib/kubespan-discovery/kubespan-agent.pyz")
from kubespan_mesh.discovery.discovery_grpc import DiscoveryClient  # noqa: E402

TARGET, CA_FILE, SERVER_NAME, CLUSTER = sys.argv[1:5]
IDS = sys.argv[5:] or ["ForgedWrongKey", "zzzzzzForgedThief", "ForgedCorrupt"]
with open(CA_FILE, "rb") as handle:
    ca = handle.read()
with DiscoveryClient(TARGET, ca_cert=ca, server_name=SERVER_NAME, timeout=5) as client:
    for affiliate_id in IDS:
        client.delete(CLUSTER, affiliate_id)
print("deleted %s" % ", ".join(IDS))
