"""natPath of kubespan.mesh.peer_status_info: whether the endpoint in use is one of the peer's own node addresses."""

from ansible_collections.kubespan.mesh.plugins.modules.peer_status_info import nat_paths


def test_nat_path_compares_the_endpoint_with_the_peer_s_node_addresses():
    specs = [{"public_key": "A", "addresses": ["10.0.0.1", "2001:db8::1", "fd00::1/128"]},
             {"public_key": "B", "addresses": ["10.0.0.2"]},
             {"public_key": "C"}, "junk"]
    records = [{"id": "A", "endpoint": "10.0.0.1:51820"}, {"id": "A", "endpoint": "[2001:db8::1]:51820"},
               {"id": "B", "endpoint": "203.0.113.7:40000"}, {"id": "B", "endpoint": ""},
               {"id": "C", "endpoint": "10.0.0.3:51820"}, {"id": "D", "endpoint": "10.0.0.4:51820"},
               {"id": "A", "endpoint": "not-an-endpoint"}]
    assert [r["natPath"] for r in nat_paths(records, specs)] == [False, False, True, None, None, None, None]
