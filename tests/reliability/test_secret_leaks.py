# -*- coding: utf-8 -*-
# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""No key or secret in any message, log line or module result, however the files that hold them are broken.

Issue 15 item 3. Hypothesis corrupts the node's identity files, the controller's secrets file and the desired
state (state.json) in many ways: truncation, bit flips, lines dropped, duplicated or spliced in, values of the
wrong type, base64 of the wrong length, and the key or secret (whole, cut, padded, re-encoded) moved into
other fields. Then the real entry points read them:

* identity files: identity.load_identity, ``kubespan get identities`` (json, yaml, table) and the identity
  module's main (check mode, its JSON result);
* secrets file: the cluster_secrets module's main and the role's early check (settings_errors);
* state.json: engine.load_state and what the agent derives from it (settings, data plane, discovery settings,
  the discovery key), ``kubespan get peerspecs|affiliates`` and, when the state is refused, the agent tick
  (``kubespan agent``) with its log and exit status.

Every exception text, repr, captured log record, stdout and stderr, and module result is searched for every
8-character substring of the private key and of the cluster secret (which is also every peer's preshared key).
Public keys may appear. The budget is conftest.py's (RELIABILITY_FUZZ_EXAMPLES).
"""

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli
from ansible_collections.kubespan.mesh.plugins.module_utils.core import keys
from ansible_collections.kubespan.mesh.plugins.module_utils.core.settingscheck import settings_errors
from ansible_collections.kubespan.mesh.plugins.module_utils.host import identity
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import parse_flat_yaml, read_text
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile import engine

WINDOW = 8


# ------------------------------------------------------------------------------------------ what is searched
class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append(record.getMessage())
        except Exception:  # pylint: disable=broad-except  # a record that cannot format is still searched
            self.lines.append(repr(record.msg) + repr(record.args))


@contextlib.contextmanager
def captured():
    """Collect everything that could reach a user: stdout, stderr, log records (root logger)."""
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    texts = []
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield texts
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        texts.extend([out.getvalue(), err.getvalue()] + handler.lines)


def leaked(texts, secrets):
    """(secret name, 8-character piece, where) of every piece of a secret found in ``texts``."""
    found = []
    for name, secret in secrets.items():
        pieces = {secret[i:i + WINDOW] for i in range(len(secret) - WINDOW + 1)}
        raw = base64.b64decode(secret)
        pieces |= {raw.hex()[i:i + 16] for i in range(0, 64 - 15, 4)}  # the hex form (wireguard-go's UAPI)
        for text in texts:
            for piece in pieces:
                if piece in text:
                    found.append((name, piece, text[:300]))
                    break
    return found


def run(texts, function, *args, keep=True, **kwargs):
    """Call ``function``; its exception's text, or its result's repr (unless ``keep`` is false: a loader's raw data,
    which holds the secret by design and is never shown), goes to ``texts``. Never raises."""
    try:
        result = function(*args, **kwargs)
    except SystemExit as exc:
        texts.append(str(exc.code))
        return None
    except BaseException as exc:  # pylint: disable=broad-except  # every exception's text is searched
        texts.append("%s: %s" % (type(exc).__name__, exc))
        texts.append(repr(exc))
        return exc
    if keep:
        texts.append(repr(result))
    return result


def run_module(texts, main, args):
    """A module's real main() in this process with ``args``; its JSON result (stdout) is captured with the rest."""
    from ansible.module_utils import basic
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()  # pylint: disable=protected-access
    basic._ANSIBLE_PROFILE = "legacy"  # pylint: disable=protected-access
    try:
        run(texts, main)
    finally:
        basic._ANSIBLE_ARGS = None  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------ corruption
# random-looking keys (a hash of a drawn seed): a shrunk all-zero key would "leak" into every run of zeros
# (and each key of a case has its own role, so two keys of one case never coincide)
seeds = st.integers(0, 1 << 64)


def raw_key(seed, role):
    return hashlib.sha256(b"kubespan-test-key %d %s" % (seed, role.encode())).digest()


def b64(raw):
    return base64.b64encode(raw).decode()


def poisons(secret):
    """Forms of ``secret`` a broken file may hold: whole, cut, padded, without padding, wrong lengths, URL-safe,
    quoted, inside other text, and a few values of the wrong type."""
    raw = base64.b64decode(secret)
    return st.one_of(
        st.just(secret), st.just(secret.rstrip("=")), st.just(secret + "A"), st.just(secret + "AAAA"),
        st.integers(8, 43).map(lambda n: secret[:n]), st.integers(0, 36).map(lambda n: secret[n:]),
        st.integers(1, 40).map(lambda n: b64(raw[:n])), st.integers(33, 48).map(lambda n: b64(raw + raw)[:n]),
        st.just(base64.urlsafe_b64encode(raw).decode()), st.just(json.dumps(secret)), st.just("'%s'" % secret),
        st.just("privateKey=" + secret), st.just("x %s y" % secret), st.just(raw.hex()),
        st.integers(0, 43).map(lambda n: secret[:n] + "!" + secret[n + 1:]),
    )


def line_edits(lines, fill):
    """Edits of a list of lines: drop, duplicate, splice ``fill`` in, cut one line, join two lines."""
    n = len(lines)
    return st.one_of(
        st.integers(0, n).map(lambda i: lines[:i] + lines[i + 1:]),
        st.integers(0, max(n - 1, 0)).map(lambda i: lines[:i + 1] + lines[i:i + 1] + lines[i + 1:]),
        st.tuples(st.integers(0, n), fill).map(lambda t: lines[:t[0]] + [t[1]] + lines[t[0]:]),
        st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 60)).map(
            lambda t: lines[:t[0]] + [lines[t[0]][:t[1]] if lines else ""] + lines[t[0] + 1:]),
        st.integers(0, max(n - 2, 0)).map(lambda i: lines[:i] + ["".join(lines[i:i + 2])] + lines[i + 2:]),
    )


