"""kubespan get in talosctl's layout: names and aliases, golden YAML/JSON/table output, watch, private key.

Golden files: tests/unit/plugins/module_utils/fixtures/listing/*.golden. After a deliberate change of the output,
regenerate them with KUBESPAN_UPDATE_GOLDEN=1 and review the diff.
"""

import base64
import io
import json
import os

import pytest
import yaml

from ansible_collections.kubespan.mesh.plugins.module_utils.agent import cli
from ansible_collections.kubespan.mesh.plugins.module_utils.core import listing
from ansible_collections.kubespan.mesh.plugins.module_utils.host.identity import Identity, public_key_for, save_identity
from ansible_collections.kubespan.mesh.plugins.module_utils.host.statefile import write_json
from ansible_collections.kubespan.mesh.plugins.module_utils.reconcile.engine import STATE_VERSION, state_path

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "listing")
T0 = 1764900000.0  # 2025-12-05T02:00:00Z
NODE = "node-1"
TIMES = {"state": T0, "status": T0 + 90.25, "identity": T0 - 86400, "discovered": T0 + 30}
K2 = "mB9NyJAeuaPUM4eiJwOh2BK+X5eL1GfE2PjrAsj+ikg="
K3 = "Zc1qoiYNF2Y0hJz2YfHxBkyE3C0F1mqZ6q3v1wFyZ0M="
PRIV = base64.b64encode(bytes([0x40] + [7] * 30 + [0x48])).decode()

RECORDS = {
    "peerstatuses": [
        {"id": K2, "version": 7, "label": "node-2", "endpoint": "192.0.2.2:51820", "state": "up", "receiveBytes": 62220,
         "transmitBytes": 58104, "lastHandshakeTime": T0 - 12.5, "lastUsedEndpoint": "192.0.2.2:51820",
         "lastEndpointChange": T0 - 3600.123456, "endpointChanges": 1, "secondsSinceHandshake": 12.5},
        {"id": K3, "version": 2, "label": "node-3", "endpoint": "[2001:db8::3]:51820", "state": "down", "receiveBytes": 0,
         "transmitBytes": 1480, "lastHandshakeTime": 0, "lastUsedEndpoint": "", "lastEndpointChange": 0,
         "endpointChanges": 0, "secondsSinceHandshake": None, "via": "node-2"},
    ],
    "peerspecs": [
        {"id": K2, "label": "node-2", "address": "fd7f:175a:b97c:5602:a8b5:12ff:fe34:5678", "endpoints": ["192.0.2.2:51820", "[2001:db8::2]:51820"],
         "allowedIPs": ["192.0.2.2/32", "fd7f:175a:b97c:5602:a8b5:12ff:fe34:5678/128"],
         "affiliateID": "7x1SuC8Ege5BGXdAfTEff5iQnlWZLfv9h1LGMxA2pYkC", "version": 1},
        {"id": K3, "label": "node-3", "address": "fd7f:175a:b97c:5602:a8b5:12ff:fe34:9abc", "endpoints": [],
         "allowedIPs": [], "affiliateID": "", "version": 3},
    ],
    "endpoints": [
        {"id": K2, "endpoint": "192.0.2.2:51820", "affiliateID": "7x1SuC8Ege5BGXdAfTEff5iQnlWZLfv9h1LGMxA2pYkC", "version": 2},
    ],
    "identities": [
        {"id": "local", "version": 1, "address": "fd7f:175a:b97c:5602:a8b5:12ff:fe34:1111/128", "subnet": "fd7f:175a:b97c:5602::/64",
         "publicKey": K3, "nodeId": "9uDfG1tCxvQ0bGnPszCRyPdVZ3RkzQ4d2yH2X8ACW0Dp"},
    ],
    "affiliates": [
        {"id": "9uDfG1tCxvQ0bGnPszCRyPdVZ3RkzQ4d2yH2X8ACW0Dp", "version": 1, "hostname": "node-1", "publicKey": K3,
         "kubespanAddress": "fd7f:175a:b97c:5602:a8b5:12ff:fe34:1111", "addresses": ["192.0.2.1"], "endpoints": ["192.0.2.1:51820"],
         "additionalAddresses": [], "source": "local"},
        {"id": "7x1SuC8Ege5BGXdAfTEff5iQnlWZLfv9h1LGMxA2pYkC", "version": 1, "hostname": "node-2", "publicKey": K2,
         "kubespanAddress": "fd7f:175a:b97c:5602:a8b5:12ff:fe34:5678", "addresses": ["192.0.2.2", "2001:db8::2"],
         "endpoints": ["192.0.2.2:51820"], "additionalAddresses": ["10.244.1.0/24"], "source": "discovery"},
    ],
}


