"""Agent helpers that need no device: metrics text and the status file's corruption handling."""

import json

from ansible_collections.kubespan.mesh.plugins.module_utils.agent.agent import load_statuses, render_metrics, status_path
from ansible_collections.kubespan.mesh.plugins.module_utils.core.peerstatus import PeerStatus


def test_metrics_text_format():
    statuses = {"K1=": PeerStatus(label='n"2', state="up", rx_bytes=10, tx_bytes=20, last_handshake=95.0, endpoint_changes=3),
                "K2=": PeerStatus(label="n3", state="down")}
    text = render_metrics(statuses, 100.0, repairs=2)
    lines = text.splitlines()
    assert 'kubespan_peer_up{peer="K1=",label="n\\"2"} 1' in lines
    assert 'kubespan_peer_up{peer="K2=",label="n3"} 0' in lines
    assert 'kubespan_peer_state{peer="K2=",label="n3",state="down"} 1' in lines
    assert 'kubespan_peer_receive_bytes_total{peer="K1=",label="n\\"2"} 10' in lines
    assert 'kubespan_peer_seconds_since_handshake{peer="K1=",label="n\\"2"} 5.0' in lines
    assert 'kubespan_peer_seconds_since_handshake{peer="K2=",label="n3"} -1' in lines
    assert 'kubespan_peer_endpoint_changes_total{peer="K1=",label="n\\"2"} 3' in lines
    assert "kubespan_agent_last_tick_repairs 2" in lines
    for line in lines:  # every sample line is "name{labels} value" or "name value"
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2
    assert text.count("# TYPE") == 10
    assert 'kubespan_peer_last_handshake_timestamp_seconds{peer="K1=",label="n\\"2"} 95.0' in lines
    assert 'kubespan_peer_last_handshake_timestamp_seconds{peer="K2=",label="n3"} 0' in lines
    assert not any(line.startswith("kubespan_discovery_up") for line in lines)  # discovery off: no series


def test_metrics_discovery_up_only_with_discovery():
    for value in (0, 1):
        lines = render_metrics({}, 100.0, repairs=0, discovery_up=value).splitlines()
        assert "# TYPE kubespan_discovery_up gauge" in lines
        assert "kubespan_discovery_up %d" % value in lines


def test_corrupt_status_file_is_named_and_replaced_by_fresh_statuses(tmp_path):
    state = str(tmp_path)
    with open(status_path(state), "w") as f:
        f.write("{broken")
    statuses, problem = load_statuses(state)
    assert statuses == {} and "peerstatus.json" in problem
    with open(status_path(state), "w") as f:
        json.dump({"version": 1, "peers": {}}, f)
    assert load_statuses(state) == ({}, None)
    assert load_statuses(str(tmp_path / "none")) == ({}, None)
