"""Cluster secrets generation and validation."""

import base64

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import cluster


def test_generated_secrets_have_talos_format():
    cid = cluster.generate_cluster_id()
    assert len(base64.urlsafe_b64decode(cid)) == 32 and cluster.validate_cluster_id(cid) == cid
    secret = cluster.generate_cluster_secret()
    assert len(base64.b64decode(secret)) == 32 and cluster.validate_cluster_secret(secret) == secret
    assert cluster.generate_cluster_secret() != secret


@pytest.mark.parametrize("value,match", [
    (None, "not set"), ("", "not set"), ("x" * 300, "at most 256"), ("a b", "printable"),
])
def test_bad_cluster_id(value, match):
    with pytest.raises(ValueError, match=match):
        cluster.validate_cluster_id(value)


@pytest.mark.parametrize("value,match", [
    (None, "not set"), ("%%%", "not valid base64"), (base64.b64encode(b"x" * 16).decode(), "decodes to 16"),
])
def test_bad_secret_never_echoed(value, match):
    with pytest.raises(ValueError, match=match) as err:
        cluster.validate_cluster_secret(value)
    if value:
        assert value not in str(err.value)
    assert "gen_secrets" in str(err.value)


def test_secrets_document_parses_back():
    from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import parse_flat_yaml
    doc = cluster.secrets_document("cid", "c2VjcmV0")
    assert parse_flat_yaml(doc) == {"kubespan_cluster_id": "cid", "kubespan_cluster_secret": "c2VjcmV0"}
