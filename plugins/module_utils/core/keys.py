# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Keys and node IDs as values: Curve25519 key generation and derivation, Talos's base62 node ID. Pure (no
files; identity.py persists them)."""

from __future__ import annotations

import base64
import secrets

from .wgtypes import key_to_bytes

BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def clamp_private_key(raw: bytes) -> bytes:
    """Curve25519 clamping, as ``wg genkey`` does."""
    if len(raw) != 32:
        raise ValueError("a Curve25519 private key is 32 bytes")
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def public_key_for(private_key_b64: str) -> str:
    """Derive the base64 public key of a base64 private key (needs PyNaCl, python3-nacl on Debian)."""
    try:
        from nacl.bindings import crypto_scalarmult_base
    except ImportError:
        raise RuntimeError("PyNaCl is required on the node: install the python3-nacl package (Debian/Ubuntu) or python3-pynacl")
    return base64.b64encode(crypto_scalarmult_base(key_to_bytes(private_key_b64))).decode("ascii")


def generate_private_key() -> str:
    return base64.b64encode(clamp_private_key(secrets.token_bytes(32))).decode("ascii")


def base62_encode(raw: bytes) -> str:
    """Big-endian base62 of a byte string (alphabet 0-9A-Za-z), leading zero bytes kept as '0'."""
    number = int.from_bytes(raw, "big")
    out = []
    while number:
        number, rem = divmod(number, 62)
        out.append(BASE62_ALPHABET[rem])
    pad = len(raw) - len(raw.lstrip(b"\0"))
    return "0" * pad + "".join(reversed(out))


def generate_node_id() -> str:
    return base62_encode(secrets.token_bytes(32))


def valid_node_id(node_id: str) -> bool:
    # str.strip removes every leading and trailing alphabet character: nothing is left iff all are in it
    return isinstance(node_id, str) and bool(node_id) and len(node_id) <= 256 and not node_id.strip(BASE62_ALPHABET)