def golden(name, text):
    path = os.path.join(GOLDEN, name + ".golden")  # not *.yaml: yamllint would read the multi-document files
    if os.environ.get("KUBESPAN_UPDATE_GOLDEN"):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), "output differs from %s (KUBESPAN_UPDATE_GOLDEN=1 regenerates it)" % path


@pytest.mark.parametrize("name, short", [
    ("kubespanpeerstatuses", "peerstatuses"), ("KubeSpanPeerStatuses.kubespan.talos.dev", "peerstatuses"),
    ("kubespanpeerstatus", "peerstatuses"), ("kubespanpeerstatuses.kubespan", "peerstatuses"),
    ("kubespanpeerstatuses.kubespan.talos", "peerstatuses"), ("peerstatuses", "peerstatuses"), ("peerstatus", "peerstatuses"),
    ("kubespanpeerspecs", "peerspecs"), ("kubespanpeerspec", "peerspecs"), ("peerspecs", "peerspecs"),
    ("kubespanendpoints", "endpoints"), ("kubespanendpoint", "endpoints"), ("kse", "endpoints"), ("kses", "endpoints"),
    ("endpoints", "endpoints"),
    ("kubespanidentities", "identities"), ("kubespanidentity", "identities"), ("ksi", "identities"), ("ksis", "identities"),
    ("identities", "identities"), ("KUBESPANIDENTITIES", "identities"),
    ("affiliates", "affiliates"), ("affiliate", "affiliates"), ("affiliates.cluster.talos.dev", "affiliates"),
])
def test_talosctl_names_and_aliases_resolve(name, short):
    assert listing.resolve(name) == short


def test_ambiguous_and_unknown_names_are_errors_naming_the_choices():
    # COSI gives KubeSpanPeerStatuses and KubeSpanPeerSpecs the same initials
    with pytest.raises(listing.ListingError, match="KubeSpanPeerStatuses.kubespan.talos.dev and KubeSpanPeerSpecs|"
                                                   "KubeSpanPeerSpecs.kubespan.talos.dev and KubeSpanPeerStatuses"):
        listing.resolve("ksps")
    with pytest.raises(listing.ListingError, match="unknown resource 'members'.*peerstatuses.*kubespanpeerstatuses"):
        listing.resolve("members")


def test_rfc3339_like_go():
    assert listing.rfc3339(0) == "0001-01-01T00:00:00Z"
    assert listing.rfc3339(T0) == "2025-12-05T02:00:00Z"
    assert listing.rfc3339(T0 + 0.5) == "2025-12-05T02:00:00.5Z"


@pytest.mark.parametrize("short", sorted(RECORDS))
@pytest.mark.parametrize("output", ["yaml", "json", "table"])
def test_golden_output(short, output):
    docs = listing.documents(short, RECORDS[short], NODE, TIMES)
    golden("%s.%s" % (short, output), listing.render(short, docs, output))


@pytest.mark.parametrize("short", sorted(RECORDS))
def test_yaml_and_json_are_the_same_document(short):
    docs = listing.documents(short, RECORDS[short], NODE, TIMES)
    from_yaml = list(yaml.safe_load_all(listing.render(short, docs, "yaml")))
    decoder, text, from_json, pos = json.JSONDecoder(), listing.render(short, docs, "json"), [], 0
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        from_json.append(obj)
        pos += 1

    def untime(value):  # PyYAML reads RFC 3339 timestamps as datetimes (yaml.v3 writes them plain, too)
        if isinstance(value, dict):
            return {k: untime(v) for k, v in value.items()}
        if isinstance(value, list):
            return [untime(v) for v in value]
        if hasattr(value, "isoformat"):
            return listing.rfc3339(value.timestamp()) if value.year > 1 else listing.ZERO_TIME
        return value
    assert [untime(d) for d in from_yaml] == from_json == docs
    for doc in docs:
        assert list(doc) == ["node", "metadata", "spec"]
        assert list(doc["metadata"])[:8] == ["namespace", "type", "id", "version", "owner", "phase", "created", "updated"]


def test_yaml_quotes_what_would_not_read_back_as_the_same_string():
    for text in ["", "true", "no", "1234", "1.5", "[::1]:51820", "a: b", "x #y", "it's", "~", "-1", "::1", ":x", "line\nbreak"]:
        assert yaml.safe_load("k: %s" % listing._scalar(text))["k"] == text, text


