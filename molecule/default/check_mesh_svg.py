"""Check the picture playbooks/status.yml wrote (kubespan_status_svg) against what the mesh is.

    check_mesh_svg.py FILE.svg EXPECTED.json

EXPECTED: {"sites": {node: site, ...}, "state": "up"}. The SVG must parse as XML and hold exactly those nodes, each
in its site's box, and both halves of every link between them, each with the expected state, not relayed and with no
NAT mark (the scenario's nodes share one network). Prints what the picture shows; exit 1 with the differences.
"""

import itertools
import json
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def main(svg_path, expected_path):
    with open(expected_path) as handle:
        expected = json.load(handle)
    with open(svg_path, "rb") as handle:
        data = handle.read()
    root = ET.fromstring(data)
    groups = list(root.iter(NS + "g"))
    nodes = {g.get("data-name"): g for g in groups if g.get("class") == "node"}
    links = {(g.get("data-from"), g.get("data-to")): g for g in groups if g.get("class") == "link"}
    sites = [g.get("data-site") for g in groups if g.get("class") == "site"]
    problems = []
    if root.tag != NS + "svg":
        problems.append("root element %s, not svg" % root.tag)
    want_sites = expected["sites"]
    got_sites = {name: g.get("data-site") for name, g in nodes.items()}
    if got_sites != want_sites:
        problems.append("nodes and sites %s, expected %s" % (got_sites, want_sites))
    if sorted(sites) != sorted(set(want_sites.values())):
        problems.append("site boxes %s, expected %s" % (sites, sorted(set(want_sites.values()))))
    pairs = list(itertools.permutations(sorted(want_sites), 2))
    if sorted(links) != sorted(pairs):
        problems.append("link halves %s, expected %s" % (sorted(links), pairs))
    for pair in pairs:
        link = links.get(pair)
        if link is None:
            continue
        got = (link.get("data-state"), link.get("data-via"), link.get("data-nat"))
        if got != (expected["state"], "", "false"):
            problems.append("%s -> %s: state/via/nat %s, expected (%s, '', false)" % (pair + (got, expected["state"])))
    health = {name: g.get("data-health") for name, g in nodes.items()}
    print("%s: %d bytes, %d site boxes %s, %d nodes %s, %d link halves, states %s, node health %s, titles e.g. %r"
          % (svg_path, len(data), len(sites), sites, len(nodes), got_sites, len(links),
             sorted(set(g.get("data-state") for g in links.values())), health,
             next(iter(links.values())).find(NS + "title").text if links else None))
    for problem in problems:
        print("MISMATCH " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
