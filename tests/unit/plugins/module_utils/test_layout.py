# Copyright: kubespan.mesh contributors
# SPDX-License-Identifier: Apache-2.0
"""host/layout.py names every file of the node's state directory once: no other file of plugins/ writes one of the
names as a string literal (they import them from layout), and every name layout declares is in its table."""

from __future__ import annotations

import ast
import os

from ansible_collections.kubespan.mesh.plugins.module_utils.host import layout

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "plugins"))
LAYOUT = os.path.join(PLUGINS, "module_utils", "host", "layout.py")
NAMES = {value for key, value in vars(layout).items() if key.isupper() and isinstance(value, str)}


def literal_file_names(source: str):
    """(line, literal) of each string constant of ``source`` that is one of layout's file names or ends with one
    (a path such as "/var/lib/kubespan/state.json"); docstrings and comments are prose, not names in use."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if any(node.value == name or node.value.endswith("/" + name) for name in NAMES):
                found.append((node.lineno, node.value))
    return sorted(found)


def test_layout_names_every_state_file_it_declares():
    assert {"state.json", "peerstatus.json", "metrics.prom", "discovery.json", "announce.json", "relay.json", "rpfilter.json",
            "firewall.json", "watch.json", ".lock", "kubespan-identity.yaml", "node-identity.yaml"} <= NAMES
    doc = layout.__doc__
    assert all(name in doc for name in NAMES), "layout.py's table must describe every name it declares"


def test_no_state_file_name_is_written_outside_layout():
    offenders = []
    for root, _dirs, files in os.walk(PLUGINS):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".py") or path == LAYOUT:
                continue
            with open(path, encoding="utf-8") as handle:
                for line, value in literal_file_names(handle.read()):
                    offenders.append("%s:%d: %r" % (os.path.relpath(path, PLUGINS), line, value))
    assert not offenders, "state file names belong in host/layout.py (import them from there):\n" + "\n".join(offenders)


def test_the_grep_sees_a_literal_name():
    """Positive control: the check finds a name in use (here in a join) and ignores a docstring."""
    src = '"""Reads state.json."""\nimport os\nP = os.path.join("/x", "peerstatus.json")\nQ = "/var/lib/kubespan/state.json"\n'
    assert literal_file_names(src) == [(3, "peerstatus.json"), (4, "/var/lib/kubespan/state.json")]
