# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""Issue 15 items 3 and 7: no key or secret in error text or reprs; bad secrets and state say what is wrong.

Each test here failed on the code before the fix (see the report of branch h/secrets)."""

from __future__ import annotations

import base64
import io
import json
from contextlib import redirect_stderr

import pytest

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli
from ansible_collections.kubespan.mesh.plugins.module_utils.core.plan import DesiredDevice, DesiredPeer, plan_device, render_device
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.core.wgtypes import DeviceState, DeviceUpdate, PeerState, PeerUpdate, key_to_bytes
from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity, statefile
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
SECRET = "TPbGXrYlvuXgAl8dERpwjlA5tnEMoihPDPxlovcLtVg="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def leaks(text, secrets=(PRIV, SECRET)):
    return [s[i:i + 8] for s in secrets for i in range(len(s) - 7) if s[i:i + 8] in text]


@pytest.mark.parametrize("bad", [PRIV[:-2], PRIV + "A", PRIV.replace("+", "*"), base64.b64encode(base64.b64decode(PRIV)[:31]).decode()])
def test_key_to_bytes_never_echoes_the_key(bad):
    with pytest.raises(ValueError) as err:
        key_to_bytes(bad)
    assert not leaks(str(err.value)), str(err.value)


def test_key_fields_are_hidden_in_reprs():
    objects = [DeviceState(private_key=PRIV, public_key=PUB, peers={PUB: PeerState(PUB, preshared_key=SECRET)}),
               DeviceUpdate(private_key=PRIV, peers=[PeerUpdate(PUB, preshared_key=SECRET)]),
               PeerUpdate(PUB, preshared_key=SECRET), PeerState(PUB, preshared_key=SECRET),
               DesiredPeer(PUB, ["fd00::1/128"], preshared_key=SECRET),
               DesiredDevice(PRIV, 51820, 0x20, [DesiredPeer(PUB, ["fd00::1/128"], preshared_key=SECRET)])]
    for obj in objects:
        assert not leaks(repr(obj)), repr(obj)
    assert PUB in repr(objects[0])  # public keys stay visible


def test_plan_changes_and_diff_carry_no_key_material():
    desired = DesiredDevice(PRIV, 51820, 0x20, [DesiredPeer(PUB, ["fd00::1/128"], preshared_key=SECRET)])
    current = DeviceState(private_key=base64.b64encode(b"\x08" * 32).decode(), peers={PUB: PeerState(PUB, allowed_ips=["fd00::1/128"])})
    update, changes = plan_device(desired, current, 0.0)
    text = "\n".join(changes) + repr(update) + render_device("kubespan", {}, current, {})
    assert update.private_key == PRIV and update.peers[0].preshared_key == SECRET
    assert not leaks(text), text


@pytest.mark.parametrize("line", ["privateKey=%s" % PRIV, "  %s" % SECRET, "kubespan_cluster_secret %s" % SECRET])
def test_flat_yaml_errors_name_file_and_line_not_the_line(line):
    with pytest.raises(statefile.StateFileError) as err:
        statefile.parse_flat_yaml("address: fd00::1/128\n%s\n" % line, "/x/kubespan-identity.yaml")
    assert "/x/kubespan-identity.yaml line 2" in str(err.value)
    assert not leaks(str(err.value)), str(err.value)


def _identity(tmp_path, kfile, nfile="nodeId: Abc123\n"):
    (tmp_path / identity.KUBESPAN_IDENTITY_FILE).write_text(kfile)
    (tmp_path / identity.NODE_IDENTITY_FILE).write_text(nfile)
    with pytest.raises(statefile.StateFileError) as err:
        identity.load_identity(str(tmp_path))
    assert not leaks(str(err.value)), str(err.value)
    return str(err.value)


def test_identity_errors_name_file_field_and_line(tmp_path):
    msg = _identity(tmp_path, "address: \"\"\nprivateKey: %s\n" % PRIV[:-4])
    assert "kubespan-identity.yaml line 2: privateKey" in msg
    msg = _identity(tmp_path, "privateKey: %s\naddress: %s\n" % (PRIV, PRIV))  # a key in the wrong field
    assert "kubespan-identity.yaml line 2: address" in msg
    msg = _identity(tmp_path, "privateKey: %s\n" % PRIV, "nodeId: %s\n" % PRIV.split("+")[1])  # base62 part of the key
    assert "node-identity.yaml line 1: nodeId" in msg


def _state(tmp_path, **changes):
    state = {"version": engine.STATE_VERSION, "settings": {}, "cluster_id": "c", "cluster_secret": SECRET, "peers": [],
             "members": None, "address": "fd00::1/128", "subnet": "fd00::/64"}
    state.update(changes)
    (tmp_path / engine.STATE_FILE).write_text(json.dumps(state))
    return engine.state_path(str(tmp_path))


@pytest.mark.parametrize("secret,problem", [
    (base64.b64encode(b"\x01" * 31).decode(), "is 31 bytes"), (SECRET[:-1], "not base64"), (5, "not base64"),
])
def test_the_psk_of_state_json_is_revalidated(tmp_path, secret, problem):
    path = _state(tmp_path, cluster_secret=secret)
    with pytest.raises(statefile.StateFileError) as err:
        engine.load_state(str(tmp_path))
    assert path in str(err.value) and "cluster_secret" in str(err.value) and problem in str(err.value)
    assert not leaks(str(err.value))


def test_the_secret_elsewhere_in_state_json_is_refused(tmp_path):
    _state(tmp_path, settings={"interface": SECRET[3:20]})
    with pytest.raises(statefile.StateFileError, match="part of cluster_secret also appears") as err:
        engine.load_state(str(tmp_path))
    assert not leaks(str(err.value))


@pytest.mark.parametrize("key,value", [("discovery", "yes"), ("discovery", [1]), ("settings", "x"), ("settings", None),
                                       ("peers", {"a": 1}), ("peers", ["x"]), ("members", "a,b"), ("local_affiliate", 3)])
def test_a_state_of_the_wrong_shape_is_named_and_the_tick_exits_non_zero(tmp_path, key, value):
    """The old agent died on AttributeError ('str' object has no attribute 'get') for a non-dict discovery."""
    path = _state(tmp_path, **{key: value})
    with pytest.raises(statefile.StateFileError) as err:
        engine.load_state(str(tmp_path))
    assert path in str(err.value) and key in str(err.value)
    out, errors = io.StringIO(), io.StringIO()
    with redirect_stderr(errors):
        rc = cli.main(["--state-dir", str(tmp_path), "agent"], out=out)
    assert rc == 1 and path in errors.getvalue() and key in errors.getvalue(), (out.getvalue(), errors.getvalue())


def test_a_31_byte_secret_says_so_and_how_to_regenerate():
    errors = settings_errors({"kubespan_cluster_id": "c", "kubespan_cluster_secret": base64.b64encode(b"\x02" * 31).decode()})
    assert len(errors) == 1
    assert "kubespan_cluster_secret decodes to 31 bytes, 32 needed" in errors[0]
    assert "-e kubespan_secrets_force=true" in errors[0] and "must be set" not in errors[0]
    assert base64.b64encode(b"\x02" * 31).decode()[:8] not in errors[0]
    assert settings_errors({"kubespan_cluster_id": "c", "kubespan_cluster_secret": SECRET}) == []
    assert settings_errors({"kubespan_cluster_secret": None}) == ["kubespan_cluster_secret is not set"]


@pytest.mark.parametrize("key", ["cluster_secret", "cluster_id"])
def test_a_state_without_its_secret_or_id_is_refused(tmp_path, key):
    """A bit flip in a key name ("bluster_secret") must not let the rest of the file through unchecked."""
    path = _state(tmp_path)
    doc = json.loads(open(path).read())
    doc["b" + key[1:]] = doc.pop(key)
    with open(path, "w") as handle:
        json.dump(doc, handle)
    with pytest.raises(statefile.StateFileError, match="has no %s" % key) as err:
        engine.load_state(str(tmp_path))
    assert not leaks(str(err.value))
