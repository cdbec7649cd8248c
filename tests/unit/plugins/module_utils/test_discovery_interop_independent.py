# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""A second, independent implementation of the discovery seal and open, checked against the product's.

Written here from Talos's documented rules only (discovery-client's cipher use), sharing no code with
plugins/module_utils/core/discovery_crypto.py, not even the AES library:

- affiliate data: nonce (12 bytes) first, then AES-256-GCM ciphertext and its 16-byte tag, no
  associated data; the key is the 32 bytes of the cluster secret;
- each endpoint: one length byte, the encoded sidero.discovery.client.Endpoint (field 1: ip bytes,
  field 2: port varint), zero padding to a multiple of 16, every 16-byte block AES-256 encrypted on its
  own (ECB).

AES (FIPS-197) and GCM (NIST SP 800-38D) are written out in plain Python below and checked against their
published known answers first, so a round trip that passes in both directions means the product frames
and encrypts exactly as the rules say, and does not merely agree with itself.
"""

import base64
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_crypto as product
from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as wire

# ------------------------------------------------------------------ AES-256, FIPS-197, plain Python


def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _mul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = _xtime(a)
        b >>= 1
    return r


def _sbox():
    box = [0] * 256
    for x in range(256):
        inv = 0 if x == 0 else next(y for y in range(1, 256) if _mul(x, y) == 1)
        s = inv
        for shift in range(1, 5):
            s ^= ((inv << shift) | (inv >> (8 - shift))) & 0xFF
        box[x] = s ^ 0x63
    return box


SBOX = _sbox()


def _expand(key):
    assert len(key) == 32
    words = [list(key[i:i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        t = list(words[i - 1])
        if i % 8 == 0:
            t = [SBOX[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = _xtime(rcon) & 0xFF
        elif i % 8 == 4:
            t = [SBOX[b] for b in t]
        words.append([a ^ b for a, b in zip(words[i - 8], t)])
    return [sum(words[r * 4:r * 4 + 4], []) for r in range(15)]


def aes256_block(key, block):
    """Encrypt one 16-byte block (state in column order, as FIPS-197 writes it)."""
    rounds = _expand(key)
    s = [b ^ k for b, k in zip(block, rounds[0])]
    for r in range(1, 15):
        s = [SBOX[b] for b in s]
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]  # ShiftRows
        if r != 14:
            mixed = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                mixed += [_mul(a[0], 2) ^ _mul(a[1], 3) ^ a[2] ^ a[3], a[0] ^ _mul(a[1], 2) ^ _mul(a[2], 3) ^ a[3],
                          a[0] ^ a[1] ^ _mul(a[2], 2) ^ _mul(a[3], 3), _mul(a[0], 3) ^ a[1] ^ a[2] ^ _mul(a[3], 2)]
            s = mixed
        s = [b ^ k for b, k in zip(s, rounds[r])]
    return bytes(s)


def aes256_block_decrypt(key, block):
    """Decrypt one 16-byte block: the inverse of each step of aes256_block, in reverse order."""
    rounds = _expand(key)
    inv_sbox = [0] * 256
    for i, v in enumerate(SBOX):
        inv_sbox[v] = i
    s = [b ^ k for b, k in zip(block, rounds[14])]
    for r in range(13, -1, -1):
        unshifted = [0] * 16
        for i in range(16):
            unshifted[(i + 4 * (i % 4)) % 16] = s[i]
        s = [inv_sbox[b] for b in unshifted]
        s = [b ^ k for b, k in zip(s, rounds[r])]
        if r != 0:
            mixed = []
            for c in range(4):
                a = s[4 * c:4 * c + 4]
                mixed += [_mul(a[0], 14) ^ _mul(a[1], 11) ^ _mul(a[2], 13) ^ _mul(a[3], 9),
                          _mul(a[0], 9) ^ _mul(a[1], 14) ^ _mul(a[2], 11) ^ _mul(a[3], 13),
                          _mul(a[0], 13) ^ _mul(a[1], 9) ^ _mul(a[2], 14) ^ _mul(a[3], 11),
                          _mul(a[0], 11) ^ _mul(a[1], 13) ^ _mul(a[2], 9) ^ _mul(a[3], 14)]
            s = mixed
    return bytes(s)


# ------------------------------------------------------------------ GCM, SP 800-38D, no associated data


def _gf_mul(x, y):
    r = 0xE1 << 120
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ r if v & 1 else v >> 1
    return z


def _ghash(h, data):
    y = 0
    for i in range(0, len(data), 16):
        block = data[i:i + 16].ljust(16, b"\0")
        y = _gf_mul(y ^ int.from_bytes(block, "big"), h)
    return y


def _gctr(key, counter, data):
    out = bytearray()
    for i in range(0, len(data), 16):
        stream = aes256_block(key, counter)
        out += bytes(a ^ b for a, b in zip(data[i:i + 16], stream))
        counter = counter[:12] + ((int.from_bytes(counter[12:], "big") + 1) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


def _tag(key, j0, ciphertext):
    h = int.from_bytes(aes256_block(key, b"\0" * 16), "big")
    padded = ciphertext + b"\0" * (-len(ciphertext) % 16)
    s = _ghash(h, padded + (0).to_bytes(8, "big") + (len(ciphertext) * 8).to_bytes(8, "big"))
    return (s ^ int.from_bytes(aes256_block(key, j0), "big")).to_bytes(16, "big")


def gcm_seal(key, nonce, plaintext):
    j0 = nonce + b"\0\0\0\1"
    first = j0[:12] + b"\0\0\0\2"
    ciphertext = _gctr(key, first, plaintext)
    return ciphertext + _tag(key, j0, ciphertext)


def gcm_open(key, nonce, sealed):
    ciphertext, tag = sealed[:-16], sealed[-16:]
    j0 = nonce + b"\0\0\0\1"
    if _tag(key, j0, ciphertext) != tag:
        raise ValueError("tag mismatch")
    return _gctr(key, j0[:12] + b"\0\0\0\2", ciphertext)


# ------------------------------------------------------------------ Talos's framing, written from the rules


def seal_affiliate(key, nonce, plaintext):
    return nonce + gcm_seal(key, nonce, plaintext)


def open_affiliate(key, blob):
    return gcm_open(key, blob[:12], blob[12:])


def encode_endpoint(ip, port):
    raw = ipaddress.ip_address(ip).packed
    varint = bytearray()
    while True:
        byte, port = port & 0x7F, port >> 7
        varint.append(byte | (0x80 if port else 0))
        if not port:
            break
    return b"\x0a" + bytes([len(raw)]) + raw + b"\x10" + bytes(varint)


def seal_endpoint(key, pb):
    data = bytes([len(pb)]) + pb
    data += b"\0" * (-len(data) % 16)
    return b"".join(aes256_block(key, data[i:i + 16]) for i in range(0, len(data), 16))


def open_endpoint(key, blob):
    data = b"".join(aes256_block_decrypt(key, blob[i:i + 16]) for i in range(0, len(blob), 16))
    return data[1:1 + data[0]]


SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
KEY = base64.b64decode(SECRET)


# ------------------------------------------------------------------ the independent code against the standards


def test_aes256_fips197_known_answer():
    # FIPS-197 appendix C.3
    key = bytes(range(32))
    assert aes256_block(key, bytes.fromhex("00112233445566778899aabbccddeeff")).hex() == "8ea2b7ca516745bfeafc49904b496089"
    assert aes256_block_decrypt(key, bytes.fromhex("8ea2b7ca516745bfeafc49904b496089")).hex() == "00112233445566778899aabbccddeeff"


@pytest.mark.parametrize("plaintext, expected", [
    # The GCM specification's test cases 13 and 14 (AES-256, zero key, zero 96-bit IV, no AAD)
    ("", "530f8afbc74536b9a963b4f1c4cb738b"),
    ("00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"),
])
def test_gcm_known_answers(plaintext, expected):
    assert gcm_seal(b"\0" * 32, b"\0" * 12, bytes.fromhex(plaintext)).hex() == expected


# ------------------------------------------------------------------ round trips both ways with the product


@settings(max_examples=25, deadline=None)
@given(plaintext=st.binary(max_size=300), nonce=st.binary(min_size=12, max_size=12))
def test_affiliate_data_round_trips_both_ways(plaintext, nonce):
    ours = seal_affiliate(KEY, nonce, plaintext)
    assert product.open_data(KEY, ours) == plaintext
    theirs = product.seal_data(KEY, plaintext, nonce=nonce)
    assert theirs == ours  # same nonce, same bytes: nonce first, no associated data
    assert open_affiliate(KEY, product.seal_data(KEY, plaintext)) == plaintext  # the product's random nonce


def test_a_tampered_independent_seal_is_refused_by_the_product():
    blob = bytearray(seal_affiliate(KEY, b"\1" * 12, b"affiliate"))
    blob[-1] ^= 1
    with pytest.raises(product.DiscoveryCryptoError):
        product.open_data(KEY, bytes(blob))


endpoints = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(1, 65535)),
)


@settings(max_examples=40, deadline=None)
@given(endpoint=endpoints)
def test_endpoints_round_trip_both_ways(endpoint):
    ip, port = endpoint
    text = ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)
    pb = encode_endpoint(ip, port)
    assert wire.endpoint_to_message(text).encode() == pb  # the product encodes the same bytes
    ours = seal_endpoint(KEY, pb)
    assert product.seal_endpoint(KEY, pb) == ours  # deterministic (ECB): the same ciphertext
    assert product.open_endpoint(KEY, ours) == pb
    assert open_endpoint(KEY, product.seal_endpoint(KEY, pb)) == pb
    assert wire.endpoint_from_message(wire.Endpoint.decode(product.open_endpoint(KEY, ours))) == text


def test_the_facts_file_endpoint_vector_by_the_independent_code():
    # ../shared/reference/talos-kubespan-facts.md, the vector test_discovery_crypto pins for the product
    assert encode_endpoint("192.168.3.4", 51820).hex() == "0a04c0a8030410ec9403"
    assert seal_endpoint(KEY, encode_endpoint("192.168.3.4", 51820)).hex() == "60d5f9a3be329d73f3d9eefda7928ff5"