def byte_edits(data):
    """Edits of bytes: truncate, flip a bit, overwrite a byte, keep as is."""
    n = len(data)
    return st.one_of(
        st.just(data),
        st.integers(0, n).map(lambda i: data[:i]),
        st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 7)).map(
            lambda t: data[:t[0]] + bytes([data[t[0]] ^ (1 << t[1])]) + data[t[0] + 1:] if data else data),
        st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)).map(
            lambda t: data[:t[0]] + bytes([t[1]]) + data[t[0] + 1:] if data else data),
    )


@st.composite
def flat_file(draw, fields, secret):
    """A flat ``key: value`` file of ``fields`` (dict) with a field replaced by a poison, lines edited, bytes edited."""
    fields = dict(fields)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(fields) + ["extra"]))
        fields[name] = draw(poisons(secret) | st.sampled_from(["", "~", "null", '"', "'", "[1, 2]", "{a: 1}", "12"]))
    lines = ["%s: %s" % (k, v) for k, v in fields.items()]
    if draw(st.booleans()):
        fill = st.tuples(st.sampled_from(["", "privateKey: ", "nodeId: ", "address: ", "  "]), poisons(secret)).map(
            lambda t: t[0] + str(t[1]))
        lines = draw(line_edits(lines, fill))
    data = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode()
    return draw(byte_edits(data))


def _write(path, data):
    if data is not None:
        with open(path, "wb") as handle:
            handle.write(data)


# ------------------------------------------------------------------------------------------ identity files
@st.composite
def identity_case(draw):
    seed = draw(seeds)
    priv = b64(keys.clamp_private_key(raw_key(seed, "private")))
    pub = identity.public_key_for(priv)
    kfields = {"address": "fd7a:115c:a1e0:ab12:1::5/128", "subnet": "fd7a:115c:a1e0:ab12::/64", "privateKey": priv, "publicKey": pub}
    kfile = draw(flat_file(kfields, priv) | st.none())
    nfile = draw(flat_file({"nodeId": keys.base62_encode(raw_key(seed, "node"))}, priv) | st.none())
    return priv, kfile, nfile


