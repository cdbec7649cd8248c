# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Encryption of discovery data, as Talos's discovery client does it.

The key is the cluster secret (standard base64 of 32 bytes) used as an AES-256 key.

- Affiliate data: ``nonce (12 random bytes) || AES-256-GCM(plaintext) || tag (16 bytes)``, no associated data.
- Each endpoint: ``len(pb) (1 byte) || pb || zero padding to a multiple of 16``, each 16-byte block encrypted
  with AES-256 on its own (ECB). Deterministic on purpose: the same endpoint published by two nodes (a node's
  own and one harvested by a peer) gives the same ciphertext, so the server can deduplicate it. It reveals
  equality of endpoints to the server, nothing more.

Opening never raises anything but :class:`DiscoveryCryptoError` (a ValueError) on bad input: short or
oversize blobs, a wrong key, tampered bytes, bad padding or length.

Needs the ``cryptography`` package (Debian/Ubuntu: python3-cryptography).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Optional

from ..base.errors import KubeSpanError

# cryptography is imported on first use, not with this module: the mesh module imports the discovery code on every
# run, discovery on or not, and the import costs about 35 ms of CPU (docs/benchmarks.md).
_CRYPTO = {}

NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK_SIZE = 16
KEY_SIZE = 32
# The service's limits (Talos): what it stores is never larger, so larger input is not ours.
MAX_DATA_SIZE = 2048
MAX_ENDPOINT_SIZE = 32


class DiscoveryCryptoError(KubeSpanError, ValueError):
    """Encrypted discovery data cannot be opened (or a key is unusable); the message says why."""


def _require() -> dict:
    """The cryptography classes this module uses, imported once."""
    if not _CRYPTO:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise DiscoveryCryptoError("the Python 'cryptography' package is required for discovery: install python3-cryptography "
                                       "(Debian/Ubuntu) or python3-cryptography (Fedora/RHEL)")
        _CRYPTO.update(InvalidTag=InvalidTag, Cipher=Cipher, algorithms=algorithms, modes=modes, AESGCM=AESGCM)
    return _CRYPTO


def key_from_secret(secret: str) -> bytes:
    """The AES-256 key of a cluster secret (standard base64 of 32 bytes). The message never echoes the secret."""
    try:
        raw = base64.b64decode(str(secret).strip(), validate=True)
    except (binascii.Error, ValueError):
        raise DiscoveryCryptoError("the cluster secret is not valid base64 (value hidden)")
    if len(raw) != KEY_SIZE:
        raise DiscoveryCryptoError("the cluster secret must decode to %d bytes, it decodes to %d (value hidden)" % (KEY_SIZE, len(raw)))
    return raw


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise DiscoveryCryptoError("the discovery key must be %d bytes" % KEY_SIZE)


def seal_data(key: bytes, plaintext: bytes, nonce: Optional[bytes] = None) -> bytes:
    """AES-256-GCM with a random 12-byte nonce written first. ``nonce`` is for test vectors only."""
    _require()
    _check_key(key)
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise DiscoveryCryptoError("the nonce must be %d bytes" % NONCE_SIZE)
    return bytes(nonce) + _require()["AESGCM"](bytes(key)).encrypt(bytes(nonce), bytes(plaintext), None)


def open_data(key: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`seal_data`; a wrong key or any changed byte is a DiscoveryCryptoError."""
    _require()
    _check_key(key)
    if not isinstance(blob, (bytes, bytearray)):
        raise DiscoveryCryptoError("affiliate data must be bytes")
    if len(blob) > MAX_DATA_SIZE:
        raise DiscoveryCryptoError("affiliate data is %d bytes, more than the %d the service accepts" % (len(blob), MAX_DATA_SIZE))
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise DiscoveryCryptoError("affiliate data is %d bytes, shorter than nonce and tag (%d)" % (len(blob), NONCE_SIZE + TAG_SIZE))
    crypto = _require()
    try:
        return crypto["AESGCM"](bytes(key)).decrypt(bytes(blob[:NONCE_SIZE]), bytes(blob[NONCE_SIZE:]), None)
    except crypto["InvalidTag"]:
        raise DiscoveryCryptoError("affiliate data does not authenticate: another cluster secret, or corrupted or forged data")


def _ecb(key: bytes, data: bytes, encrypt: bool) -> bytes:
    c = _require()
    cipher = c["Cipher"](c["algorithms"].AES(bytes(key)), c["modes"].ECB())
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def seal_endpoint(key: bytes, plaintext: bytes) -> bytes:
    """Length byte, the encoded Endpoint, zero padding to 16n; AES-256 per block (deterministic)."""
    _require()
    _check_key(key)
    if len(plaintext) > 255:
        raise DiscoveryCryptoError("an encoded endpoint is at most 255 bytes, got %d" % len(plaintext))
    data = bytes([len(plaintext)]) + bytes(plaintext)
    if len(data) % BLOCK_SIZE:
        data += b"\0" * (BLOCK_SIZE - len(data) % BLOCK_SIZE)
    return _ecb(key, data, True)


def open_endpoint(key: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`seal_endpoint`. With a wrong key the length or padding check fails (a DiscoveryCryptoError);
    ECB has no authentication, so callers still validate the decoded endpoint."""
    _require()
    _check_key(key)
    if not isinstance(blob, (bytes, bytearray)):
        raise DiscoveryCryptoError("an endpoint must be bytes")
    if not blob or len(blob) % BLOCK_SIZE:
        raise DiscoveryCryptoError("an encrypted endpoint is a non-empty multiple of %d bytes, got %d" % (BLOCK_SIZE, len(blob)))
    if len(blob) > MAX_ENDPOINT_SIZE:
        raise DiscoveryCryptoError("an encrypted endpoint is %d bytes, more than the %d the service accepts" % (len(blob), MAX_ENDPOINT_SIZE))
    data = _ecb(key, bytes(blob), False)
    size = data[0]
    if size > len(data) - 1:
        raise DiscoveryCryptoError("endpoint length byte %d exceeds the %d bytes that follow: another cluster secret or corrupted data"
                                   % (size, len(data) - 1))
    if len(data) - 1 - size >= BLOCK_SIZE or any(data[1 + size:]):
        raise DiscoveryCryptoError("endpoint padding is not zeros: another cluster secret or corrupted data")
    return data[1:1 + size]
