"""Identity: key format, node ID, Talos file format, atomic persistence, corrupt-file errors."""

import base64
import os
import stat

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.core import keys as keys_mod
from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity as ident_mod
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import StateFileError

# RFC 7748 section 6.1 (X25519 test vector, Alice): private scalar and public key.
ALICE_PRIV = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUB = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def test_public_key_matches_rfc7748_vector():
    priv = base64.b64encode(keys_mod.clamp_private_key(ALICE_PRIV)).decode()
    assert ident_mod.public_key_for(priv) == base64.b64encode(ALICE_PUB).decode()


def test_generated_keys_are_clamped_like_wg_genkey():
    for _i in range(50):
        raw = base64.b64decode(keys_mod.generate_private_key())
        assert len(raw) == 32 and raw[0] & 7 == 0 and raw[31] & 0x80 == 0 and raw[31] & 0x40


def test_base62():
    assert keys_mod.base62_encode(b"\x00\x01") == "01"
    assert keys_mod.base62_encode((61).to_bytes(1, "big")) == "z"
    assert keys_mod.base62_encode((62).to_bytes(1, "big")) == "10"
    node_id = keys_mod.generate_node_id()
    assert 40 <= len(node_id) <= 44 and keys_mod.valid_node_id(node_id)


def test_save_and_load_roundtrip_with_modes(tmp_path):
    state = str(tmp_path / "kubespan")
    ident = ident_mod.new_identity()
    ident.address, ident.subnet = "fd7f:175a:b97c:5602::1/128", "fd7f:175a:b97c:5602::/64"
    ident_mod.save_identity(state, ident)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in ("kubespan-identity.yaml", "node-identity.yaml"):
        assert stat.S_IMODE(os.stat(os.path.join(state, name)).st_mode) == 0o600
    text = open(os.path.join(state, "kubespan-identity.yaml")).read()
    assert set(line.split(":")[0] for line in text.splitlines()) == {"address", "subnet", "privateKey", "publicKey"}
    loaded = ident_mod.load_identity(state)
    assert (loaded.private_key, loaded.public_key, loaded.node_id, loaded.address) == (
        ident.private_key, ident.public_key, ident.node_id, ident.address)
    assert ident.private_key not in repr(loaded)


def test_talos_written_file_is_accepted(tmp_path):
    # Talos writes the identity right after key generation with empty address and subnet.
    priv = base64.b64encode(keys_mod.clamp_private_key(ALICE_PRIV)).decode()
    (tmp_path / "kubespan-identity.yaml").write_text(
        'address: ""\nsubnet: ""\nprivateKey: %s\npublicKey: %s\n' % (priv, base64.b64encode(ALICE_PUB).decode()))
    (tmp_path / "node-identity.yaml").write_text("nodeId: 2VfX3nu67ZtZPl57IdJrU87BMjVWkSBJiL9ulP9TCnF\n")
    loaded = ident_mod.load_identity(str(tmp_path))
    assert loaded.public_key == base64.b64encode(ALICE_PUB).decode() and loaded.address == ""


def test_missing_identity_is_none(tmp_path):
    assert ident_mod.load_identity(str(tmp_path)) is None


@pytest.mark.parametrize("content,match", [
    ("privateKey: notbase64!!\n", "line 1: privateKey is not a base64 WireGuard key"),
    ("garbage without colon\n", "expected 'key: value'"),
    ("privateKey: %s\npublicKey: %s\n" % (base64.b64encode(b"\x08" * 32).decode(), base64.b64encode(b"\x01" * 32).decode()),
     "does not belong"),
])
def test_corrupt_identity_names_the_file(tmp_path, content, match):
    (tmp_path / "kubespan-identity.yaml").write_text(content)
    (tmp_path / "node-identity.yaml").write_text("nodeId: abc\n")
    with pytest.raises(StateFileError, match=match) as err:
        ident_mod.load_identity(str(tmp_path))
    assert "kubespan-identity.yaml" in str(err.value)


def test_half_identity_is_an_error_not_a_new_identity(tmp_path):
    (tmp_path / "node-identity.yaml").write_text("nodeId: abc\n")
    with pytest.raises(StateFileError, match="kubespan-identity.yaml is missing"):
        ident_mod.load_identity(str(tmp_path))


def test_bad_node_id(tmp_path):
    ident_mod.save_identity(str(tmp_path), ident_mod.new_identity())
    (tmp_path / "node-identity.yaml").write_text("nodeId: not-base62!\n")
    with pytest.raises(StateFileError, match="node-identity.yaml"):
        ident_mod.load_identity(str(tmp_path))