@given(case=identity_case())
def test_broken_identity_files_never_show_the_private_key(case):
    from ansible_collections.kubespan.mesh.plugins.modules import identity as identity_module
    priv, kfile, nfile = case
    with tempfile.TemporaryDirectory() as d:
        kpath, npath = identity.identity_paths(d)
        _write(kpath, kfile)
        _write(npath, nfile)
        with captured() as texts:
            run(texts, identity.load_identity, d)
            for fmt in ("json", "yaml", "table"):
                run(texts, cli.main, ["--state-dir", d, "get", "identities", "-o", fmt])
            args = {"cluster_id": "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=", "state_dir": d, "_ansible_check_mode": True,
                    "_ansible_diff": True}
            run_module(texts, identity_module.main, args)
    found = leaked(texts, {"private key": priv})
    assert not found, found


# ------------------------------------------------------------------------------------------ secrets file
@st.composite
def secrets_case(draw):
    seed = draw(seeds)
    secret = b64(raw_key(seed, "secret"))
    fields = {"kubespan_cluster_id": base64.urlsafe_b64encode(raw_key(seed, "id")).decode(), "kubespan_cluster_secret": secret}
    text = draw(flat_file(fields, secret))
    return secret, draw(st.sampled_from([b"---\n# kubespan.mesh cluster secrets\n", b""])) + text


@given(case=secrets_case())
def test_broken_secrets_files_never_show_the_secret(case):
    from ansible_collections.kubespan.mesh.plugins.modules import cluster_secrets
    secret, data = case
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "secrets.yml")
        _write(path, data)
        with captured() as texts:
            run_module(texts, cluster_secrets.main, {"path": path, "_ansible_check_mode": True})
            values = run(texts, lambda: parse_flat_yaml(read_text(path), path), keep=False)
            if isinstance(values, dict):
                run(texts, settings_errors, {k: values.get(k) for k in ("kubespan_cluster_id", "kubespan_cluster_secret")})
        with open(path, "rb") as handle:
            assert handle.read() == data  # check mode and validation never rewrite it
    found = leaked(texts, {"cluster secret": secret})
    assert not found, found


# ------------------------------------------------------------------------------------------ state.json
STATE_FIELDS = ["cluster_id", "cluster_secret", "address", "subnet", "members", "settings", "settings.interface",
                "settings.implementation", "settings.firewall_backend", "settings.nft_table", "settings.mtu", "discovery",
                "discovery.endpoint", "discovery.ca_file", "discovery.ttl", "peers", "peers.0", "peers.0.name",
                "peers.0.public_key", "peers.0.address", "peers.0.endpoints", "peers.0.endpoints.0", "peers.0.allowed_ips.0",
                "local_affiliate", "local_affiliate.name", "inventory_peers", "version", "disabled"]


def _set(doc, dotted, value):
    """Set the field at a dotted path (list indexes as numbers); nothing when an earlier change removed the path."""
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value


@st.composite
def state_case(draw):
    seed = draw(seeds)
    secret = b64(raw_key(seed, "secret"))
    peer_key = b64(raw_key(seed, "peer"))
    doc = {
        "version": engine.STATE_VERSION, "cluster_id": "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo=", "cluster_secret": secret,
        "address": "fd7a:115c:a1e0:ab12:1::5/128", "subnet": "fd7a:115c:a1e0:ab12::/64", "members": ["node1", "node2"],
        "settings": {"interface": "kubespan", "mtu": 1420, "listen_port": 51820, "implementation": "kernel",
                     "firewall_backend": "auto", "nft_table": "kubespan"},
        "discovery": {"enabled": draw(st.booleans()), "endpoint": "https://discovery.example.com/", "ca_file": "", "ttl": 1800},
        "peers": [{"name": "node2", "node_id": "Node2", "public_key": peer_key, "address": "fd7a:115c:a1e0:ab12:2::5",
                   "endpoints": ["10.0.0.2:51820"], "allowed_ips": ["fd7a:115c:a1e0:ab12:2::5/128", "10.0.0.2/32"], "version": 1}],
        "local_affiliate": {"name": "node1", "public_key": b64(raw_key(seed, "local")), "node_id": "Node1"},
        "inventory_peers": [],
    }
    for _change in range(draw(st.integers(0, 2))):
        value = draw(poisons(secret) | st.sampled_from([None, 5, 1.5, True, [], {}, [1], {"a": 1}, "", "x"]))
        _set(doc, draw(st.sampled_from(STATE_FIELDS)), value)
    data = json.dumps(doc, indent=draw(st.sampled_from([None, 2]))).encode()
    return secret, draw(byte_edits(data))