def make_state_dir(tmp_path):
    state = str(tmp_path)
    priv = PRIV
    save_identity(state, Identity(priv, public_key_for(priv), "9uDfG1tCxvQ0bGnPszCRyPdVZ3RkzQ4d2yH2X8ACW0Dp",
                                  "fd7f:175a:b97c:5602:a8b5:12ff:fe34:1111/128", "fd7f:175a:b97c:5602::/64"))
    # a run always writes the cluster ID and secret (engine.load_state refuses a state without them)
    peer = {"public_key": K2, "name": "node-2", "address": "fd7f::2", "endpoints": ["192.0.2.2:51820"], "allowed_ips": ["fd7f::2/128"],
            "node_id": "n2", "version": 4}
    write_json(state_path(state), {"version": STATE_VERSION, "cluster_id": "listing-test",
                                   "cluster_secret": "c2VjcmV0LW9mLXRoZS1saXN0aW5nLXRlc3QtMzJieXQ=", "peers": [peer]})
    for name, ts in (("state.json", T0), ("kubespan-identity.yaml", T0 - 86400)):
        os.utime(os.path.join(state, name), (ts, ts))
    return state


def run_get(state, *args):
    out = io.StringIO()
    rc = cli.main(["get"] + list(args), state_dir=state, out=out)
    return rc, out.getvalue()


def test_cli_talosctl_names_yaml_json_table_and_records(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.socket, "gethostname", lambda: NODE)
    state = make_state_dir(tmp_path)
    rc, text = run_get(state, "kubespanpeerspecs", "-o", "yaml")
    assert rc == 0
    golden("cli-peerspecs.yaml", text)
    assert run_get(state, "peerspecs", "-o", "yaml") == (0, text)  # the short name: same listing
    rc, text = run_get(state, "kubespanpeerspec", "-o", "json")
    assert rc == 0 and json.loads(text)["metadata"]["version"] == 4 and json.loads(text)["spec"]["label"] == "node-2"
    rc, text = run_get(state, "kubespanidentities")
    assert rc == 0
    golden("cli-identities.table", text)
    rc, text = run_get(state, "peerspecs", "-o", "records")  # the flat list of earlier releases
    assert rc == 0 and json.loads(text)[0]["allowedIPs"] == ["fd7f::2/128"]


def test_cli_unknown_resource_is_rc1_with_the_known_names(tmp_path, capsys):
    rc, _text = run_get(str(tmp_path), "kubespanmembers")
    assert rc == 1 and "unknown resource 'kubespanmembers'" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["table", "yaml", "json"])
def test_private_key_only_with_include_private_key(tmp_path, output):
    state = make_state_dir(tmp_path)
    rc, text = run_get(state, "kubespanidentities", "-o", output)
    assert rc == 0 and PRIV not in text and public_key_for(PRIV) in text
    rc, text = run_get(state, "ksi", "-o", output, "--include-private-key")
    if output == "table":
        assert rc == 0 and PRIV not in text  # the table has no key column
    else:
        assert rc == 0 and PRIV in text  # positive control: the scan above can see the key


def _doc(key, version, state, rx):
    rec = dict(RECORDS["peerstatuses"][0], id=key, version=version, state=state, receiveBytes=rx, label="node-2" if key == K2 else "node-3")
    return listing.documents("peerstatuses", [rec], NODE, TIMES)[0]


# what four polls see: K2 and K3 appear; K2's counters grow; nothing changes (only file times); K3 goes away
POLLS = [
    [_doc(K2, 7, "up", 100), _doc(K3, 1, "unknown", 0)],
    [_doc(K2, 8, "up", 200), _doc(K3, 1, "unknown", 0)],
    [_doc(K2, 8, "up", 200), dict(_doc(K3, 1, "unknown", 0), metadata=dict(_doc(K3, 1, "unknown", 0)["metadata"], updated="2026-01-01T00:00:00Z"))],
    [_doc(K2, 8, "up", 200)],
]


@pytest.mark.parametrize("output", ["table", "yaml", "json"])
def test_watch_prints_created_then_each_change(output):
    polls = iter(POLLS)
    written, slept = [], []
    listing.watch("peerstatuses", lambda: next(polls), output, written.append, slept.append, interval=2.0, iterations=len(POLLS))
    assert slept == [2.0] * (len(POLLS) - 1)  # a fake clock: no real sleep
    assert len(written) == {"table": 3, "yaml": 4, "json": 4}[output]  # poll 3 changed nothing: nothing printed
    golden("watch-peerstatuses.%s" % output, "".join(written))
