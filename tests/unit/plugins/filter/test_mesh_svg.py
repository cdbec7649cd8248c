"""Unit tests of the filter kubespan.mesh.mesh_svg (issue 19 item 4): the SVG parses as XML and has every node, site
and link half with the state, relay and NAT marks of the statuses it was given."""

import itertools
import xml.etree.ElementTree as ET

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kubespan.mesh.plugins.filter.mesh_svg import MAX_NODES, FilterModule, mesh_svg

NS = "{http://www.w3.org/2000/svg}"


def _peer(label, state="up", **extra):
    return dict({"id": "key-" + label, "label": label, "state": state, "endpoint": "192.0.2.1:51820"}, **extra)


def _status(address, *peers):
    return {"changed": False, "identity": {"address": address, "public_key": "pk"}, "peers": list(peers)}


def _parse(svg):
    root = ET.fromstring(svg.encode())
    assert root.tag == NS + "svg"
    nodes = {g.get("data-name"): g for g in root.iter(NS + "g") if g.get("class") == "node"}
    links = {(g.get("data-from"), g.get("data-to")): g for g in root.iter(NS + "g") if g.get("class") == "link"}
    sites = [g.get("data-site") for g in root.iter(NS + "g") if g.get("class") == "site"]
    return root, nodes, links, sites


GROUPS = {"all": ["a1", "a2", "b1", "b2", "gone"], "ungrouped": [], "kubespan": ["a1", "a2", "b1", "b2", "gone"],
          "site_a": ["a1", "a2"], "site_b": ["b1", "b2"], "linux": ["a1", "a2", "b1", "b2", "gone"]}


def _mesh():
    return {
        "a1": _status("fd00::a1/128", _peer("a2"), _peer("b1", via="a2"), _peer("b2", "down"), _peer("gone", "unknown"),
                      _peer("talos-7", natPath=True)),
        "a2": _status("fd00::a2/128", _peer("a1"), _peer("b1", natPath=True), _peer("b2", "down", via="b1", natPath=True)),
        "b1": _status("fd00::b1/128", _peer("a1", via="a2"), _peer("a2", natPath=False), _peer("b2")),
        "b2": _status("fd00::b2/128", _peer("a1", "down"), _peer("a2", "weird"), _peer("b1")),
        "gone": {"unreachable": True, "msg": "ssh: connect"},
    }


def test_every_node_and_link_half_with_its_state_and_marks():
    svg = mesh_svg(_mesh(), groups=GROUPS)
    root, nodes, links, sites = _parse(svg)
    # sites: the two site groups (kubespan holds every host, linux too), then the discovered peers' box;
    # "gone" is in no site group: drawn in the box named after the cluster group
    assert sites == ["site_a", "site_b", "", "(discovered peers)"]
    assert {n: g.get("data-site") for n, g in nodes.items()} == {
        "a1": "site_a", "a2": "site_a", "b1": "site_b", "b2": "site_b", "gone": "", "talos-7": "(discovered peers)"}
    assert root.get("data-nodes") == "6"
    expected = {
        ("a1", "a2"): ("up", "", "false"), ("a1", "b1"): ("up", "a2", "false"), ("a1", "b2"): ("down", "", "false"),
        ("a1", "gone"): ("unknown", "", "false"), ("a1", "talos-7"): ("up", "", "true"),
        ("a2", "a1"): ("up", "", "false"), ("a2", "b1"): ("up", "", "true"), ("a2", "b2"): ("down", "b1", "true"),
        ("b1", "a1"): ("up", "a2", "false"), ("b1", "a2"): ("up", "", "false"), ("b1", "b2"): ("up", "", "false"),
        ("b2", "a1"): ("down", "", "false"), ("b2", "b1"): ("up", "", "false"),
        ("b2", "a2"): ("unknown", "", "false"),          # a state that is not up/down/unknown is unknown
    }
    hosts = ["a1", "a2", "b1", "b2", "gone"]
    for frm, to in itertools.permutations(hosts + ["talos-7"], 2):
        if frm == "talos-7" and to == "talos-7":
            continue
        got = links[(frm, to)]
        want = expected.get((frm, to), ("unknown", "", "false"))  # no status: unknown (gone, talos-7, missing peers)
        assert (got.get("data-state"), got.get("data-via"), got.get("data-nat")) == want, (frm, to)
        line = got.find(NS + "line")
        assert line.get("stroke") == {"up": "#2e7d32", "down": "#c62828", "unknown": "#9e9e9e"}[want[0]]
        assert (line.get("stroke-dasharray") is not None) == bool(want[1])
    # two halves per pair of the 6 nodes, none from the discovered peer to itself
    assert len(links) == 6 * 5
    assert "a1 sees b1: up at 192.0.2.1:51820, relayed via a2" in links[("a1", "b1")].find(NS + "title").text
    assert "the statuses of gone could not be read" in links[("gone", "a1")].find(NS + "title").text
    assert {n: g.get("data-health") for n, g in nodes.items()} == {
        "a1": "down", "a2": "down", "b1": "unknown", "b2": "down", "gone": "unknown", "talos-7": "unknown"}
    # b1 sees every peer up but has no status for gone: unknown, not up
    texts = [t.text for t in root.iter(NS + "text")]
    assert texts.count("NAT") == 3 + 1   # three NAT halves and the legend
    assert "via a2" in texts and "via b1" in texts