def _agent_reads_state(texts, d):
    """What the agent and the listings do with state.json, short of changing the host."""
    from ansible_collections.kubespan.mesh.plugins.module_utils.core.discovery_crypto import key_from_secret
    from ansible_collections.kubespan.mesh.plugins.module_utils.discovery.discovery_agent import normalize_settings
    state = run(texts, engine.load_state, d, keep=False)
    if isinstance(state, BaseException):
        # refused before anything is changed: the tick logs it and exits non-zero
        rc = run(texts, cli.main, ["--state-dir", d, "agent", "--lock-timeout", "0"])
        assert rc == 1, rc
        return
    if not state:
        return
    settings = run(texts, engine.settings_from_state, state)
    if isinstance(settings, engine.Settings):
        run(texts, settings.validate)
        run(texts, settings.dataplane)
    run(texts, normalize_settings, state.get("discovery"))
    run(texts, key_from_secret, state.get("cluster_secret"), keep=False)
    for resource in ("peerspecs", "affiliates"):
        run(texts, cli.main, ["--state-dir", d, "get", resource, "-o", "json"])


@given(case=state_case())
def test_broken_state_files_never_show_the_secret(case):
    secret, data = case
    with tempfile.TemporaryDirectory() as d:
        _write(engine.state_path(d), data)
        with captured() as texts:
            _agent_reads_state(texts, d)
    found = leaked(texts, {"cluster secret": secret})
    assert not found, found


# ------------------------------------------------------------------------------------------ the search itself
def test_the_search_finds_a_piece_of_a_secret():
    """Positive control: a message quoting 8 characters of the secret, or its hex form, is caught."""
    secret = b64(bytes(range(32)))
    assert leaked(["bad value %r" % secret[10:18]], {"s": secret})
    assert leaked(["hex " + bytes(range(32)).hex()[8:30]], {"s": secret})
    assert not leaked(["bad value %r" % secret[10:17]], {"s": secret})
    with captured() as texts:
        logging.getLogger("x").warning("key %s", secret)
        print("out " + secret[:9])
    assert len(leaked(texts, {"s": secret})) == 2


@pytest.mark.parametrize("key", ["privateKey", "publicKey", "nodeId"])
def test_the_module_result_is_searched(key):
    """Positive control for run_module: the identity module's real result (a valid identity) is captured, and it
    holds the public key and node ID, which a leak of them would show."""
    from ansible_collections.kubespan.mesh.plugins.modules import identity as identity_module
    priv = keys.generate_private_key()
    ident = identity.Identity(priv, identity.public_key_for(priv), keys.generate_node_id())
    with tempfile.TemporaryDirectory() as d:
        identity.save_identity(d, ident)
        with captured() as texts:
            run_module(texts, identity_module.main, {"cluster_id": "c1", "state_dir": d, "_ansible_check_mode": True})
    joined = "".join(texts)
    assert '"public_key": "%s"' % ident.public_key in joined and ident.node_id in joined, joined[:500]
    value = {"privateKey": priv, "publicKey": ident.public_key, "nodeId": ident.node_id}[key]
    assert (value in joined) == (key != "privateKey")
