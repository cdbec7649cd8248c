"""Discovery encryption: the endpoint vectors of the facts file byte for byte, GCM framing, clean errors."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_crypto as c
from ansible_collections.kubespan.mesh.plugins.module_utils.core import discovery_wire as w

SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
KEY = c.key_from_secret(SECRET)
OTHER = bytes(range(32))


@pytest.mark.parametrize("endpoint, pb, ct", [
    ("192.168.3.4:51820", "0a04c0a8030410ec9403", "60d5f9a3be329d73f3d9eefda7928ff5"),
    ("[2001:db8::1]:51820", "0a1020010db800000000000000000000000110ec9403",
     "0a38709ddced84b1f17b4795b801508242d608543887a3883cf52d7fa9671bea"),
])
def test_endpoint_vectors(endpoint, pb, ct):
    encoded = w.endpoint_to_message(endpoint).encode()
    assert encoded.hex() == pb
    sealed = c.seal_endpoint(KEY, encoded)
    assert sealed.hex() == ct
    assert c.open_endpoint(KEY, sealed) == encoded
    assert w.endpoint_from_message(w.Endpoint.decode(c.open_endpoint(KEY, bytes.fromhex(ct)))) == endpoint


def test_endpoint_sealing_is_deterministic_so_the_server_can_deduplicate():
    pb = w.endpoint_to_message("10.0.0.1:51820").encode()
    assert c.seal_endpoint(KEY, pb) == c.seal_endpoint(KEY, pb)
    assert c.seal_endpoint(KEY, pb) != c.seal_endpoint(OTHER, pb)


def test_gcm_known_answer_and_framing():
    # AES-256-GCM test case 14 of the GCM specification (McGrew & Viega): zero key, zero IV, 16 zero bytes.
    sealed = c.seal_data(b"\0" * 32, b"\0" * 16, nonce=b"\0" * 12)
    assert sealed == b"\0" * 12 + bytes.fromhex("cea7403d4d606b6e074ec5d3baf39d18") + bytes.fromhex("d0d1c8a799996bf0265b98b5d48ab919")
    assert c.open_data(b"\0" * 32, sealed) == b"\0" * 16


def test_gcm_random_nonce_first_and_round_trip():
    a, b = c.seal_data(KEY, b"affiliate"), c.seal_data(KEY, b"affiliate")
    assert a != b and len(a) == 12 + len(b"affiliate") + 16
    assert c.open_data(KEY, a) == c.open_data(KEY, b) == b"affiliate"


@pytest.mark.parametrize("blob, why", [
    (b"", "shorter than nonce and tag"),
    (b"\0" * 27, "shorter than nonce and tag"),
    (b"\0" * 2049, "more than the 2048"),
])
def test_open_data_rejects_bad_sizes(blob, why):
    with pytest.raises(c.DiscoveryCryptoError, match=why):
        c.open_data(KEY, blob)


def test_open_data_wrong_key_and_tampering():
    sealed = c.seal_data(KEY, b"hello")
    with pytest.raises(c.DiscoveryCryptoError, match="does not authenticate"):
        c.open_data(OTHER, sealed)
    for i in (0, 12, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(c.DiscoveryCryptoError, match="does not authenticate"):
            c.open_data(KEY, bytes(bad))


@pytest.mark.parametrize("blob, why", [
    (b"", "non-empty multiple of 16"),
    (b"\0" * 17, "non-empty multiple of 16"),
    (b"\0" * 48, "more than the 32"),
])
def test_open_endpoint_rejects_bad_sizes(blob, why):
    with pytest.raises(c.DiscoveryCryptoError, match=why):
        c.open_endpoint(KEY, blob)


def test_open_endpoint_with_a_wrong_key_fails_the_length_or_padding_check():
    sealed = c.seal_endpoint(KEY, w.endpoint_to_message("192.168.3.4:51820").encode())
    with pytest.raises(c.DiscoveryCryptoError, match="another cluster secret"):
        c.open_endpoint(OTHER, sealed)


@settings(max_examples=300, deadline=None)  # no timed assertion: a loaded CI machine is slow
@given(st.binary(max_size=64), st.binary(min_size=32, max_size=32))
def test_opening_arbitrary_bytes_raises_only_crypto_errors(blob, key):
    for opener in (c.open_data, c.open_endpoint):
        try:
            opener(key, blob)
        except c.DiscoveryCryptoError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=30))
def test_endpoint_round_trip(pb):
    assert c.open_endpoint(KEY, c.seal_endpoint(KEY, pb)) == pb


@pytest.mark.parametrize("secret, why", [
    ("not base64!", "not valid base64"),
    (base64.b64encode(b"\0" * 16).decode(), "decodes to 16"),
])
def test_key_from_secret_errors_hide_the_value(secret, why):
    with pytest.raises(c.DiscoveryCryptoError, match=why) as exc:
        c.key_from_secret(secret)
    assert secret not in str(exc.value)


def test_bad_key_size_is_a_crypto_error():
    with pytest.raises(c.DiscoveryCryptoError):
        c.seal_data(b"short", b"x")
    with pytest.raises(c.DiscoveryCryptoError):
        c.open_endpoint(b"short", b"\0" * 16)