def test_no_site_groups_one_box_named_after_the_cluster_group():
    statuses = {"n1": _status("fd00::1/128", _peer("n2")), "n2": _status("fd00::2/128", _peer("n1"))}
    _root, nodes, links, sites = _parse(mesh_svg(statuses, groups={"all": ["n1", "n2"], "mesh": ["n1", "n2"]},
                                                 cluster_group="mesh"))
    assert sites == [""] and set(nodes) == {"n1", "n2"}
    assert {k: g.get("data-state") for k, g in links.items()} == {("n1", "n2"): "up", ("n2", "n1"): "up"}
    root = ET.fromstring(mesh_svg(statuses, groups={"mesh": ["n1", "n2"]}, cluster_group="mesh").encode())
    site = [g for g in root.iter(NS + "g") if g.get("class") == "site"][0]
    assert site.find(NS + "text").text == "mesh" and site.find(NS + "title").text == "mesh: 2 nodes"
    assert {n: g.get("data-health") for n, g in nodes.items()} == {"n1": "up", "n2": "up"}


def test_explicit_site_groups_and_determinism():
    groups = dict(GROUPS, rack1=["a1", "b1"])
    svg = mesh_svg(_mesh(), groups=groups, site_groups=["rack1"])
    _root, nodes, _links, sites = _parse(svg)
    assert sites == ["rack1", "", "(discovered peers)"]
    assert nodes["a1"].get("data-site") == "rack1" and nodes["a2"].get("data-site") == ""
    assert svg == mesh_svg(dict(reversed(list(_mesh().items()))), groups=groups, site_groups=["rack1"])


def test_names_from_the_wire_are_escaped():
    bad = 'x"><script>alert(1)</script>&'
    statuses = {"n1": _status("fd00::1/128", _peer(bad, via="r&<b>" * 30, endpoint="[<bad>]:1")), "n2": None}
    root, nodes, links, _sites = _parse(mesh_svg(statuses, title="<t>"))
    assert bad in nodes and links[("n1", bad)].get("data-via") == ("r&<b>" * 30)[:64]
    assert not list(root.iter(NS + "script"))


@pytest.mark.parametrize("statuses, kwargs, message", [
    ("n1", {}, "expects a list of hosts \\(with hostvars\\) or a dictionary"),
    ({"n1": "text"}, {}, "the status of n1 is not a dictionary"),
    ({"n1": {"peers": "x"}}, {}, "the peers of n1 are not a list"),
    ({"n1": {"peers": [{"state": "up"}]}}, {}, "peer 0 of n1 is not a dictionary with a label"),
    ({"n1": None}, {"groups": ["x"]}, "groups is not a dictionary"),
    ({"n1": None}, {"site_groups": "site_a"}, "site_groups is not a list"),
    ({"h%d" % i: None for i in range(MAX_NODES + 1)}, {}, "%d nodes, at most %d" % (MAX_NODES + 1, MAX_NODES)),
])
def test_bad_input_is_refused(statuses, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        mesh_svg(statuses, **kwargs)


def test_registered():
    assert FilterModule().filters() == {"mesh_svg": mesh_svg}


def test_hosts_with_hostvars_read_the_registered_status():
    """The form status.yml uses: ansible_play_hosts_all | kubespan.mesh.mesh_svg(hostvars, ...); a host that failed
    (its registered result failed) or registered nothing is drawn as a node that could not be read."""
    mesh = _mesh()
    hostvars = {h: {"kubespan_status": s, "other": 1} for h, s in mesh.items() if h != "gone"}
    hostvars["gone"] = {"other": 1}
    hostvars["b2"] = {"kubespan_status": {"failed": True, "msg": "no desired state"}}
    _root, nodes, links, _sites = _parse(mesh_svg(list(mesh), hostvars, groups=GROUPS))
    assert set(nodes) == {"a1", "a2", "b1", "b2", "gone", "talos-7"}
    assert links[("a1", "b2")].get("data-state") == "down" and links[("b2", "a1")].get("data-state") == "unknown"
    assert nodes["b2"].get("data-health") == "unknown" and nodes["gone"].get("data-health") == "unknown"
    _root, _nodes, links, _sites = _parse(mesh_svg(["a1", "a2"], {"a1": {"st": mesh["a1"]}}, status_var="st"))
    assert links[("a1", "a2")].get("data-state") == "up"
    with pytest.raises(AnsibleFilterError, match="pass hostvars"):
        mesh_svg(["a1"])
    with pytest.raises(AnsibleFilterError, match="not a host name"):
        mesh_svg([["a1"]], {})
