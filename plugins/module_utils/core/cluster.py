# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Cluster secrets: the cluster ID and the 32-byte cluster secret shared by every node.

As in Talos, the cluster ID is URL-safe base64 of 32 random bytes and the secret is standard base64 of
32 random bytes; the secret is the WireGuard preshared key of every peer (and, with discovery, the
AES-256 key of the affiliate data).
"""

from __future__ import annotations

import base64
import binascii
import secrets

SECRETS_HINT = "generate them once with: ansible-playbook kubespan.mesh.gen_secrets -e kubespan_secrets_file=group_vars/kubespan/secrets.yml"


def generate_cluster_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def generate_cluster_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def validate_cluster_id(cluster_id) -> str:
    if not isinstance(cluster_id, str) or not cluster_id.strip():
        raise ValueError("kubespan_cluster_id is not set: %s" % SECRETS_HINT)
    cluster_id = cluster_id.strip()
    if len(cluster_id) > 256:
        raise ValueError("kubespan_cluster_id is %d characters; at most 256 are allowed" % len(cluster_id))
    if any(ord(c) < 33 or ord(c) > 126 for c in cluster_id):
        raise ValueError("kubespan_cluster_id must be printable ASCII without spaces")
    return cluster_id


def validate_cluster_secret(secret) -> str:
    """Return the secret if it is standard base64 of exactly 32 bytes; the message never echoes it."""
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("kubespan_cluster_secret is not set: %s" % SECRETS_HINT)
    secret = secret.strip()
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("kubespan_cluster_secret is not valid base64 (value hidden): %s" % SECRETS_HINT)
    if len(raw) != 32:
        raise ValueError("kubespan_cluster_secret must decode to 32 bytes, it decodes to %d (value hidden): %s" % (len(raw), SECRETS_HINT))
    return secret


def secrets_document(cluster_id: str, secret: str) -> str:
    return (
        "---\n"
        "# kubespan.mesh cluster secrets: the same on every node of the cluster.\n"
        "# Encrypt this file: ansible-vault encrypt <this file>\n"
        "kubespan_cluster_id: %s\n"
        "kubespan_cluster_secret: %s\n" % (cluster_id, secret)
    )
